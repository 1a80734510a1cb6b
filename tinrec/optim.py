"""The optimizers of a config: the sparse one fused into the embedding backward, the dense one over the rest.

One home for the optimizer tables and for attaching them, used by training (``tinrec/train.py``) and by the
planner's dry runs (``tinrec/planning.py``: the planner counts optimizer state only for parameters that carry
their fused optimizer).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping

import torch
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from tinrec.config import Config, OptimizerConfig

SPARSE_OPTIMIZERS = {"adam": torch.optim.Adam, "rowwise_adagrad": RowWiseAdagrad, "adagrad": torch.optim.Adagrad,
                     "sgd": torch.optim.SGD}
CPU_SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd")  # fbgemm's CPU embedding kernels have no Adam
DENSE_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad,
                    "sgd": torch.optim.SGD}


def _kwargs(cls: type, oc: OptimizerConfig) -> Dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    kw: Dict[str, Any] = {"lr": oc.lr}
    if "weight_decay" in params:
        kw["weight_decay"] = oc.weight_decay
    if "eps" in params:
        kw["eps"] = oc.eps
    return kw


def _pick(table: Dict[str, type], oc: OptimizerConfig, key: str) -> type:
    if oc.name not in table:
        raise ValueError(f"{key}.name: unknown optimizer {oc.name!r} (known: {', '.join(table)})")
    return table[oc.name]


def attach_sparse_optimizer(cfg: Config, sparse_arch: nn.Module, device_type: str = "cuda") -> None:
    """Tag the embedding tables with ``train.sparse_optimizer``, applied inside their backward (before DMP or
    the planner see them); refused with the key when the device's fbgemm kernels lack it."""
    oc = cfg.train.sparse_optimizer
    cls = _pick(SPARSE_OPTIMIZERS, oc, "train.sparse_optimizer")
    if device_type == "cpu" and oc.name not in CPU_SPARSE_OPTIMIZERS:
        raise ValueError(f"train.sparse_optimizer.name: {oc.name!r} has no CPU kernel in fbgemm "
                         f"(CPU: {', '.join(CPU_SPARSE_OPTIMIZERS)})")
    _apply_optimizer_in_backward(cls, list(sparse_arch.parameters()), _kwargs(cls, oc))


def combined_optimizer(cfg: Config, fused: Any, dense_params: Mapping[str, nn.Parameter]) -> CombinedOptimizer:
    """``train.dense_optimizer`` over ``dense_params`` (with ``train.grad_clip``) beside the fused sparse one,
    as one optimizer whose state goes into checkpoints."""
    cls = _pick(DENSE_OPTIMIZERS, cfg.train.dense_optimizer, "train.dense_optimizer")
    dense = KeyedOptimizerWrapper(dict(dense_params),
                                  lambda params: cls(params, **_kwargs(cls, cfg.train.dense_optimizer)))
    if cfg.train.grad_clip > 0:
        dense = GradientClippingOptimizer(dense, clipping=GradientClipping.NORM, max_gradient=cfg.train.grad_clip)
    return CombinedOptimizer([("fused", fused), ("dense", dense)])
