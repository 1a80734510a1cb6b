"""Training-speed ratios to a reference model, measured in interleaved rounds (issue 14's targets).

    python -m benchmarks.ratios --models din sdim eta --seq-len 2000 --rounds 3 --out benchmarks/results/ratios

On a shared machine one model's samples/s moves by a quarter between runs minutes apart, so a ratio of two
separate runs says little. Here every round measures every model once, one after the other
(``benchmarks/tinrec_bench.py``, the TorchRec path only), and the ratio to the reference is taken within the
round; the reported ratio is the median over rounds, with its spread. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from typing import Dict, List, Optional

from benchmarks.run import REPO, _last_json, machine, tinrec_command, versions


def measure(model: str, args) -> dict:
    import subprocess

    cmd = tinrec_command(model, args.seq_len, args, args.steps, 1) + ["--no-module"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}: {p.stderr.strip()[-400:]}"}
    r = _last_json(p.stdout)
    return {"samples_per_s": r["torchrec_train"]["samples_per_s"], "peak_rss_mib": r["peak_rss_mib"]}


def summarise(rounds: List[Dict[str, dict]], reference: str) -> Dict[str, dict]:
    """Per model: the ratio of its samples/s (and peak RSS) to the reference's in each round, and the medians."""
    out: Dict[str, dict] = {}
    for model in rounds[0]:
        speed = [r[model]["samples_per_s"] / r[reference]["samples_per_s"] for r in rounds
                 if "error" not in r[model] and "error" not in r[reference]]
        memory = [r[model]["peak_rss_mib"] / r[reference]["peak_rss_mib"] for r in rounds
                  if "error" not in r[model] and "error" not in r[reference]]
        out[model] = {"speed_ratios": speed, "memory_ratios": memory,
                      "speed_ratio_median": statistics.median(speed) if speed else None,
                      "memory_ratio_median": statistics.median(memory) if memory else None,
                      "samples_per_s": [r[model].get("samples_per_s") for r in rounds]}
    return out


def table(summary: Dict[str, dict], reference: str) -> str:
    lines = [f"| model | train samples/s per round | speed / {reference} (median; per round) | "
             f"peak RSS / {reference} (median) |", "|---|---|---|---|"]
    for model, s in summary.items():
        sps = ", ".join("failed" if v is None else f"{v:.0f}" for v in s["samples_per_s"])
        if s["speed_ratio_median"] is None:
            lines.append(f"| {model} | {sps} | - | - |")
            continue
        per = ", ".join(f"{v:.2f}" for v in s["speed_ratios"])
        lines.append(f"| {model} | {sps} | **{s['speed_ratio_median']:.2f}x** ({per}) | "
                     f"{s['memory_ratio_median']:.2f}x |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--reference", default="din")
    ap.add_argument("--seq-len", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "ratios"))
    args = ap.parse_args(argv)
    models = [args.reference] + [m for m in args.models if m != args.reference]
    report = {"command": "python -m benchmarks.ratios " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "versions": versions(),
              "settings": {k: getattr(args, k) for k in ("seq_len", "rounds", "steps", "batch", "dim", "threads")},
              "rounds": []}
    for i in range(args.rounds):
        r = {}
        for model in models:
            print(f"[ratios] round {i + 1} {model}", file=sys.stderr, flush=True)
            r[model] = measure(model, args)
        report["rounds"].append(r)
    report["summary"] = summarise(report["rounds"], args.reference)
    from tinrec.results import write_json

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out + ".json", report)
    with open(args.out + ".md", "w") as f:
        f.write(f"`{report['command']}` on {report['machine']['cpu']} ({report['machine']['cores']} cores), "
                f"{args.threads} threads, {report['date']}, 1-minute load average at start "
                f"{report['machine']['load_average_at_start']:.1f}. L = {args.seq_len}, batch {args.batch}, "
                f"{args.dim} columns per field; each round measures every model once (median of {args.steps} "
                f"steps of the TorchRec path); ratios are taken within a round.\n\n"
                f"{table(report['summary'], args.reference)}\n")
    print(table(report["summary"], args.reference))
    return report


if __name__ == "__main__":
    main()
