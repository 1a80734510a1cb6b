"""A dataset's columns, known before any row is read: what config validation checks feature names against.

In order: ``meta.json``'s ``columns`` (the generator and ``tinrec make-meta`` write it), else the footer of the
first train file, else, for a dataset not generated yet, the columns the generator will write for
``data.generate``. None when none exists (the names are then checked when the files are opened).
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any, Dict, Optional, Set

import pyarrow.parquet as pq
from iopath.common.file_io import g_pathmgr


_cache: Dict[str, Optional[Set[str]]] = {}


def columns(path: str, generate: Optional[Dict[str, Any]] = None) -> Optional[Set[str]]:
    """The columns (see the module docstring), remembered per dataset state: config validation asks often."""
    meta_path = posixpath.join(path, "meta.json")
    try:
        stamp = os.stat(meta_path).st_mtime_ns if os.path.exists(meta_path) else g_pathmgr.exists(meta_path)
    except OSError:
        stamp = None
    key = json.dumps([path, stamp, generate], sort_keys=True, default=str)
    if key not in _cache:
        _cache[key] = _columns(path, generate)
    return _cache[key]


def _columns(path: str, generate: Optional[Dict[str, Any]]) -> Optional[Set[str]]:
    from tinrec.data.reader import read_meta, split_files

    if g_pathmgr.exists(posixpath.join(path, "meta.json")):
        meta = read_meta(path)
        if isinstance(meta.get("columns"), dict):
            return set(meta["columns"])
        try:
            first = split_files(path, "train", meta)[0]
            with g_pathmgr.open(first, "rb") as f:
                return set(pq.ParquetFile(f).schema_arrow.names)
        except (ValueError, OSError):
            return None  # the reader reports what is wrong with the files
    if generate is not None:
        from tinrec.data.generate import columns as generated

        try:
            return set(generated(**generate))
        except (TypeError, ValueError):
            return None  # bad generator arguments are reported when it runs
    return None
