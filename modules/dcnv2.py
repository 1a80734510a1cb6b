"""DCN V2, the improved deep & cross network (Wang et al., WWW 2021, arXiv 2008.13535; ``../shared/MODELS.md``
D), an expert of the heterogeneous backbone. ``x0`` is the flattened field stack (width n = F D); each cross
layer keeps ``x0`` and adds an explicit interaction of one more order:

    full rank      x_{l+1} = x0 (.) (W_l x_l + b_l) + x_l                          W_l n x n      (Eq. 1)
    low rank       x_{l+1} = x0 (.) (U_l (V_l^T x_l) + b_l) + x_l                  U_l, V_l n x r
    mixture        x_{l+1} = sum_e G_e(x_l) E_e(x_l) + x_l,                                         (Eq. 3)
                   E_e(x_l) = x0 (.) (U_l^e g(C_l^e g(V_l^eT x_l)) + b_l),   C_l^e r x r, g = tanh,
                   G(x_l) = softmax over experts of per-expert linear scores of x_l
    stacked        out = MLP(cross(x0))
    parallel       out = MLP_out([cross(x0), MLP(x0)])

Choices (MODELS.md D's where the paper is silent): 3 cross layers; ``rank = 0`` picks full rank when n <=
512 and else r = n / 4; the mixture has 4 experts of rank 32 and tanh as g (FuxiCTR's defaults); the gate is a
softmax of one linear score per expert (the paper says only "gating"); the bias b_l is shared by the
experts of a layer (it sits outside U in Eq. 3 and is not indexed by e there). The parallel structure's
deep part has the same widths as ``hidden`` and both outputs meet in one more linear layer of the last
width (the paper ends both structures in a logit; here the expert hands a vector to the tower).
"""
# Shape legend: B batch, F fields, D field width, N = F D, R rank, E experts, H output.
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP, Activation

Kind = Literal["full", "low_rank", "mixture"]


class CrossLayer(nn.Module):
    """One DCN V2 cross layer of width n (full rank, low rank, or a mixture of low-rank experts)."""

    def __init__(self, n: int, kind: Kind, rank: int, experts: int) -> None:
        super().__init__()
        self.kind = kind
        self.bias_N = nn.Parameter(torch.zeros(n))
        if kind == "full":
            self.w = nn.Linear(n, n, bias=False)
        elif kind == "low_rank":
            self.v = nn.Linear(n, rank, bias=False)
            self.u = nn.Linear(rank, n, bias=False)
        elif kind == "mixture":
            self.v_ENR = nn.Parameter(torch.empty(experts, n, rank))
            self.c_ERR = nn.Parameter(torch.empty(experts, rank, rank))
            self.u_ERN = nn.Parameter(torch.empty(experts, rank, n))
            for p in (self.v_ENR, self.c_ERR, self.u_ERN):
                nn.init.xavier_uniform_(p)
            self.gate = nn.Linear(n, experts, bias=False)
        else:
            raise ValueError(f"DCNv2: kind must be 'full', 'low_rank' or 'mixture', got {kind!r}")

    def forward(self, x0_BN: Tensor, x_BN: Tensor) -> Tensor:
        if self.kind == "full":
            return x0_BN * (self.w(x_BN) + self.bias_N) + x_BN
        if self.kind == "low_rank":
            return x0_BN * (self.u(self.v(x_BN)) + self.bias_N) + x_BN
        h_BER = torch.tanh(torch.einsum("bn,enr->ber", x_BN, self.v_ENR))
        h_BER = torch.tanh(torch.einsum("ber,ers->bes", h_BER, self.c_ERR))
        e_BEN = x0_BN.unsqueeze(1) * (torch.einsum("ber,ern->ben", h_BER, self.u_ERN) + self.bias_N)
        g_BE = torch.softmax(self.gate(x_BN), dim=-1)
        return torch.einsum("be,ben->bn", g_BE, e_BEN) + x_BN


class DCNv2(nn.Module):
    """Cross network over the flattened fields, stacked with or parallel to an MLP.

    Args:
        dim: a field's width D.
        fields: F.
        layers: cross layers (>= 1).
        kind: ``full``, ``low_rank`` or ``mixture``.
        rank: r for ``low_rank`` / ``mixture`` (0: full rank if F D <= 512, else low rank F D / 4; for a
            mixture, 32 or n if smaller).
        experts: experts per layer of a mixture.
        structure: ``stacked`` or ``parallel``.
        hidden: the deep part's widths (the last is the output width).
        activation, dropout: the deep part's.

    Attributes:
        output_dim: ``hidden[-1]``.
    """

    def __init__(self, *, dim: int, fields: int, layers: int = 3, kind: Kind = "full", rank: int = 0,
                 experts: int = 4, structure: Literal["stacked", "parallel"] = "stacked",
                 hidden: Sequence[int] = (256, 256), activation: Activation = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        n = fields * dim
        if layers < 1 or not hidden:
            raise ValueError(f"DCNv2: needs layers >= 1 and a deep part, got layers={layers}, hidden={list(hidden)}")
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"DCNv2: structure must be 'stacked' or 'parallel', got {structure!r}")
        if rank == 0:
            if kind == "mixture":
                rank = min(32, n)
            elif n > 512:
                kind, rank = "low_rank", max(1, n // 4)
        if kind != "full" and not 0 < rank <= n:
            raise ValueError(f"DCNv2: rank must be in 1..{n}, got {rank}")
        self.dim, self.fields, self.kind, self.rank, self.structure = dim, fields, kind, rank, structure
        self.cross = nn.ModuleList(CrossLayer(n, kind, rank, experts) for _ in range(layers))
        # stacked: the deep part reads the cross network's output; parallel: x0 itself (both n wide)
        self.deep = MLP(in_dim=n, hidden_dims=list(hidden), activation=activation, dropout=dropout)
        self.out = nn.Linear(n + self.deep.output_dim, hidden[-1]) if structure == "parallel" else None
        self.output_dim: int = hidden[-1]

    def cross_network(self, x0_BN: Tensor) -> Tensor:
        x_BN = x0_BN
        for layer in self.cross:
            x_BN = layer(x0_BN, x_BN)
        return x_BN

    def forward(self, *, fields_BFD: Tensor) -> Tensor:
        """Args: fields_BFD [B, F, D] (a ``combine: stack`` input). Returns [B, output_dim]."""
        if tuple(fields_BFD.shape[1:]) != (self.fields, self.dim):
            raise ValueError(f"DCNv2: fields_BFD has shape {tuple(fields_BFD.shape)}, "
                             f"want [B, {self.fields}, {self.dim}]")
        x0_BN = fields_BFD.flatten(1)
        if self.structure == "stacked":
            return self.deep(self.cross_network(x0_BN))
        return self.out(torch.cat([self.cross_network(x0_BN), self.deep(x0_BN)], dim=-1))
