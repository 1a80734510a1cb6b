"""``tinrec plan``: embedding-sharding planner dry runs for a GPU cluster, on a machine without one.

The model is built on ``meta`` (no memory), the sparse optimizer is attached exactly as training attaches
it (so the planner counts its state), the cluster is described to TorchRec through ``TopologyFactory``
(dry-run HBM / DDR, NVLink and NIC bandwidths; H100 defaults below; plain ``Topology`` where the factory is
missing), and ``EmbeddingShardingPlanner.plan`` runs without a process group. The report lists every
table's sharding type, kernel and ranks, the per-rank HBM / DDR use and the estimated step time split into
compute and communication (the ``storage`` and ``perf`` of the chosen options' shards), and the largest
tables. When the tables cannot fit, :func:`explain_failure` says which, by how much, and what to change.

``--out`` saves the plan: ``torch.save`` of TorchRec's ``ShardingPlan`` together with the world size, the
compute device and the table shapes it was made for. ``tinrec train ... plan=FILE`` trains on exactly that
plan (``tinrec.sharding.load_plan`` refuses one made for another world size or other tables).

Pooling factors (mean ids per sample, per feature): scalar features 1; sequence features the dataset's
``mean_history_length`` (meta.json) capped at ``data.max_len``; without a dataset ``data.generate``'s
``seq_len_mean`` (capped likewise), else ``data.max_len`` (an upper bound); a table's ``pooling_factor``
overrides all of these.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torchrec.distributed.planner import Topology
from torchrec.distributed.planner.proposers import GreedyProposer, UniformProposer
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import ShardingPlan

from tinrec.config import Config
from tinrec.features import is_sequence, resolve_rows
from tinrec.model import build_model
from tinrec.optim import attach_sparse_optimizer
from tinrec.sharding import OrderedEnumerator, constraints, planner as make_planner, sharders as make_sharders

log = logging.getLogger(__name__)
GB = 1024**3
NODE_DDR_GB = 2048.0  # host memory of an 8 x H100 node, split evenly across its GPUs by default
GREEDY_PATIENCE = 10  # same plans as without it for the production configs (checked at 2, 8 and 32 nodes)
RESERVED_PERCENTAGE = 0.15  # TorchRec's default HBM margin beyond the dense and input-batch estimates


@dataclass
class Cluster:
    """A GPU cluster; the defaults describe H100 nodes (80 GB HBM, NVLink, one 400 Gb/s NIC per GPU)."""

    nodes: int
    gpus_per_node: int = 8
    hbm_gb: float = 80.0  # per GPU
    ddr_gb: Optional[float] = None  # host memory per GPU; default NODE_DDR_GB / gpus_per_node
    intra_host_gbps: float = 450.0  # GB/s per GPU within a node (NVLink 4)
    inter_host_gbps: float = 50.0  # GB/s per GPU between nodes (400 Gb/s)
    compute_device: str = "cuda"  # "cpu" plans a gloo job (tests, this machine)

    def __post_init__(self) -> None:
        if self.ddr_gb is None:
            self.ddr_gb = NODE_DDR_GB / max(self.gpus_per_node, 1)
        for key in ("nodes", "gpus_per_node", "hbm_gb", "ddr_gb", "intra_host_gbps", "inter_host_gbps"):
            if getattr(self, key) <= 0:
                raise ValueError(f"plan: {key.replace('_', '-')} must be > 0, got {getattr(self, key)}")
        if self.compute_device not in ("cuda", "cpu"):
            raise ValueError(f"plan: device must be cuda or cpu, got {self.compute_device!r}")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def topology(self) -> Topology:
        hbm, ddr = int(self.hbm_gb * GB), int(self.ddr_gb * GB)
        intra, inter = self.intra_host_gbps * GB / 1000, self.inter_host_gbps * GB / 1000  # bytes/ms, as TorchRec
        try:  # torchrec >= 1.6: the factory (a directly built Topology logs a warning on 1.8)
            from torchrec.distributed.planner.types import (BasicCommsBandwidths, KernelConfig, TopologyFactory,
                                                            TrainerConfig)
        except ImportError:
            return Topology(world_size=self.world_size, local_world_size=self.gpus_per_node,
                            compute_device=self.compute_device, hbm_cap=hbm, ddr_cap=ddr,
                            intra_host_bw=intra, inter_host_bw=inter)
        return TopologyFactory.create_topology(
            TrainerConfig(world_size=self.world_size, local_world_size=self.gpus_per_node, is_dry_run=True,
                          dry_run_hbm_bytes=hbm, dry_run_ddr_bytes=ddr),
            kernel_config=KernelConfig(compute_device=self.compute_device, generalized_comms_bandwidths=(
                BasicCommsBandwidths(inter_host_bw=inter, intra_host_bw=intra))))


def dataset_meta(cfg: Config) -> Optional[dict]:
    """The dataset's meta.json, or None when the dataset does not exist (yet)."""
    from tinrec.data.schema import read_meta

    try:
        return read_meta(cfg.data.path)
    except ValueError:
        return None


def pooling_factors(cfg: Config, meta: Optional[Mapping]) -> Tuple[Dict[str, List[float]], str]:
    """Table -> mean ids per sample for each of its features, and where the numbers came from."""
    cap = cfg.data.max_len
    mean_len = (meta or {}).get("mean_history_length")
    gen_mean = (cfg.data.generate or {}).get("seq_len_mean")
    if mean_len:
        seq, source = min(float(mean_len), cap), f"the dataset's meta.json (mean history {float(mean_len):.1f})"
    elif gen_mean:
        gen_cap = min(cap, int((cfg.data.generate or {}).get("seq_len_max", cap)))
        seq = min(float(gen_mean), gen_cap)
        source = (f"data.generate.seq_len_mean={gen_mean} (" + ("no meta.json statistics" if meta else
                                                                "the dataset is not generated yet") + ")")
    else:
        seq = float(cap)
        source = f"data.max_len={cap}, an upper bound (no dataset statistics at {cfg.data.path})"
    out = {}
    for name, t in cfg.model.tables.items():
        out[name] = ([float(t.pooling_factor)] * len(t.features) if t.pooling_factor
                     else [min(seq, cap) if is_sequence(f) else 1.0 for f in t.features])
    return out, source


def table_rows(cfg: Config, meta: Optional[Mapping]) -> Dict[str, int]:
    try:
        return resolve_rows(cfg, meta or {"tables": {}})
    except ValueError as e:
        if meta is not None:
            raise
        raise ValueError(f"{e}; {cfg.data.path} has no dataset (meta.json): generate it first (tinrec gen-data, or "
                         f"train once) or give every 'auto' table its rows (model.embeddings.GROUP.NAME.rows=N)") from None


def _dense_estimate(model: torch.nn.Module) -> int:
    """TorchRec's heuristic (6 x the dense parameters: weights, optimizer state, DDP buffers), passed
    explicitly: the planner otherwise warns that it cannot estimate dense tensors in a dry run."""
    sparse = {id(p) for p in model.sparse_arch.parameters()}
    dense = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in sparse)
    return max(1, 6 * dense)


def plan(cfg: Config, cluster: Cluster, *, batch_size: Optional[int] = None) -> Tuple[ShardingPlan, dict]:
    """Plan ``cfg`` for ``cluster``; returns the plan and a report dict. Raises ValueError if it cannot fit."""
    t0 = perf_counter()
    meta = dataset_meta(cfg)
    rows = table_rows(cfg, meta)
    model = build_model(cfg, rows)
    attach_sparse_optimizer(cfg, model.sparse_arch)
    pf, pf_source = pooling_factors(cfg, meta)
    if meta is None or not meta.get("mean_history_length"):
        log.warning("pooling factors from %s", pf_source)
    cons = constraints(cfg, cluster.compute_device)
    for name, c in cons.items():
        c.pooling_factors = pf[name]
    batch = batch_size or cfg.train.batch_size
    topology = cluster.topology()
    with warnings.catch_warnings():  # its FutureWarning is about dry runs without a dense estimate (we give one)
        warnings.simplefilter("ignore", FutureWarning)
        reservation = HeuristicalStorageReservation(percentage=RESERVED_PERCENTAGE,
                                                    dense_tensor_estimate=_dense_estimate(model))
    # Greedy + uniform proposals: TorchRec's default adds a grid search whose proposals multiply with the
    # number of tables and sharding types (thousands of partitions for 8 tables at 256 ranks); the greedy one
    # stops after GREEDY_PATIENCE feasible plans without improvement (hundreds of tables: seconds, not minutes).
    planner = make_planner(topology=topology, batch_size=batch, constraints=cons, storage_reservation=reservation,
                           proposer=[GreedyProposer(threshold=GREEDY_PATIENCE), UniformProposer()])
    sharders = make_sharders(cfg)
    try:
        sharding_plan = planner.plan(model, sharders)
    except PlannerError as e:
        raise ValueError(explain_failure(cfg, rows, cluster, model, sharders, cons, batch, str(e))) from None
    rep = report(cfg, rows, cluster, planner, pf, pf_source, batch)
    rep["seconds"] = round(perf_counter() - t0, 3)
    log.info("planned %d tables for %d ranks in %.2f s", len(rows), cluster.world_size, rep["seconds"])
    return sharding_plan, rep


def _mem(x, device: str) -> int:
    """The bytes of a Storage (or of a shard's / device's ``storage``) that the fused kernel uses."""
    storage = getattr(x, "storage", x)
    return 0 if storage is None else (storage.hbm if device == "cuda" else storage.ddr)


def explain_failure(cfg: Config, rows: Mapping[str, int], cluster: Cluster, model, sharders, cons, batch: int,
                    raw: str) -> str:
    """Which tables cannot fit, by how much, and what to change (instead of the planner's raw error).

    Per table, the smallest footprint any allowed sharding option reaches (the planner's own storage
    estimates: weights, optimizer state, I/O buffers) is compared with what a GPU keeps free after the
    planner's reservation (margin, dense part, input batches); and the sum of the tables' smallest totals
    with the whole cluster's.
    """
    dev, topology = cluster.compute_device, cluster.topology()
    mem = "HBM" if dev == "cuda" else "DDR"
    cap_total = cluster.hbm_gb * GB if dev == "cuda" else cluster.ddr_gb * GB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reservation = HeuristicalStorageReservation(percentage=RESERVED_PERCENTAGE,
                                                    dense_tensor_estimate=_dense_estimate(model))
    try:
        reserved = reservation.reserve(topology=topology, batch_size=batch, module=model, sharders=sharders,
                                       constraints=cons)
        free = _mem(reserved.devices[0], dev)
    except PlannerError:
        free = 0
    dense, kjt = getattr(reservation, "_dense_storage", None), getattr(reservation, "_kjt_storage", None)
    reserved_b = cap_total - free
    head = (f"the tables do not fit on {cluster.nodes} x {cluster.gpus_per_node} {'GPUs' if dev == 'cuda' else 'ranks'}"
            f" with {cap_total / GB:g} GB {mem} each: the planner reserves {reserved_b / GB:.2f} GB per GPU "
            f"({RESERVED_PERCENTAGE:.0%} margin" + (f", dense part {_mem(dense, dev) / GB:.2f} GB" if dense else "")
            + (f", input batches {_mem(kjt, dev) / GB:.2f} GB" if kjt else "") + f"), leaving {free / GB:.2f} GB.")
    lines = [head]
    # each table's options in the constraints' order of preference (OrderedEnumerator), so that ties (row_wise
    # and table_row_wise on one node) are broken the same way in every run
    options = OrderedEnumerator(topology=topology, batch_size=batch, constraints=cons).enumerate(model, sharders)
    options = sorted(options, key=lambda so: so.name)
    per_gpu: Dict[str, Tuple[int, str, int]] = {}  # table -> (smallest per-GPU need, its sharding, shards)
    need: Dict[str, int] = {}  # table -> smallest total need
    for so in options:
        pg, tot = max(_mem(s, dev) for s in so.shards), sum(_mem(s, dev) for s in so.shards)
        if so.name not in per_gpu or pg < per_gpu[so.name][0]:
            per_gpu[so.name] = (pg, so.sharding_type, len(so.shards))
        need[so.name] = min(tot, need.get(so.name, tot))
    missing = sorted(set(rows) - set(need))
    for name in missing:
        lines.append(f"  {name}: no sharding option satisfies its constraints (sharding_types "
                     f"{cons[name].sharding_types}, kernel fused, on {dev})")
    too_big = sorted((n for n in per_gpu if per_gpu[n][0] > free), key=lambda n: -per_gpu[n][0])
    for name in too_big:
        pg, st, k = per_gpu[name]
        t = cfg.model.tables[name]
        lines.append(f"  {name} ({rows[name]:,} rows x {t.dim}): needs {pg / GB:,.2f} GB on one GPU even "
                     f"{st} over {k} GPU{'s' if k > 1 else ''}; {(pg - free) / GB:,.2f} GB more than a GPU has free")
    total = sum(need.values())
    if total > free * cluster.world_size:
        short = total - free * cluster.world_size
        nodes = (f" (at least {math.ceil(total / (free * cluster.gpus_per_node))} nodes of this kind)"
                 if free > 0.25 * cap_total else "")
        lines.append(f"  all tables need at least {total / GB:,.1f} GB, the cluster has {free * cluster.world_size / GB:,.1f} "
                     f"GB free: {short / GB:,.1f} GB short{nodes}")
    elif not too_big and not missing:
        lines.append(f"  each table fits and all need {total / GB:,.1f} of {free * cluster.world_size / GB:,.1f} GB, but "
                     f"no placement satisfies the constraints (e.g. large tables restricted to table_wise)")
    by_size = sorted(need, key=lambda n: -need[n])
    lines.append("  largest (smallest footprint the planner found): " + ", ".join(
        f"{n} {need[n] / GB:,.1f} GB" for n in by_size[:5]))
    hints = []
    for name in (too_big or by_size)[:3]:
        types = cons[name].sharding_types or []
        if "row_wise" not in types:
            hints.append(f"shard {name} row-wise ({cfg.model.table_key(name)}.sharding_types=[row_wise])")
    if by_size:
        big = by_size[0]
        dim = cfg.model.tables[big].dim
        hints.append(f"a smaller dim for {big} ({cfg.model.table_key(big)}.dim, now {dim}: storage scales with it)")
    hints += ["more GPUs (--nodes)", "fp16 embedding weights (halve table storage) and fp16 outputs (halve the "
              "lookup output buffers and their communication; TorchRec's data_type / output_dtype, not yet tinrec "
              "config keys)", "fewer rows (hash or prune rare ids)"]
    if cfg.train.sparse_optimizer.name == "adam":
        hints.append("rowwise_adagrad instead of adam (one state value per row instead of two per element)")
    if too_big == [] and total <= free * cluster.world_size and dev == "cuda":
        hints.append("a smaller --batch-size (input batches and lookup outputs scale with it)")
    lines.append("Suggestions: " + "; ".join(hints) + ".")
    lines.append(f"(planner: {raw.strip().splitlines()[0][:300] if raw.strip() else 'PlannerError'})")
    return "\n".join(lines)


def report(cfg: Config, rows: Mapping[str, int], cluster: Cluster, planner, pf: Mapping[str, List[float]],
           pf_source: str, batch: int) -> dict:
    """Per-table placements and per-rank storage / time estimates from the planner's chosen options."""
    best = getattr(planner, "_best_plan", None) or []
    tables = {}
    ranks = {r: {"hbm": 0, "ddr": 0, "compute_ms": 0.0, "comms_ms": 0.0, "input_dist_ms": 0.0} for r in range(cluster.world_size)}
    for so in best:
        t = cfg.model.tables[so.name]
        tables[so.name] = {"sharding_type": so.sharding_type, "kernel": so.compute_kernel,
                           "ranks": sorted({s.rank for s in so.shards if s.rank is not None}),
                           "rows": rows[so.name], "dim": t.dim, "ids_per_sample": round(sum(pf[so.name]), 2),
                           "weights_gb": rows[so.name] * t.dim * 4 / GB,
                           "planned_gb": sum(_mem(s, cluster.compute_device) for s in so.shards) / GB}
        for s in so.shards:
            if s.rank is None:
                continue
            r = ranks[s.rank]
            if s.storage is not None:
                r["hbm"] += s.storage.hbm
                r["ddr"] += s.storage.ddr
            if s.perf is not None:
                p = s.perf
                r["compute_ms"] += p.fwd_compute + p.bwd_compute + getattr(p, "prefetch_compute", 0.0)
                r["comms_ms"] += p.fwd_comms + p.bwd_comms  # as in Perf.total, which the planner minimises
                r["input_dist_ms"] += getattr(p, "input_dist_comms", 0.0)  # the ids' all-to-all, reported apart
    res = planner._storage_reservation if hasattr(planner, "_storage_reservation") else None
    dense, kjt = getattr(res, "_dense_storage", None), getattr(res, "_kjt_storage", None)
    dev = cluster.compute_device
    reserved = {"margin_gb": RESERVED_PERCENTAGE * cluster.hbm_gb if dev == "cuda" else 0.0,
                "dense_gb": _mem(dense, dev) / GB if dense else None, "input_batches_gb": _mem(kjt, dev) / GB if kjt else None}
    largest = sorted(tables, key=lambda n: -tables[n]["weights_gb"])[:5]
    return {"cluster": asdict(cluster) | {"world_size": cluster.world_size}, "batch_size_per_rank": batch,
            "pooling_factors_from": pf_source, "reserved_per_gpu": reserved, "tables": tables, "ranks": ranks,
            "largest": largest}


def _ranks_str(rk: List[int]) -> str:
    return f"{rk[0]}-{rk[-1]}" if len(rk) > 2 and rk == list(range(rk[0], rk[-1] + 1)) else ",".join(map(str, rk))


def format_report(rep: dict) -> str:
    c, res = rep["cluster"], rep["reserved_per_gpu"]
    mem = "HBM" if c["compute_device"] == "cuda" else "DDR"
    out = [f"cluster: {c['nodes']} x {c['gpus_per_node']} GPUs ({c['world_size']} ranks, {c['compute_device']}), "
           f"{c['hbm_gb']:g} GB HBM and {c['ddr_gb']:g} GB DDR per GPU, {c['intra_host_gbps']:g} GB/s intra-host, "
           f"{c['inter_host_gbps']:g} GB/s inter-host; batch {rep['batch_size_per_rank']} per rank",
           f"pooling factors from {rep['pooling_factors_from']}",
           "reserved per GPU: " + ", ".join(f"{k.removesuffix('_gb').replace('_', ' ')} {v:.2f} GB"
                                            for k, v in res.items() if v is not None), "",
           f"table | rows | dim | ids/sample | sharding | kernel | ranks | planned {mem} GB",
           "--- | --- | --- | --- | --- | --- | --- | ---"]
    for name, t in sorted(rep["tables"].items()):
        out.append(f"{name} | {t['rows']:,} | {t['dim']} | {t['ids_per_sample']:g} | {t['sharding_type']} | "
                   f"{t['kernel']} | {_ranks_str(t['ranks'])} | {t['planned_gb']:.2f}")
    out += ["", "rank | HBM GB | DDR GB | compute ms | comms ms | input dist ms", "--- | --- | --- | --- | --- | ---"]
    items = list(rep["ranks"].items())
    shown = items if len(items) <= 16 else items[:8] + [("...", None)] + items[-4:]
    for r, v in shown:
        out.append("... | | | | |" if v is None else f"{r} | {v['hbm'] / GB:.2f} | {v['ddr'] / GB:.2f} | "
                   f"{v['compute_ms']:.2f} | {v['comms_ms']:.2f} | {v['input_dist_ms']:.2f}")
    vals = list(rep["ranks"].values())
    worst = max(vals, key=lambda v: v["compute_ms"] + v["comms_ms"])
    used = [v[mem.lower()] / GB for v in vals]
    out += ["", f"{mem} per rank: {min(used):.2f} to {max(used):.2f} GB of {c[mem.lower() + '_gb']:g}",
            f"estimated sparse step (slowest rank): {worst['compute_ms']:.2f} ms compute + {worst['comms_ms']:.2f} ms "
            f"communication; TorchRec's perf model of the embedding lookups forward and backward (the quantity the "
            "planner minimises), not a measurement; the dense part is not included",
            f"input dist (ids all-to-all): {worst['input_dist_ms']:.2f} ms on that rank, TorchRec's separate estimate "
            "(batch ids x world size / bandwidth: grows with the world size; not in the planner's objective)",
            f"largest tables (fp32 weights / planned {mem} incl. optimizer state and I/O buffers): " + ", ".join(
                f"{n} {rep['tables'][n]['weights_gb']:,.1f} / {rep['tables'][n]['planned_gb']:,.1f} GB"
                for n in rep["largest"])]
    return "\n".join(out)
