"""DEI2N, the Deep Evolutional Instant Interest Network (Xiao et al., ``../shared/papers/DEI2N.md``), for
trigger-induced recommendation: the item the user clicked to open the page (the trigger) is an instant
interest whose pull fades as the user scrolls down.

Inputs: behaviours ``E_b`` [B, T, D] (``seq_BLD``), their time-interval embeddings ``E_t`` [B, T, d_time]
(Sec. 2.1: ids ``floor((t - t_i) / T_f)``, ``<sequence>_interval`` in ``tinrec/data/derived.py``), the
trigger-category sub-sequence ``E_b^h`` [B, T_h, D] with its ``E_t^h`` (the loader's searched sequence: the
behaviours whose category is the trigger's, the latest T_h), target ``e_ta`` and trigger ``e_tr`` [B, D], user
``e_u`` and context ``e_c`` (the page number).

    UI2M (Eq. 1)   p_tr, p_ta = softmax(MLP([e_u, e_c, e_tr, sum_j E_b^h_j]))          hidden 72-36
    USIM (Eq. 2-4) E_u^s = LN(E_b + Dropout(MHSA([E_b, E_t])))                          H_R heads
                   e_ta^s = sum_j a(e^s_j; e_t_j; e_ta) e^s_j,  e_tr^s likewise with e_tr
    UHIM           e_ta^h = sum_j a'(E_b^h_j; E_t^h_j; e_ta) E_b^h_j
    Fusing (Eq. 5) e_mix = p_tr e_tr^s + p_ta e_ta^s
    IL (Eq. 6)     e^i = MLP([e_ta, e_tr, e_tr (.) e_ta])                                 hidden 144-72
    output         [e_mix, e_ta^h, e^i]     (the tower adds e_u and the other features: Sec. 2.7)

Choices the paper leaves open (ours):

- MHSA (Eq. 2-3) reads ``E_b^s = [E_b, E_t]`` (width D + d_time) and projects back to D with ``W^O``, so that
  ``e^s_j`` is in R^{d_model} as Eq. 4 says; the residual adds ``E_b`` (the only part of width D) and the
  layer norm is over D (post-LN, as the Transformer the paper cites). Each head is D / H_R wide (H_R must
  divide D). Dropout on the attention weights and on the residual branch.
- The attention unit ``a`` (the paper's Figure 2 only draws it) is DIN's: an MLP (80-40, PReLU) over
  ``[e_j, e_t_j, q, e_j - q, e_j (.) q]`` -> one score, scaled by 1 / sqrt(D), softmax over the valid
  behaviours (our DIN's released-code form). UHIM's unit has the same form and its own parameters (the
  paper: "the same attention unit"; sharing would tie MHSA outputs and raw embeddings to one scorer).
- Ablations (Table 3) by constructor flags: ``instant=False`` (NO-UI2M) fuses with p_tr = p_ta = 1/2;
  ``time_dim=0`` with the interval inputs unbound (NO-TIM) drops ``E_t`` everywhere; ``interaction=False``
  (NO-IL) drops ``e^i``; ``hard=False`` (NO-UHIM) drops ``e_ta^h`` (UI2M still reads ``sum E_b^h``, which is
  its own input); ``soft=False`` (NO-USIM) drops ``e_mix`` and, with it, UI2M (it has nothing left to fuse).
- ``sum(E_b^h)`` of Eq. 1 is a plain sum over the valid behaviours (zeros for a user with none of the
  trigger's category); ``p_tr + p_ta = 1`` exactly (a 2-way softmax).
- Padding never leaks: padded behaviours get weight 0 in every attention and are zeroed in MHSA's output; a
  user without behaviours gets ``e_mix = e_ta^h = 0``, never NaN (``modules/masking.py``).
"""
# Shape legend: B batch, L behaviours, K trigger-category behaviours, D item width, T time width,
# U user width, C context width, H heads.
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masking import masked_sum, zero_padding
from .mlp import Activation, MLP
from .target_attention import ActivationUnitAttention
from .transformer import attention_mask


class SoftInterestEncoder(nn.Module):
    """Eq. 2-3 with the residual, dropout and layer norm of Sec. 2.3: ``LN(E_b + Dropout(MHSA([E_b, E_t])))``."""

    def __init__(self, *, dim: int, time_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"DEI2N: heads={heads} must divide dim={dim}")
        self.heads, self.dropout_p = heads, dropout
        self.qkv = nn.Linear(dim + time_dim, 3 * dim, bias=False)  # W^Q_h, W^K_h, W^V_h of every head
        self.out = nn.Linear(dim, dim, bias=False)  # W^O
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, seq_BLD: Tensor, mask_BL: Tensor, time_BLT: Optional[Tensor]) -> Tensor:
        B, L, D = seq_BLD.shape
        x_BLX = seq_BLD if time_BLT is None else torch.cat([seq_BLD, time_BLT], dim=-1)
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2)
                   for t in self.qkv(zero_padding(x_BLX, mask_BL)).chunk(3, dim=-1))
        att_BHLd = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(mask_BL),
                                                  dropout_p=self.dropout_p if self.training else 0.0)
        att_BLD = self.out(att_BHLd.transpose(1, 2).reshape(B, L, D))
        return zero_padding(self.norm(seq_BLD + self.dropout(att_BLD)), mask_BL)


class DEI2N(nn.Module):
    """DEI2N's interest layers (UI2M, USIM, UHIM, fusing, interaction); the final MLP is the tower.

    Args:
        dim: D, width of behaviours, target and trigger (``d_model``: 72 in the paper).
        time_dim: d_time of the interval embeddings (36 in the paper); 0 = no temporal information (NO-TIM:
            leave ``interval_BLT`` and ``hard_interval_BKT`` unbound).
        user_dim, context_dim: widths of ``e_u`` and ``e_c`` (UI2M's inputs).
        heads: H_R of MHSA (2).
        dropout: MHSA's dropout (0.1).
        instant_hidden: UI2M's MLP (72, 36); interaction_hidden: IL's MLP (144, 72).
        attention_hidden, activation: the attention units' MLP.
        instant, soft, hard, interaction: the layers of Table 3's ablations (all on: DEI2N).

    Attributes:
        output_dim: D (e_mix, with ``soft``) + D (e_ta^h, with ``hard``) + IL's last width (with ``interaction``).
    """

    def __init__(self, *, dim: int, time_dim: int = 0, user_dim: int = 0, context_dim: int = 0, heads: int = 2,
                 dropout: float = 0.1, instant_hidden: Sequence[int] = (72, 36),
                 interaction_hidden: Sequence[int] = (144, 72), attention_hidden: Sequence[int] = (80, 40),
                 activation: Activation = "prelu", instant: bool = True, soft: bool = True, hard: bool = True,
                 interaction: bool = True) -> None:
        super().__init__()
        if dim <= 0 or time_dim < 0:
            raise ValueError(f"DEI2N: need dim > 0 and time_dim >= 0, got {dim}, {time_dim}")
        if not (soft or hard or interaction):
            raise ValueError("DEI2N: soft, hard and interaction are all off: nothing to output")
        self.instant = instant and soft  # UI2M only fuses USIM's two interests
        if self.instant and (user_dim <= 0 or context_dim <= 0):
            raise ValueError("DEI2N(instant=True) reads the user and the context: user_dim and context_dim must be > 0")
        self.dim, self.time_dim = dim, time_dim
        self.soft, self.hard, self.interaction = soft, hard, interaction
        if self.instant:
            self.instant_mlp = MLP(in_dim=user_dim + context_dim + 2 * dim, hidden_dims=tuple(instant_hidden),
                                   activation="relu", out_dim=2)
        if soft:
            self.encoder = SoftInterestEncoder(dim=dim, time_dim=time_dim, heads=heads, dropout=dropout)
            self.target_attention = ActivationUnitAttention(dim=dim, side_dim=time_dim, hidden=attention_hidden,
                                                       activation=activation)
            self.trigger_attention = ActivationUnitAttention(dim=dim, side_dim=time_dim, hidden=attention_hidden,
                                                        activation=activation)
        if hard:
            self.hard_attention = ActivationUnitAttention(dim=dim, side_dim=time_dim, hidden=attention_hidden,
                                                     activation=activation)
        if interaction:
            self.interaction_mlp = MLP(in_dim=3 * dim, hidden_dims=tuple(interaction_hidden), activation="relu")
        self.output_dim: int = (dim if soft else 0) + (dim if hard else 0) + (
            self.interaction_mlp.output_dim if interaction else 0)

    def instant_weights(self, *, user_BU: Tensor, context_BC: Tensor, trigger_BD: Tensor, hard_BKD: Tensor,
                        hard_mask_BK: Tensor) -> Tuple[Tensor, Tensor]:
        """Eq. 1: ``(p_tr, p_ta)``, each [B], summing to 1."""
        x = torch.cat([user_BU, context_BC, trigger_BD, masked_sum(hard_BKD, hard_mask_BK)], dim=-1)
        p_B2 = torch.softmax(self.instant_mlp(x), dim=-1)
        return p_B2[:, 0], p_B2[:, 1]

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, target_BD: Tensor, trigger_BD: Tensor,
                hard_BKD: Optional[Tensor] = None, hard_mask_BK: Optional[Tensor] = None,
                interval_BLT: Optional[Tensor] = None, hard_interval_BKT: Optional[Tensor] = None,
                user_BU: Optional[Tensor] = None, context_BC: Optional[Tensor] = None) -> Tensor:
        """``[e_mix, e_ta^h, e^i]`` (the parts switched on), [B, output_dim]."""
        timed = self.time_dim > 0
        if (interval_BLT is None) == timed or (self.hard and (hard_interval_BKT is None) == timed):
            raise ValueError(f"DEI2N(time_dim={self.time_dim}): bind interval_BLT (and, with hard, "
                             f"hard_interval_BKT) exactly when time_dim > 0")
        if (self.hard or self.instant) and (hard_BKD is None or hard_mask_BK is None):
            raise ValueError("DEI2N: UHIM and UI2M read the trigger-category sub-sequence: bind hard_BKD and "
                             "hard_mask_BK")
        if self.instant and (user_BU is None or context_BC is None):
            raise ValueError("DEI2N(instant=True): bind user_BU and context_BC")
        out = []
        if self.soft:
            enc_BLD = self.encoder(seq_BLD, mask_BL, interval_BLT)
            e_ta_BD = self.target_attention(enc_BLD, mask_BL, target_BD, interval_BLT)
            e_tr_BD = self.trigger_attention(enc_BLD, mask_BL, trigger_BD, interval_BLT)
            if self.instant:
                p_tr_B, p_ta_B = self.instant_weights(user_BU=user_BU, context_BC=context_BC, trigger_BD=trigger_BD,
                                                      hard_BKD=hard_BKD, hard_mask_BK=hard_mask_BK)
                out.append(p_tr_B.unsqueeze(-1) * e_tr_BD + p_ta_B.unsqueeze(-1) * e_ta_BD)  # Eq. 5
            else:
                out.append(0.5 * (e_tr_BD + e_ta_BD))
        if self.hard:
            out.append(self.hard_attention(hard_BKD, hard_mask_BK, target_BD, hard_interval_BKT))
        if self.interaction:
            out.append(self.interaction_mlp(torch.cat([target_BD, trigger_BD, trigger_BD * target_BD], dim=-1)))
        return torch.cat(out, dim=-1)
