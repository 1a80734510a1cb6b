"""DMIN, the Deep Multi-Interest Network (Xiao et al., CIKM 2020; ``../shared/MODELS.md`` B), and DEI2N's
DMIN+TRA (its online baseline):

    Behaviour refiner     Z = Transformer block(E_b): multi-head self-attention + FFN, residuals, layer norms;
                          DIEN's next-behaviour auxiliary loss on z_t (sampled negatives; ``modules/dien.py``)
    Multi-interest        head_h = softmax(Z W_h^Q (Z W_h^K)^T / sqrt(D)) Z W_h^V        h = 1..H, each D wide
    extractor             u_h = sum_j a_h([head_h,j, p_j, e_ta, ...]) head_h,j              (own DIN unit per head)
    output                [u_1, ..., u_H]  (+TRA: and [u^tr_1, ..., u^tr_H], each head pooled again with e_tr)

``p_j`` is the behaviour's position embedding (``position_BLP``: a TorchRec table of ``hist_position``, the
target-relative position). The extractor's heads are D wide each (the per-head value projection keeps the
behaviour width, so that each head's interest meets the target in its own DIN unit); the refiner's FFN is
``ffn_dim`` wide (our choice: D); dropout on both blocks. Defaults: 4 heads, DIN units 80-40 with PReLU,
auxiliary weight 1 (the DEI2N authors' code). The auxiliary loss is returned as the named loss ``aux`` in
training when negatives are bound (``neg_seq_BLD``, as DIEN). Padding never leaks: padded keys are masked,
padded slots zeroed, an empty history gives zeros.
"""
# Shape legend: B batch, L behaviours, D width, P position width, H heads.
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dien import next_behaviour_loss
from .masking import zero_padding
from .mlp import Activation, MLP
from .target_attention import ActivationUnitAttention
from .transformer import TransformerBlock, attention_mask


class DMIN(nn.Module):
    """DMIN (+TRA with ``trigger``).

    Args:
        dim: D, width of behaviours, target (and trigger).
        heads: H of the refiner and of the extractor (one interest per extractor head).
        position_dim: P of ``position_BLP`` (0: no positions).
        ffn_dim: the refiner's FFN width (default D).
        dropout: the refiner's and the extractor's attention dropout.
        attention_hidden, activation: the per-head DIN units.
        aux_hidden, aux_weight: the auxiliary net (DIEN's, 100-50 sigmoid) and its loss weight.
        trigger: +TRA: every head is pooled again with the trigger as query (``trigger_BD``).

    Attributes:
        output_dim: H D, doubled with ``trigger``.
    """

    def __init__(self, *, dim: int, heads: int = 4, position_dim: int = 0, ffn_dim: Optional[int] = None,
                 dropout: float = 0.0, attention_hidden: Sequence[int] = (80, 40), activation: Activation = "prelu",
                 aux_hidden: Sequence[int] = (100, 50), aux_weight: float = 1.0, trigger: bool = False) -> None:
        super().__init__()
        if dim <= 0 or heads <= 0 or position_dim < 0 or aux_weight < 0:
            raise ValueError(f"DMIN: need dim, heads > 0, position_dim, aux_weight >= 0; got {dim}, {heads}, "
                             f"{position_dim}, {aux_weight}")
        if dim % heads:
            raise ValueError(f"DMIN: heads={heads} must divide dim={dim} (the refiner's self-attention)")
        self.dim, self.heads, self.position_dim, self.trigger = dim, heads, position_dim, trigger
        self.aux_weight, self.dropout_p = float(aux_weight), dropout
        self.refiner = TransformerBlock(dim=dim, num_heads=heads, ffn_dim=ffn_dim or dim, dropout=dropout)
        self.aux_net = MLP(in_dim=2 * dim, hidden_dims=tuple(aux_hidden), activation="sigmoid", out_dim=1)
        self.extractor = nn.Linear(dim, 3 * heads * dim, bias=False)  # W_h^Q, W_h^K, W_h^V of every head
        unit = dict(dim=dim, side_dim=position_dim, hidden=attention_hidden, activation=activation)
        self.units = nn.ModuleList(ActivationUnitAttention(**unit) for _ in range(heads))
        if trigger:
            self.trigger_units = nn.ModuleList(ActivationUnitAttention(**unit) for _ in range(heads))
        self.output_dim: int = (2 if trigger else 1) * heads * dim

    def heads_of(self, z_BLD: Tensor, mask_BL: Tensor) -> Tensor:
        """The extractor's head outputs [B, H, L, D] (zero at padding)."""
        B, L, D = z_BLD.shape
        q, k, v = (t.view(B, L, self.heads, D).transpose(1, 2) for t in self.extractor(z_BLD).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(mask_BL),
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return out * mask_BL[:, None, :, None].to(out.dtype)

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor, position_BLP: Optional[Tensor] = None,
                neg_seq_BLD: Optional[Tensor] = None, trigger_BD: Optional[Tensor] = None
                ) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """``[u_1..u_H (, u^tr_1..u^tr_H)]`` [B, output_dim]; with negatives in training, also ``{"aux": loss}``."""
        if (trigger_BD is None) == self.trigger:
            raise ValueError(f"DMIN(trigger={self.trigger}): bind trigger_BD exactly when trigger is true")
        if (position_BLP is None) != (self.position_dim == 0):
            raise ValueError(f"DMIN(position_dim={self.position_dim}): bind position_BLP exactly when "
                             f"position_dim > 0")
        z_BLD = self.refiner(x_BLD=seq_BLD, mask_BL=mask_BL)
        heads_BHLD = self.heads_of(z_BLD, mask_BL)
        pos = None if position_BLP is None else zero_padding(position_BLP, mask_BL)
        out = [unit(heads_BHLD[:, h], mask_BL, query_BD, pos) for h, unit in enumerate(self.units)]
        if self.trigger:
            out += [unit(heads_BHLD[:, h], mask_BL, trigger_BD, pos) for h, unit in enumerate(self.trigger_units)]
        out_BO = torch.cat(out, dim=-1)
        if neg_seq_BLD is None or not self.training:
            return out_BO
        aux = next_behaviour_loss(self.aux_net, z_BLD, zero_padding(seq_BLD, mask_BL),
                                  zero_padding(neg_seq_BLD, mask_BL), mask_BL)
        return out_BO, {"aux": self.aux_weight * aux}
