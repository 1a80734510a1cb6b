"""Target attentions shared by several models.

``ActivationUnitAttention`` (end of the file) is DIN's activation unit reading a per-behaviour side vector as
well: DEI2N's attention units (with the time intervals), DMIN's per-head poolings (with positions).

``MultiHeadTargetAttention`` is the Exact Search Unit of the search-based lifelong backbones (SIM, ETA; ``../shared/MODELS.md`` A2-A3): a
multi-head target attention over the behaviours a search kept.

    a^h = softmax_j <W_k^h z_j, W_q^h q>       over the kept behaviours j (SIM paper's ESU, per head h)
    head_h = sum_j a^h_j z_j,   U = concat_h head_h

As SIM writes it, the scores are not scaled by 1/sqrt(d) and the values are the behaviours themselves (no
value projection): the output is ``heads`` views of the kept behaviours, [B, H * Z]. Padded and unkept slots
get zero weight; a row with nothing kept gives zeros (``modules/masking.py``).

``product=True`` appends each head's target interaction ``head_h[:D] * q`` (its first D values, the
behaviour part of z_j, times the target): MODELS.md's tower input ``[u, q, u * q]`` for the lifelong backbones
(our choice, as DIN's ``[u, u * v]``; ``q`` itself is a tower input). Without it the tower must learn that
product from ``[u, q]``, which it does poorly: on the lifelong data a backbone could not tell whether the
target's category was among the kept behaviours.
"""
# Shape legend: B batch, K kept behaviours, Z behaviour width, D query width, H heads, E head width,
# L behaviours, S side width.
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import seqdot
from .masking import masked_softmax, zero_padding
from .mlp import Activation, MLP


def tie_at_init(query: nn.Linear, key: nn.Linear) -> None:
    """Start a learned relevance <W_k s, W_q q> as the inner product of the projected behaviour and target:
    W_q := W_k (then each learns on its own). W_k^T W_k is positive semi-definite, so a behaviour that shares
    the target's embedding parts (its category, its item) starts with a higher score than an unrelated one,
    the starting point a SimHash search (ETA) has by construction; with independent random W_q and W_k the
    start is a random bilinear form, and a search that learns only through what it keeps may never find them."""
    if query.weight.shape != key.weight.shape:
        raise ValueError(f"tie_at_init: query {tuple(query.weight.shape)} and key {tuple(key.weight.shape)} differ")
    with torch.no_grad():
        query.weight.copy_(key.weight)


class _AttentionPool(torch.autograd.Function):
    """:func:`attention_pool` with one fused backward: it reads S twice (g_w = S g_u, g_r = S^T g_s) and writes
    S's gradient once (g_S = g_s r^T + w g_u^T), where autograd would write two [B, L, D] gradients and add
    them (``modules/seqdot.py`` has the kernels and why)."""

    @staticmethod
    def forward(ctx, seq_BLD: Tensor, r_BD: Tensor, mask_BL: Tensor):
        s_BL = seqdot.scores_kernel(seq_BLD, r_BD)
        w_BL = masked_softmax(s_BL, mask_BL)
        ctx.save_for_backward(seq_BLD, r_BD, w_BL)
        return seqdot.weighted_sum_kernel(w_BL, seq_BLD), s_BL

    @staticmethod
    @once_differentiable
    def backward(ctx, g_u_BD: Tensor, g_s_BL: Tensor):  # an unused output's gradient comes as zeros
        seq_BLD, r_BD, w_BL = ctx.saved_tensors
        g_w_BL = seqdot.scores_kernel(seq_BLD, g_u_BD)
        # the softmax's backward (0 off the mask, where w = 0), plus what reached the raw scores
        g_logit_BL = w_BL * (g_w_BL - (w_BL * g_w_BL).sum(-1, keepdim=True)) + g_s_BL
        g_seq = g_r = None
        if ctx.needs_input_grad[0]:  # dS = g_logit r^T + w g_u^T, written once
            g_seq = seqdot.outer_kernel(g_logit_BL, r_BD).addcmul_(w_BL.unsqueeze(-1), g_u_BD.unsqueeze(1))
        if ctx.needs_input_grad[1]:
            g_r = seqdot.weighted_sum_kernel(g_logit_BL, seq_BLD)
        return g_seq, g_r, None


def attention_pool(seq_BLD: Tensor, r_BD: Tensor, mask_BL: Tensor) -> Tuple[Tensor, Tensor]:
    """Softmax attention by inner product with one vector per row, and the pooled behaviours:

        s_i = <S_i, r>,   u = sum_i softmax(s)_i S_i   over the valid positions (``masked_softmax``)

    Returns (u [B, D], s [B, L]), both with gradients (to ``seq_BLD`` and ``r_BD``); a row with no valid
    position gives u = 0. Padding enters the pooled sum with weight exactly 0, so its values must be finite
    (InputArch's are zeros)."""
    return _AttentionPool.apply(seq_BLD, r_BD, mask_BL)


class MultiHeadTargetAttention(nn.Module):
    """SIM's ESU: ``heads`` target attentions with their own projections, values the behaviours.

    Args:
        dim: width Z of the behaviours z_j.
        query_dim: width D of the target (default Z).
        heads: H.
        head_dim: E, width of each head's key and query projections.
        product: also output each head's first D values times the target (needs Z >= D).

    Attributes:
        output_dim: H * Z, plus H * D with ``product``.
    """

    def __init__(self, *, dim: int, query_dim: Optional[int] = None, heads: int = 4, head_dim: int = 32,
                 product: bool = False) -> None:
        super().__init__()
        if dim <= 0 or heads <= 0 or head_dim <= 0:
            raise ValueError(f"MultiHeadTargetAttention: need dim, heads, head_dim > 0, got {dim}, {heads}, {head_dim}")
        self.query_dim = dim if query_dim is None else query_dim
        if product and self.query_dim > dim:
            raise ValueError(f"MultiHeadTargetAttention: product needs the query width {self.query_dim} <= the "
                             f"behaviour width {dim}")
        self.heads, self.head_dim, self.product = heads, head_dim, product
        self.key = nn.Linear(dim, heads * head_dim, bias=False)  # W_k^h of every head, side by side
        self.query = nn.Linear(self.query_dim, heads * head_dim, bias=False)
        self.output_dim: int = heads * dim + (heads * self.query_dim if product else 0)

    def weights(self, z_BKZ: Tensor, mask_BK: Tensor, query_BD: Tensor) -> Tensor:
        """a [B, H, K]: each head's softmax over the valid behaviours (0 elsewhere)."""
        B, K, _ = z_BKZ.shape
        k_BHKE = self.key(z_BKZ).view(B, K, self.heads, self.head_dim).transpose(1, 2)
        q_BHE = self.query(query_BD).view(B, self.heads, self.head_dim)
        logits_BHK = torch.einsum("bhke,bhe->bhk", k_BHKE, q_BHE)
        return masked_softmax(logits_BHK.reshape(B * self.heads, K),
                              mask_BK.repeat_interleave(self.heads, dim=0)).view(B, self.heads, K)

    def forward(self, *, z_BKZ: Tensor, mask_BK: Tensor, query_BD: Tensor) -> Tensor:
        """``U`` [B, H * Z] from the kept behaviours ``z_BKZ`` (mask ``mask_BK``) and the target ``query_BD``;
        with ``product``, ``[U, head_1[:D] * q, ..., head_H[:D] * q]``."""
        a_BHK = self.weights(z_BKZ, mask_BK, query_BD)
        u_BHZ = torch.bmm(a_BHK, zero_padding(z_BKZ, mask_BK))
        if not self.product:
            return u_BHZ.flatten(1)  # [B, H, Z] -> [B, H * Z]
        prod_BHD = u_BHZ[..., :self.query_dim] * query_BD.unsqueeze(1)
        return torch.cat([u_BHZ.flatten(1), prod_BHD.flatten(1)], dim=-1)


class ActivationUnitAttention(nn.Module):
    """A DIN activation unit that also reads a per-behaviour side vector (DEI2N's time intervals, DMIN's
    positions): ``sum_j softmax_j(a([e_j, s_j, q, e_j - q, e_j (.) q]) / sqrt(D)) e_j`` over the valid
    behaviours, ``a`` an MLP to one score (zeros for a row without behaviours).

    The MLP's first layer is applied without building its [B, L, 4D + S] input (as ``modules/din.py``'s unit):
    with its weight's column blocks ``[W_e, W_s, W_q, W_d, W_p]``, ``W x + b = (W_q - W_d) q + b + W_s s_j +
    (W_e + W_d + W_p diag(q)) e_j``: per sample one [D, H] matrix and one batched matrix product, the same
    function and parameters (tested against the concatenated form).

    Args:
        dim: D, width of behaviours and query; side_dim: width of s_j (0: none).
        hidden, activation: the unit's MLP (80-40, PReLU as our DIN).
    """

    def __init__(self, *, dim: int, side_dim: int = 0, hidden: Sequence[int] = (80, 40),
                 activation: Activation = "prelu") -> None:
        super().__init__()
        self.dim, self.side_dim = dim, side_dim
        self.unit = MLP(in_dim=4 * dim + side_dim, hidden_dims=tuple(hidden), activation=activation, out_dim=1)

    def weights(self, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor, side_BLS: Optional[Tensor]) -> Tensor:
        """[B, L]: the softmax weights (0 at padding; all 0 for a row without behaviours)."""
        if (side_BLS is None) != (self.side_dim == 0):
            raise ValueError(f"ActivationUnitAttention(side_dim={self.side_dim}): pass side_BLS exactly when "
                             f"side_dim > 0")
        D, S = self.dim, self.side_dim
        first = self.unit.layers[0]
        w_e, w_s, w_q, w_d, w_p = first.weight.split([D, S, D, D, D], dim=1)  # each [H, .]
        base_BH = nn.functional.linear(query_BD, w_q - w_d, first.bias)
        m_BDH = (w_e + w_d).t().unsqueeze(0) + query_BD.unsqueeze(-1) * w_p.t().unsqueeze(0)
        hidden_BLH = torch.baddbmm(base_BH.unsqueeze(1), seq_BLD, m_BDH)
        if S:
            hidden_BLH = hidden_BLH + side_BLS @ w_s.t()
        logit_BL = self.unit(hidden_BLH, mask_BL, after_first_linear=True).squeeze(-1) / math.sqrt(D)
        return masked_softmax(logit_BL, mask_BL)

    def concatenated_logits(self, seq_BLD: Tensor, query_BD: Tensor, side_BLS: Optional[Tensor]) -> Tensor:
        """The unit's scores [B, L] from its concatenated input (the reference the factorised form equals)."""
        q_BLD = query_BD.unsqueeze(1).expand_as(seq_BLD)
        parts = [seq_BLD] + ([side_BLS] if side_BLS is not None else []) + [q_BLD, seq_BLD - q_BLD, seq_BLD * q_BLD]
        return self.unit(torch.cat(parts, dim=-1)).squeeze(-1) / math.sqrt(self.dim)

    def forward(self, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor, side_BLS: Optional[Tensor] = None) -> Tensor:
        """[B, D]: the pooled behaviours (``seq_BLD`` [B, L, D] under ``mask_BL``, side ``side_BLS`` [B, L, S])."""
        seq_BLD = zero_padding(seq_BLD, mask_BL)
        w_BL = self.weights(seq_BLD, mask_BL, query_BD, side_BLS)
        return seqdot.weighted_sum(w_BL, seq_BLD)
