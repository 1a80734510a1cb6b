"""Deep Interest Network pooling (Zhou et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018, arXiv 1706.06978), Section 4.3, Eq. 3:

    v_U(A) = f(v_A, e_1, ..., e_H) = sum_{j=1..H} a(e_j, v_A) e_j

with the activation unit a(.) an MLP with one output. Two variants, named as in the TIN paper
(arXiv 2308.08487, Table 1 and Table 5):

- ``softmax=True`` ("DIN", the authors' released code): logits divided by sqrt(D), softmax over the
  valid behaviours, u = sum_i softmax_i e_i.
- ``softmax=False`` ("DIN'", the paper as written): u = sum_i a_i e_i with the raw activation
  weights, no normalisation (the DIN paper relaxes the sum-to-1 constraint on purpose).

``product=True`` returns [u, u ⊙ v] (the pooled-times-target product of the released code, which
gives DIN its target-aware representation); ``product=False`` returns u. The target embedding v
itself is concatenated by the model outside, not here. Choices the paper leaves open:

- Activation-unit input [v, e_i, v - e_i, v ⊙ e_i] (released code; the paper's figure shows an
  outer product), hidden sizes (80, 40), a final Linear to 1 without activation; activation PReLU
  by default (our choice; the released code uses sigmoid, the paper PReLU/Dice).
- Padded behaviours are zeroed before the activation unit, get weight 0, and are kept out of
  Dice's batch statistics (our choice); empty histories give u = 0.
- With ``softmax=True`` the final Linear's bias cannot learn (softmax is shift invariant; its
  gradient is 0 up to rounding). It is kept to match the released code.
- ``learned_correlation`` follows the TIN paper's Eq. 4 and Table 2 row for DIN:
  exp(z_i) * ||r_i||_2 with z_i the attention logit (scaled by 1/sqrt(D) when ``softmax=True``,
  the raw a_i otherwise) and r_i = e_i ⊙ v; with ``product=False`` the representation is e_i
  itself, so r_i = e_i (our choice, as Table 2 does for TIN w/o TR).
"""
# Shape legend: B batch, L history length (padded), D embedding width.
import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from . import seqdot
from .masking import check_inputs, masked_softmax, zero_padding
from .mlp import Activation, MLP


class DIN(nn.Module):
    """DIN target attention over the behaviour sequence.

    Args:
        dim: embedding width D of behaviours and target.
        attention_hidden: hidden widths of the activation unit.
        activation: activation of the activation unit: "relu", "prelu", "sigmoid" or "dice".
        softmax: True = released-code DIN (scaled softmax), False = DIN' (raw weights).
        product: True = output [u, u ⊙ v] (width 2D), False = output u (width D).

    Attributes:
        output_dim: 2D if ``product`` else D.
    """

    def __init__(
        self,
        *,
        dim: int,
        attention_hidden: Sequence[int] = (80, 40),
        activation: Activation = "prelu",
        softmax: bool = True,
        product: bool = True,
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"DIN dim must be positive, got {dim}")
        self.dim = dim
        self.softmax = softmax
        self.product = product
        self.activation_unit = MLP(
            in_dim=4 * dim, hidden_dims=tuple(attention_hidden), activation=activation, out_dim=1
        )
        self.output_dim: int = 2 * dim if product else dim

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Pool the history with target attention.

        Args:
            seq_BLD: behaviour embeddings e_i, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            query_BD: target embedding v, shape [B, D].
            seq_time_BLD: temporal encodings of the behaviours [B, L, D], added to e_i when given (DIN with
                TTE / COE / TE, the TIN paper's Sec. 4.4 comparison).
            query_time_BD: the target's temporal encoding [B, D], added to v; given with seq_time_BLD.

        Returns:
            [u, u ⊙ v] of shape [B, 2D] if ``product`` else u of shape [B, D]; u = 0 for empty
            histories.
        """
        if (seq_time_BLD is None) != (query_time_BD is None):
            raise ValueError("DIN: pass both seq_time_BLD and query_time_BD or neither")
        if seq_time_BLD is not None:
            seq_BLD, query_BD = seq_BLD + seq_time_BLD, query_BD + query_time_BD
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        seq_BLD = zero_padding(seq_BLD, mask_BL)
        weight_BL = self._weights(self._logits(seq_BLD, mask_BL, query_BD), mask_BL)
        pooled_BD = seqdot.weighted_sum(weight_BL, seq_BLD)  # sum_i w_i e_i
        if self.product:
            return torch.cat([pooled_BD, pooled_BD * query_BD], dim=-1)
        return pooled_BD

    def attention_weights(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Per-behaviour weights used in the pooling.

        Args:
            seq_BLD, mask_BL, query_BD, seq_time_BLD, query_time_BD: as in ``forward``.

        Returns:
            Shape [B, L], 0 at padding: softmax weights summing to 1 over the valid behaviours
            (``softmax=True``; all zero for empty rows) or the raw activations a_i (DIN').
        """
        logit_BL = self.attention_logits(seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        return self._weights(logit_BL, mask_BL)

    def _weights(self, logit_BL: Tensor, mask_BL: Tensor) -> Tensor:
        if self.softmax:
            return masked_softmax(logit_BL, mask_BL)
        return torch.where(mask_BL, logit_BL, torch.zeros_like(logit_BL))

    def attention_logits(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """Activation-unit outputs z_i, scaled by 1/sqrt(D) when ``softmax`` is True.

        Args:
            seq_BLD: behaviour embeddings, shape [B, L, D].
            mask_BL: bool, shape [B, L].
            query_BD: target embedding, shape [B, D].

        Returns:
            Logits of shape [B, L]; values at padding are meaningless (callers mask them).
        """
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        return self._logits(zero_padding(seq_BLD, mask_BL), mask_BL, query_BD)

    def _logits(self, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """``attention_logits`` on a history already zero under padding."""
        hidden_BLH = self.first_layer(seq_BLD, query_BD)
        logit_BL = self.activation_unit(hidden_BLH, mask_BL, after_first_linear=True).squeeze(-1)
        if self.softmax:
            logit_BL = logit_BL / math.sqrt(self.dim)
        return logit_BL

    def first_layer(self, seq_BLD: Tensor, query_BD: Tensor) -> Tensor:
        """The activation unit's first Linear on [v, e_i, v - e_i, v ⊙ e_i], without building that input.

        With W = [W_v, W_e, W_d, W_p] (column blocks of width D) and bias b,
        W [v; e; v - e; v ⊙ e] + b = (W_v + W_d) v + b + (W_e - W_d + W_p diag(v)) e: per sample one
        [D, H] matrix M_b = (W_e - W_d)^T + diag(v_b) W_p^T and one batched matmul e @ M_b. Same function
        and parameters as the concatenated form (which the tests check against), a quarter of its
        multiply-adds, and no [B, L, 4D] tensor.

        Returns:
            Pre-activations of the first hidden layer, shape [B, L, H].
        """
        first = self.activation_unit.layers[0]
        w_v, w_e, w_d, w_p = first.weight.split(self.dim, dim=1)  # each [H, D]
        base_BH = torch.nn.functional.linear(query_BD, w_v + w_d, first.bias)
        m_BDH = (w_e - w_d).t().unsqueeze(0) + query_BD.unsqueeze(-1) * w_p.t().unsqueeze(0)
        return torch.baddbmm(base_BH.unsqueeze(1), seq_BLD, m_BDH)

    def learned_correlation(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Learned correlation exp(z_i) * ||r_i||_2 (TIN paper, Eq. 4 and Table 2, row DIN).

        Args:
            seq_BLD, mask_BL, query_BD, seq_time_BLD, query_time_BD: as in ``forward``.

        Returns:
            Shape [B, L], 0 at padding.
        """
        logit_BL = self.attention_logits(seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        rep_BLD = zero_padding(seq_BLD, mask_BL)
        if self.product:
            rep_BLD = rep_BLD * query_BD.unsqueeze(1)
        cor_BL = torch.exp(logit_BL) * torch.linalg.vector_norm(rep_BLD, dim=-1)
        return torch.where(mask_BL, cor_BL, torch.zeros_like(cor_BL))
