"""Temporal Interest Module of TIN (Zhou et al., "Temporal Interest Network for User Response
Prediction", WWW '24 Companion, arXiv 2308.08487), Section 3.1, Eq. 2:

    u_TIN = sum_{i in H} alpha(e~_i, v~_t) * (e~_i ⊙ v~_t)
    e~_i = e_i ⊕ p_{f(X_i)},  v~_t = v_t ⊕ p_{f(X_t)}     (⊕ = element-wise sum, Sec. 3.1.1)
    alpha(e~_i, v~_t) = softmax_i(<e~_i, v~_t> / sqrt(d))    (softmax over the user's behaviours)

The module is parameter-free: the semantic embeddings (e_i, v_t) and the target-aware temporal
encodings (p, TTE-P or TTE-T, the target's being p_0) are looked up outside and passed in as
``seq_BLD``/``query_BD`` and ``seq_time_BLD``/``query_time_BD``. Choices the paper leaves open:

- d in the 1/sqrt(d) scale is the width D of e~ (our choice; the paper only says "d", the
  embedding size).
- The softmax runs over the valid (non-padded) behaviours only; an empty history gives u = 0
  (our choice).
- Ablations of Section 4.2 / Table 1: w/o TTE is TIN called without the time inputs (e~ = e, v~ = v;
  in config, leave ``seq_time_BLD`` and ``query_time_BD`` unbound). ``attention=False`` (w/o TA) gives every valid behaviour the weight 1/|H|, i.e.
  u = mean_i(e~_i ⊙ v~_t) (our choice: the mean rather than Eq. 3's plain sum, so the scale does
  not grow with the history length). ``representation=False`` (w/o TR) gives
  u = sum_i alpha_i e~_i.
- ``learned_correlation`` follows Eq. 4-5: exp(z_i) * ||r_i||_2 with z_i = <e~_i, v~_t>/sqrt(d)
  (Eq. 5 has the 1/sqrt(d); Table 2 writes the exponent without it, we follow Eq. 5), z = 0 for
  w/o TA and r_i = e~_i for w/o TR (Table 2 rows), and 0 at padding.
"""
# Shape legend: B batch, L history length (padded), D embedding width.
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import seqdot
from .masking import check_inputs, masked_softmax, zero_padding


class TIN(nn.Module):
    """Temporal Interest Module (TIN paper, Eq. 2) with its three ablation switches.

    Args:
        dim: embedding width D of behaviours, target and temporal encodings.
        attention: softmax target-aware attention (TA); False = "TIN w/o TA" (uniform mean).
        representation: target-aware representation e~_i ⊙ v~_t (TR); False = "TIN w/o TR" (e~_i).

    Attributes:
        output_dim: D.
    """

    def __init__(
        self,
        *,
        dim: int,
        attention: bool = True,
        representation: bool = True,
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"TIN dim must be positive, got {dim}")
        self.dim = dim
        self.attention = attention
        self.representation = representation
        self.output_dim: int = dim

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Pool the history into the user-interest vector u_TIN.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            query_BD: target embedding v_t, shape [B, D].
            seq_time_BLD: behaviour temporal encodings p_{f(X_i)}, shape [B, L, D]; None = w/o TTE.
            query_time_BD: target temporal encoding p_{f(X_t)}, shape [B, D]; given with seq_time_BLD.

        Returns:
            u of shape [B, D]; zeros for empty histories.

        Raises:
            ValueError: on bad shapes, or only one of the two temporal encodings.
        """
        seq_tilde_BLD, query_tilde_BD = self._encode(
            seq_BLD, mask_BL, query_BD, seq_time_BLD, query_time_BD
        )
        if self.attention:
            weight_BL = masked_softmax(self._logits(seq_tilde_BLD, query_tilde_BD), mask_BL)
        else:
            count_B1 = mask_BL.sum(dim=1, keepdim=True).clamp_min(1).to(seq_tilde_BLD.dtype)
            weight_BL = mask_BL.to(seq_tilde_BLD.dtype) / count_B1
        # sum_i w_i (e~_i ⊙ v~) = (sum_i w_i e~_i) ⊙ v~: one weighted sum, no [B, L, D] product
        pooled_BD = seqdot.weighted_sum(weight_BL, seq_tilde_BLD)
        return pooled_BD * query_tilde_BD if self.representation else pooled_BD

    def learned_correlation(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Learned semantic-temporal correlation of each behaviour (TIN paper, Eq. 4-5, Table 2).

        Args:
            seq_BLD, mask_BL, query_BD, seq_time_BLD, query_time_BD: as in ``forward``.

        Returns:
            exp(z_i) * ||r_i||_2 of shape [B, L] for this module's configuration, 0 at padding.
        """
        seq_tilde_BLD, query_tilde_BD = self._encode(
            seq_BLD, mask_BL, query_BD, seq_time_BLD, query_time_BD
        )
        rep_norm_BL = torch.linalg.vector_norm(
            self._representation(seq_tilde_BLD, query_tilde_BD), dim=-1
        )
        if self.attention:
            cor_BL = torch.exp(self._logits(seq_tilde_BLD, query_tilde_BD)) * rep_norm_BL
        else:
            cor_BL = rep_norm_BL
        return torch.where(mask_BL, cor_BL, torch.zeros_like(cor_BL))

    def _encode(
        self,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor],
        query_time_BD: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """Validate inputs and return (e~ zeroed under padding [B, L, D], v~ [B, D])."""
        check_inputs(
            dim=self.dim,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=seq_time_BLD,
            query_time_BD=query_time_BD,
        )
        if (seq_time_BLD is None) != (query_time_BD is None):
            raise ValueError("TIN: pass both seq_time_BLD and query_time_BD (TTE) or neither (w/o TTE)")
        if seq_time_BLD is None:
            return zero_padding(seq_BLD, mask_BL), query_BD
        return zero_padding(seq_BLD + seq_time_BLD, mask_BL), query_BD + query_time_BD

    def _logits(self, seq_tilde_BLD: Tensor, query_tilde_BD: Tensor) -> Tensor:
        """Scaled dot products z_i = <e~_i, v~_t> / sqrt(D), shape [B, L]."""
        return seqdot.scores(seq_tilde_BLD, query_tilde_BD) / math.sqrt(self.dim)

    def _representation(self, seq_tilde_BLD: Tensor, query_tilde_BD: Tensor) -> Tensor:
        """r_i = e~_i ⊙ v~_t (TR) or e~_i (w/o TR), shape [B, L, D]."""
        if self.representation:
            return seq_tilde_BLD * query_tilde_BD.unsqueeze(1)
        return seq_tilde_BLD
