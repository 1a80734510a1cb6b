"""What every converter shares: the output folder it may write, dense id maps, one-line input errors naming the
file and line, the counts it reports, and a writer of samples into the documented format (``docs/data.md``).

A converter reads the files of a public dataset as they are published, streams them (a progress bar over the
bytes read; memory bounded by what the protocol must keep, never a Python object per input line), and writes
``train/``, ``valid/``, ``test/`` Parquet parts and ``meta.json`` (table sizes, splits, the converter's name,
options and counts) into a folder it owns: absent, empty, or one an earlier ``tinrec convert`` wrote (its marker
``.tinrec-converted``). ``meta.json`` is written last, so a folder without it is an incomplete conversion.
"""

from __future__ import annotations

import gzip
import json
import os
import posixpath
import resource
import shutil
from contextlib import contextmanager
from array import array
from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from iopath.common.file_io import g_pathmgr
from tqdm import tqdm

from tinrec.data import format as fmt
from tinrec.data.io import PART_FILE, PartWriter, remove_if_exists, write_bytes_atomic
from tinrec.data.schema import describe

MARKER = ".tinrec-converted"


class InputError(ValueError):
    """A malformed input line: ``FILE:LINE: field FIELD: what is wrong`` (one line)."""

    def __init__(self, path: str, line: int, field: str, message: str) -> None:
        super().__init__(f"{path}:{line}: field {field}: {message}")


def claim(out_dir: str) -> None:
    """Make ``out_dir`` the converter's: refused unless it is absent, empty, or an earlier conversion's."""
    if g_pathmgr.exists(out_dir):
        if not g_pathmgr.isdir(out_dir):
            raise ValueError(f"--output {out_dir}: exists and is not a folder")
        theirs = sorted(g_pathmgr.ls(out_dir))
        if theirs and MARKER not in theirs:
            shown = ", ".join(theirs[:5]) + (", ..." if len(theirs) > 5 else "")
            raise ValueError(f"--output {out_dir}: holds files tinrec did not write ({shown}); tinrec converts only "
                             f"into an empty or absent folder, or one it converted into before: choose another")
    g_pathmgr.mkdirs(out_dir)
    write_bytes_atomic(posixpath.join(out_dir, MARKER),
                       b"This folder was written by tinrec convert; tinrec may convert into it again.\n")
    for name in ("meta.json", ".tinrec/time_bins.json", ".tinrec/check.json"):
        remove_if_exists(posixpath.join(out_dir, name))  # incomplete from here until meta.json is written
    for split in fmt.SPLITS:
        folder = posixpath.join(out_dir, split)
        g_pathmgr.mkdirs(folder)
        for name in g_pathmgr.ls(folder):
            if PART_FILE.fullmatch(name):
                g_pathmgr.rm(posixpath.join(folder, name))


class IdMap:
    """Raw ids (strings) -> dense ids 1..n in first-seen order (0 stays "unknown")."""

    def __init__(self) -> None:
        self._ids: Dict[str, int] = {}

    def add(self, raw: str) -> int:
        i = self._ids.get(raw)
        if i is None:
            i = self._ids[raw] = len(self._ids) + 1
        return i

    def get(self, raw: str) -> int:
        return self._ids.get(raw, 0)

    def __contains__(self, raw: str) -> bool:
        return raw in self._ids

    @property
    def rows(self) -> int:
        """The table size: every id plus 0."""
        return len(self._ids) + 1


class Partitions:
    """Rows streamed into ``k`` Parquet files by their first value (the user) mod ``k``, so that a converter can
    then hold one partition, all of its users' rows, at a time."""

    def __init__(self, folder: str, name: str, schema: pa.Schema, k: int) -> None:
        self.paths = [os.path.join(folder, f"{name}-{i:04d}.parquet") for i in range(k)]
        self.schema, self.k = schema, k
        self.writers = [pq.ParquetWriter(p, schema) for p in self.paths]
        self.bufs = [[array("q") for _ in schema] for _ in range(k)]

    def add(self, values) -> None:
        i = values[0] % self.k
        for a, v in zip(self.bufs[i], values):
            a.append(v)
        if len(self.bufs[i][0]) >= 65536:
            self._flush(i)

    def add_arrays(self, columns) -> None:
        """Many rows at once: one int64 array per value, the first the users."""
        part = columns[0] % self.k
        for i in np.unique(part):
            m = part == i
            for a, v in zip(self.bufs[i], columns):
                a.frombytes(np.ascontiguousarray(v[m], np.int64).tobytes())
            if len(self.bufs[i][0]) >= 65536:
                self._flush(i)

    def _flush(self, i: int) -> None:
        if len(self.bufs[i][0]):
            self.writers[i].write_table(pa.Table.from_arrays([pa.array(np.frombuffer(a, np.int64)) for a in self.bufs[i]],
                                                             schema=self.schema))
            self.bufs[i] = [array("q") for _ in self.schema]

    def close(self) -> None:
        for i in range(self.k):
            self._flush(i)
            self.writers[i].close()

    def read(self, i: int) -> Dict[str, np.ndarray]:
        t = pq.read_table(self.paths[i])
        return {name: t.column(name).to_numpy() for name in self.schema.names}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def lines(path: str, *, encoding: str = "utf-8", desc: Optional[str] = None, show_progress: bool = True
          ) -> Iterator[Tuple[int, str]]:
    """(line number from 1, line without its newline) of a text file (gzip-compressed when its name ends in
    ``.gz``, as some are published), with a progress bar over its (compressed) bytes."""
    size = os.path.getsize(path) if os.path.exists(path) else None
    with g_pathmgr.open(path, "rb") as raw_f, tqdm(total=size, unit="B", unit_scale=True, disable=not show_progress,
                                                   desc=desc or os.path.basename(path), mininterval=1.0) as bar:
        f = gzip.GzipFile(fileobj=raw_f) if path.endswith(".gz") else raw_f
        done = 0
        for n, raw in enumerate(f, 1):
            pos = raw_f.tell() if path.endswith(".gz") else done + len(raw)
            bar.update(pos - done)
            done = pos
            yield n, raw.decode(encoding).rstrip("\r\n")


def integer(path: str, line: int, field: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(path, line, field, f"expected an integer, got {text!r}") from None


class Report:
    """The counts a conversion reports: named totals and the rows dropped, by reason."""

    def __init__(self) -> None:
        self.counts: Dict[str, int] = {}
        self.dropped: Counter = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def as_dict(self) -> Dict[str, Any]:
        return {**self.counts, "dropped": dict(sorted(self.dropped.items()))}

    def lines(self) -> List[str]:
        out = [f"{k}: {v:,}" for k, v in self.counts.items()]
        out += [f"dropped ({reason}): {n:,}" for reason, n in sorted(self.dropped.items())] or ["dropped: none"]
        return out


class SampleWriter:
    """Samples of the three splits, written as the documented columns (``schema``) in row groups.

    ``add(split, columns)`` takes a chunk of samples as numpy arrays: per-sample columns [n], list columns as
    ``(offsets [n + 1], values)``; the writer counts samples and positives per split."""

    def __init__(self, out_dir: str, schema: pa.Schema, *, rows_per_file: int = 500_000,
                 row_group_size: int = 8192) -> None:
        self.schema = schema
        self.writers = {s: PartWriter(out_dir, s, schema, rows_per_file, row_group_size) for s in fmt.SPLITS}
        self.rows = {s: 0 for s in fmt.SPLITS}
        self.positives = {s: 0 for s in fmt.SPLITS}
        self.history = {s: 0 for s in fmt.SPLITS}
        self.files: Dict[str, List[str]] = {}
        self.splits: Dict[str, Dict[str, Any]] = {}  # set by finish

    def add(self, split: str, columns: Mapping[str, Any]) -> None:
        arrays = []
        for field in self.schema:
            v = columns[field.name]
            if isinstance(v, tuple):
                off, vals = v
                arrays.append(pa.ListArray.from_arrays(pa.array(np.asarray(off, np.int32), pa.int32()),
                                                       pa.array(np.asarray(vals), type=field.type.value_type)))
            else:
                arrays.append(pa.array(np.asarray(v), type=field.type))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        if table.num_rows == 0:
            return
        self.writers[split].write(table)
        self.rows[split] += table.num_rows
        self.positives[split] += int(np.asarray(columns[fmt.LABEL]).sum())
        off = columns[fmt.HIST_ID_COLUMNS[0]][0]
        self.history[split] += int(off[-1] - off[0])

    def finish(self) -> Dict[str, Dict[str, Any]]:
        for s, w in self.writers.items():
            self.files[s] = w.finish()
        self.splits = {s: {"rows": self.rows[s], "files": self.files[s]} for s in fmt.SPLITS}
        return self.splits

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


@contextmanager
def writing(writer: SampleWriter, tmp: Optional[str] = None) -> Iterator[SampleWriter]:
    """The writing phase of a conversion: ``writer.finish()`` when the block ends (then ``writer.splits``); on any
    error the partial part files are removed (``abort``) and the error goes on; the temporary partitions folder
    ``tmp`` is removed either way."""
    try:
        yield writer
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_meta(out_dir: str, *, converter: str, options: Mapping[str, Any], tables: Mapping[str, int],
               writer: SampleWriter, splits: Mapping[str, Any], max_seq_len: int, report: Report) -> Dict[str, Any]:
    """``meta.json``, last (the conversion is complete once it exists)."""
    meta = {
        "format_version": fmt.FORMAT_VERSION,
        "converter": {"name": converter, "options": dict(options), "counts": report.as_dict()},
        "tables": dict(tables),
        "columns": describe(writer.schema),
        "splits": dict(splits),
        "max_seq_len": int(max_seq_len),
        "mean_history_length": writer.history["train"] / max(1, writer.rows["train"]),
        "ctr": {s: writer.positives[s] / writer.rows[s] if writer.rows[s] else 0.0 for s in fmt.SPLITS},
    }
    write_bytes_atomic(posixpath.join(out_dir, "meta.json"), json.dumps(meta, indent=2).encode("utf-8"))
    return meta


def leave_last_out(user_start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of each row of users' time-ordered rows (user u's at
    ``user_start[u] .. + n[u]``): the last -> test, the one before -> valid, the rest -> train."""
    total = int(n.sum())
    from_end = np.repeat(user_start + n, n) - 1 - np.arange(total)  # 0 = the user's last
    return np.where(from_end == 0, 2, np.where(from_end == 1, 1, 0)).astype(np.int8)


def latest(prior_end: np.ndarray, start: np.ndarray, max_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """Histories as ``(offsets, flat indices)``: sample i's history is the last ``max_len`` of the indices
    ``start[i] .. prior_end[i] - 1`` (oldest first)."""
    lo = np.maximum(start, prior_end - max_len)
    lengths = np.maximum(prior_end - lo, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - lo, lengths)
    return offsets, idx


def take(offsets: np.ndarray, values: np.ndarray, keep: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The rows ``keep`` (bool) of a jagged ``(offsets, values)``: their offsets and values."""
    lengths = np.diff(offsets)
    return np.concatenate([[0], np.cumsum(lengths[keep])]), values[np.repeat(keep, lengths)]


def paired(offsets: np.ndarray, idx: np.ndarray, keep: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The histories of the rows ``keep``, each twice in a row (a positive and its negative share one):
    ``(offsets, flat indices)`` of the 2n histories."""
    sub_off, sub_idx = take(offsets, idx, keep)
    lengths = np.repeat(np.diff(sub_off), 2)
    two_off = np.concatenate([[0], np.cumsum(lengths)])
    within = np.arange(two_off[-1]) - np.repeat(two_off[:-1], lengths)
    return two_off, sub_idx[np.repeat(np.repeat(sub_off[:-1], 2), lengths) + within]


def tail(offsets: np.ndarray, idx: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The last ``k`` of each jagged row (a short-term sequence beside the history): ``(offsets, idx)``."""
    lengths = np.diff(offsets)
    keep = np.minimum(lengths, k)
    new_off = np.concatenate([[0], np.cumsum(keep)])
    pos = np.arange(new_off[-1]) - np.repeat(new_off[:-1], keep) + np.repeat(offsets[1:] - keep, keep)
    return new_off, idx[pos]


def sequence_columns(prefix: str, offsets: np.ndarray, fields: Mapping[str, np.ndarray], idx: np.ndarray
                     ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{<prefix>_<field>: (offsets, values[idx])}`` for every field array."""
    return {f"{prefix}_{name}": (offsets, values[idx]) for name, values in fields.items()}


def by_user_time(users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The order that sorts rows by user, then time, then input order (stable)."""
    return np.lexsort((np.arange(users.size), times, users))


def user_runs(sorted_users: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(start, count) of each user's run in user-sorted rows."""
    if sorted_users.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(np.diff(sorted_users)) + 1
    start = np.concatenate([[0], change])
    return start, np.diff(np.concatenate([start, [sorted_users.size]]))


def chunks_of_users(start: np.ndarray, n: np.ndarray, rows: int) -> Iterator[Tuple[int, int]]:
    """[a, b) ranges of users with about ``rows`` rows each (a chunk holds whole users)."""
    ends = np.cumsum(n)
    a = 0
    while a < n.size:
        b = int(np.searchsorted(ends, (ends[a - 1] if a else 0) + rows, side="right"))
        b = max(b, a + 1)
        yield a, b
        a = b


def print_report(name: str, report: Report, splits: Mapping[str, Any], seconds: float) -> None:
    print(f"tinrec convert {name}: " + ", ".join(f"{s} {v['rows']:,} samples" for s, v in splits.items())
          + f" in {seconds:.1f} s, peak memory {peak_rss_mib():.0f} MiB")
    for line in report.lines():
        print("  " + line)


def require_files(name: str, input_dir: str, options: Sequence[Sequence[str]]) -> List[str]:
    """The first complete layout among ``options`` (each a list of file names) found in ``input_dir``; a one-line
    error naming what is missing otherwise."""
    for layout in options:
        if all(os.path.exists(os.path.join(input_dir, f)) for f in layout):
            return [os.path.join(input_dir, f) for f in layout]
    wanted = " or ".join("(" + ", ".join(layout) + ")" for layout in options)
    raise ValueError(f"--input {input_dir}: not a {name} folder: expected the published files {wanted}")


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def draw(seed: int, user: np.ndarray, salt: np.ndarray, attempt: int, n: int) -> np.ndarray:
    """Indices in [0, n): a hash of (seed, user, salt (a day, a time), attempt), so that a sample's negative does
    not depend on how the users are partitioned or batched."""
    with np.errstate(over="ignore"):
        z = _mix(np.full(user.shape, seed, np.uint64))
        for v in (user, salt, np.full(user.shape, attempt)):
            z = _mix(z ^ v.astype(np.uint64))
    return (z % np.uint64(n)).astype(np.int64)


def negatives(user: np.ndarray, item: np.ndarray, salt: np.ndarray, target: np.ndarray, items: np.ndarray,
              seed: int) -> np.ndarray:
    """Per target row (of rows sorted by user, then time), an item uniform over ``items`` that is neither the
    target nor in its past (the user's rows up to it): the first of the draws ``draw(seed, user, salt, attempt)``,
    attempt 0, 1, ... that is not. Vectorised: a (user, item) pair is in a target's past when its first
    occurrence is at or before it."""
    span = int(max(item.max(), items.max())) + 1
    keys = user * span + item  # rows are sorted by user, then time
    uniq, first = np.unique(keys, return_index=True)
    out = np.zeros(target.size, np.int64)
    todo = np.arange(target.size)
    attempt = 0
    while todo.size:
        t = target[todo]
        cand = items[draw(seed, user[t], salt[t], attempt, items.size)]
        k = user[t] * span + cand
        pos = np.minimum(np.searchsorted(uniq, k), uniq.size - 1)
        seen = (uniq[pos] == k) & (first[pos] <= t)
        out[todo[~seen]] = cand[~seen]
        todo = todo[seen]
        attempt += 1
        if attempt > 10_000:
            raise ValueError(f"user {int(user[target[todo[0]]])}: no item outside its history found in 10,000 draws")
    return out
