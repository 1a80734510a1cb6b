"""Checkpoints with ``torch.distributed.checkpoint``: model, fused + dense optimizer state, data position, RNG.

Layout under ``<run_dir>/checkpoints/``::

    step-00000120/           # a complete checkpoint: DCP shards + train_state.json + rng-rank{r}.pt
    step-00000240/
    latest                   # text file naming the newest complete checkpoint

A checkpoint is written to ``step-N.tmp``; every rank writes its shards and RNG state, then rank 0 writes
``train_state.json`` (the completion marker) and renames the folder to ``step-N``; ``latest`` is replaced
atomically after that. Nothing complete is deleted before its replacement is complete:

- a crash while writing leaves a stale ``*.tmp`` folder (removed by the next save) and ``latest`` still
  naming the previous, complete checkpoint;
- saving a step that already has a checkpoint (the end of a run whose last step was also a periodic
  checkpoint) first moves the old folder aside to ``step-N.replaced``, renames the new one in, repoints
  ``latest`` and only then removes the old copy;
- rotation (``keep``) removes the oldest complete checkpoints only after the new one is in place.

If ``latest`` names a folder that is missing or incomplete (a kill inside one of those windows),
:func:`latest` falls back to the newest complete checkpoint (``step-N`` or ``step-N.replaced``) and says so.
Checkpoint folders are local paths (DCP's FileSystemWriter).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from tinrec import results

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


REPLACED = ".replaced"  # suffix of a complete checkpoint moved aside while its step is written again


def _step_of(name: str) -> Optional[int]:
    """The step of a complete checkpoint folder name (``step-N`` or ``step-N.replaced``), else None."""
    base = name[:-len(REPLACED)] if name.endswith(REPLACED) else name
    if not base.startswith("step-") or not base[5:].isdigit():
        return None
    return int(base[5:])


def _complete(ckpt_root: str) -> List[Tuple[int, str]]:
    """(step, folder name) of every complete checkpoint, oldest first (``step-N.replaced`` before ``step-N``:
    it holds the older content of that step)."""
    if not os.path.isdir(ckpt_root):
        return []
    out = []
    for name in os.listdir(ckpt_root):
        step = _step_of(name)
        if step is not None and os.path.exists(os.path.join(ckpt_root, name, STATE_FILE)):
            out.append((step, name))
    return sorted(out, key=lambda t: (t[0], not t[1].endswith(REPLACED)))


def _point_latest(ckpt_root: str, name: str) -> None:
    pointer = os.path.join(ckpt_root, LATEST)
    with open(pointer + ".tmp", "w") as f:
        f.write(name + "\n")
    os.replace(pointer + ".tmp", pointer)


def save(ckpt_root: str, step: int, model: torch.nn.Module, optimizer: Any, train_state: Dict[str, Any],
         keep: int = 2) -> str:
    """Write checkpoint ``step`` (all ranks call this) and return its folder.

    ``keep`` > 0 keeps that many complete checkpoints (the new one included); 0 keeps all.
    """
    final = os.path.join(ckpt_root, f"step-{step:08d}")
    tmp = final + ".tmp"
    if _rank() == 0:
        os.makedirs(ckpt_root, exist_ok=True)
        for name in os.listdir(ckpt_root):
            if name.endswith(".tmp") and os.path.isdir(os.path.join(ckpt_root, name)):
                shutil.rmtree(os.path.join(ckpt_root, name), ignore_errors=True)  # never complete: see above
        os.makedirs(tmp)
    _barrier()
    dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=tmp)
    torch.save(rng_state(), os.path.join(tmp, f"rng-rank{_rank()}.pt"))
    _barrier()  # every rank's shards and RNG state are on disk
    if _rank() == 0:
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            f.write(results.dumps(dict(train_state, step=step)))  # the completion marker
        aside = final + REPLACED
        if os.path.exists(final):
            if os.path.exists(aside):
                shutil.rmtree(aside)
            os.replace(final, aside)
        os.replace(tmp, final)
        _point_latest(ckpt_root, os.path.basename(final))
        if os.path.exists(aside):
            shutil.rmtree(aside)
        complete = [name for _, name in _complete(ckpt_root)]
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(os.path.join(ckpt_root, old), ignore_errors=True)
    _barrier()
    return final


def latest(ckpt_root: str) -> Optional[str]:
    """The newest complete checkpoint folder, or None when there is none.

    Normally the folder ``latest`` names; if that is missing or incomplete, the newest complete checkpoint
    (with a warning naming both).
    """
    pointer = os.path.join(ckpt_root, LATEST)
    named = None
    if os.path.exists(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if os.path.exists(os.path.join(ckpt_root, named, STATE_FILE)):
            return os.path.join(ckpt_root, named)
    complete = _complete(ckpt_root)
    if not complete:
        if named is not None:
            log.warning("%s names %r, which is not a complete checkpoint, and there is no other", pointer, named)
        return None
    path = os.path.join(ckpt_root, complete[-1][1])
    log.warning("%s: %s; using the newest complete checkpoint, %s", ckpt_root,
                f"'latest' names {named!r}, which is missing or incomplete" if named else "no 'latest' pointer",
                path)
    return path


def _config_key(fqn: str) -> str:
    """The config key that decides the shape of model parameter ``fqn``."""
    parts = fqn.split(".")
    if parts[0] == "sparse_arch" and "weight" in parts and len(parts) > 2:
        return f"model.embeddings.{parts[2]}.{parts[parts.index('weight') - 1]}"
    if parts[:3] == ["dense_arch", "interest_arch", "interests"] and len(parts) > 3:
        return f"model.interests.{parts[3]}"
    if parts[:2] == ["dense_arch", "over_arch"]:
        return "model.tower (or the widths that feed it)"
    return "model"


# Parameter paths of checkpoints written before embedding groups and inputs by name (tinrec 0.1: tables
# grouped by width, ``sparse_arch.ecs.dim32``; ``dense_arch.interests`` / ``dense_arch.tower``).
_BEFORE_GROUPS = re.compile(r"^model\.(sparse_arch\.ecs\.dim\d+\.|sparse_arch\.ebc\.|dense_arch\.(interests|tower)\.)")


def _shape(t: Any) -> Optional[List[int]]:
    return list(t.size()) if hasattr(t, "size") and callable(t.size) else None


def check_fits(path: str, model_state: Dict[str, Any]) -> None:
    """Refuse, in one line naming the config key, a checkpoint whose model parameters differ from the model's."""
    try:
        saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    except Exception as e:  # unreadable metadata: the load below reports it
        log.debug("no DCP metadata in %s: %s", path, e)
        return
    old = next((k for k in saved if _BEFORE_GROUPS.match(k)), None)
    if old is not None:
        raise ValueError(f"{path}: written before embedding groups and inputs by name (it has {old[len('model.'):]}); "
                         f"its parameter paths cannot be loaded into this model: retrain, or use tinrec 0.1 "
                         f"(commit 8bbc339) for this checkpoint (docs/config.md, 'Migrating')")
    saved_shapes = {k[len("model."):]: list(v.size) for k, v in saved.items()
                    if k.startswith("model.") and hasattr(v, "size")}
    # tables first: a table's width is usually the cause of the tower's (the widths that feed it)
    for key, tensor in sorted(model_state.items(), key=lambda kv: not kv[0].startswith("sparse_arch.")):
        mine = _shape(tensor)
        if mine is None:
            continue
        if key not in saved_shapes:
            same_table = [k for k in saved_shapes if _config_key(k) == _config_key(key) and k != key]
            had = f" (it has {same_table[0]} {saved_shapes[same_table[0]]})" if same_table else ""
            raise ValueError(f"{path}: the checkpoint does not fit this config at {_config_key(key)}: "
                             f"{key} is not in the checkpoint{had}")
        if saved_shapes[key] != mine:
            raise ValueError(f"{path}: the checkpoint does not fit this config at {_config_key(key)}: {key} has "
                             f"shape {saved_shapes[key]} in the checkpoint, {mine} in this config")
    extra = sorted(set(saved_shapes) - set(model_state))
    if extra:
        raise ValueError(f"{path}: the checkpoint does not fit this config at {_config_key(extra[0])}: the "
                         f"checkpoint has {extra[0]}, which this config's model does not")


def load(path: str, model: torch.nn.Module, optimizer: Optional[Any] = None) -> Dict[str, Any]:
    """Load ``path`` into ``model`` (and ``optimizer``) in place; restore this rank's RNG; return train state.

    A checkpoint of another model (table widths or rows, tower, interest modules) is refused with one line
    naming the config key before anything is loaded.
    """
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.exists(state_file):
        raise ValueError(f"{path}: not a complete tinrec checkpoint (no {STATE_FILE})")
    state: Dict[str, Any] = {"model": model.state_dict()}
    check_fits(path, state["model"])
    if optimizer is not None:
        optimizer.init_state()  # materialise lazily created state (e.g. Adam moments) so DCP can fill it
        state["optim"] = optimizer.state_dict()
    try:
        dcp.load(state, checkpoint_id=path)
    except dcp.CheckpointException as e:  # a BaseException: would escape `except Exception`
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        what = "optimizer state (was train.sparse_optimizer or train.dense_optimizer changed?)" \
            if optimizer is not None else "weights"
        raise ValueError(f"{path}: cannot load the {what}: {first}") from None
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
        rng_file = os.path.join(path, f"rng-rank{_rank()}.pt")
        if os.path.exists(rng_file):
            set_rng_state(torch.load(rng_file, weights_only=False))
    with open(state_file) as f:
        return json.load(f)
