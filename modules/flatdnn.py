"""FlatDNN: an MLP over every field embedding side by side, the plain expert of the heterogeneous backbone
(``../shared/MODELS.md`` D; the TIN paper's Sec. 4.6 names it beside GwPFM).

    out = MLP(flatten(f))

Choice (MODELS.md's): 1024-512-256 ReLU by default. Sequences enter as pooled fields of the stack (the input
stage pools them), so FlatDNN sees no order.
"""
# Shape legend: B batch, F fields, D field width.
from typing import Sequence

from torch import Tensor, nn

from .mlp import MLP, Activation


class FlatDNN(nn.Module):
    """Args: dim D, fields F, hidden (the last is the output width), activation, dropout.
    Attributes: output_dim ``hidden[-1]``."""

    def __init__(self, *, dim: int, fields: int, hidden: Sequence[int] = (1024, 512, 256),
                 activation: Activation = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("FlatDNN: hidden needs at least one layer")
        self.dim, self.fields = dim, fields
        self.mlp = MLP(in_dim=fields * dim, hidden_dims=list(hidden), activation=activation, dropout=dropout)
        self.output_dim: int = self.mlp.output_dim

    def forward(self, *, fields_BFD: Tensor) -> Tensor:
        """Args: fields_BFD [B, F, D]. Returns [B, output_dim]."""
        if tuple(fields_BFD.shape[1:]) != (self.fields, self.dim):
            raise ValueError(f"FlatDNN: fields_BFD has shape {tuple(fields_BFD.shape)}, "
                             f"want [B, {self.fields}, {self.dim}]")
        return self.mlp(fields_BFD.flatten(1))
