"""Products of a padded behaviour sequence with one vector or one weight row per sample, the inner loops of
every target attention over a long sequence:

    scores:        s_i = <S_i, r>                    [B, L, D] x [B, D] -> [B, L]
    weighted sum:  u = sum_i w_i S_i                 [B, L] x [B, L, D] -> [B, D]
    attention:     s = scores(S, r),  u = weighted sum of S by masked_softmax(s)

Each is a custom autograd function over the same math as the obvious ``torch.bmm`` (values equal up to the
order of float sums; the tests compare values and gradients), because on CPU the obvious form and, above
all, autograd's backward of it are several times slower than they need be at L = 2000 (batch 256, D = 128,
one thread, ``benchmarks/results/seqdot.md``): ``bmm(S, r)`` reads S as a batch of matrix-vector products
about 3.5x slower than the same product written ``bmm(r^T, S^T)``; the backward of ``bmm(w^T, S)`` towards
S is an outer product ``w g^T`` that ``bmm`` computes as a contraction of length 1 on a transposed view, and
the backward of ``bmm(r^T, S^T)`` gives S a transposed gradient. Here the forward takes the fast form, and
the backward writes S's gradient once, as the outer products it is (``mul`` / ``addcmul_``), and reads S once
per other gradient. The attention fuses the two: its backward reads S twice and writes S's gradient once,
where autograd would write two [B, L, D] gradients and add them.

Padding: these functions multiply, they do not mask. A padded position enters a weighted sum with the
weight it is given (``masked_softmax`` gives exactly 0), so values under padding must be finite there
(InputArch's are zeros); ``modules/masking.py`` is the home of the masking rules.
"""
# Shape legend: B batch, L sequence length (padded), D width.
from typing import Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .masking import masked_softmax


def _scores(seq_BLD: Tensor, r_BD: Tensor) -> Tensor:
    return torch.bmm(r_BD.unsqueeze(1), seq_BLD.transpose(1, 2)).squeeze(1)  # the fast form of bmm(S, r)


def _weighted_sum(w_BL: Tensor, seq_BLD: Tensor) -> Tensor:
    return torch.bmm(w_BL.unsqueeze(1), seq_BLD).squeeze(1)


def _outer(a_BL: Tensor, b_BD: Tensor) -> Tensor:
    return torch.mul(a_BL.unsqueeze(-1), b_BD.unsqueeze(1))


class _Scores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, seq_BLD: Tensor, r_BD: Tensor) -> Tensor:
        ctx.save_for_backward(seq_BLD, r_BD)
        return _scores(seq_BLD, r_BD)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_BL: Tensor):
        seq_BLD, r_BD = ctx.saved_tensors
        g_seq = _outer(g_BL, r_BD) if ctx.needs_input_grad[0] else None
        g_r = _weighted_sum(g_BL, seq_BLD) if ctx.needs_input_grad[1] else None
        return g_seq, g_r


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w_BL: Tensor, seq_BLD: Tensor) -> Tensor:
        ctx.save_for_backward(w_BL, seq_BLD)
        return _weighted_sum(w_BL, seq_BLD)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_BD: Tensor):
        w_BL, seq_BLD = ctx.saved_tensors
        g_w = _scores(seq_BLD, g_BD) if ctx.needs_input_grad[0] else None
        g_seq = _outer(w_BL, g_BD) if ctx.needs_input_grad[1] else None
        return g_w, g_seq


class _AttentionPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, seq_BLD: Tensor, r_BD: Tensor, mask_BL: Tensor):
        s_BL = _scores(seq_BLD, r_BD)
        w_BL = masked_softmax(s_BL, mask_BL)
        ctx.save_for_backward(seq_BLD, r_BD, w_BL)
        return _weighted_sum(w_BL, seq_BLD), s_BL

    @staticmethod
    @once_differentiable
    def backward(ctx, g_u_BD: Tensor, g_s_BL: Tensor):  # an unused output's gradient comes as zeros
        seq_BLD, r_BD, w_BL = ctx.saved_tensors
        g_w_BL = _scores(seq_BLD, g_u_BD)
        # the softmax's backward (0 off the mask, where w = 0), plus what reached the raw scores
        g_logit_BL = w_BL * (g_w_BL - (w_BL * g_w_BL).sum(-1, keepdim=True)) + g_s_BL
        g_seq = g_r = None
        if ctx.needs_input_grad[0]:  # dS = g_logit r^T + w g_u^T, written once
            g_seq = _outer(g_logit_BL, r_BD).addcmul_(w_BL.unsqueeze(-1), g_u_BD.unsqueeze(1))
        if ctx.needs_input_grad[1]:
            g_r = _weighted_sum(g_logit_BL, seq_BLD)
        return g_seq, g_r, None


def scores(seq_BLD: Tensor, r_BD: Tensor) -> Tensor:
    """s [B, L] with s_i = <S_i, r> (at every position, padding included); gradients to both."""
    return _Scores.apply(seq_BLD, r_BD)


def weighted_sum(w_BL: Tensor, seq_BLD: Tensor) -> Tensor:
    """u [B, D] = sum_i w_i S_i over all L positions (give padding weight 0); gradients to both."""
    return _WeightedSum.apply(w_BL, seq_BLD)


def attention_pool(seq_BLD: Tensor, r_BD: Tensor, mask_BL: Tensor) -> Tuple[Tensor, Tensor]:
    """Softmax attention by inner product with one vector per row, and the pooled behaviours:

        s_i = <S_i, r>,   u = sum_i softmax(s)_i S_i   over the valid positions (``masked_softmax``)

    Returns (u [B, D], s [B, L]), both with gradients (to ``seq_BLD`` and ``r_BD``); a row with no valid
    position gives u = 0."""
    return _AttentionPool.apply(seq_BLD, r_BD, mask_BL)
