"""DIHN, the Deep Interest Highlight Network (Shen et al., WWW 2022, arXiv 2202.08959; ``../shared/MODELS.md``
B, with details from the DEI2N authors' code), a trigger-induced baseline of DEI2N's Table 2:

    UIN     p = softmax(MLP([e_u, e_tr, DIN(e_tr over E_b), s, s (.) e_tr]))_1,   s = sum_j e_j      (200-2D-2)
            auxiliary cross-entropy: the label is 1 iff the target's category is the trigger's
    FEM     e_f = p e_tr + (1 - p) e_ta
    HIEM    soft = DIN(e_f over Enc(E_b)),  hard = mean_j Enc(E_h)_j      Enc: 2 Transformer layers, 2 heads
    output  [soft, hard, e_ta (.) s, s]        (the tower adds e_u, e_ta, e_tr: config)

Choices (ours, as MODELS.md records them): a scalar ``p`` (the authors' code gates with UIN's 2D hidden
vector), the auxiliary weight 1; ``DIN(e_tr over E_b)`` reads the behaviours' time intervals when
``time_dim`` > 0 (the authors' code passes time there); the encoder is one module applied to both sequences
(the paper's "the same encoder"), post-LN, FFN width D, no dropout by default; the DIN units are our DIN's
(80-40 PReLU, scaled softmax). The auxiliary loss is the named loss ``aux`` in training (it needs the category
ids ``target_category_B`` and ``trigger_category_B``, bound as dense values); evaluation needs neither.
Padding never leaks; empty sequences give zeros.
"""
# Shape legend: B batch, L behaviours, K trigger-category behaviours, D width, T time width, U user width.
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .masking import masked_mean, masked_sum
from .mlp import Activation, MLP
from .target_attention import ActivationUnitAttention
from .transformer import TransformerBlock


class DIHN(nn.Module):
    """DIHN (UIN, FEM, HIEM).

    Args:
        dim: D, width of behaviours, target and trigger; user_dim: U; time_dim: T (0: no intervals).
        layers, heads: the encoder's Transformer layers and heads (2, 2).
        uin_hidden: UIN's MLP (200, 2D when not given); attention_hidden, activation: the DIN units.
        aux_weight: the UIN auxiliary loss's weight.

    Attributes:
        output_dim: 4D.
    """

    def __init__(self, *, dim: int, user_dim: int, time_dim: int = 0, layers: int = 2, heads: int = 2,
                 dropout: float = 0.0, uin_hidden: Optional[Sequence[int]] = None,
                 attention_hidden: Sequence[int] = (80, 40), activation: Activation = "prelu",
                 aux_weight: float = 1.0) -> None:
        super().__init__()
        if dim <= 0 or user_dim <= 0 or time_dim < 0 or layers < 1 or aux_weight < 0:
            raise ValueError(f"DIHN: need dim, user_dim, layers > 0 and time_dim, aux_weight >= 0; got {dim}, "
                             f"{user_dim}, {layers}, {time_dim}, {aux_weight}")
        self.dim, self.time_dim, self.aux_weight = dim, time_dim, float(aux_weight)
        self.trigger_attention = ActivationUnitAttention(dim=dim, side_dim=time_dim, hidden=attention_hidden,
                                                         activation=activation)
        self.uin = MLP(in_dim=user_dim + 4 * dim, hidden_dims=tuple(uin_hidden or (200, 2 * dim)),
                       activation="relu", out_dim=2)
        self.encoder = nn.ModuleList(TransformerBlock(dim=dim, num_heads=heads, ffn_dim=dim, dropout=dropout)
                                     for _ in range(layers))
        self.soft_attention = ActivationUnitAttention(dim=dim, hidden=attention_hidden, activation=activation)
        self.output_dim: int = 4 * dim

    def encode(self, seq_BLD: Tensor, mask_BL: Tensor) -> Tensor:
        for block in self.encoder:
            seq_BLD = block(x_BLD=seq_BLD, mask_BL=mask_BL)
        return seq_BLD

    def intent(self, *, seq_BLD: Tensor, mask_BL: Tensor, trigger_BD: Tensor, user_BU: Tensor,
               interval_BLT: Optional[Tensor] = None) -> Tensor:
        """UIN's two logits [B, 2]; softmax(...)[:, 0] is p, the weight of the trigger."""
        s_BD = masked_sum(seq_BLD, mask_BL)
        u_tr_BD = self.trigger_attention(seq_BLD, mask_BL, trigger_BD, interval_BLT)
        return self.uin(torch.cat([user_BU, trigger_BD, u_tr_BD, s_BD, s_BD * trigger_BD], dim=-1))

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor, trigger_BD: Tensor, hard_BKD: Tensor,
                hard_mask_BK: Tensor, user_BU: Tensor, interval_BLT: Optional[Tensor] = None,
                target_category_B: Optional[Tensor] = None, trigger_category_B: Optional[Tensor] = None
                ) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """``[soft, hard, e_ta (.) s, s]`` [B, 4D]; in training with the category ids, also ``{"aux": loss}``."""
        if (interval_BLT is None) != (self.time_dim == 0):
            raise ValueError(f"DIHN(time_dim={self.time_dim}): bind interval_BLT exactly when time_dim > 0")
        if (target_category_B is None) != (trigger_category_B is None):
            raise ValueError("DIHN: bind both target_category_B and trigger_category_B (UIN's auxiliary label) or "
                             "neither")
        logits_B2 = self.intent(seq_BLD=seq_BLD, mask_BL=mask_BL, trigger_BD=trigger_BD, user_BU=user_BU,
                                interval_BLT=interval_BLT)
        p_B1 = torch.softmax(logits_B2, dim=-1)[:, :1]
        e_f_BD = p_B1 * trigger_BD + (1 - p_B1) * query_BD  # FEM
        soft_BD = self.soft_attention(self.encode(seq_BLD, mask_BL), mask_BL, e_f_BD)
        hard_BD = masked_mean(self.encode(hard_BKD, hard_mask_BK), hard_mask_BK)
        s_BD = masked_sum(seq_BLD, mask_BL)
        out_BO = torch.cat([soft_BD, hard_BD, query_BD * s_BD, s_BD], dim=-1)
        if target_category_B is None or not self.training:
            return out_BO
        same_B = (target_category_B.reshape(-1) == trigger_category_B.reshape(-1)).long()
        # class 0 = the instant intent follows the trigger (same category), as p is softmax(...)[:, 0]
        aux = nn.functional.cross_entropy(logits_B2, 1 - same_B)
        return out_BO, {"aux": self.aux_weight * aux}
