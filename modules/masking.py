"""Masked reductions over padded behaviour sequences, shared by the interest modules.

Sequences are right-padded; ``mask_BL`` is a bool tensor with True at real behaviours. Every
function here guarantees that the values stored under padding never reach the result (they are
replaced (``masked_fill`` / ``torch.where``), or, where a product is much cheaper than a masked copy
(``masked_sum``), weighted by exactly zero and recomputed with them replaced when the result is not finite, so
even ``inf``/``NaN`` under padding cannot leak), and that rows with no valid position (empty histories) give
finite zeros.
"""
# Shape legend: B batch, L history length (padded), D embedding width.
from typing import Optional, Tuple

import torch
from torch import Tensor

from .indexed import gather
from .seqdot import weighted_sum


def masked_softmax(scores_BL: Tensor, mask_BL: Tensor) -> Tensor:
    """Softmax over the valid positions of each row.

    Padded positions get exactly zero weight. A row with no valid position gets all-zero weights
    (not NaN, not uniform), and the gradient stays finite for such rows.

    Args:
        scores_BL: attention logits, shape [B, L], any float dtype.
        mask_BL: bool, shape [B, L], True = real behaviour.

    Returns:
        Weights of shape [B, L]: each non-empty row sums to 1 over its valid positions, empty rows
        are all zero.
    """
    neg_inf = torch.tensor(float("-inf"), dtype=scores_BL.dtype, device=scores_BL.device)
    masked_BL = torch.where(mask_BL, scores_BL, neg_inf)
    # The max shift only stabilises exp; softmax is invariant to it, so it is detached. Rows with
    # no valid position have max -inf: shift them by 0 so exp(-inf - 0) = 0 instead of NaN.
    max_B1 = masked_BL.amax(dim=-1, keepdim=True).detach()
    max_B1 = torch.where(torch.isfinite(max_B1), max_B1, torch.zeros_like(max_B1))
    exp_BL = torch.exp(masked_BL - max_B1)
    denom_B1 = exp_BL.sum(dim=-1, keepdim=True)
    # Non-empty rows have denom >= 1 (the max term is exp(0)); empty rows have 0 -> divide by 1.
    denom_B1 = torch.where(denom_B1 > 0, denom_B1, torch.ones_like(denom_B1))
    return exp_BL / denom_B1


def masked_sum(seq_BLD: Tensor, mask_BL: Tensor) -> Tensor:
    """Sum over the valid positions.

    Computed as the mask-weighted sum (one batched matrix product, padding weighted by exactly 0), not as a
    masked copy of the whole [B, L, D] sequence (a copy forward, another backward); only when that sum is not
    finite (a non-finite value under padding, or a valid one) is it recomputed with the padding replaced, so
    the guarantee above holds either way.

    Args:
        seq_BLD: padded sequence, shape [B, L, D].
        mask_BL: bool, shape [B, L], True = real behaviour.

    Returns:
        Shape [B, D]; zeros for rows with no valid position.
    """
    sum_BD = weighted_sum(mask_BL.to(seq_BLD.dtype), seq_BLD)  # its backward an outer product (seqdot.py)
    if not bool(torch.isfinite(sum_BD).all()):
        sum_BD = zero_padding(seq_BLD, mask_BL).sum(dim=1)
    return sum_BD


def masked_mean(seq_BLD: Tensor, mask_BL: Tensor) -> Tensor:
    """Mean over the valid positions.

    Args:
        seq_BLD: padded sequence, shape [B, L, D].
        mask_BL: bool, shape [B, L], True = real behaviour.

    Returns:
        Shape [B, D]; zeros for rows with no valid position.
    """
    count_B1 = mask_BL.sum(dim=1, keepdim=True).clamp_min(1).to(seq_BLD.dtype)
    return masked_sum(seq_BLD, mask_BL) / count_B1


def masked_topk(scores_BL: Tensor, mask_BL: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The ``k`` highest-scoring valid positions of each row, deterministically: among equal scores the most
    recent behaviour (the larger position, sequences being oldest first) comes first, on any device.

    ``torch.topk`` leaves the order of ties unspecified, and ties are the rule for integer-valued scores
    (a category match, a Hamming distance). The ranking is the one of a stable descending sort of the row read
    newest first, i.e. by (score desc, position desc), computed without sorting all L: ``torch.topk`` finds each
    row's k-th score t, every position above t is kept and, of those equal to t, the newest ones that fill the
    k slots; only those k are then sorted (see :func:`_ranked_by_sort` for the plain form, which the tests
    compare it with). Padded positions never rank above a valid one; a row with fewer than ``k`` valid positions
    gets padded slots, marked False in the returned mask (gather with the indices, then mask again).

    Args:
        scores_BL: shape [B, L], any float or integer dtype (no gradient flows through the selection).
        mask_BL: bool, shape [B, L], True = real behaviour.
        k: how many to keep (at most L are returned).

    Returns:
        (indices [B, K] into L, best first; kept_BK bool [B, K], True at valid positions), K = min(k, L).
    """
    if k < 1:
        raise ValueError(f"masked_topk: k must be >= 1, got {k}")
    B, L = scores_BL.shape
    K = min(k, L)
    low = torch.finfo(scores_BL.dtype).min if scores_BL.is_floating_point() else torch.iinfo(scores_BL.dtype).min
    keyed_BL = scores_BL.detach().masked_fill(~mask_BL, low)
    if K == L or B == 0:
        idx_BK = _ranked_by_sort(keyed_BL, K)
    else:
        t_B1 = torch.topk(keyed_BL, K, dim=1, sorted=False).values.amin(1, keepdim=True)  # each row's k-th score
        if t_B1.isnan().any():  # NaN scores (a broken model): the sort's order, whatever it makes of them
            idx_BK = _ranked_by_sort(keyed_BL, K)
        else:
            above_BL = keyed_BL > t_B1
            tie_BL = keyed_BL == t_B1
            need_B1 = K - above_BL.sum(1, keepdim=True)  # >= 1 slots for the ties at t, newest first
            if bool((tie_BL.sum(1, keepdim=True) > need_B1).any()):  # more ties at t than slots: the newest
                tie_BL = tie_BL & (tie_BL.flip(1).cumsum(1).flip(1) <= need_B1)  # ties at or after each position
            keep_BL = above_BL | tie_BL  # exactly K per row
            pos_BK = keep_BL.nonzero()[:, 1].view(B, K).flip(1)  # newest first
            order_BK = torch.sort(keyed_BL.gather(1, pos_BK), dim=1, descending=True, stable=True).indices
            idx_BK = pos_BK.gather(1, order_BK)
    kept_BK = torch.gather(mask_BL, 1, idx_BK)
    return idx_BK, kept_BK


def gather_kept(x_BLX, idx_BK: Tensor) -> Tensor:
    """The rows ``idx_BK`` [B, K] (``masked_topk``'s indices) of ``x_BLX`` [B, L, X] (a tensor or an
    ``indexed.IndexedSequence``): [B, K, X]."""
    return gather(x_BLX, idx_BK)


def _ranked_by_sort(keyed_BL: Tensor, K: int) -> Tensor:
    """The first ``K`` positions of each row by (score desc, position desc): a stable sort of the row newest first."""
    L = keyed_BL.shape[1]
    order_BL = torch.sort(keyed_BL.flip(1), dim=1, descending=True, stable=True).indices[:, :K]
    return (L - 1) - order_BL


def zero_padding(seq_BLD: Tensor, mask_BL: Tensor) -> Tensor:
    """Replace the values under padding with zeros (no gradient flows to them).

    Args:
        seq_BLD: padded sequence, shape [B, L, D].
        mask_BL: bool, shape [B, L], True = real behaviour.

    Returns:
        Shape [B, L, D], equal to ``seq_BLD`` at valid positions and 0 under padding.
    """
    return seq_BLD.masked_fill(~mask_BL.unsqueeze(-1), 0.0)  # replaces (inf, NaN too), one pass, no zeros tensor


def check_inputs(
    *,
    dim: int,
    seq_BLD: Tensor,
    mask_BL: Tensor,
    query_BD: Tensor,
    seq_time_BLD: Optional[Tensor] = None,
    query_time_BD: Optional[Tensor] = None,
) -> None:
    """Validate the common forward arguments of the target-attention / pooling modules.

    Args:
        dim: the module's embedding width D.
        seq_BLD: behaviour embeddings, shape [B, L, D].
        mask_BL: bool, shape [B, L].
        query_BD: target embedding, shape [B, D].
        seq_time_BLD: optional behaviour temporal embeddings, shape [B, L, D].
        query_time_BD: optional target temporal embedding, shape [B, D].

    Raises:
        ValueError: on a wrong rank, width, batch/length mismatch or a non-bool mask.
    """
    if seq_BLD.dim() != 3 or seq_BLD.shape[-1] != dim:
        raise ValueError(f"seq_BLD must have shape [B, L, {dim}], got {tuple(seq_BLD.shape)}")
    B, L, _ = seq_BLD.shape
    if mask_BL.dtype != torch.bool:
        raise ValueError(f"mask_BL must be a bool tensor, got dtype {mask_BL.dtype}")
    if tuple(mask_BL.shape) != (B, L):
        raise ValueError(f"mask_BL must have shape {(B, L)}, got {tuple(mask_BL.shape)}")
    if tuple(query_BD.shape) != (B, dim):
        raise ValueError(f"query_BD must have shape {(B, dim)}, got {tuple(query_BD.shape)}")
    if seq_time_BLD is not None and tuple(seq_time_BLD.shape) != (B, L, dim):
        raise ValueError(
            f"seq_time_BLD must have shape {(B, L, dim)}, got {tuple(seq_time_BLD.shape)}"
        )
    if query_time_BD is not None and tuple(query_time_BD.shape) != (B, dim):
        raise ValueError(
            f"query_time_BD must have shape {(B, dim)}, got {tuple(query_time_BD.shape)}"
        )
