"""The benchmark, one command: tinrec (TorchRec path and module alone) beside the peers, over sequence lengths.

    python -m benchmarks.run                       # every model of benchmarks/models.py, L in 50 200 1000 2000
    python -m benchmarks.run --models din --lengths 50 2000 --no-peers --out /tmp/bench

For each model and length L (batch 256, embedding width 64 per field, CPU, ``--threads`` threads): training
and inference samples/s and peak memory, through tinrec's real TorchRec path and for the interest module
alone (``benchmarks/tinrec_bench.py``, one subprocess per point), and the same model in the peer libraries
on the same synthetic batches (``benchmarks/peers.py``, in a separate virtual environment this script
creates at ``.bench-peers``). The machine's memory bandwidth is measured here (a 256 MiB fp32 copy, best of
10: 2 x bytes / time), and for the lookup-bound models the embedding bytes per sample over that bandwidth
give a floor on the time per sample (``floor ratio`` = achieved time / floor), two ways: every lookup's own
traffic, and the sequence tensor alone (``benchmarks/tinrec_bench.py:lookup_bytes``).

``--device cuda`` runs the same on GPU 0 (tinrec's TorchRec path needs the CUDA build of fbgemm-gpu; each
result's ``path`` records the device, the fbgemm build and whether its fused kernels exist there; the peers
run with ``device="cuda"`` in the python given by ``--peers-python``, since a GPU machine may have no
internet for the venv; bandwidth is then the GPU's)::

    python -m benchmarks.run --device cuda --peers-python /usr/bin/python3   # -> benchmarks/results/cuda.*

Writes ``<out>.json`` (machine, versions, command, every number), ``<out>.md`` (the table the README shows)
and ``<out>.png`` (training samples/s against L, log-log). Points run one after the other; a point that
fails (e.g. out of memory) is recorded with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure_bandwidth(threads: int, mib: int = 256, repeats: int = 10, device: str = "cpu") -> float:
    """Memory bandwidth in bytes/s: a ``mib`` MiB fp32 tensor copied into another on ``device``, best of
    ``repeats`` (on a GPU each copy is timed to its end with ``torch.cuda.synchronize``)."""
    import torch

    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best


def machine() -> Dict[str, object]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) // 1024
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "platform": platform.platform(),
            "python": platform.python_version(), "load_average_at_start": os.getloadavg()[0]}


def versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def tinrec_command(model: str, seq_len: int, args, steps: int, warmup: int) -> List[str]:
    """The ``benchmarks/tinrec_bench.py`` command of one point (batch, dim, threads from ``args``)."""
    return [sys.executable, "-m", "benchmarks.tinrec_bench", "--model", model, "--seq-len", str(seq_len),
            "--batch", str(args.batch), "--dim", str(args.dim), "--threads", str(args.threads),
            "--steps", str(steps), "--warmup", str(warmup)]


def run_tinrec(model: str, seq_len: int, args) -> dict:
    steps, warmup = (args.steps_long, 1) if seq_len >= 1000 else (args.steps, 2)
    cmd = tinrec_command(model, seq_len, args, steps, warmup) + ["--device", args.device]
    if args.profile and seq_len == max(args.lengths):
        cmd += ["--profile", str(args.profile)]
    if args.set:
        cmd += ["--set", *args.set]
    print(f"[bench] tinrec {model} L={seq_len}", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        return {"model": model, "seq_len": seq_len, "error": failure(p.returncode, p.stderr)}
    return _last_json(p.stdout)


def failure(returncode: int, stderr: str) -> str:
    """Why a measured point failed, for the table: killed by a signal (SIGKILL: the kernel's out-of-memory
    killer, on a machine without swap) or the last line of the error, then the stderr's tail."""
    if returncode < 0:
        why = f"killed by signal {-returncode}" + (" (out of memory)" if returncode == -9 else "")
    else:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        why = f"exit {returncode}: {lines[-1] if lines else 'no message'}"
    return f"{why}; stderr tail: {stderr.strip()[-600:]}"


def run_peer(python: str, peer: str, peer_model: str, seq_len: int, args, host_memory: str = "system") -> dict:
    from benchmarks.peers import measure

    steps, warmup = (args.steps_long, 1) if seq_len >= 1000 else (args.steps, 2)
    print(f"[bench] {peer} {peer_model} L={seq_len} host memory {host_memory}", file=sys.stderr, flush=True)
    try:
        return measure(python, peer, peer_model, seq_len, batch=args.batch, dim=args.dim, steps=steps,
                       warmup=warmup, threads=args.threads, timeout=args.peer_timeout or args.timeout,
                       host_memory=host_memory, device=args.device)
    except Exception as e:  # recorded, the run goes on
        return {"error": str(e)[-800:]}


REFERENCE = "din"
"""The model every other one is compared with at the same L in the same run (issue 14's targets are ratios to it)."""


def versus_reference(report: dict, r: dict) -> str:
    """``train x / memory x`` of result ``r`` against :data:`REFERENCE` at the same L in ``report``: training
    samples/s ratio (above 1 = faster) and peak RSS ratio (below 1 = less memory); "-" without a reference."""
    ref = next((x for x in report["results"] if x["model"] == REFERENCE and x["seq_len"] == r["seq_len"]
                and "error" not in x), None)
    if ref is None or "error" in r:
        return "-"
    speed = r["torchrec_train"]["samples_per_s"] / ref["torchrec_train"]["samples_per_s"]
    return f"{speed:.2f}x / {r['peak_rss_mib'] / ref['peak_rss_mib']:.2f}x"


def table(report: dict) -> str:
    """Markdown: one row per model and L (train / inference samples/s, memory, ratio to DIN, peer ratio, floor
    ratio)."""
    from benchmarks.models import MODELS

    bw = report["bandwidth_bytes_per_s"]
    lines = ["| model | L | tinrec train (TorchRec) | module alone train | tinrec infer | peak RSS MiB | "
             f"vs {REFERENCE}: train / memory | "
             "best peer train | tinrec / peer | best peer, cached host memory | tinrec / that | floor ratio (train) | "
             "floor ratio, sequence tensor only (train) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        name = r["model"] + (" (quadratic in L)" if MODELS[r["model"]].quadratic else "")
        if "error" in r:
            reason = " ".join(r["error"].split(";")[0].split())  # one line, no pipes from a message
            lines.append(f"| {name} | {r['seq_len']} | failed: {reason[:120].replace('|', '/')} | | | | | | | | | | |")
            continue
        tr, mt = r["torchrec_train"]["samples_per_s"], r.get("module_train", {}).get("samples_per_s")
        peers = {k: v["train_samples_per_s"] for k, v in r.get("peers", {}).items() if "train_samples_per_s" in v}

        def best(cached: bool) -> str:  # the fastest peer of one kind, and tinrec's ratio to it
            kind = {k: v for k, v in peers.items() if k.endswith("+cached") == cached}
            if not kind:
                failed = [k for k, v in r.get("peers", {}).items() if "error" in v and k.endswith("+cached") == cached]
                return f"failed ({', '.join(failed)}) | -" if failed else "- | -"
            peer, sps = max(kind.items(), key=lambda kv: kv[1])
            return f"{sps:.0f} ({peer}) | {tr / sps:.2f}x"

        floors = ["-", "-"]  # achieved time per sample / floor: per-lookup traffic, sequence tensor only
        if MODELS[r["model"]].lookup_bound:
            for i, key in enumerate(("train", "train_sequence_tensor")):
                if key in r["lookup_bytes"]:  # runs before the second floor have the first only
                    floors[i] = f"{(1.0 / tr) / (r['lookup_bytes'][key] / bw):.1f}x"
        gpu_mem = f" (GPU {r['peak_cuda_mib']:.0f})" if "peak_cuda_mib" in r else ""
        lines.append(
            f"| {name} | {r['seq_len']} | {tr:.0f} | {'' if mt is None else f'{mt:.0f}'} | "
            f"{r['torchrec_infer']['samples_per_s']:.0f} | {r['peak_rss_mib']:.0f}{gpu_mem} | "
            f"{versus_reference(report, r)} | {best(False)} | {best(True)} | {floors[0]} | {floors[1]} |")
    return "\n".join(lines)


def profile_table(report: dict, top: int = 8) -> str:
    """Markdown: per profiled point, the step's time, each stage's forward and the top operators by self time."""
    lines = []
    for r in report["results"]:
        prof = r.get("profile_train")
        if not prof:
            continue
        fwd = ", ".join(f"{k} {v:.0f}" for k, v in prof["forward_ms"].items())
        lines.append(f"- **{r['model']} L={r['seq_len']}**: step {prof['step_ms']:.0f} ms; forward ms: {fwd}; top "
                     f"operators (self ms per step, share of all self time): "
                     + "; ".join(f"`{o['op']}` {o['self_ms_per_step']:.0f} ({100 * o['share']:.0f}%)"
                                 for o in prof["top_ops"][:top]))
    return "\n".join(lines)


def growth(report: dict, min_len: int = 200) -> Dict[str, Dict[str, float]]:
    """Per model and path: k in time-per-sample ~ L^k, least squares on log-log over the lengths >= min_len
    (below that, fixed per-step costs hide the growth). 1 = linear, 2 = quadratic."""
    import numpy as np

    pts: Dict[str, Dict[str, List[tuple]]] = {}
    for r in report["results"]:
        if "error" in r or r["seq_len"] < min_len:
            continue
        for key in ("torchrec_train", "module_train"):
            if key in r:
                pts.setdefault(r["model"], {}).setdefault(key, []).append((r["seq_len"], r[key]["samples_per_s"]))
    out: Dict[str, Dict[str, float]] = {}
    for model, by_key in pts.items():
        for key, xy in by_key.items():
            if len(xy) >= 2:
                x, y = np.log([p[0] for p in xy]), np.log([1.0 / p[1] for p in xy])
                out.setdefault(model, {})[key] = float(np.polyfit(x, y, 1)[0])
    return out


def growth_table(report: dict) -> str:
    from benchmarks.models import MODELS

    lines = ["| model | k, TorchRec path (time/sample ~ L^k, L >= 200) | k, module alone | expected |",
             "|---|---|---|---|"]
    for model, k in growth(report).items():
        fmt = lambda key: f"{k[key]:.2f}" if key in k else "-"  # noqa: E731
        lines.append(f"| {model} | {fmt('torchrec_train')} | {fmt('module_train')} | "
                     f"{'quadratic (self-attention)' if MODELS[model].quadratic else 'linear'} |")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, Dict[int, float]] = {}
    for r in report["results"]:
        if "error" in r:
            continue
        series.setdefault(f"tinrec {r['model']}", {})[r["seq_len"]] = r["torchrec_train"]["samples_per_s"]
        for peer, v in r.get("peers", {}).items():
            if "train_samples_per_s" in v:
                series.setdefault(f"{peer} {r['model']}", {})[r["seq_len"]] = v["train_samples_per_s"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in sorted(series.items()):
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", linestyle="-" if label.startswith("tinrec") else "--",
                label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("training samples/s")
    ax.set_title(f"batch {report['settings']['batch']}, dim {report['settings']['dim']}, "
                 + (f"{report['machine'].get('gpu', 'GPU')}" if report.get("device") == "cuda"
                    else f"{report['settings']['threads']} CPU threads"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> dict:
    from benchmarks.models import LENGTHS, MODELS

    ap = argparse.ArgumentParser(description="tinrec benchmark beside the peers (benchmarks/README in the module doc)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps at L < 1000")
    ap.add_argument("--steps-long", type=int, default=3, help="timed steps at L >= 1000")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per measured point")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--peers-cached", action="store_true",
                    help="measure each peer a second time with tinrec's host-memory setting (glibc keeps freed "
                         "blocks, tinrec/hostmem.py), recorded as '<peer>+cached'")
    ap.add_argument("--peer-timeout", type=float, default=None, help="seconds per peer point (default: --timeout)")
    ap.add_argument("--peers-env", default=os.path.join(REPO, ".bench-peers"))
    ap.add_argument("--peers-python", default=None,
                    help="a python that already has the peers' pinned libraries (e.g. on a GPU machine without "
                         "internet: its own CUDA torch plus deepctr-torch and torch-rechub); no venv is created")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where tinrec and the peers run (cuda: GPU 0; tinrec's TorchRec path then needs the CUDA "
                         "build of fbgemm-gpu, and each result records the path that ran)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for tinrec's side (e.g. train.index_dedup=false for a before / after)")
    ap.add_argument("--out", default=None,
                    help="output prefix: writes OUT.json, OUT.md, OUT.png (default benchmarks/results/<device>)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="profile STEPS training steps of each model at the longest L (where the step goes)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the points OUT.json already has (without error) and measure only the rest")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(REPO, "benchmarks", "results", args.device)

    report = {"command": "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "versions": versions(),
              "settings": {k: getattr(args, k) for k in ("batch", "dim", "threads", "steps", "steps_long", "set")},
              "device": args.device, "results": []}
    done = _done_points(args.out) if args.resume else {}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        report["machine"]["gpu"] = torch.cuda.get_device_name(0)
    report["bandwidth_bytes_per_s"] = measure_bandwidth(args.threads, device=args.device)
    print(f"[bench] memory bandwidth {report['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s", file=sys.stderr)
    python = None
    if not args.no_peers and any(MODELS[m].peers for m in args.models):
        from benchmarks.peers import ensure_env

        # each peer result records its library's version
        python = args.peers_python or ensure_env(args.peers_env)
    for model in args.models:
        for L in args.lengths:
            if (model, L) in done:
                report["results"].append(done[(model, L)])
                continue
            r = run_tinrec(model, L, args)
            if python is not None:
                r["peers"] = {peer: run_peer(python, peer, pm, L, args) for peer, pm in MODELS[model].peers}
                if args.peers_cached:
                    r["peers"].update({f"{peer}+cached": run_peer(python, peer, pm, L, args, "cached")
                                       for peer, pm in MODELS[model].peers})
            report["results"].append(r)
            _write(report, args.out, final=False)
    report["growth"] = growth(report)
    _write(report, args.out, final=True)
    print(table(report))
    print(growth_table(report))
    return report


def _done_points(out: str) -> Dict[tuple, dict]:
    """The points a previous (interrupted) run of the same OUT finished: (model, L) -> its result."""
    if not os.path.exists(out + ".json"):
        return {}
    with open(out + ".json") as f:
        previous = json.load(f)
    return {(r["model"], r["seq_len"]): r for r in previous.get("results", []) if "error" not in r}


def _write(report: dict, out: str, final: bool) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    from tinrec.results import write_json

    write_json(out + ".json", report)
    if final:
        bw = report["bandwidth_bytes_per_s"] / 1e9
        with open(out + ".md", "w") as f:
            where = f"{report['machine']['cpu']} ({report['machine']['cores']} cores)"
            if report.get("device") == "cuda":
                where = f"{report['machine']['gpu']} (host {where})"
            f.write(f"`{report['command']}` on {where}, "
                    f"{report['settings']['threads']} threads, memory bandwidth {bw:.1f} GB/s, {report['date']}, "
                    f"1-minute load average at start {report['machine']['load_average_at_start']:.1f}. "
                    f"Samples/s (median step); peak RSS of the TorchRec path; floor ratio = time per sample / "
                    f"(embedding bytes per sample / bandwidth); the per-lookup floor counts 5 passes of each "
                    f"looked-up value (lookup read + write, gradient read, optimizer read + write), the "
                    f"sequence-tensor floor 2 (writing the sequence tensor, reading its gradient).\n\n"
                    f"{table(report)}\n\nCost growth in L:\n\n{growth_table(report)}\n")
            profiles = profile_table(report)
            if profiles:
                f.write(f"\nWhere a training step goes (torch.profiler, TorchRec path):\n\n{profiles}\n")
        plot(report, out + ".png")


if __name__ == "__main__":
    main()
