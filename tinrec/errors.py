"""Errors the command line reports in one line (``error: ...``) with their own exit status.

``ValueError`` (exit 2) is bad input: a config key, a data file, row and column, a checkpoint that does
not fit. :class:`NonFiniteError` (exit 3) is a training run stopped by the non-finite guard
(``tinrec/guard.py``); :class:`CollectiveTimeout` (exit 4) a job ended because a rank stopped responding
(``tinrec/train.py``). Anything else is a bug and keeps its traceback.
"""


class NonFiniteError(RuntimeError):
    """Training stopped at a non-finite loss or gradient (``train.on_nonfinite: stop``)."""


class SharedSetupError(ValueError):
    """Bad input found by rank 0 during setup and raised on every rank (``distributed.main_first``). Each rank
    reports it, then :meth:`settle` waits (a little) until every rank has: under torchrun the first rank to
    exit ends the others, which must not happen before they have said why."""

    def __init__(self, message: str, group=None) -> None:
        super().__init__(message)
        self.group = group

    def settle(self, timeout_s: float = 30.0) -> None:
        import datetime

        import torch.distributed as dist

        if self.group is None or not dist.is_initialized():
            return
        try:
            dist.monitored_barrier(group=self.group, timeout=datetime.timedelta(seconds=timeout_s))
        except Exception:  # a rank already gone: nothing left to wait for
            pass


class CollectiveTimeout(RuntimeError):
    """A collective waited longer than ``train.collective_timeout_s``: a rank hung or stopped."""
