"""A dataset's layout, known before any row is read: its meta.json, its split files, and its columns (what config
validation checks feature names against).

In order: ``meta.json``'s ``columns`` (the generator and ``tinrec make-meta`` write it), else the footer of the
first train file, else, for a dataset not generated yet, the columns the generator will write for
``data.generate``. None when none exists (the names are then checked when the files are opened).
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any, Dict, List, Optional, Set

import pyarrow.parquet as pq
from iopath.common.file_io import g_pathmgr


def read_meta(path: str) -> dict:
    meta_path = posixpath.join(path, "meta.json")
    if not g_pathmgr.exists(meta_path):
        raise ValueError(f"{meta_path}: dataset meta file not found (is data.path a dataset folder?)")
    with g_pathmgr.open(meta_path, "r") as f:
        return json.load(f)


def split_files(path: str, split: str, meta: Optional[dict] = None) -> List[str]:
    """The Parquet files of a split: those meta.json lists, else every ``*.parquet`` in ``path/split``."""
    meta = meta if meta is not None else read_meta(path)
    listed = meta.get("splits", {}).get(split, {}).get("files")
    if listed:
        files = [posixpath.join(path, f) for f in listed]
    else:
        folder = posixpath.join(path, split)
        if not g_pathmgr.isdir(folder):
            raise ValueError(f"{folder}: split folder not found")
        files = [posixpath.join(folder, f) for f in sorted(g_pathmgr.ls(folder)) if f.endswith(".parquet")]
    if not files:
        raise ValueError(f"{posixpath.join(path, split)}: no Parquet files in split {split!r}")
    return files


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


def describe(arrow_schema) -> Dict[str, Dict[str, Any]]:
    """meta.json ``columns``: each column's Arrow type, its kind (``id`` / ``id_sequence`` / ``float`` /
    ``float_sequence``; timestamps and labels are ids by type) and the sequence it belongs to (None: per
    sample), the latter from its name (``tinrec/data/format.py``)."""
    import pyarrow as pa

    from tinrec.data import format as fmt

    out = {}
    for field in arrow_schema:
        t = field.type
        is_list = pa.types.is_list(t) or pa.types.is_large_list(t)
        base = t.value_type if is_list else t
        kind = "float" if pa.types.is_floating(base) else "id"
        out[field.name] = {"type": str(t), "kind": kind + ("_sequence" if is_list else ""),
                           "sequence": fmt.sequence_of(field.name) if is_list else None}
    return out
