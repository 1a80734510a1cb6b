"""Checkpoints with ``torch.distributed.checkpoint``: model, fused + dense optimizer state, data position, RNG.

Layout under ``<run_dir>/checkpoints/``::

    step-00000120/           # a complete checkpoint: DCP shards + train_state.json + rng-rank{r}.pt
    step-00000240/
    latest                   # text file naming the newest complete checkpoint

A checkpoint is written to ``step-N.tmp`` and renamed only after every rank finished writing; ``latest``
is replaced atomically after that. A crash while saving therefore leaves a stale ``*.tmp`` folder (removed
on the next save) and ``latest`` still pointing at the previous, complete checkpoint. Checkpoint folders are
local paths (DCP's FileSystemWriter).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

log = logging.getLogger(__name__)

LATEST = "latest"
STATE_FILE = "train_state.json"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(ckpt_root: str, step: int, model: torch.nn.Module, optimizer: Any, train_state: Dict[str, Any],
         keep: int = 2) -> str:
    """Write checkpoint ``step`` (all ranks call this) and return its folder."""
    final = os.path.join(ckpt_root, f"step-{step:08d}")
    tmp = final + ".tmp"
    if _rank() == 0:
        os.makedirs(ckpt_root, exist_ok=True)
        for name in os.listdir(ckpt_root):
            if name.endswith(".tmp"):
                shutil.rmtree(os.path.join(ckpt_root, name), ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=tmp)
    torch.save(rng_state(), os.path.join(tmp, f"rng-rank{_rank()}.pt"))
    if _rank() == 0:
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(dict(train_state, step=step), f, indent=1)
    _barrier()
    if _rank() == 0:
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = os.path.join(ckpt_root, LATEST)
        with open(pointer + ".tmp", "w") as f:
            f.write(os.path.basename(final) + "\n")
        os.replace(pointer + ".tmp", pointer)
        complete = sorted(n for n in os.listdir(ckpt_root) if n.startswith("step-") and not n.endswith(".tmp"))
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(os.path.join(ckpt_root, old), ignore_errors=True)
    _barrier()
    return final


def latest(ckpt_root: str) -> Optional[str]:
    """The newest complete checkpoint folder, or None."""
    pointer = os.path.join(ckpt_root, LATEST)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        name = f.read().strip()
    path = os.path.join(ckpt_root, name)
    if not os.path.exists(os.path.join(path, STATE_FILE)):
        raise ValueError(f"{pointer}: names {name!r}, which is not a complete checkpoint")
    return path


def load(path: str, model: torch.nn.Module, optimizer: Optional[Any] = None) -> Dict[str, Any]:
    """Load ``path`` into ``model`` (and ``optimizer``) in place; restore this rank's RNG; return train state."""
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.exists(state_file):
        raise ValueError(f"{path}: not a tinrec checkpoint (no {STATE_FILE})")
    state: Dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        optimizer.init_state()  # materialise lazily created state (e.g. Adam moments) so DCP can fill it
        state["optim"] = optimizer.state_dict()
    dcp.load(state, checkpoint_id=path)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
        rng_file = os.path.join(path, f"rng-rank{_rank()}.pt")
        if os.path.exists(rng_file):
            set_rng_state(torch.load(rng_file, weights_only=False))
    with open(state_file) as f:
        return json.load(f)
