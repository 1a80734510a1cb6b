"""Sharding: planner constraints from config, and the plan DMP shards the tables with."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ModuleSharder, ShardingPlan

from tinrec.config import Config
from tinrec.dedup import register_cpu_kernel

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


def sharders(cfg: Config) -> List[ModuleSharder[nn.Module]]:
    """TorchRec's default sharders, the sequence one with ``train.index_dedup`` (tinrec/dedup.py)."""
    out: List[ModuleSharder[nn.Module]] = []
    for s in get_default_sharders():
        if type(s) is EmbeddingCollectionSharder:  # exactly TorchRec's default one, not a subclass
            if cfg.train.index_dedup:
                register_cpu_kernel()
            s = EmbeddingCollectionSharder(use_index_dedup=cfg.train.index_dedup)
        out.append(s)
    return out


def make_plan(model: nn.Module, cfg: Config, *, world_size: int, local_world_size: int, device: torch.device,
              batch_size: int, pooling_factors: Optional[Dict[str, float]] = None) -> ShardingPlan:
    """Plan with TorchRec's planner (collectively when distributed, so every rank gets the same plan)."""
    topology = Topology(world_size=world_size, local_world_size=local_world_size, compute_device=device.type)
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=batch_size,
                                       constraints=constraints(cfg, device.type, pooling_factors))
    return planner.collective_plan(model, sharders(cfg), pg=dist.GroupMember.WORLD)
