"""Time and peak memory of each ``tinrec convert`` on 1 million input rows in the published format.

    python -m benchmarks.convert [--rows 1000000] [--only NAME ...] [--out benchmarks/results/convert]

Writes synthetic files in each dataset's exact published layout (``tests/tinrec/test_convert.py`` checks the
converters' output on hand-made ones; here only the size matters): ``--rows`` ratings (MovieLens 1M layout),
5-core reviews (Amazon, with their metadata), UserBehavior lines (Taobao), impressions and as many behaviour-log
lines (Alibaba display advertising), interactions (ContentWise, Parquet). Then runs each converter as its own
process (``python -m tinrec.cli convert ...``) and records its wall time, its peak resident memory (the child's
``ru_maxrss``) and the counts it reports. Writes ``<out>.json`` and ``<out>.md`` with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(path, rows):
    with open(path, "w", encoding="latin-1") as f:
        f.writelines(rows)


def movielens(d, n, rng):
    users, items = max(2, n // 165), 3706
    _lines(os.path.join(d, "movies.dat"), (f"{i}::Movie {i} (1999)::{['Action', 'Comedy', 'Drama'][i % 3]}|War\n"
                                           for i in range(1, items + 1)))
    _lines(os.path.join(d, "users.dat"), (f"{u}::{'MF'[u % 2]}::{[1, 18, 25, 35, 45, 50, 56][u % 7]}::{u % 21}::00000\n"
                                          for u in range(1, users + 1)))
    u, i = rng.integers(1, users + 1, n), rng.integers(1, items + 1, n)
    r, t = rng.integers(1, 6, n), rng.integers(956703932, 1046454590, n)
    _lines(os.path.join(d, "ratings.dat"), (f"{a}::{b}::{c}::{e}\n" for a, b, c, e in zip(u, i, r, t)))
    return ["movielens"]


def amazon(d, n, rng):
    users, items = max(2, n // 9), max(10, n // 25)
    _lines(os.path.join(d, "meta_Electronics.json"),
           (f"{{'asin': 'B{i:09d}', 'categories': [['Electronics', 'C{i % 50}', 'L{i % 700}']], 'brand': 'b{i % 900}'}}\n"
            for i in range(items)))
    u, i, t = rng.integers(0, users, n), rng.integers(0, items, n), rng.integers(1_000_000_000, 1_400_000_000, n)
    _lines(os.path.join(d, "reviews_Electronics_5.json"),
           (json.dumps({"reviewerID": f"A{a:08d}", "asin": f"B{b:09d}", "reviewerName": "x", "helpful": [0, 0],
                        "reviewText": "fine", "overall": 5.0, "summary": "ok", "unixReviewTime": int(c),
                        "reviewTime": "01 1, 2014"}) + "\n" for a, b, c in zip(u, i, t)))
    return ["amazon"]


def taobao(d, n, rng):
    from tinrec.convert.taobao import START
    users, items = max(2, n // 100), max(10, n // 20)
    u, i = rng.integers(1, users + 1, n), rng.integers(1, items + 1, n)
    kinds = np.array(["pv", "buy", "cart", "fav"])[rng.choice(4, n, p=[0.89, 0.02, 0.06, 0.03])]
    t = rng.integers(START, START + 9 * 86400, n)
    _lines(os.path.join(d, "UserBehavior.csv"), (f"{a},{b},{b % 9000 + 1},{k},{c}\n" for a, b, k, c in zip(u, i, kinds, t)))
    return ["taobao"]


def alimama(d, n, rng):
    from tinrec.convert.alimama import HEADERS, START
    users, ads = max(2, n // 30), max(10, n // 30)
    _lines(os.path.join(d, "ad_feature.csv"), [HEADERS["ad_feature.csv"] + "\n"] + [
        f"{a},{a % 6000 + 1},{a % 400000},{a % 250000},{'NULL' if a % 5 == 0 else a % 99000 + 1},9.9\n"
        for a in range(1, ads + 1)])
    _lines(os.path.join(d, "user_profile.csv"), [HEADERS["user_profile.csv"] + " \n"] + [
        f"{u},0,{u % 13},{u % 2 + 1},{u % 7},1,3,0,2\n" for u in range(1, users + 1)])
    u, a = rng.integers(1, users + 1, n), rng.integers(1, ads + 1, n)
    t, clk = rng.integers(START, START + 8 * 86400, n), (rng.random(n) < 0.05).astype(int)
    _lines(os.path.join(d, "raw_sample.csv"), [HEADERS["raw_sample.csv"] + "\n"] + [
        f"{x},{y},{z},430548_1007,{1 - c},{c}\n" for x, y, z, c in zip(u, t, a, clk)])
    u2, t2 = rng.integers(1, users + 1, n), rng.integers(START - 14 * 86400, START + 8 * 86400, n)
    tags = np.array(["pv", "cart", "fav", "buy"])[rng.choice(4, n, p=[0.9, 0.04, 0.03, 0.03])]
    _lines(os.path.join(d, "behavior_log.csv"), [HEADERS["behavior_log.csv"] + "\n"] + [
        f"{x},{y},{g},{y % 6000 + 1},{y % 99000 + 1}\n" for x, y, g in zip(u2, t2, tags)])
    return ["alimama", "--protocol", "tin"]


def contentwise(d, n, rng):
    folder = os.path.join(d, "CW10M", "interactions")
    os.makedirs(folder)
    users, items = max(2, n // 380), max(10, n // 80)
    item = rng.integers(0, items, n)
    t = pa.table({"utc_ts_milliseconds": pa.array(rng.integers(1546300800000, 1554076800000, n), pa.int64()),
                  "user_id": pa.array(rng.integers(0, users, n), pa.int32()), "item_id": pa.array(item, pa.int32()),
                  "item_type": pa.array(item % 4, pa.int8()), "series_id": pa.array(item // 10, pa.int32()),
                  "episode_number": pa.array(item % 10, pa.int32()), "series_length": pa.array(np.full(n, 10), pa.int32()),
                  "recommendation_id": pa.array(np.full(n, -1), pa.int32()),
                  "interaction_type": pa.array(rng.integers(0, 4, n), pa.int8()),
                  "explicit_rating": pa.array(np.full(n, -1.0), pa.float32()),
                  "vision_factor": pa.array(rng.random(n), pa.float32())})
    pq.write_table(t, os.path.join(folder, "part.0.parquet"))
    return ["contentwise"]


WRITERS = {"movielens": movielens, "amazon": amazon, "taobao": taobao, "alimama": alimama, "contentwise": contentwise}


def run_one(name: str, rows: int, work: str) -> dict:
    src, out = os.path.join(work, name, "in"), os.path.join(work, name, "out")
    os.makedirs(src)
    args = WRITERS[name](src, rows, np.random.default_rng(0))
    cmd = [sys.executable, "-c", "import resource, sys; from tinrec.cli import main; rc = main(sys.argv[1:]); "
           "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)",
           "convert", *args, "--input", src, "--output", out]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{name}: {p.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("PEAK_KIB"))
    meta = json.load(open(os.path.join(out, "meta.json")))
    return {"dataset": name, "input_rows": rows, "seconds": round(seconds, 1), "peak_rss_mib": round(peak / 1024),
            "counts": meta["converter"]["counts"], "command": "tinrec convert " + " ".join(args) + " --input IN --output OUT"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--only", nargs="*", default=list(WRITERS), choices=list(WRITERS))
    p.add_argument("--out", default="benchmarks/results/convert")
    a = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for name in a.only:
            r = run_one(name, a.rows, work)
            print(json.dumps(r), flush=True)
            results.append(r)
    load = os.getloadavg()
    doc = {"rows": a.rows, "load_average": [round(x, 2) for x in load], "cpus": os.cpu_count(), "results": results}
    with open(a.out + ".json", "w") as f:
        json.dump(doc, f, indent=2)
    lines = [f"`python -m benchmarks.convert --rows {a.rows}`: {a.rows:,} input rows per dataset in its published "
             f"format (synthetic), one converter process each; {os.cpu_count()} CPUs, load average "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end.", "",
             "| dataset | seconds | peak memory MiB | samples | users | items | dropped | command |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["counts"]
        dropped = "; ".join(f"{k}: {v:,}" for k, v in c.get("dropped", {}).items()) or "none"
        lines.append(f"| {r['dataset']} | {r['seconds']} | {r['peak_rss_mib']} | {c['samples']:,} | {c['users']:,} | "
                     f"{c['items']:,} | {dropped} | `{r['command']}` |")
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
