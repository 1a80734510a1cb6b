"""Errors the command line reports in one line (``error: ...``) with their own exit status.

``ValueError`` (exit 2) is bad input: a config key, a data file, row and column, a checkpoint that does
not fit. :class:`NonFiniteError` (exit 3) is a training run stopped by the non-finite guard
(``tinrec/guard.py``). Anything else is a bug and keeps its traceback.
"""


class NonFiniteError(RuntimeError):
    """Training stopped at a non-finite loss or gradient (``train.on_nonfinite: stop``)."""
