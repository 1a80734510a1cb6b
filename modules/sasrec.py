"""SASRec as a CTR baseline (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018,
arXiv 1808.09781), Section 3 (section names in brackets):

    E^ = E + P              [Embedding Layer: learned positional embedding]
    S = SA(E^), causal: query t attends to keys j <= t       [Self-Attention Block: Causality]
    F_i = ReLU(S_i W1 + b1) W2 + b2  [Point-Wise Feed-Forward Network; W1, W2 of shape D x D]
    g(x) = x + Dropout(g(LayerNorm(x))) for both sublayers   [Stacking Self-Attention Blocks]

stacked ``num_blocks`` times; the user interest h is the output at the last valid position, scored
against the target v (the paper's r = F_t N_i^T). Used as the TIN paper's baseline (arXiv 2308.08487).

Forward contract: the position embeddings are data. The framework looks up the chronological order
encoding (COE: oldest behaviour = 1, the i-th behaviour = i) and passes it as ``seq_time_BLD``; it is
added to e (e + p). ``seq_time_BLD=None`` means no position encoding.
The mask must be right-padded (a prefix of True per row), as the framework builds it.

Choices the paper leaves open or the CTR setting changes (our choice unless a source is named):

- Output [h, h ⊙ v] (MODELS.md: tower input [h, v, h ⊙ v]; the model concatenates v itself).
  Empty histories give h = 0.
- Dropout on e + p (the paper's embedding dropout), in each block (attention weights, residual
  branches, FFN hidden) and a final LayerNorm after the last block (the released code's
  ``last_layernorm``; pre-LN needs it to normalise the output). The released code's sqrt(D) scaling
  of the item embeddings is not applied (the embeddings are looked up outside). Multi-head attention
  with an output projection W^O (the paper has one head and no W^O).
- Padding is masked as keys and zeroed after every block (as the released code's timeline mask).
- Cost: time quadratic in L (SDPA with its own causal mask on right-padded histories, no mask tensor).
"""
# Shape legend: B batch, L history length (padded), D embedding width.
from typing import Optional

import torch
from torch import Tensor, nn

from .masking import check_inputs, zero_padding
from .transformer import TransformerBlock


class SASRec(nn.Module):
    """Causal self-attention over the behaviours; the last valid output is the user interest.

    Cost: time quadratic in the history length L (O(B L^2 D)); memory linear in L with SDPA's
    fused kernels (modules/transformer.py; the L = 2000 runs: experiments/long_sequences.yaml).

    Args:
        dim: embedding width D of behaviours, positions and target.
        num_blocks: stacked self-attention blocks.
        num_heads: attention heads; must divide D.
        dropout: dropout probability in [0, 1).

    Attributes:
        output_dim: 2D.
    """

    def __init__(
        self, *, dim: int, num_blocks: int = 2, num_heads: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dim <= 0 or num_blocks <= 0:
            raise ValueError(f"SASRec dim and num_blocks must be positive, got {dim}, {num_blocks}")
        self.dim = dim
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim=dim, num_heads=num_heads, ffn_dim=dim, dropout=dropout, norm_first=True
            )
            for _ in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.output_dim: int = 2 * dim

    def encode(
        self, *, seq_BLD: Tensor, mask_BL: Tensor, seq_time_BLD: Optional[Tensor] = None
    ) -> Tensor:
        """Outputs of the causal blocks (after the final LayerNorm) at every position.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            seq_time_BLD: optional COE position embeddings p_i, shape [B, L, D].

        Returns:
            Shape [B, L, D], zero at padding; position t depends on behaviours <= t only.
        """
        x_BLD = seq_BLD if seq_time_BLD is None else seq_BLD + seq_time_BLD
        x_BLD = self.input_dropout(zero_padding(x_BLD, mask_BL))
        for block in self.blocks:
            x_BLD = block(x_BLD=x_BLD, mask_BL=mask_BL, causal=True)
        return zero_padding(self.final_norm(x_BLD), mask_BL)

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
    ) -> Tensor:
        """Encode the history; cost quadratic in L.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            query_BD: target embedding v, shape [B, D].
            seq_time_BLD: COE position embeddings (oldest = 1), shape [B, L, D], added to e_i;
                None = no position encoding.

        Returns:
            [h, h ⊙ v] of shape [B, 2D]; zeros for empty histories.
        """
        check_inputs(
            dim=self.dim,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=seq_time_BLD,
        )
        B, L, D = seq_BLD.shape
        if L == 0:
            return seq_BLD.new_zeros(B, self.output_dim)
        out_BLD = self.encode(seq_BLD=seq_BLD, mask_BL=mask_BL, seq_time_BLD=seq_time_BLD)
        length_B = mask_BL.sum(dim=1)
        last_B11 = (length_B - 1).clamp_min(0).view(B, 1, 1).expand(B, 1, D)
        h_BD = out_BLD.gather(1, last_B11).squeeze(1)
        h_BD = torch.where((length_B > 0).unsqueeze(1), h_BD, torch.zeros_like(h_BD))
        return torch.cat([h_BD, h_BD * query_BD], dim=-1)
