"""DeepFM (Guo et al., IJCAI 2017, arXiv 1703.04247; ``../shared/MODELS.md`` C), a baseline of DUMN's Table 1:
one set of field embeddings v_1..v_F shared by a factorisation machine and a deep network,

    y_FM  = sum_i w_i + 0.5 sum_k [(sum_i v_ik)^2 - sum_i v_ik^2]       (first order + pairwise, O(F D))
    y_DNN = MLP(flatten(v))                                              (paper: 400-400-400 ReLU, dropout 0.5)
    logit = y_FM + y_DNN                                                 (w0: the tower's bias)

The module outputs the logit (``LOGIT_OUTPUT``: the config's tower is a bias). The first-order weights w_i
are per id, as the paper's: a second field stack ``linear_BFW`` of the same F fields from narrow tables
(width W, a multiple of 4 for fbgemm), w_i = the sum of the W entries of field i's row (a learnable scalar
per id); without it (our choice, for configs with one set of tables) w_i = <a_i, v_i>, a learned weight per
field and dimension. A sequence enters as one field, its behaviours mean-pooled by a pooled table
(``pooling: mean``), as MODELS.md C says of every non-sequence baseline.
"""
# Shape legend: B batch, F fields, D field width, W first-order width.
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP, Activation


def fm_pairwise(fields_BFD: Tensor) -> Tensor:
    """[B]: sum_{i<j} <v_i, v_j> by the FM identity 0.5 sum_k [(sum_i v_ik)^2 - sum_i v_ik^2]."""
    return 0.5 * (fields_BFD.sum(1).pow(2) - fields_BFD.pow(2).sum(1)).sum(-1)


class DeepFM(nn.Module):
    """FM and DNN over shared field embeddings, one logit.

    Args:
        dim: D; fields: F (supplied by the builder from ``fields_BFD``).
        hidden, activation, dropout: the DNN's.
    """

    LOGIT_OUTPUT = True

    def __init__(self, *, dim: int, fields: int, hidden: Sequence[int] = (400, 400, 400),
                 activation: Activation = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if dim <= 0 or fields < 2:
            raise ValueError(f"DeepFM: need dim > 0 and at least 2 fields, got dim={dim}, fields={fields}")
        self.dim, self.fields = dim, fields
        self.first_order = nn.Parameter(torch.zeros(fields, dim))  # a_i, used without linear_BFW
        self.dnn = MLP(in_dim=fields * dim, hidden_dims=tuple(hidden), activation=activation, dropout=dropout,
                       out_dim=1)
        self.output_dim: int = 1

    def forward(self, *, fields_BFD: Tensor, linear_BFW: Optional[Tensor] = None) -> Tensor:
        """The logit [B, 1]."""
        if tuple(fields_BFD.shape[1:]) != (self.fields, self.dim):
            raise ValueError(f"DeepFM: fields_BFD has shape {tuple(fields_BFD.shape)}, want [B, {self.fields}, {self.dim}]")
        if linear_BFW is not None:
            if linear_BFW.shape[:2] != fields_BFD.shape[:2]:
                raise ValueError(f"DeepFM: linear_BFW {tuple(linear_BFW.shape)} must have fields_BFD's [B, F]")
            first_B = linear_BFW.sum((1, 2))
        else:
            first_B = (fields_BFD * self.first_order).sum((1, 2))
        y_fm_B = first_B + fm_pairwise(fields_BFD)
        return y_fm_B.unsqueeze(-1) + self.dnn(fields_BFD.flatten(1))
