"""Sharding: planner constraints from config, the plan DMP shards the tables with, and plan files (written by
``tinrec plan --out``, read by ``tinrec train plan=FILE``: :func:`load_plan` refuses one made for another world
size or other tables)."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ModuleSharder, ShardingPlan

from tinrec.config import Config
from tinrec.dedup import install_fused_expansion, register_cpu_kernel

log = logging.getLogger(__name__)

# What runs on each device (STACK.md): bags lack row_wise on CPU; data_parallel would leave a table to the
# dense optimizer, so it is used only when a config asks for it.
DEFAULT_SHARDING = {
    ("cpu", False): ["table_wise", "row_wise", "column_wise"],
    ("cpu", True): ["table_wise", "column_wise"],
    ("cuda", False): ["table_wise", "row_wise", "column_wise", "table_row_wise"],
    ("cuda", True): ["table_wise", "row_wise", "column_wise", "table_row_wise"],
}


def constraints(cfg: Config, compute_device: str, pooling_factors: Optional[Dict[str, float]] = None
                ) -> Dict[str, ParameterConstraints]:
    out = {}
    for name, t in cfg.model.tables.items():
        types = t.sharding_types or DEFAULT_SHARDING[(compute_device, t.pooled)]
        kwargs = {}
        pf = t.pooling_factor or (pooling_factors or {}).get(name)
        if pf:
            kwargs["pooling_factors"] = [float(pf)] * len(t.features)
        out[name] = ParameterConstraints(sharding_types=list(types), compute_kernels=["fused"], **kwargs)
    return out


class OrderedEnumerator(EmbeddingEnumerator):
    """TorchRec's enumerator, with each table's sharding types and compute kernels in the order the
    constraints list them. TorchRec intersects them as sets, so their order, which decides between plans of
    equal estimated cost, followed Python's per-process string hashing: two runs of one job, or a run and its
    ``--resume``, could shard a table differently (``column_wise`` instead of ``table_wise``) and so train the
    same model only up to the order of float sums, not bitwise."""

    def _filter_sharding_types(self, name: str, allowed_sharding_types: List[str], sharder_key: str = ""
                               ) -> List[str]:
        out = super()._filter_sharding_types(name, allowed_sharding_types, sharder_key)
        return _in_order(out, self._constrained(name, "sharding_types") or list(allowed_sharding_types))

    def _filter_compute_kernels(self, name: str, allowed_compute_kernels: List[str], sharding_type: str
                                ) -> List[str]:
        out = super()._filter_compute_kernels(name, allowed_compute_kernels, sharding_type)
        return _in_order(out, self._constrained(name, "compute_kernels") or list(allowed_compute_kernels))

    def _constrained(self, name: str, field: str) -> List[str]:
        c = (self._constraints or {}).get(name)
        return list(getattr(c, field, None) or []) if c is not None else []


def _in_order(items: List[str], preferred: List[str]) -> List[str]:
    """``items`` sorted by their place in ``preferred`` (others after, by name)."""
    return sorted(items, key=lambda x: (preferred.index(x) if x in preferred else len(preferred), x))


def planner(*, topology: Topology, batch_size: int, constraints: Dict[str, ParameterConstraints],
            **kwargs) -> EmbeddingShardingPlanner:
    """TorchRec's planner with :class:`OrderedEnumerator`: the same plan for the same job in every process."""
    return EmbeddingShardingPlanner(topology=topology, batch_size=batch_size, constraints=constraints,
                                    enumerator=OrderedEnumerator(topology=topology, batch_size=batch_size,
                                                                 constraints=constraints), **kwargs)


def sharders(cfg: Config) -> List[ModuleSharder[nn.Module]]:
    """TorchRec's default sharders, the sequence one with ``train.index_dedup`` (tinrec/dedup.py)."""
    out: List[ModuleSharder[nn.Module]] = []
    for s in get_default_sharders():
        if type(s) is EmbeddingCollectionSharder:  # exactly TorchRec's default one, not a subclass
            if cfg.train.index_dedup:
                register_cpu_kernel()
                install_fused_expansion()
            s = EmbeddingCollectionSharder(use_index_dedup=cfg.train.index_dedup)
        out.append(s)
    return out


def make_plan(model: nn.Module, cfg: Config, *, world_size: int, local_world_size: int, device: torch.device,
              batch_size: int, pooling_factors: Optional[Dict[str, float]] = None) -> ShardingPlan:
    """Plan with TorchRec's planner (collectively when distributed, so every rank gets the same plan)."""
    topology = Topology(world_size=world_size, local_world_size=local_world_size, compute_device=device.type)
    plan = planner(topology=topology, batch_size=batch_size, constraints=constraints(cfg, device.type, pooling_factors))
    return plan.collective_plan(model, sharders(cfg), pg=dist.GroupMember.WORLD)


PLAN_FORMAT = "tinrec-plan-1"


def save_plan(path: str, sharding_plan: ShardingPlan, rep: dict) -> None:
    """``torch.save`` of the plan with the world size, device and table shapes it was made for."""
    shapes = {n: [t["rows"], t["dim"]] for n, t in rep["tables"].items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"format": PLAN_FORMAT, "world_size": rep["cluster"]["world_size"], "tables": shapes,
                "compute_device": rep["cluster"]["compute_device"], "plan": sharding_plan}, path)


def load_plan(path: str, *, world_size: int, tables: Mapping[str, List[int]],
              compute_device: Optional[str] = None) -> ShardingPlan:
    """The plan in ``path``, checked against the job's world size and table shapes (ValueError otherwise)."""
    if not os.path.exists(path):
        raise ValueError(f"plan: {path}: file not found")
    try:
        saved = torch.load(path, weights_only=False)  # a pickle: load only plan files you trust
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"plan: {path}: cannot read it as a plan file ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or saved.get("format") != PLAN_FORMAT:
        raise ValueError(f"plan: {path}: not a plan written by `tinrec plan --out`")
    if saved["world_size"] != world_size:
        raise ValueError(f"plan: {path} was made for world size {saved['world_size']}, this job has world size "
                         f"{world_size}; plan again with --nodes/--gpus-per-node matching the job")
    want = {k: list(v) for k, v in tables.items()}
    got = {k: list(v) for k, v in saved["tables"].items()}
    if got != want:
        diff = [f"{n}: plan {got.get(n, 'absent')}, config {want.get(n, 'absent')}"
                for n in sorted(set(got) | set(want)) if got.get(n) != want.get(n)]
        raise ValueError(f"plan: {path} was made for other tables ([rows, dim]): " + "; ".join(diff))
    if compute_device and saved.get("compute_device", compute_device) != compute_device:
        log.warning("plan %s was made for %s ranks, this job runs on %s: some sharding types may not run here",
                    path, saved["compute_device"], compute_device)
    return saved["plan"]
