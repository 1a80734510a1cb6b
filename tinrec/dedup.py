"""Index deduplication of sequence lookups: TorchRec's own ``use_index_dedup``, given the CPU kernel it lacks.

A behaviour sequence looks the same rows up many times in one batch: 256 histories of 2000 items drawn
from 100k items hit each row about five times, and 512k category lookups hit only 1k rows. TorchRec's
``EmbeddingCollectionSharder(use_index_dedup=True)`` looks every distinct row up once per batch and expands
the result with ``index_select`` (whose backward sums the duplicates' gradients in dense torch); the fused
sparse optimizer's backward then sees each row once instead of once per occurrence. fbgemm's own
rowwise-Adagrad backward sums duplicates before its update too, so the update is the same up to the order
of the float sums; what changes is the cost: on CPU the fused backward walks every occurrence, sorted, which
made it 0.5 s of a 0.78 s TIN step at L = 2000 (README, "Performance").

TorchRec computes the distinct ids with ``torch.ops.fbgemm.jagged_unique_indices``, which fbgemm-gpu
implements for CUDA only. :func:`register_cpu_kernel` registers a CPU implementation of the same contract
(through ``torch.library``; if a future fbgemm brings its own CPU kernel, that one is kept):

inputs (one sharding's features, F features, total_B = F * B bags):

- ``hash_size_cumsum`` [F + 1] int64: the features' id-space offsets. Features of one table share the
  table's offset (only a table's last feature carries its size), so ids are deduplicated per table, across
  the table's features.
- ``hash_size_offsets`` [F + 1] int64: cumulative count of features per table, credited to a table's first
  feature (the table of features [f, f + n) has ``hash_size_offsets[f + 1] - hash_size_offsets[f] = n``).
- ``offsets`` [total_B + 1] int64 and ``indices`` [N] int64: the KJT's bags, feature-major.

outputs:

- ``unique_indices`` [U]: each table's distinct ids, ascending, tables in feature order.
- ``reverse_indices`` [N]: ``unique_indices[reverse_indices] == indices``.
- ``lengths`` [total_B], ``offsets`` [total_B + 1]: a jagged layout of ``unique_indices`` over the same
  bags (the ids are no longer the bags' own: a table's U_t distinct ids are spread over its bags, the first
  ``U_t % n`` bags taking one more than the others, as fbgemm's CUDA kernel does), so that TorchRec's
  sequence lookup routes each distinct id to its table.

**Fused expansion.** TorchRec then expands the distinct rows to every occurrence (``index_select`` over all
the sharding's lookups, [N_total, D]) and splits them per feature, and the input stage joined a sequence's
features side by side ([N, F * D], one more pass, and its gradient's split and join in backward).
:func:`install_fused_expansion` makes the sharded EmbeddingCollection hand over the distinct rows instead:
each feature's ``JaggedTensor`` has ``values`` = the sharding's distinct rows [U, D] (one tensor shared by its
features) and ``weights`` = the feature's reverse indices [N_f] (int64; an EmbeddingCollection built with
``need_indices=False``, as tinrec's are, never has weights otherwise). The input stage
(``tinrec/model.py`` InputArch, :func:`expanded`) then writes every occurrence straight into the joined
sequence tensor with one ``index_select`` over [N, F] indices: one pass forward, one ``index_add`` backward,
and the fused optimizer still sees each distinct row once (a module that takes a sequence as rows + index gets
:func:`distinct_rows` without the expansion: ``modules/indexed.py``). Where TorchRec's layout is not the plain one
(column-wise shards of one feature, variable batch sizes, ``need_indices``) TorchRec's own expansion runs.

Choice where fbgemm's contract is silent: ids outside their table (negative or >= the table's rows) raise a
``ValueError`` naming the feature, instead of being merged with the next table's ids. The distinct ids come
from a presence mask over the id space when that space is at most :data:`DENSE_FACTOR` times the number of
lookups (one linear pass; sequence features of catalogue-sized tables), else from a sort (``torch.unique``).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

OP = "fbgemm::jagged_unique_indices"
DENSE_FACTOR = 4  # id space <= 4 x lookups: presence mask + cumsum instead of sorting

_registered = []  # keeps the torch.library handle alive


def jagged_unique_indices(hash_size_cumsum: Tensor, hash_size_offsets: Tensor, offsets: Tensor,
                          indices: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Distinct ids per table of a feature-major KJT; see the module docstring for the contract."""
    num_features = hash_size_cumsum.numel() - 1
    total_b = offsets.numel() - 1
    if num_features < 1 or total_b % num_features:
        raise ValueError(f"jagged_unique_indices: {total_b} bags do not split evenly over {num_features} features")
    batch = total_b // num_features
    n = indices.numel()
    bag_lengths = offsets[1:] - offsets[:-1]
    # Per lookup: its table's offset in the joint id space, and its table's size.
    starts = hash_size_cumsum[:-1]
    ends = hash_size_cumsum[torch.searchsorted(hash_size_cumsum, starts, right=True).clamp_max(num_features)]
    per_bag = torch.stack([starts, ends - starts], 1).repeat_interleave(batch, dim=0)
    start_n, size_n = torch.repeat_interleave(per_bag, bag_lengths, dim=0, output_size=n).unbind(1)
    bad = (indices < 0) | (indices >= size_n)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        f = int(torch.searchsorted(offsets, torch.tensor(i, dtype=offsets.dtype), right=True)) - 1
        raise ValueError(f"jagged_unique_indices: feature {f // batch} (of {num_features}), bag {f % batch}: id "
                         f"{int(indices[i])} outside its table of {int(size_n[i])} rows")
    linear = indices + start_n
    space = int(hash_size_cumsum[-1])
    if space <= DENSE_FACTOR * max(n, 1):
        present = torch.zeros(space, dtype=torch.bool)
        present[linear] = True
        rank = torch.cumsum(present, 0, dtype=torch.int64) - 1
        reverse = rank[linear]
        linear_unique = present.nonzero().squeeze(1)
    else:
        linear_unique, reverse = torch.unique(linear, sorted=True, return_inverse=True)
    unique = torch.empty_like(linear_unique)
    unique[reverse] = indices
    # Each table's distinct ids occupy one contiguous run of the ascending linear ids.
    lengths = torch.zeros(total_b, dtype=offsets.dtype)
    features_per_table = torch.diff(hash_size_offsets).tolist()  # n at a table's first feature, else 0
    bounds = torch.searchsorted(linear_unique, hash_size_cumsum).tolist()
    for f, n_features in enumerate(features_per_table):
        if not n_features:
            continue
        last = f + n_features  # one past the table's last feature
        count = bounds[last] - bounds[f]
        b0, b1 = f * batch, last * batch
        if count:
            nb = b1 - b0
            lengths[b0:b1] = count // nb + (torch.arange(nb) < count % nb).to(lengths.dtype)
    out_offsets = torch.zeros(total_b + 1, dtype=offsets.dtype)
    torch.cumsum(lengths, 0, out=out_offsets[1:])
    return lengths, out_offsets, unique, reverse


def register_cpu_kernel() -> bool:
    """Give ``fbgemm::jagged_unique_indices`` a CPU kernel if it has none; True if it has one afterwards."""
    import fbgemm_gpu  # noqa: F401  (defines the op's schema)

    if _registered or torch._C._dispatch_has_kernel_for_dispatch_key(OP, "CPU"):
        return True
    lib = torch.library.Library("fbgemm", "IMPL")
    lib.impl("jagged_unique_indices", jagged_unique_indices, "CPU")
    _registered.append(lib)
    return True


def _fused_construct_jagged_tensors(embeddings, features, embedding_names, need_indices=False,
                                    features_to_permute_indices=None, original_features=None, reverse_indices=None,
                                    seq_vbe_ctx=None, use_gather_select=False):
    """TorchRec's ``construct_jagged_tensors`` that, with index dedup, keeps the distinct rows unexpanded
    (module docstring, "Fused expansion"); TorchRec's own otherwise."""
    from torchrec.sparse.jagged_tensor import JaggedTensor

    plain = (reverse_indices is not None and seq_vbe_ctx is None and not need_indices
             and not features_to_permute_indices and len(set(embedding_names)) == len(embedding_names))
    if not plain:
        return _ORIGINAL[0](embeddings=embeddings, features=features, embedding_names=embedding_names,
                            need_indices=need_indices, features_to_permute_indices=features_to_permute_indices,
                            original_features=original_features, reverse_indices=reverse_indices,
                            seq_vbe_ctx=seq_vbe_ctx, use_gather_select=use_gather_select)
    if original_features is not None:
        features = original_features
    lengths = features.lengths().view(-1, features.stride())
    reverse = torch.split(reverse_indices, features.length_per_key())
    return {key: JaggedTensor(values=embeddings, lengths=lengths[i], weights=reverse[i])
            for i, key in enumerate(embedding_names)}


_ORIGINAL: List = []


def install_fused_expansion() -> None:
    """Route TorchRec's sharded EmbeddingCollection output through :func:`_fused_construct_jagged_tensors`
    (idempotent; only deduplicated lookups change)."""
    import torchrec.distributed.embedding as sharded

    if not _ORIGINAL:
        _ORIGINAL.append(sharded.construct_jagged_tensors)
        sharded.construct_jagged_tensors = _fused_construct_jagged_tensors


def is_deduplicated(jt) -> bool:
    """Whether a sequence ``JaggedTensor`` holds distinct rows and reverse indices (fused expansion)."""
    w = jt.weights_or_none()
    return w is not None and w.dtype == torch.int64


def distinct_rows(jts: Sequence) -> Tuple[Tensor, Tensor]:
    """``(rows [U, d], index [N, F])`` for ``JaggedTensor`` s of one sequence and one width (each N values): the
    value of feature f at occurrence n is ``rows[index[n, f]]``. Deduplicated features index their distinct
    rows (joined first when they come from different tensors); a plain feature's values are its own rows."""
    tables: List[Tensor] = []
    index = []
    for jt in jts:
        rows, rev = (jt.values(), jt.weights()) if is_deduplicated(jt) else (
            jt.values(), torch.arange(jt.values().shape[0], device=jt.values().device))
        at = next((k for k, t in enumerate(tables) if t is rows), None)
        if at is None:
            tables.append(rows)
            at = len(tables) - 1
        index.append((at, rev))
    offsets = [0]
    for t in tables[:-1]:
        offsets.append(offsets[-1] + t.shape[0])
    rows_UD = tables[0] if len(tables) == 1 else torch.cat(tables, dim=0)
    return rows_UD, torch.stack([rev + offsets[at] for at, rev in index], dim=1)  # [N, F]


def expanded(jts: Sequence) -> Tensor:
    """The features' values side by side per occurrence, [N, sum of widths], for ``JaggedTensor`` s of one
    sequence (each N values): one ``index_select`` when they are deduplicated and of one width
    (:func:`distinct_rows`), else a concatenation of their values."""
    if len({jt.values().shape[-1] for jt in jts}) > 1:  # features of groups of different widths
        return torch.cat([expanded([jt]) for jt in jts], dim=-1)
    if not any(is_deduplicated(jt) for jt in jts):
        vals = [jt.values() for jt in jts]
        return vals[0] if len(vals) == 1 else torch.cat(vals, dim=-1)
    rows_UD, idx_NF = distinct_rows(jts)
    N, F = idx_NF.shape
    return torch.index_select(rows_UD, 0, idx_NF.reshape(-1)).view(N, F * rows_UD.shape[-1])
