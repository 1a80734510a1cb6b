"""The one training loop: DMP (always, world size 1 included) + fused sparse optimizer + TrainPipelineSparseDist.

Run as ``tinrec train CONFIG [key=value ...] [--resume]``, alone or under ``torchrun`` (gloo on CPU, nccl on
CUDA; the device comes from ``LOCAL_RANK``). Every rank runs the same number of steps per epoch (computed
from row-group metadata), evaluation pads short ranks with zero-weight batches, and metrics are computed
over the whole split.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import signal
import time
from itertools import islice
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from iopath.common.file_io import g_pathmgr
from torch.utils.data import DataLoader
from torchrec.distributed import DistributedModelParallel
from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm import tqdm

from tinrec import checkpoint as ckpt
from tinrec import hostmem
from tinrec.config import Config, to_dict
from tinrec.data.batch import Batch
from tinrec.data.derived import sequences_of
from tinrec.data.reader import ParquetStream, consumed_per_worker, list_units, read_kinds, required_columns
from tinrec.data.schema import read_meta, split_files
from tinrec.data.timebins import load_or_compute_edges
from tinrec.distributed import DistEnv, barrier, collective_timeout, init_distributed, main_first, sum_ranks
from tinrec.features import feature_rows, resolve_rows, used_features
from tinrec.inputs import dense_used
from tinrec.guard import GuardedPipeline, NonFiniteError, NonFiniteGuard
from tinrec.metrics import EvalAccumulator
from tinrec.model import build_model
from tinrec.results import write_json
from tinrec.optim import attach_sparse_optimizer, combined_optimizer
from tinrec.sharding import load_plan, make_plan, sharders
from tinrec.state import check_identical, sync as state_sync

log = logging.getLogger(__name__)

FAIL_AT_STEP = "TINREC_FAIL_AT_STEP"  # fault injection for restart tests: crash once after this global step
HANG_AT_STEP = "TINREC_HANG_AT_STEP"  # fault injection: "STEP:RANK" stops (SIGSTOP) that rank once after STEP


def _parquet_files(path: str, depth: int = 2) -> List[str]:
    """Parquet files in ``path`` and its sub-folders (``depth`` levels), for the "not a dataset" check."""
    if not g_pathmgr.isdir(path):
        return []
    found = []
    for name in sorted(g_pathmgr.ls(path)):
        sub = posixpath.join(path, name)
        if name.endswith(".parquet"):
            found.append(sub)
        elif depth > 1 and g_pathmgr.isdir(sub):
            found += _parquet_files(sub, depth - 1)
    return found


def _plan_summary(plan: Any) -> str:
    """``table: sharding type`` for every table of a ShardingPlan, on one line."""
    return ", ".join(f"{t}: {p.sharding_type}" for mod in plan.plan.values() for t, p in mod.items())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------


class Data:
    """The dataset of a config: meta, table sizes, time-bin edges, row groups per split."""

    def __init__(self, cfg: Config, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        path = cfg.data.path
        with main_first(env):
            if env.is_main:
                self._prepare(path)
        self.meta = read_meta(path)
        self.rows = resolve_rows(cfg, self.meta)
        self.features = used_features(cfg)
        self.dense = dense_used(cfg)
        self.feature_rows = feature_rows(cfg, self.rows)
        self.edges: Dict[str, np.ndarray] = {}
        self.max_lens = {s: cfg.data.max_len_of(s) for s in sequences_of(self.features, self.dense)}
        self._units: Dict[str, list] = {}
        for split in ("train", "valid", "test"):
            self.units(split)  # every file's schema, before anything reads a row
        with main_first(env):  # each sequence whose time-interval bins some feature reads
            for seq in dict.fromkeys(f.rsplit("_time_bin", 1)[0] for f in self.features
                                     if f.endswith("_time_bin") and f != "target_time_bin"):
                self.edges[seq] = load_or_compute_edges(path, split_files(path, "train", self.meta),
                                                        cfg.data.time_bins, sequence=seq)

    def _prepare(self, path: str) -> None:
        """Rank 0: generate the dataset if it is missing (only into a folder tinrec may write), then check it
        on first use (``data.check``)."""
        if not g_pathmgr.exists(posixpath.join(path, "meta.json")):
            parquet = _parquet_files(path)
            if parquet:
                raise ValueError(f"data.path: {path} holds Parquet files ({parquet[0]}, ...) but no meta.json, so "
                                 f"tinrec neither reads it nor generates data into it: write a meta.json "
                                 f"(docs/data.md) or infer one from the files with `tinrec make-meta {path}`")
            if self.cfg.data.generate is None:
                raise ValueError(f"data.path: {path} has no meta.json and data.generate is not set")
            from tinrec.data.generate import generate_dataset

            log.info("dataset %s has no meta.json: generating it from data.generate", path)
            generate_dataset(path, **self.cfg.data.generate)
        if self.cfg.data.check:
            from tinrec.data.scan import cached_check, first_problem, format_report

            report = cached_check(path, read_meta(path), show_progress=True)
            for w in report["warnings"]:
                log.warning("%s (%d %s)", w["examples"][0], w["count"], w["unit"])
            if not report["ok"]:
                log.debug("%s", format_report(report))
                raise ValueError(first_problem(report))

    def units(self, split: str) -> list:
        if split not in self._units:
            files = split_files(self.cfg.data.path, split, self.meta)
            self._units[split] = list_units(files, required_columns(self.features, self.dense, self.cfg.data.labels),
                                            read_kinds(self.features, self.dense))
        return self._units[split]

    def stream(self, split: str, *, epoch: int = 0, train: bool = False, skip=None) -> ParquetStream:
        c = self.cfg
        return ParquetStream(
            units=self.units(split), features=self.features, feature_rows=self.feature_rows,
            batch_size=c.train.batch_size if train else c.train.eval_batch_size, max_len=c.data.max_len,
            time_bin_edges=self.edges, max_lens=self.max_lens, rank=self.env.rank, world_size=self.env.world_size,
            num_workers=c.data.num_workers, seed=c.seed, epoch=epoch, shuffle=train and c.data.shuffle,
            drop_last=train, skip=skip, dense_sequence=self.dense, labels=c.data.labels)

    def loader(self, stream: ParquetStream) -> DataLoader:
        return DataLoader(stream, batch_size=None, num_workers=self.cfg.data.num_workers,
                          persistent_workers=False)

    def steps_per_epoch(self) -> int:
        """Training steps per epoch, equal on every rank: the smallest rank's full-batch count."""
        s = self.stream("train", train=True)
        steps = min(sum(s.worker_batches(r)) for r in range(self.env.world_size))
        if steps == 0:
            raise ValueError(f"{self.cfg.data.path}: the train split has fewer rows per rank than "
                             f"train.batch_size={self.cfg.train.batch_size}")
        return steps

    def adjustments(self, truncated_rows: int) -> Dict[str, int]:
        """What training silently adjusts, per epoch: train rows left out so that every rank runs the same
        number of full batches, and rows whose history was cut to ``data.max_len`` (``truncated_rows``)."""
        rows = sum(u.rows for u in self.units("train"))
        used = self.steps_per_epoch() * self.cfg.train.batch_size * self.env.world_size
        return {"train_rows": rows, "train_rows_used_per_epoch": used, "train_rows_left_out_per_epoch": rows - used,
                "histories_truncated_to_max_len": truncated_rows, "max_len": self.cfg.data.max_len}

    @staticmethod
    def describe(adjusted: Dict[str, int]) -> str:
        return (f"{adjusted['train_rows_left_out_per_epoch']} of {adjusted['train_rows']} train rows left out "
                f"(full batches, equal steps on every rank); {adjusted['histories_truncated_to_max_len']} "
                f"histories cut to the most recent data.max_len={adjusted['max_len']}")

    def train_batches(self, epoch: int, start_step: int, steps: int) -> Iterator[Batch]:
        probe = self.stream("train", epoch=epoch, train=True)
        skip = consumed_per_worker(start_step, probe.worker_batches())
        stream = self.stream("train", epoch=epoch, train=True, skip=skip)
        return islice(iter(self.loader(stream)), steps - start_step)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        """Every sample of the split once, plus zero-weight padding so all ranks run the same steps."""
        stream = self.stream(split)
        total = max(sum(stream.worker_batches(r)) for r in range(self.env.world_size))
        n, last = 0, None
        for batch in self.loader(stream):
            n, last = n + 1, batch
            yield batch
        pad = last.as_padding() if last is not None else Batch.dummy(self.features, self.dense,
                                                                     len(self.cfg.data.labels))
        for _ in range(total - n):
            yield pad


# ------------------------------------------------------------------------------------------------------------
# Model, optimizers
# ------------------------------------------------------------------------------------------------------------


def build_training(cfg: Config, data: Data, env: DistEnv):
    """Host memory setting -> model on meta -> fused sparse optimizer -> plan -> DMP -> combined optimizer."""
    hostmem.configure(cfg.train.host_memory)
    seed_everything(cfg.seed)
    model = build_model(cfg, data.rows)
    attach_sparse_optimizer(cfg, model.sparse_arch, env.device.type)
    model.dense_arch.zero_nonfinite_lookup_grads = cfg.train.on_nonfinite == "skip"
    if cfg.plan:
        shapes = {n: [data.rows[n], t.dim] for n, t in cfg.model.tables.items()}
        plan = load_plan(cfg.plan, world_size=env.world_size, tables=shapes, compute_device=env.device.type)
    else:
        plan = make_plan(model, cfg, world_size=env.world_size, local_world_size=env.local_world_size,
                         device=env.device, batch_size=cfg.train.batch_size)
    dmp = DistributedModelParallel(model, device=env.device, plan=plan, sharders=sharders(cfg))
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    optimizer = combined_optimizer(cfg, dmp.fused_optimizer, dense_params)
    guard = NonFiniteGuard(mode=cfg.train.on_nonfinite, dense_params=dense_params.values(),
                           state=dmp.module.cross_batch_buffers())  # after DMP: the buffers' final tensors
    pipeline = GuardedPipeline(dmp, optimizer, env.device, guard)
    return dmp, optimizer, plan, pipeline


def evaluate(pipeline: GuardedPipeline, model: torch.nn.Module, data: Data, split: str,
             show_progress: bool) -> Dict[str, Any]:
    model.eval()
    acc = EvalAccumulator(data.cfg.data.labels)
    pipeline.truncated = 0
    it = data.eval_batches(split)
    bar = tqdm(desc=f"eval {split}", unit="batch", disable=not show_progress, leave=False)
    with torch.no_grad():
        while True:
            try:
                logits, labels, users, weights, _ = pipeline.progress(it)
            except StopIteration:
                break
            acc.add(logits, labels, users, weights)
            bar.update(1)
    bar.close()
    model.train()
    return dict(acc.compute(), histories_truncated_to_max_len=sum_ranks(pipeline.truncated))


# ------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------


def format_table(metrics: Dict[str, Dict[str, Any]]) -> str:
    """The splits' AUC / GAUC / logloss table; with several labels one row per split and label."""
    def num(v: Any, width: int) -> str:
        return f"{v:{width}.4f}" if v is not None else f"{'n/a':>{width}}"

    rows = []  # (name, metrics)
    for split, m in metrics.items():
        labels = m.get("labels")
        rows += [(f"{split} {name}", lm) for name, lm in labels.items()] if labels else [(split, m)]
    w = max(6, *(len(name) for name, _ in rows))
    out = [f"{'split':{w}s} |    AUC |   GAUC | logloss | samples", f"{'-' * w} | ------ | ------ | ------- | -------"]
    notes = []
    for name, m in rows:
        out.append(f"{name:{w}s} | {num(m['auc'], 6)} | {num(m['gauc'], 6)} | {num(m['logloss'], 7)} | "
                   f"{m['samples']:7d}")
        notes += [f"{name} {k[:-len('_unavailable')]}: n/a, {v}" for k, v in m.items() if k.endswith("_unavailable")]
    return "\n".join(out + notes)


def peak_memory_mib(device: torch.device) -> Dict[str, float]:
    """Peak memory of this process in MiB: resident host memory (``ru_maxrss``; the trainer only, not its data
    loader workers) and, on CUDA, the peak of memory allocated by tensors on ``device``."""
    import resource

    peak = {"host_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}  # Linux: KiB
    if device.type == "cuda":
        peak["cuda_allocated"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def _maybe_fail(run_dir: str, step: int, rank: int) -> None:
    at = os.environ.get(FAIL_AT_STEP)
    marker = os.path.join(run_dir, ".fault-injected")
    if at is not None and step == int(at) and not os.path.exists(marker):
        open(marker, "w").close()
        log.error("%s=%s: injected crash after step %d", FAIL_AT_STEP, at, step)
        os._exit(13)
    hang = os.environ.get(HANG_AT_STEP)
    marker = os.path.join(run_dir, ".hang-injected")
    if hang is not None and (step, rank) == tuple(int(x) for x in hang.split(":")) and not os.path.exists(marker):
        open(marker, "w").close()
        log.error("%s=%s: rank %d stops itself (SIGSTOP) after step %d", HANG_AT_STEP, hang, rank, step)
        os.kill(os.getpid(), signal.SIGSTOP)


class LossLog:
    """Means of the named loss terms of the steps run (``loss``, their sum, first): over the current log window
    (progress bar, TensorBoard) and over the epoch (``metrics.json`` ``train.losses``). This rank's batches."""

    def __init__(self) -> None:
        self.window: Dict[str, float] = {}
        self.epoch: Dict[str, float] = {}
        self.window_n = self.epoch_n = 0

    def add(self, terms: Dict[str, torch.Tensor]) -> None:
        values = dict(zip(terms, torch.stack(list(terms.values())).tolist()))  # one host sync for all terms
        values = {"loss": sum(values.values()), **values}
        for acc in (self.window, self.epoch):
            for k, v in values.items():
                acc[k] = acc.get(k, 0.0) + v
        self.window_n, self.epoch_n = self.window_n + 1, self.epoch_n + 1

    def take_window(self) -> Dict[str, float]:
        means = {k: v / self.window_n for k, v in self.window.items()} if self.window_n else {}
        self.window, self.window_n = {}, 0
        return means

    def epoch_means(self) -> Dict[str, float]:
        return {k: v / self.epoch_n for k, v in self.epoch.items()}


def _nonfinite_message(cfg: Config, guard: NonFiniteGuard, g: int, epoch: int, step: int, steps: int,
                       last_ckpt: Optional[str]) -> str:
    inc = guard.incident
    kept = f"the last checkpoint, {last_ckpt}, is kept" if last_ckpt else "no checkpoint had been written"
    return (f"train step {g} (epoch {epoch + 1}, step {step} of {steps}): non-finite {inc.what}: {inc.detail}; "
            f"stopped before updating the model: nothing is saved after it and {kept}. Lower "
            f"train.dense_optimizer.lr / train.sparse_optimizer.lr, or set train.on_nonfinite=skip to skip such "
            f"batches")


def train(cfg: Config, *, resume: bool = False) -> Dict[str, Dict[str, Any]]:
    """Train ``cfg``; return ``{"valid": {...}, "test": {...}}`` (also written to run_dir/metrics.json).

    Raises NonFiniteError at the first non-finite loss or gradient with ``train.on_nonfinite: stop``, and
    CollectiveTimeout when a rank stops responding for ``train.collective_timeout_s``.
    """
    env = init_distributed(cfg.train.collective_timeout_s)
    with collective_timeout(env, cfg.train.collective_timeout_s):
        return _train(cfg, env, resume)


def _train(cfg: Config, env: DistEnv, resume: bool) -> Dict[str, Dict[str, Any]]:
    run_dir = cfg.run_dir
    ckpt_root = os.path.join(run_dir, "checkpoints")
    if env.is_main:
        os.makedirs(run_dir, exist_ok=True)
        if not resume and ckpt.latest(ckpt_root) is not None:
            raise ValueError(f"run_dir: {run_dir} already holds checkpoints; pass --resume to continue that run "
                             f"or set run_dir=<new folder> (existing checkpoints are never overwritten)")
        write_json(os.path.join(run_dir, "config.json"), to_dict(cfg))
    barrier()
    data = Data(cfg, env)
    model, optimizer, plan, pipeline = build_training(cfg, data, env)
    guard = pipeline.guard
    if env.is_main:
        log.info("sharding: %s (the full plan with --verbose)", _plan_summary(plan))
        log.debug("sharding plan:\n%s", plan)
    steps_per_epoch = data.steps_per_epoch()
    state: Dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "valid": [],
                             "nonfinite_skipped": 0, "nonfinite_skipped_steps": []}
    if resume and (path := ckpt.latest(ckpt_root)) is not None:
        state = dict(state, **ckpt.load(path, model, optimizer))
        log.info("resumed from %s (epoch %d, step %d)", path, state["epoch"], state["step_in_epoch"])
    elif cfg.checkpoint:
        ckpt.load(cfg.checkpoint, model)
        log.info("initialised weights from %s", cfg.checkpoint)
    if state.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
        raise ValueError(f"{ckpt_root}: the checkpoint was taken with {state['steps_per_epoch']} steps per epoch, "
                         f"this job has {steps_per_epoch} (world size or batch size changed)")
    guard.skipped, guard.skipped_steps = state["nonfinite_skipped"], list(state["nonfinite_skipped_steps"])

    writer = None
    if env.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(run_dir, "tb"))
    max_steps = cfg.train.max_steps
    show = env.is_main
    done = False

    def save(epoch: int, step_in_epoch: int) -> None:
        check_identical(guard.state)
        state.update(epoch=epoch, step_in_epoch=step_in_epoch, steps_per_epoch=steps_per_epoch,
                     nonfinite_skipped=guard.skipped, nonfinite_skipped_steps=guard.skipped_steps)
        ckpt.save(ckpt_root, state["global_step"], model, optimizer, state, keep=cfg.train.keep_checkpoints)

    model.train()
    train_samples, train_seconds = 0, 0.0  # this process's training samples and time (evaluation excluded)
    valid = None  # the last evaluation of the current weights, reused for the final table
    while state["epoch"] < cfg.train.epochs and not done:
        epoch, start = state["epoch"], state["step_in_epoch"]
        batches = data.train_batches(epoch, start, steps_per_epoch)
        bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   unit="step", disable=not show, dynamic_ncols=True)
        t0, seen = time.perf_counter(), 0
        losses = LossLog()
        step = start
        pipeline.truncated = 0
        while True:
            try:
                out = pipeline.progress(batches)
            except StopIteration:
                break
            step += 1
            state["global_step"] += 1
            g = state["global_step"]
            seen += int(out[1].shape[0])
            if guard.incident is not None:
                if guard.mode == "stop":
                    bar.close()
                    if writer is not None:
                        writer.close()
                    raise NonFiniteError(_nonfinite_message(cfg, guard, g, epoch, step, steps_per_epoch,
                                                            ckpt.latest(ckpt_root)))
                guard.record_skip(g)
                guard.undo_state()
                log.warning("step %d: skipped, non-finite %s: %s (%d skipped so far)", g, guard.incident.what,
                            guard.incident.detail, guard.skipped)
            else:
                losses.add(out[4])
            state_sync(guard.state)
            bar.update(1)
            if g % cfg.train.log_every == 0 and writer is not None:
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                window = losses.take_window()
                for name, value in window.items():
                    writer.add_scalar("train/loss" if name == "loss" else f"train/loss/{name}", value, g)
                writer.add_scalar("train/samples_per_s", rate, g)
                post = {k: f"{v:.4f}" for k, v in window.items() if k != "bce" or len(window) > 2} or {"loss": "n/a"}
                post["sps"] = f"{rate:.0f}"
                if guard.skipped:
                    writer.add_scalar("train/nonfinite_skipped", guard.skipped, g)
                    post["skipped"] = str(guard.skipped)
                bar.set_postfix(post)
            stopping = max_steps is not None and g >= max_steps
            # a periodic checkpoint at the run's last step would be written again below, after evaluation
            if cfg.train.checkpoint_every and g % cfg.train.checkpoint_every == 0 and step < steps_per_epoch \
                    and not stopping:
                save(epoch, step)
            _maybe_fail(run_dir, g, env.rank)
            if stopping:
                done = True
                # the pipeline has already queued the next training batches: drop them so that the
                # evaluation below sees only its own split
                if hasattr(pipeline, "reset"):
                    pipeline.reset()
                break
        bar.close()
        train_samples, train_seconds = train_samples + seen, train_seconds + time.perf_counter() - t0
        epoch_truncated = sum_ranks(pipeline.truncated)
        if losses.epoch_n:
            state.setdefault("train_losses", []).append(dict(losses.epoch_means(), epoch=epoch + 1,
                                                             steps=losses.epoch_n))
        if step < steps_per_epoch and not done:
            raise RuntimeError(f"epoch {epoch + 1} ended after {step} of {steps_per_epoch} steps")
        finished_epoch = step >= steps_per_epoch
        valid = evaluate(pipeline, model, data, "valid", show)
        state["valid"].append(dict(valid, epoch=epoch + 1, step=state["global_step"]))
        if writer is not None:
            for k in ("auc", "gauc", "logloss"):
                if valid[k] is not None:
                    writer.add_scalar(f"valid/{k}", valid[k], state["global_step"])
        state["truncated_rows"] = state.get("truncated_rows", 0) + epoch_truncated
        if env.is_main:
            log.info("epoch %d valid: %s", epoch + 1, ", ".join(
                f"{k} {valid[k]:.4f}" if valid[k] is not None else f"{k} n/a" for k in ("auc", "gauc", "logloss")))
            log.info("epoch %d data: %s", epoch + 1, data.describe(data.adjustments(epoch_truncated)))
        save(epoch + 1 if finished_epoch else epoch, 0 if finished_epoch else step)

    metrics = {"valid": valid if valid is not None else evaluate(pipeline, model, data, "valid", show),
               "test": evaluate(pipeline, model, data, "test", show)}
    if writer is not None:
        for k in ("auc", "gauc", "logloss"):
            if metrics["test"][k] is not None:
                writer.add_scalar(f"test/{k}", metrics["test"][k], state["global_step"])
        writer.close()
    if env.is_main:
        write_json(os.path.join(run_dir, "metrics.json"),
                   dict(metrics, global_step=state["global_step"], world_size=env.world_size,
                        train={"samples": train_samples, "seconds": train_seconds,
                               "samples_per_s": train_samples / max(train_seconds, 1e-9),
                               "losses": state.get("train_losses", []),
                               "nonfinite_skipped": guard.skipped,
                               "nonfinite_skipped_steps": guard.skipped_steps},
                        data=data.adjustments(state.get("truncated_rows", 0)),
                        peak_memory_mib=peak_memory_mib(env.device)))
        print(format_table(metrics), flush=True)
        if guard.skipped:
            print(f"skipped {guard.skipped} training step(s) with a non-finite loss or gradient "
                  f"(train.on_nonfinite=skip; steps {', '.join(map(str, guard.skipped_steps))}"
                  f"{', ...' if guard.skipped > len(guard.skipped_steps) else ''})", flush=True)
    barrier()
    return metrics


def evaluate_checkpoint(cfg: Config) -> Dict[str, Dict[str, Any]]:
    """``tinrec eval``: load ``cfg.checkpoint`` (or the run's latest) and evaluate valid and test."""
    env = init_distributed(cfg.train.collective_timeout_s)
    with collective_timeout(env, cfg.train.collective_timeout_s):
        return _evaluate_checkpoint(cfg, env)


def _evaluate_checkpoint(cfg: Config, env: DistEnv) -> Dict[str, Dict[str, Any]]:
    path = cfg.checkpoint or ckpt.latest(os.path.join(cfg.run_dir, "checkpoints"))
    if path is None:
        raise ValueError(f"checkpoint: not set and {cfg.run_dir}/checkpoints has no checkpoint")
    data = Data(cfg, env)
    model, _, _, pipeline = build_training(cfg, data, env)
    ckpt.load(path, model)
    metrics = {split: evaluate(pipeline, model, data, split, env.is_main) for split in ("valid", "test")}
    if env.is_main:
        os.makedirs(cfg.run_dir, exist_ok=True)
        write_json(os.path.join(cfg.run_dir, "eval_metrics.json"), dict(metrics, checkpoint=path))
        print(format_table(metrics), flush=True)
    barrier()
    return metrics
