"""Every check of the data, in one place: used by the reader (stops at the first problem) and by
``tinrec check-data`` (counts every problem of every kind).

Three levels, each message naming the file, and the row and column where there is one:

- **schema** (:func:`schema_problems`, from a file's footer): a required column is missing; a column has
  the wrong type (ids, timestamps, labels, feedback and pages are integers, sequences are lists of them,
  watch time a list of numbers). Nothing is ever cast: a float or string id column is refused, so a NaN can
  never become an id.
- **values** (:func:`value_problems`, one row group at a time): nulls (of a column or inside a list);
  labels other than 0 and 1; list columns of one sequence with different lengths in a row; a sequence not
  sorted oldest first; a behaviour after the target (``<sequence>_timestamp > target_timestamp``); ids
  outside ``[0, rows)`` of their table; feedback other than 0-3; pages below 1; watch times that are
  negative or not finite. Each sequence (``hist``, ``long``, ...: ``tinrec/data/format.py``) is checked on
  its own.
- **dataset** (``tinrec check-data``, :mod:`tinrec.data.scan`): ``meta.json``'s row counts against the files.

Legend: n rows of a row group, T total list elements of a column in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tinrec.data import format as fmt

# column -> kind: "int" (integer scalar), "ints" (list of integers), "numbers" (list of int or float)
KINDS: Dict[str, str] = {fmt.LABEL: "int", fmt.TARGET_TIMESTAMP: "int", fmt.PAGE: "int",
                         fmt.HIST_TIMESTAMP: "ints", fmt.HIST_FEEDBACK: "ints", fmt.HIST_WATCH_TIME: "numbers"}
KINDS.update({c: "int" for c in fmt.USER_COLUMNS + fmt.TARGET_COLUMNS + fmt.TRIGGER_COLUMNS})
KINDS.update({c: "ints" for c in fmt.HIST_ID_COLUMNS})
KIND_TEXT = {"int": "an integer column", "ints": "a list of integers", "numbers": "a list of numbers",
             "number": "a number column"}
FEEDBACK_VALUES = (fmt.FEEDBACK_CLICK, fmt.FEEDBACK_LIKE, fmt.FEEDBACK_DISLIKE, fmt.FEEDBACK_NON_CLICK)

Column = object  # np.ndarray (scalar column) or (offsets [n+1], values [T]) (list column)


@dataclass(frozen=True)
class Problem:
    """One kind of problem in one place: ``rows`` (file rows, sorted) holds every row that has it."""

    kind: str
    file: str
    column: Optional[str]
    detail: str  # what is wrong at the first row
    rows: Tuple[int, ...] = ()

    def message(self) -> str:
        where = f"{self.file}: row {self.rows[0]}: " if self.rows else f"{self.file}: "
        col = f"column {self.column!r} " if self.column else ""
        return f"{where}{col}{self.detail}"


# Fields of any sequence, by the suffix after ``<sequence>_``.
SEQUENCE_KINDS = {"timestamp": "ints", "feedback": "ints", "watch_time": "numbers", "item": "ints",
                  "category": "ints", "brand": "ints", "author": "ints"}


def kind_of(column: str) -> Optional[str]:
    """The kind a column of the format must have, or None for a column the format does not know."""
    if column in KINDS:
        return KINDS[column]
    if column.startswith(fmt.TASK_LABEL_PREFIX):
        return "int"
    seq, field = fmt.split_column(column)
    return SEQUENCE_KINDS.get(field) if seq else None


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _kind_ok(kind: str, t: pa.DataType) -> bool:
    if kind == "int":
        return _is_int(t)
    if kind == "number":
        return _is_int(t) or pa.types.is_floating(t)
    if not _is_list(t):
        return False
    v = t.value_type
    return _is_int(v) if kind == "ints" else (_is_int(v) or pa.types.is_floating(v))


def schema_problems(file: str, schema: pa.Schema, required: Sequence[str] = fmt.REQUIRED_COLUMNS,
                    kinds: Optional[Mapping[str, str]] = None) -> List[Problem]:
    """Missing required columns and columns of the wrong type (from the footer: no data is read); ``kinds``
    gives the kind of columns the format does not know (as a model reads them)."""
    out = []
    names = set(schema.names)
    missing = [c for c in required if c not in names]
    if missing:
        out.append(Problem("missing_column", file, None, f"missing column(s) {', '.join(missing)} (see docs/data.md)"))
    for name in schema.names:
        kind = kind_of(name) or (kinds or {}).get(name)
        if kind is not None and not _kind_ok(kind, schema.field(name).type):
            out.append(Problem("column_type", file, name, f"has type {schema.field(name).type}, expected "
                               f"{KIND_TEXT[kind]} (values are never cast, see docs/data.md)"))
    return out


def null_problems(file: str, first_row: int, table: pa.Table) -> List[Problem]:
    """Nulls of a column, or inside a list column."""
    out = []
    for name in table.column_names:
        col = table.column(name)
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        if not col.null_count and not (_is_list(col.type) and any(c.values.null_count for c in chunks)):
            continue  # the usual case, from the metadata alone
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        rows = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
        what = "is null"
        if not rows.size and _is_list(arr.type) and arr.values.null_count:
            inner = arr.flatten()  # the values of the non-null lists, in row order
            parents = pc.list_parent_indices(arr).to_numpy()
            rows = np.unique(parents[inner.is_null().to_numpy(zero_copy_only=False)])
            what = "has a null inside its list"
        if rows.size:
            out.append(Problem("null", file, name, what, tuple(int(r) + first_row for r in rows)))
    return out


def list_parts(col: pa.ChunkedArray | pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """(offsets [n+1] from 0, flat values [T]) of a list column, without Python loops."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    base = offsets[0]
    return offsets - base, values[base: offsets[-1]]


def to_columns(table: pa.Table) -> Dict[str, Column]:
    """Arrow columns (already free of nulls) -> numpy: scalars as arrays, lists as (offsets, values)."""
    out: Dict[str, Column] = {}
    for name in table.column_names:
        col = table.column(name)
        out[name] = list_parts(col) if _is_list(col.type) else col.to_numpy()
    return out


def _rows_of(offsets: np.ndarray, bad_T: np.ndarray) -> np.ndarray:
    """Rows (0-based) owning the flagged list elements."""
    return np.unique(np.searchsorted(offsets, np.flatnonzero(bad_T), side="right") - 1)


def _time_problems(problem, column: str, parts: Tuple[np.ndarray, np.ndarray], cols: Mapping[str, Column]
                   ) -> Iterator[Problem]:
    """A sequence's timestamps: sorted oldest first within each row, none after the row's target."""
    off, ts = parts
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size > 1:
        step_back = np.zeros(ts.size, dtype=bool)
        step_back[1:] = ts[1:] < ts[:-1]
        step_back[off[:-1][np.diff(off) > 0]] = False  # the first behaviour of a row has no predecessor
        if step_back.any():
            bad_rows = _rows_of(off, step_back)
            yield problem("history_order", column, bad_rows, lambda r: (
                f"is not sorted oldest first (position {int(np.flatnonzero(step_back[off[r]:off[r + 1]])[0])} "
                f"is earlier than the one before it)"))
    if fmt.TARGET_TIMESTAMP in cols and ts.size:
        target = np.repeat(np.asarray(cols[fmt.TARGET_TIMESTAMP], dtype=np.int64), np.diff(off))
        after = ts > target
        if after.any():
            bad_rows = _rows_of(off, after)
            yield problem("behaviour_after_target", column, bad_rows, lambda r: (
                f"has a behaviour at {int(ts[off[r]:off[r + 1]].max())}, after the target's "
                f"{fmt.TARGET_TIMESTAMP} {int(np.asarray(cols[fmt.TARGET_TIMESTAMP])[r])}"))


def value_problems(file: str, first_row: int, cols: Mapping[str, Column],
                   id_rows: Mapping[str, Tuple[str, int]]) -> Iterator[Problem]:
    """Every value problem of one row group; ``id_rows``: id column -> (table, rows) to check ids against."""

    def problem(kind: str, column: Optional[str], rows: np.ndarray, detail) -> Problem:
        rows = np.asarray(rows, dtype=np.int64)
        return Problem(kind, file, column, detail(int(rows[0])), tuple((rows + first_row).tolist()))

    for c in [c for c in cols if c == fmt.LABEL or c.startswith(fmt.TASK_LABEL_PREFIX)]:
        labels = np.asarray(cols[c])
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if bad.size:
            yield problem("label", None if c == fmt.LABEL else c, bad, lambda r, labels=labels, c=c: (
                f"label must be 0 or 1, got {labels[r]}" if c == fmt.LABEL else f"must be 0 or 1, got {labels[r]}"))
    lists = {c: v for c, v in cols.items() if isinstance(v, tuple)}
    by_sequence: Dict[str, List[str]] = {}
    for c in lists:
        seq = fmt.sequence_of(c)
        if seq is not None:
            by_sequence.setdefault(seq, []).append(c)
    for seq, names in by_sequence.items():
        ts = fmt.timestamp_column(seq)
        first_id = f"{seq}_item" if seq == fmt.HISTORY and f"{seq}_item" in lists else None
        ref_name = first_id or (ts if ts in lists else names[0])
        ref_len = np.diff(lists[ref_name][0])
        for c in names:
            off = lists[c][0]
            bad = np.flatnonzero(np.diff(off) != ref_len)
            if bad.size:
                yield problem("list_length", c, bad, lambda r, c=c, off=off, ref_name=ref_name, ref_len=ref_len: (
                    f"has {int(np.diff(off)[r])} elements, {ref_name!r} has {int(ref_len[r])} (every list column of "
                    f"a sequence has one element per behaviour)"))
        if ts in lists:
            yield from _time_problems(problem, ts, lists[ts], cols)
    for c, (table, n) in id_rows.items():
        if c not in cols:
            continue
        v = cols[c]
        off, vals = v if isinstance(v, tuple) else (None, v)
        vals = np.asarray(vals)
        outside = (vals < 0) | (vals >= n)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            rows = np.flatnonzero(outside) if off is None else _rows_of(off, outside)
            yield problem("id_range", c, rows, lambda r, vals=vals, first=first: (
                f"has id {vals[first]}, outside [0, {n}) of table {table!r}"))
    field = {c: f for c in lists for seq, f in [fmt.split_column(c)] if seq}  # list column -> its sequence field
    for c in [c for c in lists if field.get(c) == "feedback"]:
        off, fb = lists[c]
        bad = ~np.isin(np.asarray(fb), FEEDBACK_VALUES)
        if bad.any():
            yield problem("feedback", c, _rows_of(off, bad), lambda r, fb=fb, bad=bad: (
                f"has {np.asarray(fb)[np.flatnonzero(bad)[0]]}, expected one of {list(FEEDBACK_VALUES)}"))
    for c in [c for c in lists if field.get(c) == "watch_time"]:
        off, w = lists[c]
        w = np.asarray(w, dtype=np.float64)
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            yield problem("watch_time", c, _rows_of(off, bad), lambda r, w=w, bad=bad: (
                f"has {w[np.flatnonzero(bad)[0]]}, expected a finite number >= 0"))
    if fmt.PAGE in cols:
        page = np.asarray(cols[fmt.PAGE])
        bad = np.flatnonzero(page < 1)
        if bad.size:
            yield problem("page", fmt.PAGE, bad, lambda r: f"is {page[r]}, expected >= 1")
