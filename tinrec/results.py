"""Results files are strict JSON: a value that is not a finite number is written as ``null``, never ``NaN``.

A metric that cannot be computed is ``null`` beside a ``<metric>_unavailable`` key that says why
(:mod:`tinrec.metrics`); anything else non-finite that reaches a results file also becomes ``null``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np


def strict(obj: Any) -> Any:
    """``obj`` with every non-finite float (Python or numpy) replaced by None, numpy scalars made Python."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, indent: int = 1) -> str:
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def write_json(path: str, obj: Any, indent: int = 1) -> None:
    """Write ``obj`` as strict JSON to a local ``path``, atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(dumps(obj, indent) + "\n")
    os.replace(tmp, path)
