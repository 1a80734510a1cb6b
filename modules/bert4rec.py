"""BERT4Rec as a CTR baseline (Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional
Encoder Representations from Transformer", CIKM 2019, arXiv 1904.06690), Section 3 (section names
in brackets):

    h^0_i = v_i + p_i                                          [Embedding Layer]
    H^l = Trm(H^{l-1}), bidirectional over all valid positions   [Transformer Layer]
    Trm: A = LN(H + Dropout(MH(H))),  LN(A + Dropout(PFFN(A))),  PFFN = GELU(x W1 + b1) W2 + b2

For CTR (MODELS.md, our choice) a learned [MASK] slot is appended right after the last valid
behaviour of each row (index length_b, a vectorised scatter), the sequence is encoded
bidirectionally, and the [MASK] slot's final output is the user interest h, as in the paper's
next-item prediction at test time (Model Learning: append the [mask] token to the end). The cloze
pre-training objective is not used: the framework trains with its CTR loss.

Forward contract: position embeddings are data. ``seq_time_BLD`` carries the COE embeddings of the
behaviours (oldest = 1) and is added to e_i; ``query_time_BD``, when given, is added to the [MASK]
slot: pass the COE embedding of index length_b + 1 (the slot right after the last behaviour, the
same embedding BST receives for its target). None = no position encoding. The mask must be
right-padded (a prefix of True per row) so that index length_b is the first padded slot.

Choices (our choice unless a source is named):

- Output [h, h ⊙ v] (the model concatenates v itself). An empty history still has its [MASK] slot,
  so h is a learned, finite constant (plus the slot's position embedding), not zero.
- The [MASK] embedding is initialised N(0, 0.02) (BERT's initializer range).
- LayerNorm and dropout on the input embeddings (BERT's embedding post-processing, which the released
  BERT4Rec code inherits), post-LN blocks, FFN hidden width 4D with GELU (paper).
- Self-attention is permutation-equivariant and the positions are additive, so where the slot sits
  only matters for the layout; index length_b keeps each row contiguous, as BERT4Rec's input.
- Cost: time quadratic in L (SDPA with a [B, 1, 1, L + 1] boolean key-padding mask).
"""
# Shape legend: B batch, L history length (padded), M = L + 1 (with the [MASK] slot),
# D embedding width.
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .masking import check_inputs, zero_padding
from .transformer import TransformerBlock


class BERT4Rec(nn.Module):
    """Bidirectional self-attention with a [MASK] slot after the last behaviour; its output is h.

    Cost: time quadratic in the history length L (O(B L^2 D)); memory linear in L with SDPA's
    fused kernels (modules/transformer.py; the L = 2000 runs: experiments/long_sequences.yaml).

    Args:
        dim: embedding width D of behaviours, positions and target.
        num_blocks: stacked Transformer blocks.
        num_heads: attention heads; must divide D.
        dropout: dropout probability in [0, 1).

    Attributes:
        output_dim: 2D.
    """

    def __init__(
        self, *, dim: int, num_blocks: int = 2, num_heads: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dim <= 0 or num_blocks <= 0:
            raise ValueError(
                f"BERT4Rec dim and num_blocks must be positive, got {dim}, {num_blocks}"
            )
        self.dim = dim
        self.mask_token_D = nn.Parameter(torch.randn(dim) * 0.02)
        self.input_norm = nn.LayerNorm(dim)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim=dim,
                num_heads=num_heads,
                ffn_dim=4 * dim,
                dropout=dropout,
                norm_first=False,
                activation="gelu",
            )
            for _ in range(num_blocks)
        )
        self.output_dim: int = 2 * dim

    def insert_mask_slot(
        self, *, seq_BLD: Tensor, mask_BL: Tensor, slot_BD: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Write ``slot_BD`` at index length_b of each row (a scatter, no loop).

        Args:
            seq_BLD: right-padded inputs, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            slot_BD: the [MASK] slot's input per row, shape [B, D].

        Returns:
            (x_BMD, mask_BM, length_B): the inputs with one more position, zero under padding and
            ``slot_BD`` at index length_b; the mask with that index set; the lengths (= slot index).
        """
        B, L, D = seq_BLD.shape
        length_B = mask_BL.sum(dim=1)
        x_BMD = torch.cat([zero_padding(seq_BLD, mask_BL), seq_BLD.new_zeros(B, 1, D)], dim=1)
        x_BMD = x_BMD.scatter(1, length_B.view(B, 1, 1).expand(B, 1, D), slot_BD.unsqueeze(1))
        mask_BM = torch.cat([mask_BL, mask_BL.new_zeros(B, 1)], dim=1)
        mask_BM = mask_BM.scatter(1, length_B.view(B, 1), True)
        return x_BMD, mask_BM, length_B

    def encode(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Final block outputs of the sequence with the [MASK] slot appended.

        Args:
            seq_BLD, mask_BL, seq_time_BLD, query_time_BD: as in ``forward``.

        Returns:
            (out_BMD, mask_BM, length_B): outputs at every position (zero at padding), the extended
            mask, and the index of each row's [MASK] slot.
        """
        x_BLD = seq_BLD if seq_time_BLD is None else seq_BLD + seq_time_BLD
        slot_BD = self.mask_token_D.to(seq_BLD.dtype).expand(seq_BLD.shape[0], self.dim)
        if query_time_BD is not None:
            slot_BD = slot_BD + query_time_BD
        x_BMD, mask_BM, length_B = self.insert_mask_slot(
            seq_BLD=x_BLD, mask_BL=mask_BL, slot_BD=slot_BD
        )
        x_BMD = self.input_dropout(self.input_norm(x_BMD))
        for block in self.blocks:
            x_BMD = block(x_BLD=x_BMD, mask_BL=mask_BM)
        return x_BMD, mask_BM, length_B

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Encode the history bidirectionally and read the [MASK] slot; cost quadratic in L.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            query_BD: target embedding v, shape [B, D].
            seq_time_BLD: COE position embeddings (oldest = 1), shape [B, L, D], added to e_i;
                None = no position encoding.
            query_time_BD: position embedding of the [MASK] slot (COE index length_b + 1),
                shape [B, D]; None = none.

        Returns:
            [h, h ⊙ v] of shape [B, 2D], h = the [MASK] slot's output.
        """
        check_inputs(
            dim=self.dim,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=seq_time_BLD,
            query_time_BD=query_time_BD,
        )
        out_BMD, _, length_B = self.encode(
            seq_BLD=seq_BLD, mask_BL=mask_BL, seq_time_BLD=seq_time_BLD, query_time_BD=query_time_BD
        )
        B, _, D = out_BMD.shape
        h_BD = out_BMD.gather(1, length_B.view(B, 1, 1).expand(B, 1, D)).squeeze(1)
        return torch.cat([h_BD, h_BD * query_BD], dim=-1)
