"""Equal-frequency time-interval bins (TIN's TTE-T), computed from the training split, stored with the data.

``.tinrec/time_bins.json`` in the dataset folder (tinrec's own sub-folder) maps the number of bins to the sorted inner edges (seconds) of
``target_timestamp - hist_timestamp`` (of another sequence S: ``S_timestamp``, key ``S:<bins>``) over every behaviour of the train split (all of each history, not
only the kept ``max_len``: our choice, so the edges do not depend on a model setting). Bin ids are
``1 + searchsorted(edges, dt, side="right")`` in 1..n; id 0 is the target itself (the origin).

The quantiles come from a bounded uniform sample (at most ``max_samples`` intervals, drawn per row group),
so memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import logging
import posixpath
from typing import List

import numpy as np
import pyarrow.parquet as pq
from iopath.common.file_io import g_pathmgr

from tinrec.data import format as fmt
from tinrec.data.io import write_bytes_atomic


def compute_edges(files: List[str], num_bins: int, *, max_samples: int = 2_000_000, seed: int = 0,
                  sequence: str = fmt.HISTORY) -> np.ndarray:
    """The inner edges for ``num_bins`` over ``target_timestamp - <sequence>_timestamp`` of the train files."""
    column = fmt.timestamp_column(sequence)
    rng = np.random.default_rng(seed)
    samples, seen = [], 0
    per_file_budget = max(1, max_samples // max(1, len(files)))
    for path in files:
        with g_pathmgr.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            budget = max(1, per_file_budget // max(1, pf.num_row_groups))
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g, columns=[fmt.TARGET_TIMESTAMP, column])
                hist = t.column(column).combine_chunks()
                lens = np.diff(hist.offsets.to_numpy())
                dt = np.repeat(t.column(fmt.TARGET_TIMESTAMP).to_numpy(), lens) - hist.flatten().to_numpy()
                if (dt < 0).any():
                    row = int(np.searchsorted(np.cumsum(lens), np.flatnonzero(dt < 0)[0], side="right"))
                    raise ValueError(f"{path}: row group {g}, row {row}: a behaviour's timestamp is after "
                                     f"the target's ({column} > {fmt.TARGET_TIMESTAMP})")
                seen += dt.size
                if dt.size > budget:
                    dt = rng.choice(dt, size=budget, replace=False)
                samples.append(dt.astype(np.float64))
    if not seen:
        raise ValueError(f"no behaviours found in {files[:1]}...: cannot compute time-interval bins")
    allv = np.concatenate(samples)
    edges = np.quantile(allv, np.arange(1, num_bins) / num_bins)
    return np.unique(edges)  # ties (e.g. many identical gaps) merge bins rather than make empty ones


def load_or_compute_edges(dataset: str, train_files: List[str], num_bins: int, *,
                          sequence: str = fmt.HISTORY) -> np.ndarray:
    """The edges for ``num_bins`` from ``dataset/.tinrec/time_bins.json``, computing and storing them if absent
    (a dataset that cannot be written to gets them computed, with a warning, on every use). Keys: the number
    of bins for ``hist``, ``<sequence>:<bins>`` for another sequence."""
    path = posixpath.join(dataset, ".tinrec", "time_bins.json")
    stored = {}
    if g_pathmgr.exists(path):
        with g_pathmgr.open(path, "r") as f:
            stored = json.load(f)
    key = str(num_bins) if sequence == fmt.HISTORY else f"{sequence}:{num_bins}"
    if key not in stored:
        stored[key] = compute_edges(train_files, num_bins, sequence=sequence).tolist()
        try:
            g_pathmgr.mkdirs(posixpath.dirname(path))
            write_bytes_atomic(path, json.dumps(stored, indent=1).encode("utf-8"))
        except OSError as e:
            logging.getLogger(__name__).warning("cannot store time-bin edges in %s (%s)", path, e)
    return np.asarray(stored[key], dtype=np.float64)
