"""The benchmark's shared synthetic batch: one fixed batch of target items and full-length histories.

Both sides of the CPU benchmark train on the numbers this module produces: our models (main venv) and the
peer libraries' models (``benchmarks/peers.py``, run in a separate venv with other package versions). The
module therefore imports numpy only (no torch, nothing from the repository) and does not use numpy's random
generators, whose streams may differ between numpy versions: every value comes from SplitMix64 (a fixed
integer hash, vectorised on uint64 arrays) of (seed, stream, index), so a seed gives the same batch under
any numpy version on any platform.

Contents of :func:`make_batch` (``B`` = batch, ``L`` = seq_len):

- ``target_item`` [B] int64 and ``hist_item`` [B, L] int64: item ids uniform in 1..num_items.
- ``target_category`` [B], ``hist_category`` [B, L] int64: the item's category in 1..num_categories, a
  fixed function of (seed, item id), so an item has the same category wherever it appears.
- ``hist_len`` [B] int64: L for every row. Every history is full length; 0 is reserved for padding and never
  occurs, so embedding tables need ``num_items + 1`` / ``num_categories + 1`` rows (:func:`vocab_sizes`).
- ``label`` [B] float32 in {0, 1}, independent fair coin flips (only the cost is measured, not the fit).

:func:`fingerprint` hashes a batch, so the two sides can check that they saw the same numbers.
"""

from __future__ import annotations

import hashlib
from typing import Dict

import numpy as np

NUM_ITEMS = 100_000
NUM_CATEGORIES = 1_000

KEYS = ("target_item", "target_category", "hist_item", "hist_category", "hist_len", "label")

# One stream per drawn quantity, so that changing one shape never shifts another quantity's numbers.
_STREAM_TARGET, _STREAM_HIST, _STREAM_CATEGORY, _STREAM_LABEL = 1, 2, 3, 4

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Uniform 64-bit values, a pure function of (seed, stream, index); ``index`` is a uint64 array."""
    key = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) * _GOLDEN + np.uint64(stream))
    return _mix(key + (index.astype(np.uint64) + np.uint64(1)) * _GOLDEN)


def _ids(seed: int, stream: int, shape, high: int) -> np.ndarray:
    """Ids uniform in 1..high (modulo bias below 1e-13 for high <= 1e6), int64 array of ``shape``."""
    n = int(np.prod(shape))
    values = _hash(seed, stream, np.arange(n, dtype=np.uint64)) % np.uint64(high)
    return (values.astype(np.int64) + 1).reshape(shape)


def item_category(items: np.ndarray, *, num_categories: int = NUM_CATEGORIES, seed: int = 0) -> np.ndarray:
    """The category (1..num_categories) of each item id in ``items``: a fixed function of (seed, item)."""
    values = _hash(seed, _STREAM_CATEGORY, items.reshape(-1)) % np.uint64(num_categories)
    return (values.astype(np.int64) + 1).reshape(items.shape)


def vocab_sizes(*, num_items: int = NUM_ITEMS, num_categories: int = NUM_CATEGORIES) -> Dict[str, int]:
    """Embedding-table rows for the ids of :func:`make_batch` (ids start at 1; row 0 is padding)."""
    return {"item": num_items + 1, "category": num_categories + 1}


def make_batch(batch: int, seq_len: int, *, num_items: int = NUM_ITEMS, num_categories: int = NUM_CATEGORIES,
               seed: int = 0) -> Dict[str, np.ndarray]:
    """The shared synthetic batch; deterministic in ``seed`` (the same numbers under any numpy version).

    Args:
        batch: rows B (>= 1).
        seq_len: history length L (>= 1); every row's history is full length (no padding).
        num_items: item ids are drawn uniformly from 1..num_items.
        num_categories: category ids lie in 1..num_categories (a fixed function of the item id).
        seed: the batch is a pure function of (seed, batch, seq_len, num_items, num_categories).

    Returns:
        ``target_item`` [B], ``target_category`` [B], ``hist_item`` [B, L], ``hist_category`` [B, L],
        ``hist_len`` [B] (= L) as int64 arrays, and ``label`` [B] float32 in {0, 1}. Id 0 (padding) never
        occurs; tables need :func:`vocab_sizes` rows.
    """
    if batch < 1 or seq_len < 1:
        raise ValueError(f"batch and seq_len must be >= 1, got batch={batch}, seq_len={seq_len}")
    if num_items < 1 or num_categories < 1:
        raise ValueError(f"num_items and num_categories must be >= 1, got {num_items}, {num_categories}")
    target_item = _ids(seed, _STREAM_TARGET, (batch,), num_items)
    hist_item = _ids(seed, _STREAM_HIST, (batch, seq_len), num_items)
    label = (_hash(seed, _STREAM_LABEL, np.arange(batch, dtype=np.uint64)) >> np.uint64(63)).astype(np.float32)
    return {
        "target_item": target_item,
        "target_category": item_category(target_item, num_categories=num_categories, seed=seed),
        "hist_item": hist_item,
        "hist_category": item_category(hist_item, num_categories=num_categories, seed=seed),
        "hist_len": np.full(batch, seq_len, dtype=np.int64),
        "label": label,
    }


def extra_ids(batch: int, families: Dict[str, int], rows: int, *, seed: int = 0) -> Dict[str, np.ndarray]:
    """Id families beside the batch (the heterogeneous backbone's fields): ``{"user": 100, "item": 60}`` ->
    columns ``user_f000`` .. ``user_f099``, ``item_f000`` .. (three digits), each [B] int64 uniform in
    1..rows - 1, column j of a family from its own stream."""
    out = {}
    for k, (prefix, count) in enumerate(sorted(families.items())):
        for j in range(count):
            out[f"{prefix}_f{j:03d}"] = _ids(seed, 100 + 1000 * k + j, (batch,), rows - 1)
    return out


def fingerprint(batch: Dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a batch's arrays (names, dtypes, shapes and little-endian bytes, in :data:`KEYS` order)."""
    h = hashlib.sha256()
    for key in KEYS:
        a = np.ascontiguousarray(batch[key])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()
