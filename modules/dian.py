"""DIAN, the Deep Intention-Aware Network (Xia et al., WWW 2023, arXiv 2211.08650; ``../shared/MODELS.md`` B,
with the details of the DEI2N authors' reproduction), a trigger-induced baseline of DEI2N's Table 2:

    Intent Net   p = sigmoid(MLP([e_u, e_tr, mean_j e_j, s (.) e_tr])),  s = sum_j e_j
                 auxiliary BCE (weight 0.1): the label is 1 iff the target's category is the trigger's
    TA net       y_TA = sigmoid(MLP_TA([e_u, e_ta, e_tr, A(e_ta; E_b), A(e_tr; E_b), A(e_ta; E_h), A(e_tr; E_h)]))
    TF net       y_TF = sigmoid(MLP_TF([e_u, e_ta, A'(e_ta; E_b)]))
    prediction   y = p y_TA + (1 - p) y_TF,  trained by BCE on y

``A`` is a 4-head target attention (our ``MultiHeadTargetAttention``: per head a softmax of projected
key-query products over the behaviours, the behaviours themselves as values); each (query, sequence) pair has
its own, and the TF net its own too. Each net's tower is 200-80 ReLU to one logit.

The module outputs ``logit(y)`` (``LOGIT_OUTPUT``: the framework adds it to the tower's output, and the
config's tower is a bias that starts at 0), so the framework's BCE on the logit is the BCE on ``y``;
``logit(y)`` is computed in log space (``log y - log(1 - y)`` by log-sum-exp of the two nets' log
probabilities), finite for any logits. Our choices: ``p`` is the probability that the user entered because of
the trigger (weighting the trigger-aware net); the trigger-free net reads no trigger information (not E_h, the
trigger-category sub-sequence); mixing probabilities, not logits. The auxiliary loss is the named loss ``aux``
in training when the category ids are bound (dense values ``target_category_B``, ``trigger_category_B``).
"""
# Shape legend: B batch, L behaviours, K trigger-category behaviours, D width, U user width.
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masking import masked_mean, masked_sum
from .mlp import MLP
from .target_attention import MultiHeadTargetAttention


def mixture_logit(p_logit_B: Tensor, a_logit_B: Tensor, b_logit_B: Tensor) -> Tensor:
    """``logit(p y_a + (1 - p) y_b)`` for ``p = sigmoid(p_logit)``, ``y_a = sigmoid(a_logit)``, likewise b,
    in log space (finite for any finite inputs)."""
    log_y = torch.logaddexp(F.logsigmoid(p_logit_B) + F.logsigmoid(a_logit_B),
                            F.logsigmoid(-p_logit_B) + F.logsigmoid(b_logit_B))
    log_not_y = torch.logaddexp(F.logsigmoid(p_logit_B) + F.logsigmoid(-a_logit_B),
                                F.logsigmoid(-p_logit_B) + F.logsigmoid(-b_logit_B))
    return log_y - log_not_y


class DIAN(nn.Module):
    """DIAN (Intent Net, trigger-aware and trigger-free nets), one logit.

    Args:
        dim: D, width of behaviours, target and trigger; user_dim: U.
        heads, head_dim: the target attentions (4 heads).
        intent_hidden, tower_hidden: the Intent Net's MLP (200, 80) and each net's tower (200, 80).
        aux_weight: the Intent Net's auxiliary loss weight (0.1).
    """

    LOGIT_OUTPUT = True

    def __init__(self, *, dim: int, user_dim: int, heads: int = 4, head_dim: int = 32,
                 intent_hidden: Sequence[int] = (200, 80), tower_hidden: Sequence[int] = (200, 80),
                 aux_weight: float = 0.1) -> None:
        super().__init__()
        if dim <= 0 or user_dim <= 0 or aux_weight < 0:
            raise ValueError(f"DIAN: need dim, user_dim > 0 and aux_weight >= 0; got {dim}, {user_dim}, {aux_weight}")
        self.aux_weight = float(aux_weight)
        att = dict(dim=dim, heads=heads, head_dim=head_dim)
        # A(e_ta; E_b), A(e_tr; E_b), A(e_ta; E_h), A(e_tr; E_h), and the TF net's A'(e_ta; E_b)
        self.ta_attention = nn.ModuleList(MultiHeadTargetAttention(**att) for _ in range(4))
        self.tf_attention = MultiHeadTargetAttention(**att)
        self.intent_mlp = MLP(in_dim=user_dim + 3 * dim, hidden_dims=tuple(intent_hidden), out_dim=1)
        self.ta_tower = MLP(in_dim=user_dim + 2 * dim + 4 * heads * dim, hidden_dims=tuple(tower_hidden), out_dim=1)
        self.tf_tower = MLP(in_dim=user_dim + dim + heads * dim, hidden_dims=tuple(tower_hidden), out_dim=1)
        self.output_dim: int = 1

    def parts(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor, trigger_BD: Tensor, hard_BKD: Tensor,
              hard_mask_BK: Tensor, user_BU: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The logits of ``p``, ``y_TA`` and ``y_TF``, each [B]."""
        s_BD = masked_sum(seq_BLD, mask_BL)
        p = self.intent_mlp(torch.cat([user_BU, trigger_BD, masked_mean(seq_BLD, mask_BL), s_BD * trigger_BD], dim=-1))
        reads = [(seq_BLD, mask_BL, query_BD), (seq_BLD, mask_BL, trigger_BD), (hard_BKD, hard_mask_BK, query_BD),
                 (hard_BKD, hard_mask_BK, trigger_BD)]
        ta = [att(z_BKZ=z, mask_BK=m, query_BD=q) for att, (z, m, q) in zip(self.ta_attention, reads)]
        y_ta = self.ta_tower(torch.cat([user_BU, query_BD, trigger_BD, *ta], dim=-1))
        tf = self.tf_attention(z_BKZ=seq_BLD, mask_BK=mask_BL, query_BD=query_BD)
        y_tf = self.tf_tower(torch.cat([user_BU, query_BD, tf], dim=-1))
        return p.squeeze(-1), y_ta.squeeze(-1), y_tf.squeeze(-1)

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor, trigger_BD: Tensor, hard_BKD: Tensor,
                hard_mask_BK: Tensor, user_BU: Tensor, target_category_B: Optional[Tensor] = None,
                trigger_category_B: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """``logit(y)`` [B, 1]; in training with the category ids, also ``{"aux": loss}``."""
        if (target_category_B is None) != (trigger_category_B is None):
            raise ValueError("DIAN: bind both target_category_B and trigger_category_B (the Intent Net's auxiliary "
                             "label) or neither")
        p, y_ta, y_tf = self.parts(seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD, trigger_BD=trigger_BD,
                                   hard_BKD=hard_BKD, hard_mask_BK=hard_mask_BK, user_BU=user_BU)
        out_B1 = mixture_logit(p, y_ta, y_tf).unsqueeze(-1)
        if target_category_B is None or not self.training:
            return out_B1
        same_B = (target_category_B.reshape(-1) == trigger_category_B.reshape(-1)).to(p.dtype)
        return out_B1, {"aux": self.aux_weight * F.binary_cross_entropy_with_logits(p, same_B)}
