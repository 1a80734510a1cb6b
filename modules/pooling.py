"""Average pooling of the behaviour sequence: the "Avg Pooling & Concat" and "Avg Pooling &
Product" baselines.

The DIN paper (Zhou et al., KDD 2018, arXiv 1706.06978, Section 4.2, Fig. 2 "Base Model") pools the
behaviour embeddings with a sum/average pooling, u = (1/|H|) sum_i e_i, and concatenates u with the
other features ("Embedding & MLP"). The TIN paper (arXiv 2308.08487, Table 1) evaluates two such
baselines: "Avg Pooling & Concat" (output u; no TI, TA or TR) and "Avg Pooling & Product"
(output [u, u ⊙ v], adding a target-aware representation through the product).

Choices left open (our choice): the mean runs over valid behaviours only, an empty history gives
u = 0, and the target embedding v itself is concatenated by the model outside, not here.
"""
# Shape legend: B batch, L history length (padded), D embedding width.


import torch
from torch import Tensor, nn

from .masking import check_inputs, masked_mean


class AvgPooling(nn.Module):
    """Masked mean of the behaviour embeddings, optionally with the pooled-times-target product.

    Args:
        dim: embedding width D.
        product: False = "Avg Pooling & Concat" (output u), True = "Avg Pooling & Product"
            (output [u, u ⊙ v]).

    Attributes:
        output_dim: 2D if ``product`` else D.
    """

    def __init__(self, *, dim: int, product: bool = False) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"AvgPooling dim must be positive, got {dim}")
        self.dim = dim
        self.product = product
        self.output_dim: int = 2 * dim if product else dim

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
    ) -> Tensor:
        """Average the valid behaviours.

        Args:
            seq_BLD: behaviour embeddings, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            query_BD: target embedding v, shape [B, D] (used only when ``product``).

        Returns:
            u of shape [B, D], or [u, u ⊙ v] of shape [B, 2D]; u = 0 for empty histories.
        """
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        pooled_BD = masked_mean(seq_BLD, mask_BL)
        if self.product:
            return torch.cat([pooled_BD, pooled_BD * query_BD], dim=-1)
        return pooled_BD
