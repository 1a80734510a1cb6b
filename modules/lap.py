"""LAP, Lifelong Attention Pyramid (Hou et al., "Cross-Domain LifeLong Sequential Modeling for Online
Click-Through Rate Prediction", KDD 2024, arXiv 2312.06424), as ``../shared/MODELS.md`` A1 reconstructs it.

What the paper says (abstract and summaries; MODELS.md could not read its body): three cascading attention
levels, coarse -> mid -> fine (CSA -> MSA -> FSA); the first covers the whole sequence so that gradients reach
every behaviour; each level keeps the best of the previous one; the outputs of all three are used; the top
level's pool is small, which pays for a costlier, non-linear attention there. What is ours (MODELS.md's
implementable form, every detail below):

    CSA (all L):   s1_i = <W1q q, W1k S_i> / sqrt(d1),   u1 = sum_i softmax(s1)_i W1v S_i,   I1 = top-k1 of s1
    MSA (k1 kept): s2 the same form with its own weights on S[I1] -> u2,                  I2 = top-k2 of s2 in I1
    FSA (k2 kept): one self-attention block over S[I2] (``modules/transformer.py``), then SIM's 4-head target
                   attention (``modules/target_attention.py``) -> u3
    output [u1, u2, u3]

With ``product`` (default) each of u1, u2 and the FSA's heads is also output times the target (MODELS.md's
tower input ``[u, q, u * q]``). The FSA's self-attention block is pre-LN (``norm_first``, SASRec's form): the
post-LN block put unit-variance, user-specific vectors into the tower and, through its LayerNorm, gradients
ten times the other modules' into the shared embeddings; with it LAP beside a short-term DIN fell below DIN
alone on the lifelong data (test AUC 0.619 against 0.656, docs/results/lifelong_seed0.md); ``block: false``
leaves the FSA a target attention only.
Defaults d1 = d2 = 32, k1 = 256, k2 = 64, the value projections of width D, 4 heads in the FSA. Top-k ties
follow ``masked_topk`` (most recent first); the selections carry no gradient, the levels' own scores do. A row
with no behaviour gives zeros. :meth:`LAP.consistency` measures the paper's argument that the levels agree:
the share of I2 inside the top k2 of s1.

The sequence may come as distinct rows + index (``indexed.py``): the CSA scores and pools the dense sequence,
and the MSA's k1 behaviours are gathered straight from the rows (their gradient goes to the rows, not into a
zero [B, L, D] gradient added to the CSA's).
"""
# Shape legend: B batch, L sequence length (padded), D width, E level width, K kept.
import math
from typing import Tuple

import torch
from torch import Tensor, nn

from .indexed import dense
from .masking import check_inputs, gather_kept, masked_topk
from .target_attention import MultiHeadTargetAttention, attention_pool, tie_at_init
from .transformer import TransformerBlock


class _Level(nn.Module):
    """One scaled dot-product target attention with its own projections (CSA, MSA).

    Computed without projecting the behaviours: <W_k S_i, W_q q> = <S_i, W_k^T W_q q> (one [B, D] vector per
    row) and sum_i w_i W_v S_i = W_v sum_i w_i S_i, so the coarse level over all L behaviours reads them twice
    (scores, weighted sum) and multiplies nothing [L, D] by a [D, D] matrix. Same function and parameters as
    the projected form (the tests check it against that form by hand)."""

    def __init__(self, dim: int, inner: int, tied_init: bool = False) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(dim, inner, bias=False), nn.Linear(dim, inner, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        if tied_init:  # scores start as inner products, the pooled value as the behaviours themselves
            tie_at_init(self.q, self.k)
            with torch.no_grad():
                self.v.weight.copy_(torch.eye(dim))
        self.scale = 1.0 / math.sqrt(inner)

    def forward(self, seq_BKD: Tensor, mask_BK: Tensor, query_BD: Tensor) -> Tuple[Tensor, Tensor]:
        r_BD = self.q(query_BD) @ self.k.weight * self.scale  # W_k^T W_q q / sqrt(d)
        pooled_BD, s_BK = attention_pool(seq_BKD, r_BD, mask_BK)  # scores and pooling, one backward
        return self.v(pooled_BD), s_BK


class LAP(nn.Module):
    """Three cascading attention levels over a long sequence, all three outputs kept.

    Args:
        dim: width D of behaviours and target.
        coarse_dim, mid_dim: d1, d2, the inner widths of the CSA's and MSA's scores.
        coarse_k, fine_k: k1 (kept by the CSA for the MSA), k2 (kept by the MSA for the FSA).
        heads: heads of the FSA's self-attention block (must divide D) and target attention.
        norm_first: the FSA block pre-LN (True) or post-LN.
        block: the FSA's self-attention block (False: its target attention reads the kept behaviours).
        product: also output u1, u2 and each FSA head times the target.
        tied_init: each level's W_q starts equal to its W_k (``target_attention.tie_at_init``) and its W_v as the
            identity, so that u * q starts as the DIN-like match of the pooled behaviours and the target (our choice).

    Attributes:
        output_dim: D + D + heads * D, twice that with ``product``.
    """

    INDEXED_INPUTS = ("seq_BLD",)  # the coarse level reads it dense; the mid level's k1 rows come from the rows

    def __init__(self, *, dim: int, coarse_dim: int = 32, mid_dim: int = 32, coarse_k: int = 256, fine_k: int = 64,
                 heads: int = 4, norm_first: bool = True, block: bool = True, product: bool = True,
                 tied_init: bool = False) -> None:
        super().__init__()
        if dim <= 0 or coarse_k <= 0 or fine_k <= 0 or fine_k > coarse_k:
            raise ValueError(f"LAP: need dim > 0 and 0 < fine_k <= coarse_k, got dim={dim}, coarse_k={coarse_k}, "
                             f"fine_k={fine_k}")
        self.dim, self.coarse_k, self.fine_k = dim, coarse_k, fine_k
        self.coarse = _Level(dim, coarse_dim, tied_init)
        self.mid = _Level(dim, mid_dim, tied_init)
        self.block = TransformerBlock(dim=dim, num_heads=heads, ffn_dim=4 * dim, norm_first=norm_first) if block else None
        self.fine = MultiHeadTargetAttention(dim=dim, heads=heads, head_dim=max(dim // heads, 1), product=product)
        self.product = product
        self.output_dim: int = 2 * dim * (2 if product else 1) + self.fine.output_dim

    def levels(self, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor):
        """Everything the pyramid computes: (u1, u2, u3, s1 [B, L], I1 [B, K1], I2 into L [B, K2], kept2)."""
        u1_BD, s1_BL = self.coarse(dense(seq_BLD), mask_BL, query_BD)
        i1_BK, kept1_BK = masked_topk(s1_BL, mask_BL, self.coarse_k)
        mid_BKD = gather_kept(seq_BLD, i1_BK)  # from the rows when the sequence is indexed
        u2_BD, s2_BK = self.mid(mid_BKD, kept1_BK, query_BD)
        j_BK, kept2_BK = masked_topk(s2_BK, kept1_BK, self.fine_k)
        i2_BK = torch.gather(i1_BK, 1, j_BK)
        fine_BKD = gather_kept(mid_BKD, j_BK)
        if self.block is not None:
            fine_BKD = self.block(x_BLD=fine_BKD, mask_BL=kept2_BK)
        u3_BO = self.fine(z_BKZ=fine_BKD, mask_BK=kept2_BK, query_BD=query_BD)
        return u1_BD, u2_BD, u3_BO, s1_BL, i1_BK, i2_BK, kept2_BK

    def kept_behaviours(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor):
        """What the fine level reads: (I2, indices into L [B, K2], valid [B, K2])."""
        *_, i2_BK, kept2_BK = self.levels(seq_BLD, mask_BL, query_BD)
        return i2_BK, kept2_BK

    def consistency(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """Per row, the share of the FSA's behaviours (I2) that the CSA alone would also rank in its top k2."""
        _, _, _, s1_BL, _, i2_BK, kept2_BK = self.levels(seq_BLD, mask_BL, query_BD)
        top_BK, top_ok_BK = masked_topk(s1_BL, mask_BL, self.fine_k)
        hit_BKK = (i2_BK.unsqueeze(2) == top_BK.unsqueeze(1)) & top_ok_BK.unsqueeze(1)
        hits_B = (hit_BKK.any(2) & kept2_BK).sum(1).to(seq_BLD.dtype)
        return hits_B / kept2_BK.sum(1).clamp_min(1).to(seq_BLD.dtype)

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """[u1, u2, u3] of shape [B, 2D + heads * D] (with ``product`` ``[u1, u2, u3, u1 * q, u2 * q]``, u3
        holding its heads' products); zeros for a row with no behaviour."""
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        u1_BD, u2_BD, u3_BO, *_ = self.levels(seq_BLD, mask_BL, query_BD)
        if self.product:
            return torch.cat([u1_BD, u2_BD, u3_BO, u1_BD * query_BD, u2_BD * query_BD], dim=-1)
        return torch.cat([u1_BD, u2_BD, u3_BO], dim=-1)
