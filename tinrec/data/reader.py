"""Streaming Parquet reader: row groups -> validated numpy -> ``Batch`` with a ready KeyedJaggedTensor.

The unit of work is one Parquet row group. Units are shuffled per epoch (seeded), dealt round-robin to the
``world_size x num_workers`` global loader workers, and each worker concatenates its units' rows (shuffled
within the unit) into batches. Only one row group per worker is in memory at a time, so memory does not
grow with the dataset.

Step accounting is exact and cheap: every worker's batch count follows from row-group metadata alone
(:meth:`ParquetStream.worker_batches`), so training can give every rank the same number of steps and a
resumed run can skip consumed batches without reading them (:func:`consumed_per_worker`).

Legend: B batch, L kept behaviours of a row (<= max_len), N total kept behaviours in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow.parquet as pq
import torch
from iopath.common.file_io import g_pathmgr
from torch.utils.data import IterableDataset, get_worker_info
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tinrec.data import checks, derived
from tinrec.data import format as fmt
from tinrec.data.batch import Batch
from tinrec.data.derived import sequences_of
from tinrec.data.search import Search, source_of, stored_column


@dataclass(frozen=True)
class Unit:
    file: str
    row_group: int
    rows: int
    first_row: int  # index of the unit's first row within its file (for error messages)


def required_columns(features: Sequence[str], dense: Sequence[str] = (), labels: Sequence[str] = (),
                     searches: Mapping[str, Search] = {}) -> List[str]:
    """The Parquet columns read to build ``features`` (KJT keys), the ``dense`` values and ``labels``.

    Each sequence's timestamps (its lengths, and what the reader checks: sorted, before the target) and the
    history's first id column are always read, whatever the model (``tinrec/data/checks.py``). A searched
    sequence (``searches``, ``tinrec/data/search.py``) reads its source's columns and the search's two.
    """
    cols = [fmt.LABEL, fmt.USER_ID, fmt.TARGET_TIMESTAMP, fmt.HIST_ID_COLUMNS[0]]
    seqs = sequences_of(features, dense)
    cols += [fmt.timestamp_column(s) for s in seqs]
    for f in list(features) + list(dense):
        found = derived.lookup(f) or derived.lookup_dense(f)
        cols += list(derived.columns(*found)) if found else [f]
    cols += [c for s in seqs if s in searches for c in searches[s].columns]
    cols += list(labels)
    return list(dict.fromkeys(stored_column(c, searches) for c in cols))


def read_kinds(features: Sequence[str], dense: Sequence[str] = (),
               searches: Mapping[str, Search] = {}) -> Dict[str, str]:
    """How the model reads stored columns: ids are integers (never cast), dense values numbers."""
    out = {}
    for f in features:
        if derived.lookup(f) is None:
            out[stored_column(f, searches)] = "ints" if fmt.sequence_of(f) else "int"
    for c in dense:
        if derived.lookup_dense(c) is None:
            out[stored_column(c, searches)] = "numbers" if fmt.sequence_of(c) else "number"
    return out


def list_units(files: Sequence[str], columns: Sequence[str], kinds: Optional[Mapping[str, str]] = None) -> List[Unit]:
    """Row groups of ``files``. Each file must have the format's required columns and ``columns``, every
    column of the right type (ValueError naming file and column; ``checks.schema_problems``); ``kinds``: the
    kind columns the format does not know must have as the model reads them (:func:`read_kinds`)."""
    units = []
    for path in files:
        with g_pathmgr.open(path, "rb") as f:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises several types for corrupt files
                raise ValueError(f"{path}: not a readable Parquet file: {e}") from None
            required = list(dict.fromkeys(list(fmt.REQUIRED_COLUMNS) + list(columns)))
            problems = checks.schema_problems(path, pf.schema_arrow, required, kinds)
            if problems:
                raise ValueError(problems[0].message())
            first = 0
            for g in range(pf.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if n:
                    units.append(Unit(path, g, n, first))
                first += n
    return units


def consumed_per_worker(step: int, counts: Sequence[int]) -> List[int]:
    """Batches each loader worker had produced after ``step`` batches of ``DataLoader``'s round-robin.

    The DataLoader asks workers in turn and skips exhausted ones, so the global order is deterministic
    given each worker's batch count.
    """
    taken = [0] * len(counts)
    remaining = step
    rnd = 0
    while remaining > 0:
        active = [w for w, c in enumerate(counts) if c > rnd]
        if not active:
            break
        for w in active:
            if remaining == 0:
                break
            taken[w] += 1
            remaining -= 1
        rnd += 1
    return taken


class ParquetStream(IterableDataset):
    """Iterable of ``Batch`` for one rank.

    Args:
        units: every row group of the split (all ranks see the same list).
        features: KJT keys, in order.
        feature_rows: feature -> (table, rows): ids outside ``[0, rows)`` raise ValueError.
        batch_size: samples per batch.
        max_len: keep the most recent ``max_len`` behaviours of each sequence (``max_lens`` per sequence overrides).
        time_bin_edges: sorted inner edges (seconds) of the time-interval bins; bin ids 1..len(edges)+1; one
            array (the history's) or a mapping sequence -> edges.
        rank, world_size, num_workers: the global worker grid.
        seed, epoch, shuffle: row-group order and in-unit row order are seeded by (seed, epoch, unit).
        drop_last: drop each worker's last partial batch (training) or keep it (evaluation).
        skip: batches to skip per local worker (resume).
        dense_sequence: dense values to pass in ``Batch.dense`` (stored columns, or ``<sequence>_session``).
        max_lens: sequence -> its ``max_len`` (``data.sequences``).
        labels: the label columns, one per task (``data.labels``): ``Batch.labels`` is ``[B, len(labels)]``.
        searches: the searched sequences by name (``tinrec/data/search.py``); their ``max_len`` is ``max_lens``'s.
        skip_recent: sequence -> how many of its most recent behaviours to leave out before keeping ``max_len``
            (``data.sequences.NAME.skip_recent``: the lifelong sequence before the short-term window).
        interval_seconds: T_f of the ``<sequence>_interval`` ids (``data.interval_seconds``).
    """

    def __init__(self, *, units: Sequence[Unit], features: Sequence[str], feature_rows: Mapping[str, Tuple[str, int]],
                 batch_size: int, max_len: int, time_bin_edges, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, seed: int = 0, epoch: int = 0, shuffle: bool = False,
                 drop_last: bool = False, skip: Optional[Sequence[int]] = None,
                 dense_sequence: Sequence[str] = (), labels: Sequence[str] = (fmt.LABEL,),
                 max_lens: Optional[Mapping[str, int]] = None, searches: Mapping[str, Search] = {},
                 skip_recent: Optional[Mapping[str, int]] = None, interval_seconds: int = 60) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self.units = list(units)
        self.features = list(features)
        self.feature_rows = dict(feature_rows)
        self.batch_size = batch_size
        self.max_len = max_len
        self.max_lens = dict(max_lens or {})
        self.skip_recent = dict(skip_recent or {})
        if time_bin_edges is None or isinstance(time_bin_edges, Mapping):
            edges = dict(time_bin_edges or {})
        else:
            edges = {fmt.HISTORY: time_bin_edges}
        self.edges = {k: np.asarray(v, dtype=np.float64) for k, v in edges.items()}
        self.rank, self.world_size = rank, world_size
        self.local_workers = max(1, num_workers)
        self.seed, self.epoch, self.shuffle, self.drop_last = seed, epoch, shuffle, drop_last
        self.skip = list(skip) if skip is not None else [0] * self.local_workers
        self.dense = list(dense_sequence)
        self.labels = list(labels)
        self.searches = dict(searches)
        self.columns = required_columns(self.features, self.dense, self.labels, self.searches)
        # a searched sequence after its source (it selects from the source's kept rows)
        seqs = sequences_of(self.features, self.dense)
        self.sequences = list(dict.fromkeys([source_of(s, self.searches) for s in seqs] + seqs))
        for f in self.features:
            found = derived.lookup(f)
            if found and found[0] is derived.SEQUENCE_IDS["time_bin"] and found[1] not in self.edges:
                raise ValueError(f"{f} is read but no time-bin edges were given for sequence {found[1]!r}")

    # ---- assignment ----------------------------------------------------------------------------------------
    def _ordered_units(self) -> List[Tuple[int, Unit]]:
        order = np.arange(len(self.units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.units))
        return [(int(i), self.units[i]) for i in order]

    def units_of(self, local_worker: int, rank: Optional[int] = None) -> List[Tuple[int, Unit]]:
        rank = self.rank if rank is None else rank
        g = rank * self.local_workers + local_worker
        n = self.world_size * self.local_workers
        return [u for k, u in enumerate(self._ordered_units()) if k % n == g]

    def worker_batches(self, rank: Optional[int] = None) -> List[int]:
        """Batches each local worker of ``rank`` yields this epoch (from metadata only)."""
        out = []
        for w in range(self.local_workers):
            rows = sum(u.rows for _, u in self.units_of(w, rank))
            full, rest = divmod(rows, self.batch_size)
            out.append(full + (0 if self.drop_last or rest == 0 else 1))
        return out

    # ---- iteration -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        w = info.id if info is not None else 0
        if info is not None and info.num_workers != self.local_workers:
            raise RuntimeError(f"ParquetStream built for {self.local_workers} workers, DataLoader has {info.num_workers}")
        skip_rows = self.skip[w] * self.batch_size
        pending: List[Dict[str, object]] = []
        pending_rows = 0
        for uid, unit in self.units_of(w):
            if skip_rows >= unit.rows:
                skip_rows -= unit.rows
                continue
            chunk = self._read(uid, unit)
            if skip_rows:
                chunk = _take(chunk, np.arange(skip_rows, unit.rows))
                skip_rows = 0
            pending.append(chunk)
            pending_rows += len(chunk["_row"])
            while pending_rows >= self.batch_size:
                merged = _concat(pending)
                yield self._to_batch(_take(merged, np.arange(self.batch_size)))
                rest = _take(merged, np.arange(self.batch_size, pending_rows))
                pending, pending_rows = [rest], pending_rows - self.batch_size
        if pending_rows and not self.drop_last:
            yield self._to_batch(_concat(pending))

    def _read(self, uid: int, unit: Unit) -> Dict[str, object]:
        with g_pathmgr.open(unit.file, "rb") as f:
            table = pq.ParquetFile(f).read_row_group(unit.row_group, columns=self.columns)
        n = table.num_rows
        for problem in checks.null_problems(unit.file, unit.first_row, table):
            raise ValueError(problem.message())
        chunk: Dict[str, object] = {"_row": np.arange(unit.first_row, unit.first_row + n), "_file": unit.file,
                                    "_uid": np.full(n, uid, dtype=np.int64)}
        chunk.update(checks.to_columns(table))
        for problem in checks.value_problems(unit.file, unit.first_row, chunk, self.feature_rows):
            raise ValueError(problem.message())
        if self.shuffle:
            chunk = _take(chunk, np.random.default_rng([self.seed, self.epoch, uid, 1]).permutation(n))
        return chunk

    def _rows(self, chunk: Dict[str, object], sequence: str, B: int,
              sources: Mapping[str, derived.Rows]) -> Tuple[derived.Rows, np.ndarray]:
        """The kept (most recent ``max_len``) behaviours of one sequence of the batch, and its full lengths [B]
        (a searched sequence: selected from its source's kept rows in ``sources``; its full lengths are its
        kept ones, since it truncates no history)."""
        search = self.searches.get(sequence)
        max_len = self.max_lens.get(sequence, self.max_len)
        if search is not None:
            src = sources[search.source]
            idx, keep = search.select(chunk, src.idx, src.keep, max_len)
            full = keep
        else:
            ts = fmt.timestamp_column(sequence)
            off = chunk[ts][0] if ts in chunk else np.zeros(B + 1, np.int64)
            skip = np.minimum(np.diff(off), self.skip_recent.get(sequence, 0))  # [B] left out, the most recent
            full = np.diff(off) - skip
            keep = np.minimum(full, max_len)  # [B]
            # flat indices of the most recent `keep` behaviours of each row after the skipped ones (oldest first)
            idx = np.arange(keep.sum()) + np.repeat(off[1:] - skip - np.cumsum(keep), keep)  # [N]
        first_B = np.cumsum(keep) - keep  # each row's first slot among the N kept
        rows = derived.Rows(chunk=chunk, keep=keep, idx=idx,
                            coe=np.arange(keep.sum()) - np.repeat(first_B, keep) + 1,  # [N] oldest kept = 1
                            edges=self.edges.get(sequence), rng=lambda: self._rng(chunk), sequence=sequence,
                            search=search, interval_seconds=self.interval_seconds)
        return rows, full

    def _to_batch(self, chunk: Dict[str, object]) -> Batch:
        B = len(chunk["_row"])
        per: Dict[str, Tuple[derived.Rows, np.ndarray]] = {}
        rows: Dict[str, derived.Rows] = {}
        for s in self.sequences:
            per[s] = self._rows(chunk, s, B, rows)
            rows[s] = per[s][0]
        values, lengths = [], []
        ones = np.ones(B, dtype=np.int64)
        for f in self.features:
            found = derived.lookup(f)
            seq = found[1] if found else fmt.sequence_of(f)
            if found:
                r = rows[seq]
                r.table_rows = self.feature_rows.get(f, ("", 0))[1]
                v = found[0].compute(r)
                seq = seq if found[0].sequence else None
            elif seq is not None:
                v = rows[seq].hist(f)
            else:
                v = np.asarray(chunk[f])
            values.append(_tensor(v))
            lengths.append(torch.from_numpy(rows[seq].keep if seq is not None else ones))
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.features, values=torch.cat(values), lengths=torch.cat(lengths).to(torch.int32))
        dense = {}
        for name in self.dense:
            found = derived.lookup_dense(name)
            seq = found[1] if found else fmt.sequence_of(name)
            v = found[0].compute(rows[seq]) if found else rows[seq].hist(name) if seq else np.asarray(chunk[name])
            dense[name] = _tensor(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else _floats(v)
        labels_BT = np.stack([np.asarray(chunk[c], dtype=np.float32) for c in self.labels], axis=1)
        truncated = np.zeros(B, dtype=bool)
        for r, full in per.values():
            truncated |= full > r.keep
        return Batch(sparse=kjt, labels=torch.from_numpy(labels_BT),
                     user_ids=_tensor(np.asarray(chunk[fmt.USER_ID])), weights=torch.ones(B), dense=dense,
                     lengths={s: _tensor(r.keep) for s, r in rows.items()}, source=self._source(chunk),
                     truncated=int(truncated.sum()))

    def _source(self, chunk: Dict[str, object]) -> str:
        """The row groups and file rows of a batch, for error messages."""
        uids, rows = np.asarray(chunk["_uid"]), np.asarray(chunk["_row"])
        parts = []
        for uid in dict.fromkeys(uids.tolist()):
            unit, r = self.units[uid], rows[uids == uid]
            parts.append(f"{unit.file} row group {unit.row_group} (rows {r.min()}-{r.max()})")
        return "; ".join(parts)

    def _rng(self, chunk: Dict[str, object]) -> np.random.Generator:
        """Negative sampling: seeded by (seed, epoch, first row of the batch) so reruns and resumes agree."""
        rows = np.asarray(chunk["_row"])
        first = (int(np.asarray(chunk["_uid"])[0]), int(rows[0])) if rows.size else (0, 0)
        return np.random.default_rng([self.seed, self.epoch, *first, 7])


def _tensor(v: np.ndarray) -> torch.Tensor:
    """int64 tensor of ``v``; a read-only array (Arrow's zero-copy buffers) is copied, not shared."""
    v = np.ascontiguousarray(v, dtype=np.int64)
    return torch.from_numpy(v if v.flags.writeable else v.copy())


def _floats(v: np.ndarray) -> torch.Tensor:
    """float32 tensor of dense values (watch time, per-sample numbers), copied from Arrow's buffers."""
    return torch.from_numpy(np.array(v, dtype=np.float32))


def _take(chunk: Dict[str, object], rows: np.ndarray) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for k, v in chunk.items():
        if isinstance(v, tuple):
            off, vals = v
            lens = np.diff(off)[rows]
            new_off = np.concatenate([[0], np.cumsum(lens)])
            idx = np.arange(new_off[-1]) + np.repeat(off[:-1][rows] - new_off[:-1], lens)
            out[k] = (new_off, np.asarray(vals)[idx])
        elif isinstance(v, np.ndarray):
            out[k] = v[rows]
        else:
            out[k] = v
    return out


def _concat(chunks: List[Dict[str, object]]) -> Dict[str, object]:
    if len(chunks) == 1:
        return chunks[0]
    out: Dict[str, object] = {}
    for k, v in chunks[0].items():
        if isinstance(v, tuple):
            offs, vals, base = [np.zeros(1, np.int64)], [], 0
            for c in chunks:
                o, x = c[k]
                offs.append(o[1:] + base)
                vals.append(np.asarray(x))
                base += o[-1]
            out[k] = (np.concatenate(offs), np.concatenate(vals))
        elif isinstance(v, np.ndarray):
            out[k] = np.concatenate([c[k] for c in chunks])
        else:
            out[k] = v
    return out
