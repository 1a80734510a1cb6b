"""One tinrec measurement: a model of ``benchmarks/models.py`` at one sequence length, in this process.

Run by ``benchmarks/run.py`` in a subprocess per (model, L) so that peak memory is that run's own::

    python -m benchmarks.tinrec_bench --model din --seq-len 2000 [--batch 256 --dim 64 --threads 2 ...]

prints one JSON object. What it does:

1. Writes the shared synthetic batch (``benchmarks/synthetic.py``, the same numbers the peers get) as a
   dataset in tinrec's format (``docs/data.md``; every history full length L, one-minute gaps) and builds
   the config with the benchmark's widths (``data.max_len = L``).
2. **TorchRec path**: the model exactly as ``tinrec train`` builds it (planner, DistributedModelParallel with
   the fused sparse optimizer, dense Adam, ``TrainPipelineSparseDist``), fed the loader's batch of that
   dataset again and again. Training: the median time of a pipeline step; inference: the same pipeline in
   eval mode under ``torch.no_grad``, as ``tinrec train`` evaluates (input distribution, lookup, dense part).
   Peak memory: the process's peak RSS after the TorchRec path (``ru_maxrss``).
3. **Module alone**: the interest module on the same batch's embedded inputs (its SequenceArch output,
   leaves with ``requires_grad``): forward + backward of the module's output sum (plus its auxiliary loss),
   and the no-grad forward. No lookup, no tower, no optimizer.
4. For the lookup-bound models, the embedding bytes moved per sample, two floors (:func:`lookup_bytes`).

Samples/s = batch / median step time over ``--steps`` timed steps after ``--warmup``. ``--device cuda`` runs
both halves on GPU 0 (steps timed to their end with ``torch.cuda.synchronize``, peak GPU memory recorded too);
``path`` in the result records the device, the fbgemm-gpu build and whether its fused kernels exist there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np

#: fbgemm's fused (TBE) embedding forward per device: its kernel exists where TorchRec's fused path can run
#: (the CPU build of fbgemm-gpu does not even define the CUDA op)
FUSED_LOOKUP_OP = {"cpu": ("fbgemm::split_embedding_codegen_forward_cpu", "CPU"),
                   "cuda": ("fbgemm::split_embedding_codegen_forward_unweighted_cuda", "CUDA")}
T0 = 1_700_000_000  # target timestamp of every synthetic impression (seconds)


def write_dataset(path: str, batch: Dict[str, np.ndarray], num_items: int, num_categories: int,
                  extra: Optional[Dict[str, np.ndarray]] = None, extra_rows: int = 0) -> None:
    """The synthetic batch as a tinrec dataset (train = valid = test = the batch; ids as given), with the id
    columns of ``extra`` (tables of ``extra_rows`` rows each) when given. The trigger of a row (DEI2N's models)
    is its latest behaviour, its page 1 + (row mod 20): functions of the batch, so no model's data changes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinrec.data import format as fmt

    B, L = batch["hist_item"].shape
    ones, hist_ts = np.ones(B, np.int64), T0 - 60 * np.arange(L, 0, -1, dtype=np.int64)  # oldest first
    # seconds watched (CAIN's side information): a function of the batch, read only by the entries that use it
    watch = (5.0 + (batch["hist_item"] % 60)).astype(np.float32)
    lists = lambda a: pa.array(list(np.asarray(a, np.int64)), type=pa.list_(pa.int64()))  # noqa: E731
    cols = {fmt.LABEL: pa.array(batch["label"].astype(np.int8)), "user_id": pa.array(np.arange(1, B + 1)),
            "user_age": pa.array(ones), "user_gender": pa.array(ones),
            "target_item": pa.array(batch["target_item"].astype(np.int64)),
            "target_category": pa.array(batch["target_category"].astype(np.int64)),
            "target_brand": pa.array(ones), "target_author": pa.array(ones),
            fmt.TARGET_TIMESTAMP: pa.array(np.full(B, T0, np.int64)),
            "hist_item": lists(batch["hist_item"]), "hist_category": lists(batch["hist_category"]),
            "hist_brand": lists(np.ones((B, L))), "hist_author": lists(np.ones((B, L))),
            fmt.HIST_TIMESTAMP: lists(np.broadcast_to(hist_ts, (B, L))),
            fmt.HIST_WATCH_TIME: pa.array(list(watch), type=pa.list_(pa.float32())),
            "trigger_item": pa.array(batch["hist_item"][:, -1].astype(np.int64)),
            "trigger_category": pa.array(batch["hist_category"][:, -1].astype(np.int64)),
            fmt.PAGE: pa.array((1 + np.arange(B) % 20).astype(np.int32))}
    cols.update({name: pa.array(ids.astype(np.int64)) for name, ids in (extra or {}).items()})
    table = pa.table(cols)
    for split in fmt.SPLITS:
        os.makedirs(os.path.join(path, split), exist_ok=True)
        pq.write_table(table, os.path.join(path, split, "part-00000.parquet"))
    meta = {"format_version": fmt.FORMAT_VERSION, "generator": None,
            "tables": {"user": B + 1, "item": num_items + 1, "category": num_categories + 1, "brand": 2,
                       "author": 2, "age": 2, "gender": 2, "page": 21, **{name: extra_rows for name in (extra or {})}},
            "splits": {s: {"rows": B, "files": [f"{s}/part-00000.parquet"]} for s in fmt.SPLITS}, "max_seq_len": L,
            "mean_history_length": float(L)}
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)


def rows_from_data(raw: Dict[str, object]) -> Dict[str, object]:
    """A raw config with every table sized by the dataset (``rows: auto``) and free to take any sharding: a
    production config's model on the benchmark's synthetic data."""
    for tables in raw["model"]["embeddings"].values():
        for spec in tables.values():
            spec["rows"] = "auto"
            spec.pop("sharding_types", None)
    return raw


def lookup_bytes(cfg, seq_len: int) -> Dict[str, int]:
    """Embedding bytes per sample of the sequence lookups (fp32): two floors on the traffic.

    Per behaviour and per sequence feature of width d, lookup by lookup (``train`` / ``infer``): inference
    reads the row and writes it into the sequence tensor (2 * 4d bytes); training adds reading its gradient
    and reading + writing the row in the fused optimizer update (5 * 4d). That is what every lookup moves
    when each occurrence is looked up and updated on its own. Index dedup (``train.index_dedup``) reads and
    updates each distinct row once per batch, so the part that no implementation avoids is smaller:
    ``train_sequence_tensor`` counts only writing the sequence tensor and reading its gradient (2 * 4d),
    a floor that even dedup cannot go under as long as the sequence tensor is materialised. Scalar features
    (target, user) are left out (L times smaller).
    """
    from tinrec.features import is_sequence

    width = sum(t.dim for t in cfg.model.tables.values() for f in t.features if is_sequence(f))
    return {"per_behaviour_width": width, "train": 5 * 4 * width * seq_len, "infer": 2 * 4 * width * seq_len,
            "train_sequence_tensor": 2 * 4 * width * seq_len}


def has_fused_kernels(device_type: str) -> bool:
    """Whether the installed fbgemm-gpu has its fused embedding kernel for ``device_type`` ("cpu" / "cuda")."""
    import fbgemm_gpu  # noqa: F401  (defines the ops)
    import torch

    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(*FUSED_LOOKUP_OP[device_type])
    except RuntimeError:  # the op is not defined by this build
        return False


def sparse_path(device) -> Dict[str, str]:
    """Which embedding path a run takes: the device, the fbgemm-gpu build installed (``fbgemm-gpu`` is the CUDA
    build, ``fbgemm-gpu-cpu`` the CPU one) and whether its fused embedding kernels exist for that device."""
    import torch

    from benchmarks.run import versions

    builds = [f"{dist} {v}" for dist, v in versions().items() if dist.startswith("fbgemm")]
    fused = has_fused_kernels(device.type)
    return {"device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "fbgemm": ", ".join(builds) or "none", "fused_kernels_on_device": "yes" if fused else "no"}


def _median_rate(step: Callable[[], None], batch: int, warmup: int, steps: int,
                 sync: Callable[[], None] = lambda: None) -> Dict[str, float]:
    """Median step rate; ``sync`` waits for queued device work (``torch.cuda.synchronize`` on a GPU), before
    the clock starts and before it stops, so a step is timed to its end and not to its last kernel launch."""
    for _ in range(warmup):
        step()
    times: List[float] = []
    for _ in range(steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"samples_per_s": batch / med, "step_s_median": med, "step_s_min": min(times), "steps": steps}


STAGES = ("sparse_arch", "input_arch", "interest_arch", "over_arch")
"""The model's stages (``tinrec/model.py``) whose forward time the profile reports on its own."""


def profile_steps(step: Callable[[], None], steps: int, model, top: int = 15) -> Dict[str, object]:
    """Where a training step goes: torch.profiler over ``steps`` steps (after the timed ones).

    Returns ``forward_ms`` (each stage's forward, wall time per step: its span, child ops included),
    ``step_ms`` (the whole step) and ``top_ops`` (the ``top`` operators by self CPU time per step, backward and
    optimizer included, each with its share of the summed self time).
    """
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    handles, open_ranges = [], {}
    for name, mod in model.named_modules():
        stage = name.rsplit(".", 1)[-1]
        if stage in STAGES:
            def pre(_m, _a, stage=stage):
                open_ranges[stage] = record_function(f"stage::{stage}")
                open_ranges[stage].__enter__()

            def post(_m, _a, _o, stage=stage):
                open_ranges.pop(stage).__exit__(None, None, None)

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                with record_function("stage::step"):
                    step()
    finally:
        for h in handles:
            h.remove()
    events = prof.key_averages()
    spans = {e.key.split("::", 1)[1]: e.cpu_time_total / 1000 / steps for e in events if e.key.startswith("stage::")}
    ops = [e for e in events if not e.key.startswith("stage::")]
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    return {"steps": steps, "step_ms": spans.pop("step", None), "forward_ms": spans,
            "top_ops": [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
                         "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
                        for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:top]]}


def main(argv=None) -> Dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--num-items", type=int, default=100_000)
    ap.add_argument("--num-categories", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-module", action="store_true", help="skip the module-alone measurement")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="also profile STEPS training steps of the TorchRec path (stage forwards, top operators)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cpu: CUDA hidden from this process even on a GPU machine; cuda: GPU 0 (needs the CUDA "
                         "build of fbgemm-gpu for the TorchRec path's fused kernels)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides (e.g. train.sparse_optimizer.name=sgd), recorded in the result")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch initialises CUDA: tinrec would pick the GPU

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    torch.set_num_threads(args.threads)
    from benchmarks.models import MODELS
    import yaml

    from benchmarks.synthetic import extra_ids, make_batch
    from tinrec.config import load_config, read_yaml
    from tinrec.model import build_model
    from tinrec.distributed import init_distributed
    from tinrec.train import Data, build_training, peak_memory_mib, seed_everything

    if args.model not in MODELS:
        raise SystemExit(f"--model: {args.model!r} is not in benchmarks/models.py MODELS ({', '.join(MODELS)})")
    entry, B, L = MODELS[args.model], args.batch, args.seq_len
    if entry.num_categories is not None:
        args.num_categories = entry.num_categories
    out: Dict[str, object] = {"model": args.model, "seq_len": L, "batch": B, "dim": args.dim,
                              "threads": torch.get_num_threads(), "config": entry.config,
                              "num_categories": args.num_categories,
                              "overrides": entry.resolved(args.dim) + list(args.set)}
    with tempfile.TemporaryDirectory(prefix="tinrec-bench-") as tmp:
        data_path = os.path.join(tmp, "data")
        config, extra, extra_rows = entry.config, None, 0
        if entry.extra_features:  # id families in the data; every table of the config sized by it
            families = dict(entry.extra_features)
            extra_rows = families.pop("rows")
            extra = extra_ids(B, families, extra_rows, seed=args.seed)
            config = os.path.join(tmp, "config.yaml")
            with open(config, "w") as f:
                yaml.safe_dump(rows_from_data(read_yaml(entry.config)), f)
            out["extra_fields"] = len(extra)
        write_dataset(data_path, make_batch(B, L, num_items=args.num_items, num_categories=args.num_categories,
                                            seed=args.seed), args.num_items, args.num_categories, extra, extra_rows)
        cfg = load_config(config, [f"data.path={data_path}", f"data.max_len={L}", f"train.batch_size={B}",
                                         "data.num_workers=0", f"run_dir={tmp}/run", f"seed={args.seed}",
                                         *entry.resolved(args.dim), *args.set])
        env = init_distributed()
        sync = (lambda: torch.cuda.synchronize(env.device)) if env.device.type == "cuda" else (lambda: None)
        out["path"] = sparse_path(env.device)
        data = Data(cfg, env)
        batch = next(iter(data.loader(data.stream("train", train=True))))
        out["lookup_bytes"] = lookup_bytes(cfg, L)
        if data.searches:  # searched sequences (SIM hard in the loader): the behaviours they keep per sample
            out["searched_per_sample"] = {s: float(batch.lengths[s].float().mean()) for s in data.searches}

        # ---- TorchRec path: DMP + fused optimizer + the training loop's pipeline (TrainPipelineSparseDist + guard) ----
        model, optimizer, _, pipeline = build_training(cfg, data, env)
        batches = itertools.repeat(batch)
        model.train()
        out["torchrec_train"] = _median_rate(lambda: pipeline.progress(batches), B, args.warmup, args.steps, sync)
        if args.profile:
            out["profile_train"] = profile_steps(lambda: pipeline.progress(batches), args.profile, model)
        model.eval()
        with torch.no_grad():
            out["torchrec_infer"] = _median_rate(lambda: pipeline.progress(batches), B, args.warmup, args.steps,
                                                 sync)
        peak = peak_memory_mib(env.device)
        out["peak_rss_mib"] = peak["host_rss"]
        if "cuda_allocated" in peak:
            out["peak_cuda_mib"] = peak["cuda_allocated"]
        del pipeline, model, optimizer

        # ---- the interest module alone, on the embedded inputs of the same batch ----
        if not args.no_module:
            seed_everything(args.seed)
            plain = build_model(cfg, data.rows, sparse_device=env.device).to(env.device)
            name, module = next(iter(plain.interest_modules().items()))  # the first (of several experts: its own cost)
            out["module"] = name
            with torch.no_grad():
                inputs = plain.module_inputs(batch.to(env.device))[name]
            inputs = {k: (v.detach().requires_grad_(True) if torch.is_tensor(v) and v.is_floating_point() else v)
                      for k, v in inputs.items()}

            leaves = [v for v in inputs.values() if torch.is_tensor(v) and v.requires_grad]

            def train_step() -> None:
                # fresh gradients each step, as a training step has them (accumulating into .grad would add a
                # read + write of every [B, L, D] input gradient that the TorchRec path never does)
                module.zero_grad(set_to_none=True)
                for v in leaves:
                    v.grad = None
                res = module(**inputs)
                loss = res[0].sum() + sum(res[1].values()) if isinstance(res, tuple) else res.sum()
                loss.backward()

            module.train()
            out["module_train"] = _median_rate(train_step, B, args.warmup, args.steps, sync)
            module.eval()
            with torch.no_grad():
                out["module_infer"] = _median_rate(lambda: module(**inputs), B, args.warmup, args.steps, sync)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return out


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(json.dumps(main()), flush=True)
