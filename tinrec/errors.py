"""Errors the command line reports in one line (``error: ...``) with their own exit status.

``ValueError`` (exit 2) is bad input: a config key, a data file, row and column, a checkpoint that does
not fit. :class:`NonFiniteError` (exit 3) is a training run stopped by the non-finite guard
(``tinrec/guard.py``); :class:`CollectiveTimeout` (exit 4) a job ended because a rank stopped responding
(``tinrec/train.py``). Anything else is a bug and keeps its traceback.
"""


class NonFiniteError(RuntimeError):
    """Training stopped at a non-finite loss or gradient (``train.on_nonfinite: stop``)."""


class CollectiveTimeout(RuntimeError):
    """A collective waited longer than ``train.collective_timeout_s``: a rank hung or stopped."""
