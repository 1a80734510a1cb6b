"""Dataset file helpers through iopath: atomic renames, byte-stable npz, Parquet part files written tmp-then-rename."""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from typing import List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from iopath.common.file_io import g_pathmgr


def atomic_rename(tmp: str, path: str) -> None:
    if g_pathmgr.exists(path):
        g_pathmgr.rm(path)
    if not g_pathmgr.mv(tmp, path):
        raise OSError(f"cannot rename {tmp} to {path}")


def remove_if_exists(path: str) -> None:
    if g_pathmgr.exists(path):
        g_pathmgr.rm(path)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """What ``np.savez`` writes, but with fixed zip entry dates (byte-identical across runs)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            with z.open(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_bytes_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with g_pathmgr.open(tmp, "wb") as f:
        f.write(data)
    atomic_rename(tmp, path)


PART_FILE = re.compile(r"part-\d{5}\.parquet(\.tmp)?")


class PartWriter:
    """Writes a split's rows into ``part-NNNNN.parquet`` files of ``rows_per_file`` rows (tmp, then rename)."""

    def __init__(self, out_dir: str, split: str, schema: pa.Schema, rows_per_file: int, row_group_size: int):
        self.out_dir, self.split, self.schema = out_dir, split, schema
        self.rows_per_file, self.row_group_size = rows_per_file, row_group_size
        self.files: List[str] = []
        self._f = self._writer = None
        self._rows = 0

    def _open(self) -> None:
        self._rel = f"{self.split}/part-{len(self.files):05d}.parquet"
        self._tmp = posixpath.join(self.out_dir, self._rel + ".tmp")
        self._f = g_pathmgr.open(self._tmp, "wb")
        self._writer = pq.ParquetWriter(self._f, self.schema, compression="zstd", use_dictionary=True,
                                        write_statistics=True)
        self._rows = 0

    def _close(self) -> None:
        self._writer.close()
        self._f.close()
        self._writer = self._f = None
        atomic_rename(self._tmp, posixpath.join(self.out_dir, self._rel))
        self.files.append(self._rel)

    def write(self, table: pa.Table) -> None:
        pos = 0
        while pos < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(table.num_rows - pos, self.rows_per_file - self._rows)
            self._writer.write_table(table.slice(pos, take), row_group_size=self.row_group_size)
            pos += take
            self._rows += take
            if self._rows == self.rows_per_file:
                self._close()

    def finish(self) -> List[str]:
        if self._writer is not None:
            self._close()
        return self.files

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._f is not None:
                self._f.close()
            if self._f is not None or self._writer is not None:
                remove_if_exists(self._tmp)
        except Exception:  # best effort: the real error is being raised
            pass
