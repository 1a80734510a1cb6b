"""One streaming pass over a dataset: ``tinrec check-data`` (every problem, counted, with the first examples)
and ``tinrec make-meta`` (a ``meta.json`` inferred from the files).

The pass reads one row group at a time (memory bounded by the largest row group) and applies every check
of :mod:`tinrec.data.checks` to every column of the format that a file has, whatever a model reads; ids are
checked against ``meta.json``'s ``tables``. Training runs it on a dataset's first use and caches the result
in ``<dataset>/.tinrec/check.json``, keyed by each file's size and modification time (or footer, for paths
that are not local files), so a changed, added or removed file makes it run again.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pyarrow.parquet as pq
from iopath.common.file_io import g_pathmgr
from tqdm import tqdm

from tinrec.data import checks
from tinrec.data import format as fmt
from tinrec.data.io import write_bytes_atomic
from tinrec.data.schema import describe
from tinrec.results import dumps

log = logging.getLogger(__name__)

CACHE_DIR = ".tinrec"  # the one folder tinrec creates inside a dataset it did not generate
CHECK_FILE = "check.json"
CHECK_VERSION = 1  # bump when the checks change: cached results of older checks are not trusted


def cache_path(dataset: str, name: str) -> str:
    return posixpath.join(dataset, CACHE_DIR, name)


def split_files_of(dataset: str, meta: Optional[Mapping]) -> Dict[str, List[str]]:
    """Split -> Parquet files: those ``meta.json`` lists, else every ``*.parquet`` of the split folder."""
    out = {}
    for split in fmt.SPLITS:
        listed = ((meta or {}).get("splits", {}).get(split) or {}).get("files")
        if listed:
            out[split] = [posixpath.join(dataset, f) for f in listed]
            continue
        folder = posixpath.join(dataset, split)
        if g_pathmgr.isdir(folder):
            out[split] = [posixpath.join(folder, f) for f in sorted(g_pathmgr.ls(folder)) if f.endswith(".parquet")]
    return out


def fingerprint(files: Mapping[str, List[str]], meta: Optional[Mapping]) -> Dict[str, Any]:
    """What the cached result depends on: the checks' version, meta.json, and each file's size and mtime."""
    stamp: Dict[str, Any] = {"version": CHECK_VERSION, "meta": meta, "files": {}}
    for split, paths in files.items():
        for path in paths:
            if os.path.exists(path):
                st = os.stat(path)
                stamp["files"][path] = [st.st_size, st.st_mtime_ns]
            elif g_pathmgr.exists(path):
                with g_pathmgr.open(path, "rb") as f:
                    md = pq.ParquetFile(f).metadata
                stamp["files"][path] = [md.num_rows, md.num_row_groups, md.serialized_size]
            else:
                stamp["files"][path] = None
    return stamp


class _Tally:
    """Problems of one kind: how many rows (or files, for file-level problems) and the first examples."""

    def __init__(self, max_examples: int) -> None:
        self.max_examples = max_examples
        self.kinds: Dict[str, Dict[str, Any]] = {}

    def add(self, p: checks.Problem) -> None:
        k = self.kinds.setdefault(p.kind, {"kind": p.kind, "count": 0, "unit": "rows" if p.rows else "files",
                                           "examples": []})
        k["count"] += len(p.rows) if p.rows else 1
        if len(k["examples"]) < self.max_examples:
            k["examples"].append(p.message())


def scan(dataset: str, meta: Optional[Mapping] = None, *, max_examples: int = 3,
         show_progress: bool = True) -> Dict[str, Any]:
    """Check every file of ``dataset``; returns the report (strict JSON) with ``ok`` False if any problem."""
    files = split_files_of(dataset, meta)
    errors, warnings = _Tally(max_examples), _Tally(max_examples)
    tables = dict((meta or {}).get("tables", {}))
    id_rows: Dict[str, Tuple[str, int]] = {}  # every id column of the files whose table meta.json sizes
    if meta is not None:
        for c, t in fmt.COLUMN_TABLES.items():
            if c in fmt.REQUIRED_COLUMNS and t not in tables:
                errors.add(checks.Problem("meta_tables", posixpath.join(dataset, "meta.json"), None,
                                          f"'tables' has no {t!r} (the table of column {c!r})"))
    rows: Dict[str, int] = {}
    max_ids: Dict[str, int] = {}
    max_len, hist_total, row_groups = 0, 0, 0
    opened = []  # (split, path, ParquetFile metadata, readable columns)
    for split, paths in files.items():
        if not paths:
            errors.add(checks.Problem("no_files", posixpath.join(dataset, split), None, "has no Parquet files"))
        for path in paths:
            try:
                with g_pathmgr.open(path, "rb") as f:
                    pf = pq.ParquetFile(f)
                    schema, md = pf.schema_arrow, pf.metadata
            except Exception as e:  # missing, truncated, not Parquet: pyarrow raises several types
                errors.add(checks.Problem("unreadable", path, None, f"not a readable Parquet file: {e}"))
                continue
            bad_schema = checks.schema_problems(path, schema)
            for p in bad_schema:
                errors.add(p)
            wrong = {p.column for p in bad_schema if p.column}
            readable = [c for c in schema.names if checks.kind_of(c) and c not in wrong]
            for c in readable:
                t = fmt.column_table(c)
                if t in tables:
                    id_rows[c] = (t, int(tables[t]))
            opened.append((split, path, md, readable))
            row_groups += md.num_row_groups
    bar = tqdm(total=row_groups, unit="row group", desc=f"check-data {dataset}", disable=not show_progress)
    for split, path, md, readable in opened:
        rows[split] = rows.get(split, 0) + md.num_rows
        first = 0
        with g_pathmgr.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            for g in range(md.num_row_groups):
                table = pf.read_row_group(g, columns=readable)
                nulls = checks.null_problems(path, first, table)
                for p in nulls:
                    errors.add(p)
                table = table.drop_columns([p.column for p in nulls])
                cols = checks.to_columns(table)
                for p in checks.value_problems(path, first, cols, id_rows):
                    errors.add(p)
                for c in [c for c in cols if fmt.column_table(c)]:
                    v = cols.get(c)
                    vals = np.asarray(v[1] if isinstance(v, tuple) else v) if v is not None else None
                    if vals is not None and vals.size:
                        max_ids[c] = max(max_ids.get(c, 0), int(vals.max()))
                if fmt.HIST_ID_COLUMNS[0] in cols:
                    lens = np.diff(cols[fmt.HIST_ID_COLUMNS[0]][0])
                    max_len = max(max_len, int(lens.max()) if lens.size else 0)
                    if split == "train":
                        hist_total += int(lens.sum())
                first += md.row_group(g).num_rows
                bar.update(1)
    bar.close()
    for split, n in rows.items():
        said = ((meta or {}).get("splits", {}).get(split) or {}).get("rows")
        if meta is not None and said is not None and int(said) != n:
            warnings.add(checks.Problem("meta_rows", posixpath.join(dataset, "meta.json"), None,
                                        f"says split {split!r} has {said} rows, its files have {n}"))
    return {"dataset": dataset, "ok": not errors.kinds, "rows": rows, "row_groups": row_groups,
            "problems": list(errors.kinds.values()), "warnings": list(warnings.kinds.values()),
            "max_ids": max_ids, "max_seq_len": max_len,
            "mean_history_length": hist_total / rows["train"] if rows.get("train") else None}


def format_report(report: Mapping[str, Any]) -> str:
    head = (f"{report['dataset']}: {sum(report['rows'].values())} rows in {report['row_groups']} row groups "
            f"({', '.join(f'{s} {n}' for s, n in report['rows'].items())})")
    lines = [head + (": no problems" if report["ok"] else ": PROBLEMS")]
    for title, kinds in (("problem", report["problems"]), ("warning", report["warnings"])):
        for k in kinds:
            lines.append(f"  {title} {k['kind']}: {k['count']} {k['unit']}")
            lines += [f"    {e}" for e in k["examples"]]
    return "\n".join(lines)


def first_problem(report: Mapping[str, Any]) -> str:
    k = report["problems"][0]
    return (f"{k['examples'][0]} ({len(report['problems'])} kind(s) of problem: "
            f"`tinrec check-data {report['dataset']}` lists them; data.check=false skips this scan, the reader "
            f"still stops at the first bad row)")


def cached_check(dataset: str, meta: Mapping, *, show_progress: bool = True) -> Dict[str, Any]:
    """The check-data report of ``dataset``, from ``.tinrec/check.json`` when its files have not changed."""
    stamp = fingerprint(split_files_of(dataset, meta), meta)
    path = cache_path(dataset, CHECK_FILE)
    if g_pathmgr.exists(path):
        try:
            with g_pathmgr.open(path, "r") as f:
                cached = json.load(f)
            if cached.get("fingerprint") == json.loads(json.dumps(stamp)):
                return cached["report"]
        except (ValueError, KeyError):
            pass  # unreadable cache: check again
    log.info("checking %s before its first use (data.check; the result is cached in %s)", dataset, path)
    report = scan(dataset, meta, show_progress=show_progress)
    try:
        g_pathmgr.mkdirs(posixpath.dirname(path))
        write_bytes_atomic(path, dumps({"fingerprint": stamp, "report": report}).encode("utf-8"))
    except OSError as e:
        log.warning("cannot cache the data check in %s (%s): it will run again next time", path, e)
    return report


def infer_meta(dataset: str, *, show_progress: bool = True) -> Dict[str, Any]:
    """A ``meta.json`` for a folder of Parquet files in the format: tables sized by the largest id + 1."""
    report = scan(dataset, None, show_progress=show_progress)
    if not report["ok"]:
        raise ValueError(f"{dataset}: cannot infer meta.json, the files have problems:\n{format_report(report)}")
    files = split_files_of(dataset, None)
    tables: Dict[str, int] = {}
    for c, top in report["max_ids"].items():
        t = fmt.column_table(c)
        tables[t] = max(tables.get(t, 0), top + 1)
    first = next((paths[0] for paths in files.values() if paths), None)
    columns = {}
    if first is not None:
        with g_pathmgr.open(first, "rb") as f:
            columns = describe(pq.ParquetFile(f).schema_arrow)
    return {"format_version": fmt.FORMAT_VERSION, "tables": tables, "columns": columns,
            "splits": {s: {"rows": report["rows"].get(s, 0),
                           "files": [posixpath.relpath(p, dataset) for p in paths]} for s, paths in files.items()},
            "max_seq_len": report["max_seq_len"], "mean_history_length": report["mean_history_length"],
            "inferred_by": "tinrec make-meta"}
