"""Behavior Sequence Transformer (Chen et al., "Behavior Sequence Transformer for E-commerce
Recommendation in Alibaba", DLP-KDD 2019, arXiv 1905.06874), Section 2 (section names in brackets):

    tokens = [e_1 + p_1, ..., e_n + p_n, v + p_t]   [Embedding layer: the target item is part of
                                                     the sequence, each with a position embedding]
    S' = LayerNorm(S + Dropout(MH(S)))                             [Transformer layer]
    F  = LayerNorm(S' + Dropout(LeakyReLU(S' W1 + b1) W2 + b2))    [Transformer layer]

one block (b = 1, the paper's best) with 8 heads, then the outputs are pooled and fed, with the
other features, to the MLP tower.

Forward contract: position embeddings are data. ``seq_time_BLD`` carries the behaviours' position
embeddings (COE: oldest = 1; the paper's time-difference position can be passed the same way) and
``query_time_BD`` the target's (COE index length_b + 1, the slot after the last behaviour); each is
added when given, None = no position encoding.

Choices (our choice unless a source is named):

- The paper concatenates the block's outputs; with variable-length histories we pool them over the
  valid behaviours and the target: ``pool="mean"`` (masked mean) or ``pool="target"`` (the target
  token's output). An empty history still has the target token, so the output is finite, not zero.
- The target token is appended at index L (after the padding); attention is permutation-equivariant
  and positions are additive, so this equals appending it at index length_b.
- FFN hidden width 4D (Vaswani et al.; the paper does not say), LeakyReLU slope 0.01; dropout on the
  attention weights, the residual branches and the FFN hidden layer.
- Output width D; the model concatenates v itself.
- Cost: time quadratic in L (SDPA with a [B, 1, 1, L + 1] boolean key-padding mask).
"""
# Shape legend: B batch, L history length (padded), M = L + 1 (with the target token),
# D embedding width.
from typing import Literal, Optional, Tuple, get_args

import torch
from torch import Tensor, nn

from .masking import check_inputs, masked_mean
from .transformer import TransformerBlock

Pool = Literal["mean", "target"]
POOLS = get_args(Pool)


class BST(nn.Module):
    """One Transformer block over the behaviours plus the target token, then pooling.

    Cost: time quadratic in the history length L (O(B L^2 D)); memory linear in L with SDPA's
    fused kernels (modules/transformer.py; the L = 2000 runs: experiments/long_sequences.yaml).

    Args:
        dim: embedding width D of behaviours, positions and target.
        num_heads: attention heads; must divide D (ValueError otherwise).
        dropout: dropout probability in [0, 1).
        pool: "mean" (masked mean over valid behaviours and the target) or "target" (the target
            token's output).

    Attributes:
        output_dim: D.
    """

    def __init__(
        self, *, dim: int, num_heads: int = 8, dropout: float = 0.0, pool: Pool = "mean"
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"BST dim must be positive, got {dim}")
        if num_heads <= 0 or dim % num_heads:
            raise ValueError(f"BST num_heads={num_heads} must be positive and divide dim={dim}")
        if pool not in POOLS:
            raise ValueError(f"unknown BST pool {pool!r}; expected one of {POOLS}")
        self.dim = dim
        self.pool = pool
        self.block = TransformerBlock(
            dim=dim,
            num_heads=num_heads,
            ffn_dim=4 * dim,
            dropout=dropout,
            norm_first=False,
            activation="leaky_relu",
        )
        self.output_dim: int = dim

    def encode(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Block outputs of the behaviours and the target token (at index L).

        Args:
            seq_BLD, mask_BL, query_BD, seq_time_BLD, query_time_BD: as in ``forward``.

        Returns:
            (out_BMD, mask_BM): outputs (zero at padding) and the mask, the target at index L.
        """
        x_BLD = seq_BLD if seq_time_BLD is None else seq_BLD + seq_time_BLD
        t_BD = query_BD if query_time_BD is None else query_BD + query_time_BD
        x_BMD = torch.cat([x_BLD, t_BD.unsqueeze(1)], dim=1)
        mask_BM = torch.cat([mask_BL, mask_BL.new_ones(mask_BL.shape[0], 1)], dim=1)
        return self.block(x_BLD=x_BMD, mask_BL=mask_BM), mask_BM

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Encode behaviours and target together and pool; cost quadratic in L.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            query_BD: target embedding v, shape [B, D].
            seq_time_BLD: behaviour position embeddings (COE), shape [B, L, D]; None = none.
            query_time_BD: the target's position embedding (COE index length_b + 1), shape [B, D];
                None = none.

        Returns:
            Shape [B, D]: the masked mean of the outputs, or the target token's output.
        """
        check_inputs(
            dim=self.dim,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=seq_time_BLD,
            query_time_BD=query_time_BD,
        )
        out_BMD, mask_BM = self.encode(
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=seq_time_BLD,
            query_time_BD=query_time_BD,
        )
        if self.pool == "target":
            return out_BMD[:, -1]
        return masked_mean(out_BMD, mask_BM)
