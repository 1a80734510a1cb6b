"""PNN, the product-based neural network (Qu et al., ICDM 2016, arXiv 1611.00144; ``../shared/MODELS.md`` C, D):
an MLP whose first layer reads the field embeddings and their pairwise products.

    IPNN:  p = [<f_i, f_j>]_{i<j}          F (F - 1) / 2 inner products
    OPNN:  f_s = sum_i f_i,  p = vec(f_s f_s^T)        d x d (the paper's superposition form)
    out = MLP([flatten(f), p])

Choices: the inner products are all kept, as in the authors' code (the paper's cheaper form ties each first-
layer unit's pair weights to theta theta^T); they come from one batched matrix product ``f f^T`` and a fixed
upper-triangle index, never a loop over pairs. The first layer reads the linear signals as the flattened
fields (``flatten(f)``, the code's ``l_z``). OPNN is here for DUMN's Table 1; IPNN is the heterogeneous
backbone's expert (MODELS.md D).
"""
# Shape legend: B batch, F fields, D field width, P product features, H output.
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP, Activation


class PNN(nn.Module):
    """Field embeddings and their products, then an MLP.

    Args:
        dim: a field's width D.
        fields: F (>= 2 for IPNN).
        product: ``inner`` (IPNN) or ``outer`` (OPNN).
        hidden: the MLP's widths (the last is the output width).
        activation, dropout: the MLP's.

    Attributes:
        output_dim: ``hidden[-1]``.
    """

    def __init__(self, *, dim: int, fields: int, product: Literal["inner", "outer"] = "inner",
                 hidden: Sequence[int] = (400, 400, 400), activation: Activation = "relu",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if product not in ("inner", "outer"):
            raise ValueError(f"PNN: product must be 'inner' or 'outer', got {product!r}")
        if product == "inner" and fields < 2:
            raise ValueError(f"PNN: IPNN needs at least 2 fields, got {fields}")
        if not hidden:
            raise ValueError("PNN: hidden needs at least one layer (the product layer's units)")
        self.dim, self.fields, self.product = dim, fields, product
        i, j = torch.triu_indices(fields, fields, offset=1)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)
        n_products = i.numel() if product == "inner" else dim * dim
        self.mlp = MLP(in_dim=fields * dim + n_products, hidden_dims=list(hidden), activation=activation,
                       dropout=dropout)
        self.output_dim: int = self.mlp.output_dim

    def products(self, fields_BFD: Tensor) -> Tensor:
        """p [B, P]: the inner products of every field pair (i < j, row-major), or vec(f_s f_s^T)."""
        if tuple(fields_BFD.shape[1:]) != (self.fields, self.dim):
            raise ValueError(f"PNN: fields_BFD has shape {tuple(fields_BFD.shape)}, want [B, {self.fields}, {self.dim}]")
        if self.product == "inner":
            gram_BFF = torch.bmm(fields_BFD, fields_BFD.transpose(1, 2))
            return gram_BFF[:, self.pair_i, self.pair_j]
        s_BD = fields_BFD.sum(1)
        return (s_BD.unsqueeze(2) * s_BD.unsqueeze(1)).flatten(1)

    def forward(self, *, fields_BFD: Tensor) -> Tensor:
        """Args: fields_BFD [B, F, D] (a ``combine: stack`` input). Returns [B, output_dim]."""
        return self.mlp(torch.cat([fields_BFD.flatten(1), self.products(fields_BFD)], dim=-1))
