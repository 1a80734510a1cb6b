"""The process group: one per job (torchrun) or a one-process group when run alone, with a bounded wait.

- :func:`init_distributed` joins the group with ``train.collective_timeout_s`` as the timeout of every
  collective, and makes a second gloo group with a long timeout for setup that rank 0 does first
  (:func:`main_first`: generating or checking data), so that setup is not mistaken for a hung rank.
- :func:`collective_timeout` turns a collective that timed out (a rank that hangs or was stopped) into one
  line naming the ranks that stopped answering; the job then ends and torchrun / TorchX restarts it.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from tinrec.errors import CollectiveTimeout, SharedSetupError

log = logging.getLogger(__name__)

SETUP_TIMEOUT = datetime.timedelta(hours=24)  # how long ranks wait for rank 0's setup (generating, checking data)


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    setup_group: Any = None  # gloo group with SETUP_TIMEOUT for rank-0-first setup (None: one rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SETUP_GROUP: Any = None


def init_distributed(collective_timeout_s: Optional[float] = None) -> DistEnv:
    """Join the torchrun process group, or make a one-process group when run alone.

    ``collective_timeout_s`` (``train.collective_timeout_s``) bounds every collective of the job: a rank that
    stops responding (hung, stopped) ends the job instead of hanging it (:func:`collective_timeout`). Setup
    that rank 0 does first (:func:`main_first`) waits up to ``SETUP_TIMEOUT`` on a separate gloo group.
    """
    global _SETUP_GROUP
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=collective_timeout_s) if collective_timeout_s else None
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                    world_size=1, timeout=timeout)
    if _SETUP_GROUP is None and dist.get_world_size() > 1:
        _SETUP_GROUP = dist.new_group(backend="gloo", timeout=SETUP_TIMEOUT)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())), device=device,
                   setup_group=_SETUP_GROUP)


def unresponsive_ranks(env: DistEnv, grace_s: float) -> Optional[List[int]]:
    """After a collective timed out: the ranks that do not report alive within ``grace_s``.

    Every rank that notices the timeout writes a key to the job's store (the rendezvous TCPStore) and waits
    for the others' keys; the ranks whose key never comes are hung or stopped. None when the store itself
    does not answer (rank 0 hosts it under torchrun, so rank 0 is then the one that stopped).
    """
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=grace_s))
        prefix = f"tinrec/alive/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        store.set(prefix + str(env.rank), "1")
        deadline = time.monotonic() + grace_s
        while True:
            missing = [r for r in range(env.world_size) if not store.check([prefix + str(r)])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)
    except Exception as e:  # the store timed out or is gone
        log.debug("store check after a collective timeout failed: %s", e)
        return None


# gloo's words for a collective that timed out: "Timed out waiting 10000ms for recv operation to complete",
# "Application timeout caused pair closure"
_TIMEOUT = re.compile(r"timed out|timeout", re.IGNORECASE)


@contextmanager
def collective_timeout(env: DistEnv, timeout_s: float):
    """Turn a collective that timed out (gloo raises it here) into one :class:`CollectiveTimeout` line naming the
    ranks that stopped answering. (NCCL's watchdog ends the process itself, naming the collective.)"""
    try:
        yield
    except RuntimeError as e:
        if env.world_size == 1 or not _TIMEOUT.search(str(e)) or isinstance(e, CollectiveTimeout):
            raise
        grace = min(max(5.0, timeout_s / 2), 60.0)
        missing = unresponsive_ranks(env, grace)
        if missing is None:
            who = "the job's store did not answer either: rank 0, which hosts it, stopped responding"
        elif missing:
            who = f"rank(s) {', '.join(map(str, missing))} did not answer within {grace:.0f} s: hung or stopped"
        else:
            who = "every rank answered afterwards: the collective was only slow (raise train.collective_timeout_s)"
        raise CollectiveTimeout(
            f"rank {env.rank}: a collective waited longer than train.collective_timeout_s={timeout_s:g} s; {who}. "
            f"Ending the job so that torchrun / TorchX (--max_restarts) can restart it from the last checkpoint "
            f"({str(e).strip().splitlines()[0]})") from None


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextmanager
def main_first(env: DistEnv):
    """Rank 0 runs the block first (e.g. writes a file), then the others. If it fails on rank 0, every rank
    raises its error (instead of the others waiting for rank 0 until the collective timeout)."""
    if env.world_size == 1:
        yield
        return
    failure: List[Optional[str]] = [None]
    if env.is_main:
        try:
            yield
        except BaseException as e:
            failure[0] = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            dist.broadcast_object_list(failure, src=0, group=env.setup_group)
            if isinstance(e, ValueError):
                raise SharedSetupError(failure[0], env.setup_group) from e
            raise
        dist.broadcast_object_list(failure, src=0, group=env.setup_group)
    else:
        dist.broadcast_object_list(failure, src=0, group=env.setup_group)
        if failure[0] is not None:
            raise SharedSetupError(failure[0], env.setup_group)
        yield


def sum_ranks(value: int) -> int:
    """Sum of an integer over every rank (a collective: every rank calls it)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t)
    return int(t.item())
