"""The optimizers of a config: the sparse one fused into the embedding backward, the dense one over the rest.

One home for the optimizer tables and for attaching them, used by training (``tinrec/train.py``) and by the
planner's dry runs (``tinrec/planning.py``: the planner counts optimizer state only for parameters that carry
their fused optimizer).
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any, Dict, List, Mapping

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


def param_groups(oc: OptimizerConfig, named: Mapping[str, nn.Parameter], key: str = "train.dense_optimizer"
                 ) -> List[Dict[str, Any]]:
    """torch param groups for ``oc.groups``: each parameter in the first group whose ``match`` (a glob) its
    name matches, with that group's ``lr`` / ``weight_decay``; the rest in a last group with the optimizer's
    settings. A group that matches no parameter is an error naming it (a typo would silently do nothing)."""
    taken: set = set()
    out = []
    for g, group in enumerate(oc.groups):
        names = [n for n in named if fnmatch.fnmatchcase(n, group.match) and n not in taken]
        if not names:
            example = next(iter(named), "none")
            raise ValueError(f"{key}.groups[{g}].match: {group.match!r} matches no dense parameter left by the "
                             f"groups before it (names look like {example!r})")
        taken.update(names)
        settings = {k: v for k, v in (("lr", group.lr), ("weight_decay", group.weight_decay)) if v is not None}
        out.append({"params": [named[n] for n in names], **settings})
    rest = [p for n, p in named.items() if n not in taken]
    if rest or not out:
        out.append({"params": rest})
    return out


def combined_optimizer(cfg: Config, fused: Any, dense_params: Mapping[str, nn.Parameter]) -> CombinedOptimizer:
    """``train.dense_optimizer`` over ``dense_params`` (with ``train.grad_clip``; ``groups``: parameters with
    their own learning rate or weight decay) beside the fused sparse one, as one optimizer whose state goes
    into checkpoints."""
    oc = cfg.train.dense_optimizer
    cls = _pick(DENSE_OPTIMIZERS, oc, "train.dense_optimizer")
    groups = param_groups(oc, dict(dense_params)) if oc.groups else None
    dense = KeyedOptimizerWrapper(dict(dense_params),
                                  lambda params: cls(groups if groups is not None else params, **_kwargs(cls, oc)))
    if cfg.train.grad_clip > 0:
        dense = GradientClippingOptimizer(dense, clipping=GradientClipping.NORM, max_gradient=cfg.train.grad_clip)
    return CombinedOptimizer([("fused", fused), ("dense", dense)])
