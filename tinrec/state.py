"""Cross-batch state: buffers an interest module updates in training (memories, running statistics), kept
identical on every rank and checkpointed with the weights.

A module in ``modules/`` declares them as an attribute (of the class, or of the instance when the constructor
decides whether they exist: DUMN without memories has none), plain torch and no import of tinrec::

    cross_batch_state = {"memory_KD": "mean"}   # persistent buffer name -> how ranks combine their copies

and updates them under ``torch.no_grad()`` in training-mode forwards only. Each rank updates its copy from
its own batch; after every training step the loop combines the copies (:func:`sync`: ``mean``, ``sum``,
``max`` or ``min`` across ranks, one all-reduce per buffer), so every rank starts the next step from the
same state (DMP's DDP wrapper does not broadcast buffers). The buffers are part of the model's state dict,
so checkpoints save them and ``--resume`` restores them; every checkpoint first checks that the ranks'
copies are equal (:func:`check_identical`), so a module that updates state outside this contract fails
loudly instead of saving one rank's copy.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Tuple

import torch
import torch.distributed as dist
from torch import nn

REDUCTIONS = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
              "min": dist.ReduceOp.MIN}
StateBuffer = Tuple[str, torch.Tensor, str]  # (name, buffer, reduction)


def collect(modules: Dict[str, nn.Module]) -> List[StateBuffer]:
    """The declared cross-batch buffers of ``modules`` (name -> module), checked (ValueError naming the module)."""
    out = []
    for name, module in modules.items():
        declared = getattr(module, "cross_batch_state", None) or {}
        buffers = dict(module.named_buffers())
        persistent = set(module.state_dict(keep_vars=True))
        for buf, how in declared.items():
            where = f"model.interests.{name}: {type(module).__name__}.cross_batch_state[{buf!r}]"
            if buf not in buffers or buf not in persistent:
                raise ValueError(f"{where}: no persistent buffer of that name (register_buffer(..., persistent=True))")
            if how not in REDUCTIONS:
                raise ValueError(f"{where}: reduction {how!r}, expected one of {', '.join(REDUCTIONS)}")
            out.append((f"{name}.{buf}", buffers[buf], how))
    return out


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def sync(state: List[StateBuffer]) -> None:
    """Combine every rank's copy of each buffer in place (every rank calls this after each training step)."""
    world = _world()
    if world == 1:
        return
    for _, buf, how in state:
        dist.all_reduce(buf, op=REDUCTIONS[how])
        if how == "mean":
            buf.div_(world)


def check_identical(state: List[StateBuffer]) -> None:
    """Raise if any buffer differs across ranks (a collective: every rank calls it)."""
    if _world() == 1 or not state:
        return
    mine = [hashlib.sha256(buf.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for _, buf, _ in state]
    everyone: List[List[str]] = [None] * _world()  # type: ignore[list-item]
    dist.all_gather_object(everyone, mine)
    for i, (name, _, _) in enumerate(state):
        if len({digests[i] for digests in everyone}) > 1:
            raise RuntimeError(f"cross-batch state {name} differs across ranks: it was updated outside the "
                               f"cross_batch_state contract (tinrec/state.py)")
