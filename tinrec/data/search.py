"""Searched sequences: a sequence the loader selects on ids from another, before any embedding lookup.

SIM's hard search (MODELS.md A2) keeps the behaviours whose category equals the target's; online it is an
index user -> category -> behaviours, so the model only ever looks up the kept ones. A searched sequence is
that index in the loader::

    data:
      sequences:
        hard: {search: {from: hist, key: category, target: target_category}, max_len: 100}

makes the sequence ``hard``: per sample, the behaviours of ``hist`` (its kept ``max_len``) whose
``hist_category`` equals the sample's ``target_category``, the most recent ``max_len`` (100) of them, oldest
first like every sequence. Its columns are its source's under its own name (``hard_item`` is ``hist_item`` at
the kept positions, ``hard_timestamp`` likewise), so tables, inputs and derived features read it like any
sequence (``hard_time_bin`` uses the source's time-bin edges); only ``max_len`` rows per sample reach
TorchRec. A sample with no match has an empty sequence (the modules return zeros for it).

``equals`` instead of ``target`` selects on a constant: ``{from: hist, key: feedback, equals: 2}`` is the
behaviours whose ``hist_feedback`` is 2 (the dislikes; DUMN's four feedback sequences from one stored one).
The search's target (DEI2N's trigger-category sub-sequence) may be any per-sample id column
(``target: trigger_category``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Tuple

import numpy as np

from tinrec.data import format as fmt

if TYPE_CHECKING:  # pragma: no cover
    from tinrec.config import Config


@dataclass(frozen=True)
class Search:
    """The sequence ``name`` = the behaviours of ``source`` whose ``<source>_<key>`` equals the sample's
    ``target`` column, or the constant ``equals``."""

    name: str
    source: str
    key: str
    target: Optional[str] = None
    equals: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.equals is None):
            raise ValueError(f"search {self.name!r}: give exactly one of target and equals")

    @property
    def columns(self) -> Tuple[str, ...]:
        """The stored columns the search reads: the source's key ids and the per-sample target ids."""
        key = f"{self.source}_{self.key}"
        return (key,) if self.target is None else (key, self.target)

    def select(self, chunk: Mapping[str, object], idx_N: np.ndarray, keep_B: np.ndarray,
               max_len: int) -> Tuple[np.ndarray, np.ndarray]:
        """The searched rows of one batch, from its source's kept behaviours.

        Args:
            chunk: the batch's stored columns (list columns as (offsets, values)).
            idx_N: flat indices of the source's kept behaviours into its list columns (oldest first per row).
            keep_B: the source's kept behaviours per row.
            max_len: the searched sequence's ``max_len``: the most recent matches kept.

        Returns:
            ``(idx, keep)``: flat indices into the source's list columns of the kept matches (oldest first per
            row), and their count per row.
        """
        keys_N = np.asarray(chunk[self.columns[0]][1])[idx_N]
        want_N = self.equals if self.target is None else np.repeat(np.asarray(chunk[self.target]), keep_B)
        hit_N = keys_N == want_N
        B = keep_B.size
        row_N = np.repeat(np.arange(B), keep_B)
        matches_B = np.bincount(row_N[hit_N], minlength=B)
        # rank of each hit from the row's most recent one (0 = most recent): keep ranks < max_len
        before_B = np.concatenate([[0], np.cumsum(matches_B)])  # hits in earlier rows
        order_H = np.arange(int(hit_N.sum())) - np.repeat(before_B[:-1], matches_B)  # 0 = oldest hit of the row
        recent_H = np.repeat(matches_B, matches_B) - 1 - order_H
        kept_H = recent_H < max_len
        return idx_N[hit_N][kept_H], np.minimum(matches_B, max_len)

    def stored(self, column: str) -> str:
        """The stored column behind ``<name>_<field>``: ``<source>_<field>``."""
        return f"{self.source}_{column[len(self.name) + 1:]}"


def of_config(cfg: "Config") -> Dict[str, Search]:
    """The searched sequences of ``cfg.data.sequences`` by name."""
    return {name: Search(name=name, source=s.search["from"], key=s.search["key"], target=s.search.get("target"),
                         equals=s.search.get("equals"))
            for name, s in cfg.data.sequences.items() if s.search is not None}


def stored_column(column: str, searches: Mapping[str, Search]) -> str:
    """The stored column that ``column`` reads: a searched sequence's column is its source's, others are
    themselves."""
    seq = fmt.sequence_of(column)
    return searches[seq].stored(column) if seq in searches else column


def check(cfg: "Config", src: str) -> None:
    """``data.sequences.<name>.search`` is well formed: keys from / key / target (or equals), a stored source
    sequence (not itself searched, not the searched one), a per-sample target column or an integer."""
    for name, s in cfg.data.sequences.items():
        if s.search is None:
            continue
        where = f"{src}: data.sequences.{name}.search"
        if not isinstance(s.search, Mapping) or set(s.search) not in ({"from", "key", "target"},
                                                                       {"from", "key", "equals"}):
            raise ValueError(f"{where}: expected {{from: SEQUENCE, key: FIELD, target: COLUMN}} or {{from: SEQUENCE, "
                             f"key: FIELD, equals: INTEGER}}, got {s.search!r}")
        equals = s.search.get("equals")
        if "equals" in s.search and (isinstance(equals, bool) or not isinstance(equals, int)):
            raise ValueError(f"{where}.equals: an integer id, got {equals!r}")
        source, key, target = s.search["from"], s.search["key"], s.search.get("target", "target_")
        if not all(isinstance(v, str) and v for v in (source, key, target)):
            raise ValueError(f"{where}: from, key and target must be names, got {s.search!r}")
        other = cfg.data.sequences.get(source)
        if source == name or (other is not None and other.search is not None):
            raise ValueError(f"{where}.from: {source!r} is a searched sequence; search a stored one (e.g. hist)")
        if "_" in source or source in fmt.SAMPLE_PREFIXES:
            raise ValueError(f"{where}.from: {source!r} is not a sequence name (the prefix of <name>_item, ...)")
        if fmt.sequence_of(target) is not None:
            raise ValueError(f"{where}.target: {target!r} is a sequence column; the target is one id per sample "
                             f"(e.g. target_category)")


def source_of(sequence: str, searches: Mapping[str, Search]) -> Optional[str]:
    """The stored sequence behind ``sequence`` (its source when searched, else itself)."""
    return searches[sequence].source if sequence in searches else sequence
