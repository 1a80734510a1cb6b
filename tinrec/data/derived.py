"""Derived features: what the loader computes from the stored columns, one registry instead of if-chains.

Each entry says which stored columns it needs (beyond the sequence's length, always read), how many rows
its table has when the table says ``rows: auto`` (None: the table's size comes from ``meta.json``, like any
id table), and how its values are computed from one batch's rows. ``tinrec/features.py`` (the feature
schema, table sizes), ``tinrec/data/reader.py`` (columns read, the KeyedJaggedTensor) read it.

Every sequence ``S`` of the data (``hist``, and any other: ``long``, ``click``, ...) has the sequence
features below as ``S_position``, ``S_time_bin``, ... (``hist_*`` in the table), each computed from that
sequence's kept behaviours, its timestamps ``S_timestamp`` and its own ``max_len`` (``data.sequences``). The
target's features (``target_*``) are relative to ``hist``.

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
hist_interval      sequence  1 + min(floor((target_timestamp - hist_timestamp) / T_f), R - 2)  interval_buckets + 1
target_interval    scalar    0                                                                 interval_buckets + 1
hist_/target_hour  both      UTC hour 0-23 of the timestamp (TE)                               24
..._weekday        both      weekday 0-6, Monday = 0                                           7
..._month          both      month 0-11                                                        12
hist_neg_item      sequence  an item drawn uniformly from the item table (DIEN's negatives)    the table's
=================  ========  ================================================================  ==============

``S_interval`` is DEI2N's time interval (Sec. 2.1: ``t_i = floor((t - t_i) / T_f)``), ``T_f`` =
``data.interval_seconds`` (the paper's 60: minutes); ids 1..R-1 for a table of R rows, the last one holding
every interval of ``R - 2`` units or more (our choice: the paper does not say how it bounds the table; the
default ``data.interval_buckets`` 1440 is one day in minutes), 0 the target (the origin) and padding.

Dense values (``Batch.dense``, not embedded, ``model.inputs.X.dense``): any stored column that is not read
as ids (``hist_timestamp``, int64 seconds; ``hist_watch_time``, float; per-sample numbers), and the derived
``S_session`` (DSIN's sessions, most recent = 0, ``modules/dsin.py`` ``SESSION_GAP_S``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from tinrec.data import format as fmt
from tinrec.modules.dsin import SESSION_GAP_S

if TYPE_CHECKING:  # pragma: no cover
    from tinrec.data.search import Search

CALENDAR_ROWS = {"hour": 24, "weekday": 7, "month": 12}


@dataclass
class Rows:
    """One batch's rows of one sequence, as derived features see them.

    Attributes:
        chunk: stored columns: scalars [B], lists (offsets [B+1], values) of the full sequences.
        keep: [B] kept behaviours per row (the most recent ``max_len`` of the sequence).
        idx: [N] flat indices, into a list column's values, of the kept behaviours (oldest first).
        coe: [N] chronological order of each kept behaviour within its row, oldest = 1.
        edges: inner edges of the sequence's time-interval bins (seconds), or None.
        rng: the batch's seeded generator (negative sampling), made on first use.
        sequence: the sequence's name (its columns are ``<sequence>_*``).
        table_rows: rows of the table that reads the feature being computed.
        search: a searched sequence's search (``tinrec/data/search.py``): its columns are its source's (``idx``
            then indexes the source's list columns).
    """

    chunk: dict
    keep: np.ndarray
    idx: np.ndarray
    coe: np.ndarray
    edges: Optional[np.ndarray]
    rng: Callable[[], np.random.Generator]
    sequence: str = fmt.HISTORY
    table_rows: int = 0
    search: Optional["Search"] = None
    interval_seconds: int = 60

    def hist(self, column: str) -> np.ndarray:
        """The kept values of list column ``column``; ``{seq}`` stands for the sequence's name (a searched
        sequence's ``<name>_<field>`` reads its source's ``<source>_<field>``)."""
        column = column.format(seq=self.sequence)
        if self.search is not None:
            column = self.search.stored(column)
        return np.asarray(self.chunk[column][1])[self.idx]

    def scalar(self, column: str) -> np.ndarray:
        return np.asarray(self.chunk[column])


@dataclass(frozen=True)
class Sizes:
    """The data settings that size derived tables (``data.time_bins``, ``data.interval_buckets``)."""

    time_bins: int = 10
    interval_buckets: int = 1440


@dataclass(frozen=True)
class Derived:
    sequence: bool
    columns: Tuple[str, ...]  # stored columns it reads; ``{seq}`` stands for the sequence's name
    rows: Optional[Callable[[int, "Sizes"], int]]  # (max_len, sizes) -> table rows; None: from meta.json
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


TS = "{seq}_timestamp"


def _time_bin(r: Rows) -> np.ndarray:
    dt = np.repeat(r.scalar(fmt.TARGET_TIMESTAMP), r.keep) - r.hist(TS)
    return 1 + np.searchsorted(r.edges, dt, side="right")


def _interval(r: Rows) -> np.ndarray:
    dt = np.repeat(r.scalar(fmt.TARGET_TIMESTAMP), r.keep) - r.hist(TS)
    return 1 + np.minimum(np.maximum(dt, 0) // max(int(r.interval_seconds), 1), max(r.table_rows - 2, 0))


def _origin(r: Rows) -> np.ndarray:
    return np.zeros(r.keep.size, dtype=np.int64)


_POSITION_ROWS = lambda max_len, sizes: max_len + 1  # noqa: E731
_TIME_BIN_ROWS = lambda max_len, sizes: sizes.time_bins + 1  # noqa: E731
_COE_ROWS = lambda max_len, sizes: max_len + 2  # noqa: E731
_INTERVAL_ROWS = lambda max_len, sizes: sizes.interval_buckets + 1  # noqa: E731

# Per sequence, by the suffix after ``<sequence>_``.
SEQUENCE_IDS: Dict[str, Derived] = {
    "position": Derived(True, (), _POSITION_ROWS, lambda r: np.repeat(r.keep, r.keep) - r.coe + 1),
    "time_bin": Derived(True, (TS, fmt.TARGET_TIMESTAMP), _TIME_BIN_ROWS, _time_bin),
    "coe": Derived(True, (), _COE_ROWS, lambda r: r.coe),
    "interval": Derived(True, (TS, fmt.TARGET_TIMESTAMP), _INTERVAL_ROWS, _interval),
}
# The target's, relative to ``hist``.
TARGET_IDS: Dict[str, Derived] = {
    "target_position": Derived(False, (), _POSITION_ROWS, _origin),
    "target_time_bin": Derived(False, (), _TIME_BIN_ROWS, _origin),
    "target_coe": Derived(False, (), _COE_ROWS, lambda r: r.keep + 1),
    "target_interval": Derived(False, (), _INTERVAL_ROWS, _origin),
}
for _unit, _n in CALENDAR_ROWS.items():
    SEQUENCE_IDS[_unit] = Derived(True, (TS,), lambda max_len, sizes, n=_n: n, lambda r, u=_unit: calendar(r.hist(TS), u))
    TARGET_IDS[f"target_{_unit}"] = Derived(False, (fmt.TARGET_TIMESTAMP,), lambda max_len, sizes, n=_n: n,
                                            lambda r, u=_unit: calendar(r.scalar(fmt.TARGET_TIMESTAMP), u))
SEQUENCE_IDS["neg_item"] = Derived(True, (), None,
                                   lambda r: r.rng().integers(1, max(r.table_rows, 2), size=int(r.idx.size)))
SEQUENCE_DENSE: Dict[str, Derived] = {
    "session": Derived(True, (TS,), None, lambda r: sessions(r.hist(TS), r.keep)),
}


def lookup(feature: str) -> Optional[Tuple[Derived, str]]:
    """The derived id ``feature`` is, and the sequence it is computed from; None for a stored column."""
    seq, suffix = fmt.split_column(feature)
    if seq is not None:
        return (SEQUENCE_IDS[suffix], seq) if suffix in SEQUENCE_IDS else None
    return (TARGET_IDS[feature], fmt.HISTORY) if feature in TARGET_IDS else None


def lookup_dense(column: str) -> Optional[Tuple[Derived, str]]:
    """The derived dense value ``column`` is (``S_session``), and its sequence; None for a stored column."""
    seq, suffix = fmt.split_column(column)
    return (SEQUENCE_DENSE[suffix], seq) if seq is not None and suffix in SEQUENCE_DENSE else None


def columns(derived: Derived, sequence: str) -> Tuple[str, ...]:
    return tuple(c.format(seq=sequence) for c in derived.columns)


def table_rows(features: Iterable[str], max_len: Callable[[str], int], sizes: Sizes) -> Optional[int]:
    """Rows of an ``auto`` table whose features are all derived ids with a size (the largest of theirs: a
    position table read by two sequences covers the longer), else None."""
    rows = []
    for f in features:
        found = lookup(f)
        if found is None or found[0].rows is None:
            return None
        rows.append(found[0].rows(max_len(found[1]), sizes))
    return max(rows) if rows else None


def dense_padding(column: str) -> int:
    """The value a dense sequence column takes at padding: -1 for sessions (``modules/dsin.py``), else 0."""
    return -1 if column.endswith("_session") else 0


def integer_dense(column: str) -> bool:
    """Whether a dense value is an integer (timestamps, sessions) rather than a float (watch time, ...)."""
    return column.endswith(("_timestamp", "_session"))


def sequences_of(features: Sequence[str], dense: Sequence[str] = ()) -> List[str]:
    """The sequences read to build ``features`` and ``dense``: ``hist`` always (its checks run whatever the
    model), then the others in order of first use."""
    seqs = [fmt.HISTORY]
    for f in list(features) + list(dense):
        found = lookup(f) or lookup_dense(f)
        seqs.append(found[1] if found else fmt.sequence_of(f))
    return [s for s in dict.fromkeys(seqs) if s is not None]
