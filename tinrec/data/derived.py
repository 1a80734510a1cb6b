"""Derived features: what the loader computes from the stored columns, one registry instead of if-chains.

Each entry says which stored columns it needs (beyond the history length, always read), how many rows its
table has when the table says ``rows: auto`` (None: the table's size comes from ``meta.json``, like any id
table), and how its values are computed from one batch's rows. ``tinrec/features.py`` (the feature
schema, table sizes), ``tinrec/data/reader.py`` (columns read, the KeyedJaggedTensor) read it.

Ids (looked up in embedding tables, keys of the KeyedJaggedTensor):

=================  ========  ================================================================  ==============
feature            kind      value                                                             rows (auto)
=================  ========  ================================================================  ==============
hist_position      sequence  target-relative position, most recent kept behaviour = 1 (TTE-P)  max_len + 1
target_position    scalar    0, the origin                                                     max_len + 1
hist_time_bin      sequence  1 + equal-frequency bin of target_timestamp - hist_timestamp        time_bins + 1
target_time_bin    scalar    0                                                                 time_bins + 1
hist_coe           sequence  chronological order, oldest kept = 1 (COE)                        max_len + 2
target_coe         scalar    kept length + 1                                                   max_len + 2
hist_/target_hour  both      UTC hour 0-23 of the timestamp (TE)                               24
..._weekday        both      weekday 0-6, Monday = 0                                           7
..._month          both      month 0-11                                                        12
hist_neg_item      sequence  an item drawn uniformly from the item table (DIEN's negatives)    the table's
=================  ========  ================================================================  ==============

Dense per-behaviour values (``Batch.dense``, not embedded): ``hist_timestamp`` (int64 seconds) and
``hist_session`` (DSIN's sessions, most recent = 0, ``modules/dsin.py`` ``SESSION_GAP_S``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from tinrec.data import format as fmt
from tinrec.modules.dsin import SESSION_GAP_S

CALENDAR_ROWS = {"hour": 24, "weekday": 7, "month": 12}


@dataclass
class Rows:
    """One batch's rows, as derived features see them.

    Attributes:
        chunk: stored columns: scalars [B], lists (offsets [B+1], values) of the full histories.
        keep: [B] kept behaviours per row (the most recent ``max_len``).
        idx: [N] flat indices, into a list column's values, of the kept behaviours (oldest first).
        coe: [N] chronological order of each kept behaviour within its row, oldest = 1.
        edges: inner edges of the time-interval bins (seconds), or None.
        rng: the batch's seeded generator (negative sampling), made on first use.
        table_rows: rows of the table that reads the feature being computed.
    """

    chunk: dict
    keep: np.ndarray
    idx: np.ndarray
    coe: np.ndarray
    edges: Optional[np.ndarray]
    rng: Callable[[], np.random.Generator]
    table_rows: int = 0

    def hist(self, column: str) -> np.ndarray:
        return np.asarray(self.chunk[column][1])[self.idx]

    def scalar(self, column: str) -> np.ndarray:
        return np.asarray(self.chunk[column])


@dataclass(frozen=True)
class Derived:
    sequence: bool
    columns: Tuple[str, ...]
    rows: Optional[Callable[[int, int], int]]  # (max_len, time_bins) -> table rows; None: from meta.json
    compute: Callable[[Rows], np.ndarray]


def calendar(ts: np.ndarray, unit: str) -> np.ndarray:
    """UTC hour (0-23), weekday (Monday = 0) or month (0-11) of int64 epoch seconds."""
    if unit == "hour":
        return (ts // 3600) % 24
    if unit == "weekday":
        return (ts // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    return ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12


def sessions(ts: np.ndarray, lengths: np.ndarray, gap_seconds: int = SESSION_GAP_S) -> np.ndarray:
    """Session index of each behaviour of flat jagged ``ts`` (rows of ``lengths``), most recent session = 0.

    A new session starts where the gap to the previous behaviour of the row exceeds ``gap_seconds`` (DSIN).
    """
    n = ts.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    new = np.zeros(n, dtype=bool)
    new[1:] = np.diff(ts) > gap_seconds
    new[starts[lengths > 0]] = True
    cum = np.cumsum(new)  # global session counter
    row = np.repeat(np.arange(lengths.size), lengths)
    last = cum[np.cumsum(lengths)[lengths > 0] - 1]
    last_r = np.zeros(lengths.size, dtype=np.int64)
    last_r[lengths > 0] = last
    return (last_r[row] - cum).astype(np.int64)


def _time_bin(r: Rows) -> np.ndarray:
    dt = np.repeat(r.scalar(fmt.TARGET_TIMESTAMP), r.keep) - r.hist(fmt.HIST_TIMESTAMP)
    return 1 + np.searchsorted(r.edges, dt, side="right")


def _origin(r: Rows) -> np.ndarray:
    return np.zeros(r.keep.size, dtype=np.int64)


_POSITION_ROWS = lambda max_len, bins: max_len + 1  # noqa: E731
_TIME_BIN_ROWS = lambda max_len, bins: bins + 1  # noqa: E731
_COE_ROWS = lambda max_len, bins: max_len + 2  # noqa: E731

IDS: Dict[str, Derived] = {
    "hist_position": Derived(True, (), _POSITION_ROWS, lambda r: np.repeat(r.keep, r.keep) - r.coe + 1),
    "target_position": Derived(False, (), _POSITION_ROWS, _origin),
    "hist_time_bin": Derived(True, (fmt.HIST_TIMESTAMP, fmt.TARGET_TIMESTAMP), _TIME_BIN_ROWS, _time_bin),
    "target_time_bin": Derived(False, (), _TIME_BIN_ROWS, _origin),
    "hist_coe": Derived(True, (), _COE_ROWS, lambda r: r.coe),
    "target_coe": Derived(False, (), _COE_ROWS, lambda r: r.keep + 1),
}
for _unit, _n in CALENDAR_ROWS.items():
    IDS[f"hist_{_unit}"] = Derived(True, (fmt.HIST_TIMESTAMP,), lambda max_len, bins, n=_n: n,
                                   lambda r, u=_unit: calendar(r.hist(fmt.HIST_TIMESTAMP), u))
    IDS[f"target_{_unit}"] = Derived(False, (fmt.TARGET_TIMESTAMP,), lambda max_len, bins, n=_n: n,
                                     lambda r, u=_unit: calendar(r.scalar(fmt.TARGET_TIMESTAMP), u))
IDS["hist_neg_item"] = Derived(True, (), None,
                               lambda r: r.rng().integers(1, max(r.table_rows, 2), size=int(r.idx.size)))

DENSE: Dict[str, Derived] = {
    "hist_timestamp": Derived(True, (fmt.HIST_TIMESTAMP,), None, lambda r: r.hist(fmt.HIST_TIMESTAMP)),
    "hist_session": Derived(True, (fmt.HIST_TIMESTAMP,), None,
                            lambda r: sessions(r.hist(fmt.HIST_TIMESTAMP), r.keep)),
}


def table_rows(features, max_len: int, time_bins: int) -> Optional[int]:
    """Rows of an ``auto`` table whose features are all derived ids with one table size, else None."""
    sizes = {IDS[f].rows(max_len, time_bins) if f in IDS and IDS[f].rows else None for f in features}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None
