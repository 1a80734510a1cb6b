"""DFN, the Deep Feedback Network (Xie et al., IJCAI 2020; ``../shared/MODELS.md`` C), a baseline of DUMN's
Table 1: click (C), unclick (U) and dislike (D) sequences, each read with the target by a Transformer, the
unclicks read again against the click and dislike interests, then Wide + FM + Deep.

    x_j     = W_in [e_j ; p_j]                               behaviour j of a sequence (p_j: its position embedding)
    f_k     = mean over [t ; x_1..x_L] of Transformer([t ; x])    k in {c, u, d}; t = W_in [e_t ; 0]   (internal)
    f_uc    = sum_j softmax_j(a([f_c, x^u_j, f_c (.) x^u_j, f_c - x^u_j]) / sqrt(D)) x^u_j              (external)
    f_ud    = the same with query f_d
    v       = [fields ; f_c, f_u, f_d, f_uc, f_ud]            F + 5 field vectors of width D
    logit   = w^T [wide(v), FM(v), Deep(v)],  wide = a linear map of flatten(v) to one value,
              FM(v) = 0.5 [(sum_i v_i)^2 - sum_i v_i^2] (the bi-interaction vector, D wide), Deep = MLP 32-16

The module outputs the logit (``LOGIT_OUTPUT``; the tower is a bias). Choices (ours, the paper and code
leave them open or MODELS.md marks them): the Transformer is ``modules/transformer.py``'s post-LN block, 4 heads,
FFN 4D, ReLU; the target enters each sequence's Transformer at slot 0 through the same input map with a zero
position; the paper sums the Transformer's outputs over the positions, we average them over the target's slot
and the valid behaviours (the post-LN outputs are each about unit-norm per dimension, so their sum over the ~60
clicks of a history is a vector some hundred wide, and FM's products of five of them drove the first steps' logits
to a standard deviation of 13 and the loss to 3.0 at step 60 on the feedback data: no learning at all); the external attention is the DIN
activation unit of ``modules/target_attention.py`` (an MLP of ``attention_hidden`` = 32, ReLU); the paper's
per-sample loss weights lambda_c / lambda_u / lambda_d are all 1 (plain BCE, the framework's). A sequence with
no behaviour contributes its target slot only (internal) and zeros (external).
"""
# Shape legend: B batch, L behaviours, E behaviour width, P position width, D model (field) width, F fields.
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .masking import zero_padding
from .mlp import MLP
from .target_attention import ActivationUnitAttention
from .transformer import TransformerBlock


class DFN(nn.Module):
    """DFN over click, unclick and dislike sequences and a field stack, one logit.

    Args:
        dim: D, the fields' width (supplied by the builder from ``fields_BFD``), also the Transformers' width.
        fields: F (supplied by the builder).
        seq_dim: E, width of the behaviours and the target (``target_BE``).
        position_dim: P of the ``*_position_BLP`` inputs (0: none).
        heads, dropout: the Transformers'.
        attention_hidden: the external attention's MLP (32).
        deep_hidden: the Deep part (32, 16).
    """

    LOGIT_OUTPUT = True

    def __init__(self, *, dim: int, fields: int, seq_dim: int, position_dim: int = 0, heads: int = 4,
                 dropout: float = 0.0, attention_hidden: Sequence[int] = (32,),
                 deep_hidden: Sequence[int] = (32, 16)) -> None:
        super().__init__()
        if dim <= 0 or seq_dim <= 0 or fields < 0 or position_dim < 0:
            raise ValueError(f"DFN: need dim, seq_dim > 0, fields, position_dim >= 0; got {dim}, {seq_dim}, {fields}, "
                             f"{position_dim}")
        self.dim, self.fields, self.seq_dim, self.position_dim = dim, fields, seq_dim, position_dim
        self.inp = nn.Linear(seq_dim + position_dim, dim)  # W_in
        self.internal = nn.ModuleDict({k: TransformerBlock(dim=dim, num_heads=heads, ffn_dim=4 * dim, dropout=dropout)
                                       for k in ("click", "unclick", "dislike")})
        self.external = nn.ModuleDict({k: ActivationUnitAttention(dim=dim, hidden=tuple(attention_hidden),
                                                                  activation="relu") for k in ("click", "dislike")})
        n = fields + 5
        self.wide = nn.Linear(n * dim, 1, bias=False)
        self.deep = MLP(in_dim=n * dim, hidden_dims=tuple(deep_hidden), activation="relu")
        self.out = nn.Linear(1 + dim + self.deep.output_dim, 1, bias=False)
        self.output_dim: int = 1

    def _behaviours(self, seq_BLE: Tensor, pos_BLP: Optional[Tensor]) -> Tensor:
        if (pos_BLP is None) != (self.position_dim == 0):
            raise ValueError(f"DFN(position_dim={self.position_dim}): bind the *_position_BLP inputs exactly when "
                             f"position_dim > 0")
        return self.inp(seq_BLE if pos_BLP is None else torch.cat([seq_BLE, pos_BLP], -1))

    def forward(self, *, fields_BFD: Tensor, target_BE: Tensor,
                click_BLE: Tensor, click_mask_BL: Tensor, unclick_BLE: Tensor, unclick_mask_BL: Tensor,
                dislike_BLE: Tensor, dislike_mask_BL: Tensor, click_position_BLP: Optional[Tensor] = None,
                unclick_position_BLP: Optional[Tensor] = None, dislike_position_BLP: Optional[Tensor] = None) -> Tensor:
        """The logit [B, 1]."""
        B = target_BE.shape[0]
        t_BD = self.inp(torch.cat([target_BE, target_BE.new_zeros(B, self.position_dim)], -1))
        given = {"click": (click_BLE, click_mask_BL, click_position_BLP),
                 "unclick": (unclick_BLE, unclick_mask_BL, unclick_position_BLP),
                 "dislike": (dislike_BLE, dislike_mask_BL, dislike_position_BLP)}
        f, x = {}, {}
        for k, (seq, mask, pos) in given.items():
            x[k] = zero_padding(self._behaviours(seq, pos), mask)
            both_BLD = torch.cat([t_BD.unsqueeze(1), x[k]], 1)
            both_mask = torch.cat([mask.new_ones(B, 1), mask], 1)
            out_BLD = self.internal[k](x_BLD=both_BLD, mask_BL=both_mask)  # zero at padding
            f[k] = out_BLD.sum(1) / both_mask.sum(1, keepdim=True).to(out_BLD.dtype)  # mean over the valid slots
        f_uc = self.external["click"](x["unclick"], unclick_mask_BL, f["click"])
        f_ud = self.external["dislike"](x["unclick"], unclick_mask_BL, f["dislike"])
        v_BND = torch.cat([fields_BFD, torch.stack([f["click"], f["unclick"], f["dislike"], f_uc, f_ud], 1)], 1)
        fm_BD = 0.5 * (v_BND.sum(1).pow(2) - v_BND.pow(2).sum(1))
        flat = v_BND.flatten(1)
        return self.out(torch.cat([self.wide(flat), fm_BD, self.deep(flat)], -1))
