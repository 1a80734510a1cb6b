"""ETA, End-to-end Target Attention (Chen et al. 2021, arXiv 2108.04468; the extended version CAIN cites,
arXiv 2209.12212; ``../shared/MODELS.md`` A3):

    h(x) = sign(x R) in {-1, +1}^m,   R [D, m] drawn from N(0, 1) once and frozen (SimHash)
    score_i = -Hamming(h(q), h(S_i)) = (<h(q), h(S_i)> - m) / 2
    I = the k best behaviours by score;   U = ESU(S[I], q)   (SIM's multi-head target attention)

Retrieval and the ESU read the same embeddings, so the search trains end to end through the ESU (no gradient
reaches R or the scores: the kept behaviours get theirs). Choices (MODELS.md): m = 64, k = 100, 4 heads;
Hamming scores take only m + 1 values, so ties are the rule: they go to the most recent behaviour
(``masked_topk``), on every device. ``x R`` at exactly 0 counts as +1. A row with no behaviour gives zeros.
The output appends each head times the target (``product``, MODELS.md's ``[u, q, u * q]``; our choice).
"""
# Shape legend: B batch, L sequence length (padded), D width, M hashes, K kept.
from typing import Union

import torch
from torch import Tensor, nn

from .indexed import IndexedSequence, gather, project
from .masking import check_inputs, masked_topk
from .target_attention import MultiHeadTargetAttention


class ETA(nn.Module):
    """SimHash top-k retrieval over the whole sequence, then SIM's ESU on the kept behaviours.

    The sequence may come as distinct rows + index (``indexed.py``): the codes are then computed once per
    distinct row and only the k kept behaviours are gathered, with gradient.

    Args:
        dim: width D of behaviours and target.
        hashes: m, SimHash bits.
        k: behaviours kept.
        heads, head_dim: the ESU's heads and their key / query width.
        seed: seed of the frozen projection R.
        product: also output each head times the target (``target_attention.py``).

    Attributes:
        output_dim: heads * D, twice that with ``product``.
    """

    INDEXED_INPUTS = ("seq_BLD",)

    def __init__(self, *, dim: int, hashes: int = 64, k: int = 100, heads: int = 4, head_dim: int = 32,
                 seed: int = 0, product: bool = True) -> None:
        super().__init__()
        if dim <= 0 or hashes <= 0 or k <= 0:
            raise ValueError(f"ETA: need dim, hashes, k > 0, got {dim}, {hashes}, {k}")
        self.dim, self.hashes, self.k = dim, hashes, k
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("projection_DM", torch.randn(dim, hashes, generator=g))
        self.esu = MultiHeadTargetAttention(dim=dim, heads=heads, head_dim=head_dim, product=product)
        self.output_dim: int = self.esu.output_dim

    def signs(self, x_ND: Tensor) -> Tensor:
        """SimHash codes as +-1 floats, [..., M] (no gradient)."""
        return torch.where(x_ND.detach() @ self.projection_DM >= 0, 1.0, -1.0)

    def scores(self, seq_BLD: Union[Tensor, IndexedSequence], query_BD: Tensor) -> Tensor:
        """-Hamming(h(q), h(S_i)), [B, L], integer-valued floats: the count of differing sign bits, on
        one-byte booleans (XOR) counted in bytes (a bool sum would first widen every bit to int64: 8x the
        time), never as [B, L, M] floats."""
        bits_BLM = project(seq_BLD, self.projection_DM) >= 0
        bits_BM = query_BD.detach() @ self.projection_DM >= 0
        count = torch.uint8 if self.hashes < 256 else torch.int32
        differ_BL = (bits_BLM ^ bits_BM.unsqueeze(1)).view(torch.uint8).sum(-1, dtype=count)
        return -differ_BL.to(seq_BLD.dtype)

    def kept_behaviours(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor):
        """The k behaviours nearest the target in Hamming distance: (indices into L [B, K], valid [B, K])."""
        return masked_topk(self.scores(seq_BLD, query_BD), mask_BL, self.k)

    def forward(self, *, seq_BLD: Union[Tensor, IndexedSequence], mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """The target attention over the k behaviours nearest the target in Hamming distance, [B, heads * D]."""
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        idx_BK, kept_BK = self.kept_behaviours(seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        return self.esu(z_BKZ=gather(seq_BLD, idx_BK), mask_BK=kept_BK, query_BD=query_BD)
