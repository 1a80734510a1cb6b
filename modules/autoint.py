"""AutoInt (Song et al., CIKM 2019, arXiv 1810.11921; ``../shared/MODELS.md`` C), a baseline of DUMN's Table 1:
stacked multi-head self-attention over the fields ("interacting layers"), then a linear logit.

    a^h_mk = softmax_k <W^Q_h e_m, W^K_h e_k>,   e~^h_m = sum_k a^h_mk W^V_h e_k
    e_m <- ReLU(concat_h e~^h_m + W_res e_m)                 (one interacting layer; ``layers`` of them)
    logit = w^T concat_m e_m (+ MLP(flatten(e)) with ``hidden``: AutoInt+)

The module outputs the logit (``LOGIT_OUTPUT``; the output layer's bias b is the tower's). The attention
logits are unscaled, as the paper's Eq. 5 (no 1/sqrt(d)). The official defaults: 3 layers of 2 heads 32 wide,
residual on. A sequence enters as one mean-pooled field (MODELS.md C).
"""
# Shape legend: B batch, F fields, D field width, H heads, A head width.
from typing import Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP, Activation


class InteractingLayer(nn.Module):
    """One interacting layer: [B, F, D] -> [B, F, H A]."""

    def __init__(self, *, dim: int, heads: int, head_dim: int, residual: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.res = nn.Linear(dim, heads * head_dim, bias=False) if residual else None

    def forward(self, e_BFD: Tensor) -> Tensor:
        B, F, _ = e_BFD.shape
        q, k, v = (t.view(B, F, self.heads, self.head_dim).transpose(1, 2) for t in self.qkv(e_BFD).chunk(3, -1))
        a_BHFF = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        out_BFX = (a_BHFF @ v).transpose(1, 2).reshape(B, F, self.heads * self.head_dim)
        if self.res is not None:
            out_BFX = out_BFX + self.res(e_BFD)
        return torch.relu(out_BFX)


class AutoInt(nn.Module):
    """AutoInt (AutoInt+ with ``hidden``), one logit.

    Args:
        dim: D; fields: F (supplied by the builder from ``fields_BFD``).
        layers, heads, head_dim, residual: the interacting layers (3, 2, 32, true).
        hidden, activation, dropout: AutoInt+'s MLP (empty: AutoInt).
    """

    LOGIT_OUTPUT = True

    def __init__(self, *, dim: int, fields: int, layers: int = 3, heads: int = 2, head_dim: int = 32,
                 residual: bool = True, hidden: Sequence[int] = (), activation: Activation = "relu",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if dim <= 0 or fields < 1 or layers < 1 or heads < 1 or head_dim < 1:
            raise ValueError(f"AutoInt: need dim, fields, layers, heads, head_dim >= 1; got {dim}, {fields}, "
                             f"{layers}, {heads}, {head_dim}")
        self.dim, self.fields = dim, fields
        widths = [dim] + [heads * head_dim] * layers
        self.layers = nn.ModuleList(InteractingLayer(dim=widths[i], heads=heads, head_dim=head_dim, residual=residual)
                                    for i in range(layers))
        self.out = nn.Linear(fields * widths[-1], 1, bias=False)
        self.mlp = MLP(in_dim=fields * dim, hidden_dims=tuple(hidden), activation=activation, dropout=dropout,
                       out_dim=1) if hidden else None
        self.output_dim: int = 1

    def forward(self, *, fields_BFD: Tensor) -> Tensor:
        """The logit [B, 1]."""
        if tuple(fields_BFD.shape[1:]) != (self.fields, self.dim):
            raise ValueError(f"AutoInt: fields_BFD has shape {tuple(fields_BFD.shape)}, want [B, {self.fields}, {self.dim}]")
        e = fields_BFD
        for layer in self.layers:
            e = layer(e)
        logit_B1 = self.out(e.flatten(1))
        if self.mlp is not None:
            logit_B1 = logit_B1 + self.mlp(fields_BFD.flatten(1))
        return logit_B1
