"""``tinrec plan``: embedding-sharding planner dry runs for a GPU cluster, on a machine without one.

The model is built on ``meta`` (no memory), the sparse optimizer is attached exactly as training attaches
it (so the planner counts its state), the cluster is described as a TorchRec ``Topology`` (H100 defaults
below), and ``EmbeddingShardingPlanner.plan`` runs without a process group. The report lists every table's
sharding type, kernel and ranks, the per-rank HBM / DDR use and the estimated step time split into compute
and communication, and the largest tables. ``--out`` saves the plan (``torch.save`` of TorchRec's
``ShardingPlan`` plus the world size and table shapes it was made for); ``tinrec train ... plan=FILE``
trains on exactly that plan (:func:`load_plan` refuses one made for another world size or other tables).

Pooling factors (mean ids per sample and feature) come from the dataset's ``meta.json``
(``mean_history_length``, capped at ``data.max_len``) when the dataset exists, else from ``data.max_len``
(an upper bound), unless a table sets ``pooling_factor``.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.proposers import GreedyProposer, UniformProposer
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ShardingPlan

from tinrec.config import Config
from tinrec.features import is_sequence, resolve_rows
from tinrec.model import build_model
from tinrec.sharding import constraints

log = logging.getLogger(__name__)
GB = 1024**3


@dataclass
class Cluster:
    """A GPU cluster; defaults describe H100 nodes (8 GPUs, NVLink, 400 Gb/s per GPU between hosts)."""

    nodes: int
    gpus_per_node: int = 8
    hbm_gb: float = 80.0  # per GPU
    ddr_gb: float = 256.0  # host memory per GPU (2 TB per 8-GPU node)
    intra_host_gbps: float = 450.0  # GB/s, NVLink 4
    inter_host_gbps: float = 50.0  # GB/s per GPU (400 Gb/s NIC)
    compute_device: str = "cuda"  # "cpu" plans a gloo job (tests, this machine)

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def topology(self) -> Topology:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Topology(world_size=self.world_size, local_world_size=self.gpus_per_node,
                            compute_device=self.compute_device,
                            hbm_cap=int(self.hbm_gb * GB), ddr_cap=int(self.ddr_gb * GB),
                            intra_host_bw=self.intra_host_gbps * GB / 1000, inter_host_bw=self.inter_host_gbps * GB / 1000)


def pooling_factors(cfg: Config, meta: Optional[Mapping]) -> Tuple[Dict[str, float], str]:
    """Table -> mean ids per sample per feature, and where the numbers came from."""
    mean_len = (meta or {}).get("mean_history_length")
    source = "dataset meta.json" if mean_len else f"data.max_len={cfg.data.max_len} (no dataset statistics)"
    seq = min(float(mean_len), cfg.data.max_len) if mean_len else float(cfg.data.max_len)
    out = {}
    for name, t in cfg.model.tables.items():
        per_feature = [seq if is_sequence(f) else 1.0 for f in t.features]
        out[name] = t.pooling_factor or sum(per_feature) / len(per_feature)
    return out, source


def _meta_or_none(cfg: Config) -> Optional[dict]:
    from tinrec.data.reader import read_meta

    try:
        return read_meta(cfg.data.path)
    except ValueError:
        return None


def plan(cfg: Config, cluster: Cluster, *, batch_size: Optional[int] = None) -> Tuple[ShardingPlan, dict]:
    """Plan ``cfg`` for ``cluster``; returns the plan and a report dict. Raises ValueError if it cannot fit."""
    from tinrec.train import SPARSE_OPTIMIZERS, _opt_kwargs, _pick

    meta = _meta_or_none(cfg)
    rows = resolve_rows(cfg, meta or {"tables": {}})
    model = build_model(cfg, rows)
    sparse_cls = _pick(SPARSE_OPTIMIZERS, cfg.train.sparse_optimizer, "train.sparse_optimizer")
    _apply_optimizer_in_backward(sparse_cls, list(model.sparse_arch.parameters()),
                                 _opt_kwargs(sparse_cls, cfg.train.sparse_optimizer))
    pf, pf_source = pooling_factors(cfg, meta)
    # Greedy + uniform proposals: TorchRec's default adds a grid search whose proposals multiply with the
    # number of tables and sharding types (thousands of partitions for 8 tables at 256 ranks).
    planner = EmbeddingShardingPlanner(topology=cluster.topology(), batch_size=batch_size or cfg.train.batch_size,
                                       constraints=constraints(cfg, cluster.compute_device, pf),
                                       proposer=[GreedyProposer(), UniformProposer()])
    try:
        sharding_plan = planner.plan(model, get_default_sharders())
    except PlannerError as e:
        raise ValueError(explain_failure(cfg, rows, cluster, str(e))) from None
    return sharding_plan, report(cfg, rows, cluster, planner, pf, pf_source)


def _table_bytes(cfg: Config, rows: Mapping[str, int]) -> Dict[str, int]:
    return {n: rows[n] * t.dim * 4 for n, t in cfg.model.tables.items()}


def explain_failure(cfg: Config, rows: Mapping[str, int], cluster: Cluster, raw: str) -> str:
    """Which tables cannot fit, by how much, and what to change (instead of the planner's raw error)."""
    sizes = _table_bytes(cfg, rows)
    optimizer_factor = 2 if cfg.train.sparse_optimizer.name == "adam" else 1  # weights + moments (rowwise: ~0)
    hbm_total = cluster.world_size * cluster.hbm_gb * GB
    need = sum(sizes.values()) * optimizer_factor
    lines = [f"the tables do not fit on {cluster.nodes} x {cluster.gpus_per_node} GPUs with "
             f"{cluster.hbm_gb:g} GB HBM each ({hbm_total / GB:,.0f} GB in all)."]
    for name, b in sorted(sizes.items(), key=lambda kv: -kv[1])[:5]:
        per_gpu = b * optimizer_factor / cluster.world_size
        over = b * optimizer_factor - cluster.hbm_gb * GB
        t = cfg.model.tables[name]
        lines.append(f"  {name}: {rows[name]:,} rows x {t.dim} = {b / GB:,.1f} GB fp32"
                     + (f" (with optimizer state {b * optimizer_factor / GB:,.1f} GB)" if optimizer_factor > 1 else "")
                     + (f", {over / GB:,.1f} GB more than one GPU holds" if over > 0 else "")
                     + f"; {per_gpu / GB:,.2f} GB per GPU if row-wise sharded")
    if need > hbm_total:
        lines.append(f"  all tables need {need / GB:,.0f} GB: {need / hbm_total:.1f}x the cluster's HBM, "
                     f"{(need - hbm_total) / GB:,.0f} GB short.")
    lines.append("Suggestions: more GPUs (--nodes); row_wise / table_row_wise sharding for the largest tables "
                 "(model.tables.NAME.sharding_types=[row_wise]); a smaller dim; rowwise_adagrad instead of adam "
                 "(state per row, not per element); fp16 embedding outputs; fewer rows (hashing).")
    lines.append(f"(planner: {raw.splitlines()[0][:300]})")
    return "\n".join(lines)


def report(cfg: Config, rows: Mapping[str, int], cluster: Cluster, planner, pf: Mapping[str, float],
           pf_source: str) -> dict:
    """Per-table placements and per-rank storage / time estimates from the planner's chosen options."""
    best = getattr(planner, "_best_plan", None) or []
    tables, ranks = {}, {r: {"hbm": 0, "ddr": 0, "compute_ms": 0.0, "comms_ms": 0.0} for r in range(cluster.world_size)}
    for so in best:
        placed = sorted({s.rank for s in so.shards if s.rank is not None})
        tables[so.name] = {"sharding_type": so.sharding_type, "kernel": so.compute_kernel, "ranks": placed,
                           "rows": rows.get(so.name), "dim": cfg.model.tables[so.name].dim if so.name in cfg.model.tables else None,
                           "pooling_factor": round(pf.get(so.name, 0.0), 2)}
        for s in so.shards:
            if s.rank is None:
                continue
            r = ranks[s.rank]
            if s.storage is not None:
                r["hbm"] += s.storage.hbm
                r["ddr"] += s.storage.ddr
            if s.perf is not None:
                r["compute_ms"] += s.perf.fwd_compute + s.perf.bwd_compute
                r["comms_ms"] += s.perf.fwd_comms + s.perf.bwd_comms
    sizes = _table_bytes(cfg, rows)
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {"cluster": vars(cluster) | {"world_size": cluster.world_size}, "pooling_factors_from": pf_source,
            "tables": tables, "ranks": ranks, "largest": [{"table": n, "gb": b / GB} for n, b in largest]}


def format_report(rep: dict) -> str:
    c = rep["cluster"]
    out = [f"cluster: {c['nodes']} x {c['gpus_per_node']} GPUs ({c['world_size']} ranks), {c['hbm_gb']:g} GB HBM "
           f"and {c['ddr_gb']:g} GB DDR per GPU, {c['intra_host_gbps']:g} GB/s intra-host, "
           f"{c['inter_host_gbps']:g} GB/s inter-host; pooling factors from {rep['pooling_factors_from']}", "",
           "table | rows | dim | sharding | kernel | ranks", "--- | --- | --- | --- | --- | ---"]
    for name, t in sorted(rep["tables"].items()):
        rk = t["ranks"]
        rk_s = f"{rk[0]}-{rk[-1]}" if len(rk) > 2 and rk == list(range(rk[0], rk[-1] + 1)) else ",".join(map(str, rk))
        out.append(f"{name} | {t['rows']:,} | {t['dim']} | {t['sharding_type']} | {t['kernel']} | {rk_s}")
    out += ["", "rank | HBM GB | DDR GB | compute ms | comms ms", "--- | --- | --- | --- | ---"]
    items = list(rep["ranks"].items())
    shown = items if len(items) <= 16 else items[:8] + [("...", None)] + items[-4:]
    for r, v in shown:
        if v is None:
            out.append("... | | | |")
            continue
        out.append(f"{r} | {v['hbm'] / GB:.2f} | {v['ddr'] / GB:.2f} | {v['compute_ms']:.2f} | {v['comms_ms']:.2f}")
    worst = max(rep["ranks"].values(), key=lambda v: v["compute_ms"] + v["comms_ms"])
    out += ["", f"estimated step (slowest rank): {worst['compute_ms']:.2f} ms compute + {worst['comms_ms']:.2f} ms "
            f"communication (sparse part, per the planner's model)",
            "largest tables: " + ", ".join(f"{x['table']} {x['gb']:,.1f} GB" for x in rep["largest"])]
    return "\n".join(out)


def save_plan(path: str, sharding_plan: ShardingPlan, cfg: Config, world_size: int) -> None:
    rows = resolve_rows(cfg, _meta_or_none(cfg) or {"tables": {}})
    shapes = {n: [rows[n], t.dim] for n, t in cfg.model.tables.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"format": "tinrec-plan-1", "world_size": world_size, "tables": shapes, "plan": sharding_plan}, path)


def load_plan(path: str, *, world_size: int, tables: Mapping[str, List[int]]) -> ShardingPlan:
    """The plan in ``path``, checked against the job's world size and table shapes (ValueError otherwise)."""
    if not os.path.exists(path):
        raise ValueError(f"plan: {path}: file not found")
    saved = torch.load(path, weights_only=False)
    if not isinstance(saved, dict) or saved.get("format") != "tinrec-plan-1":
        raise ValueError(f"plan: {path}: not a plan written by `tinrec plan --out`")
    if saved["world_size"] != world_size:
        raise ValueError(f"plan: {path} was made for {saved['world_size']} ranks, this job has {world_size}; "
                         f"plan again with --nodes/--gpus-per-node matching the job")
    if {k: list(v) for k, v in saved["tables"].items()} != {k: list(v) for k, v in tables.items()}:
        raise ValueError(f"plan: {path} was made for tables {saved['tables']}, this config has {dict(tables)}")
    return saved["plan"]
