"""The non-finite guard: a step whose loss or gradient is not finite never updates the model unnoticed.

Each training step of :class:`GuardedPipeline` (TorchRec's ``TrainPipelineSparseDist`` with two hooks):

1. Before backward, the loss is checked on every rank and the verdict is agreed (one all-reduce of a flag;
   none with one rank). A non-finite loss anywhere: no rank runs backward (so neither the fused embedding
   update, which happens inside backward, nor the dense optimizer step happens).
2. After backward, the dense gradients are checked (they are all-reduced by DDP, so every rank reaches the
   same verdict without a collective). Non-finite: the dense optimizer step is not taken.

What happens next is ``train.on_nonfinite``:

- ``stop`` (default): the training loop raises :class:`NonFiniteError` naming the step, the rank and the
  batch's file and row group; nothing is saved after the last good checkpoint, and checkpoint rotation
  never runs, so the last finite checkpoint stays.
- ``skip``: the batch is skipped and counted (progress bar, TensorBoard, ``metrics.json``). Exact for a
  non-finite loss (no backward at all; what the forward wrote into cross-batch state is undone). For a
  finite loss whose gradients are not finite, the dense step is
  skipped and each rank zeroes a non-finite gradient of its embedding lookups before the fused update
  (so no NaN ever enters a table); a rank whose own lookup gradients were finite has already applied its
  embedding update for that batch (fused into backward): documented, not hidden.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tinrec.errors import NonFiniteError

MODES = ("stop", "skip")
# the prefixes DMP, DDP and the model's own containers put before a module's name (left out of group names)
_WRAPPERS = re.compile(r"^((_dmp_wrapped_module|module|dense_arch|interest_arch|interests)\.)+")
__all__ = ["GuardedPipeline", "NonFiniteError", "NonFiniteGuard", "finite_or_zero"]


@dataclass
class Incident:
    what: str  # "loss" or "gradient"
    detail: str  # the value, or which rank saw it, and the batch it came from


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def finite_or_zero(grad: torch.Tensor) -> torch.Tensor:
    """A gradient hook: the gradient if every element is finite, else zeros (no host sync)."""
    return torch.where(torch.isfinite(grad).all(), grad, torch.zeros_like(grad))


class NonFiniteGuard:
    """The per-step verdict; read by the training loop after each step.

    Args:
        mode: ``stop`` or ``skip`` (``train.on_nonfinite``).
        dense_params: the parameters of the dense optimizer (replicated, DDP-reduced gradients).
    """

    def __init__(self, *, mode: str, dense_params: Iterable[torch.Tensor],
                 state: Sequence[Tuple[str, torch.Tensor, str]] = ()) -> None:
        if mode not in MODES:
            raise ValueError(f"train.on_nonfinite: expected one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.dense_params = list(dense_params)
        # the cross-batch state buffers (tinrec/state.py ``collect``): copied before each training forward, so a
        # skipped step's update can be undone; the training loop syncs and checks them
        self.state = list(state)
        self._saved: List[torch.Tensor] = []
        self.batch: Any = None  # the batch of the step in progress (set by the pipeline's forward)
        self.incident: Optional[Incident] = None  # this step's, if any
        self.skipped = 0
        self.skipped_steps: List[int] = []  # the first few, for the report
        self._groups: Dict[str, List[int]] = {}  # watch_groups: module -> indices into dense_params
        self.group_norms: Dict[str, torch.Tensor] = {}  # the last step's, when groups are watched

    def start(self, batch: Any, training: bool = False) -> None:
        self.batch, self.incident = batch, None
        self._saved = [b.detach().clone() for _, b, _ in self.state] if training else []

    def undo_state(self) -> None:
        """Put the cross-batch state back as it was before this step's forward (a skipped step)."""
        with torch.no_grad():
            for (_, b, _), saved in zip(self.state, self._saved):
                b.copy_(saved)

    def _source(self) -> str:
        return getattr(self.batch, "source", "") or "an unknown batch"

    def loss_ok(self, losses: torch.Tensor) -> bool:
        """Is every rank's loss finite? (One all-gather of a flag with several ranks; one host sync.)"""
        bad = (~torch.isfinite(losses.detach())).any().to(torch.float32).reshape(1)
        if _world() > 1:
            flags = [torch.zeros_like(bad) for _ in range(_world())]
            dist.all_gather(flags, bad)
            bad = torch.cat(flags)
        ranks = [r for r, f in enumerate(bad.tolist()) if f > 0]
        mine = (dist.get_rank() if _world() > 1 else 0) in ranks
        if not ranks:
            return True
        value = float(losses.detach().sum()) if mine else math.nan
        here = f"{value} on {self._source()}" if mine else "not finite"
        self.incident = Incident("loss", f"{here} (rank(s) {', '.join(map(str, ranks))})")
        return False

    def watch_groups(self, named: Mapping[str, torch.Tensor]) -> None:
        """Keep each module's dense gradient norm of every step (``group_norms``, before clipping): ``named``
        maps parameter names (``...interests.dmin.units.0.unit.layers.0.weight``) to parameters; a group is the
        module that holds the parameter, the wrappers' prefixes left out (``dmin.units.0.unit.layers.0``)."""
        index = {id(p): i for i, p in enumerate(self.dense_params)}
        groups: Dict[str, List[int]] = {}
        for name, p in named.items():
            if id(p) in index:
                module = _WRAPPERS.sub("", name).rpartition(".")[0]
                groups.setdefault(module or name, []).append(index[id(p)])
        self._groups = groups

    def grads_ok(self) -> bool:
        """Are the dense gradients finite? (Identical on every rank after DDP's all-reduce.)"""
        present = [i for i, p in enumerate(self.dense_params) if p.grad is not None]
        if not present:
            return True
        each = torch.stack([torch.linalg.vector_norm(self.dense_params[i].grad.detach().float()) for i in present])
        norm = torch.linalg.vector_norm(each)
        if self._groups:
            where = {i: n for n, i in enumerate(present)}
            self.group_norms = {g: torch.linalg.vector_norm(each[[where[i] for i in ids if i in where]])
                                for g, ids in self._groups.items() if any(i in where for i in ids)}
            self.group_norms["(all)"] = norm
        if bool(torch.isfinite(norm)):
            return True
        self.incident = Incident("gradient", f"dense gradient norm {float(norm)} for {self._source()}")
        return False

    def record_skip(self, step: int) -> None:
        self.skipped += 1
        if len(self.skipped_steps) < 20:
            self.skipped_steps.append(step)


class _GuardedOptimizer:
    """What the pipeline steps: the real optimizer, unless the guard found this step non-finite."""

    def __init__(self, optimizer: Any, guard: NonFiniteGuard) -> None:
        self.optimizer, self.guard = optimizer, guard

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Optional[Callable] = None) -> None:
        if self.guard.incident is None:
            self.optimizer.step()

    @property
    def param_groups(self):
        return self.optimizer.param_groups


class GuardedPipeline(TrainPipelineSparseDist):
    """``TrainPipelineSparseDist`` whose backward and optimizer step go through a :class:`NonFiniteGuard`,
    and which counts the truncated histories of the batches it runs (``truncated``)."""

    def __init__(self, model: torch.nn.Module, optimizer: Any, device: torch.device, guard: NonFiniteGuard) -> None:
        self.guard = guard
        self.truncated = 0  # rows whose history was cut to data.max_len, over the batches run so far

        def forward(batch):
            guard.start(batch, training=model.training)
            if batch is not None and getattr(batch, "source", "") != "padding":
                self.truncated += int(getattr(batch, "truncated", 0))
            return model(batch)

        super().__init__(model, _GuardedOptimizer(optimizer, guard), device, custom_model_fwd=forward)

    def _backward(self, losses: torch.Tensor) -> None:
        if self.guard.loss_ok(losses):
            super()._backward(losses)
            self.guard.grads_ok()
