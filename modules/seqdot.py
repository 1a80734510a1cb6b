"""Products of a padded behaviour sequence with one vector or one weight row per sample, the inner loops of
every target attention over a long sequence:

    scores:        s_i = <S_i, r>                    [B, L, D] x [B, D] -> [B, L]
    weighted sum:  u = sum_i w_i S_i                 [B, L] x [B, L, D] -> [B, D]

(and, built from the same kernels, ``target_attention.attention_pool``: the softmax attention made of both).

Each is a custom autograd function over the same math as the obvious ``torch.bmm`` (values equal up to the
order of float sums; the tests compare values and gradients), because on CPU the obvious form and, above
all, autograd's backward of it are several times slower than they need be at L = 2000 (batch 256, D = 128;
``python -m benchmarks.hotpaths --cases seq_scores seq_weighted_sum attention_pool``): ``bmm(S, r)`` reads S
as a batch of matrix-vector products about 3.5x slower than the same product written ``bmm(r^T, S^T)``; the backward of ``bmm(w^T, S)`` towards
S is an outer product ``w g^T`` that ``bmm`` computes as a contraction of length 1 on a transposed view, and
the backward of ``bmm(r^T, S^T)`` gives S a transposed gradient. Here the forward takes the fast form, and
the backward writes S's gradient once, as the outer product it is (``mul``), and reads S once per other
gradient.

Padding: these functions multiply, they do not mask. A padded position enters a weighted sum with the
weight it is given (``masked_softmax`` gives exactly 0), so values under padding must be finite there
(InputArch's are zeros); ``modules/masking.py`` is the home of the masking rules.
"""
# Shape legend: B batch, L sequence length (padded), D width.
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# The kernels, without autograd (target_attention.py's fused attention uses them too).


def scores_kernel(seq_BLD: Tensor, r_BD: Tensor) -> Tensor:
    return torch.bmm(r_BD.unsqueeze(1), seq_BLD.transpose(1, 2)).squeeze(1)  # the fast form of bmm(S, r)


def weighted_sum_kernel(w_BL: Tensor, seq_BLD: Tensor) -> Tensor:
    return torch.bmm(w_BL.unsqueeze(1), seq_BLD).squeeze(1)


def outer_kernel(a_BL: Tensor, b_BD: Tensor) -> Tensor:
    return torch.mul(a_BL.unsqueeze(-1), b_BD.unsqueeze(1))


class _Scores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, seq_BLD: Tensor, r_BD: Tensor) -> Tensor:
        ctx.save_for_backward(seq_BLD, r_BD)
        return scores_kernel(seq_BLD, r_BD)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_BL: Tensor):
        seq_BLD, r_BD = ctx.saved_tensors
        g_seq = outer_kernel(g_BL, r_BD) if ctx.needs_input_grad[0] else None
        g_r = weighted_sum_kernel(g_BL, seq_BLD) if ctx.needs_input_grad[1] else None
        return g_seq, g_r


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w_BL: Tensor, seq_BLD: Tensor) -> Tensor:
        ctx.save_for_backward(w_BL, seq_BLD)
        return weighted_sum_kernel(w_BL, seq_BLD)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_BD: Tensor):
        w_BL, seq_BLD = ctx.saved_tensors
        g_w = scores_kernel(seq_BLD, g_BD) if ctx.needs_input_grad[0] else None
        g_seq = outer_kernel(w_BL, g_BD) if ctx.needs_input_grad[1] else None
        return g_w, g_seq


def scores(seq_BLD: Tensor, r_BD: Tensor) -> Tensor:
    """s [B, L] with s_i = <S_i, r> (at every position, padding included); gradients to both."""
    return _Scores.apply(seq_BLD, r_BD)


def weighted_sum(w_BL: Tensor, seq_BLD: Tensor) -> Tensor:
    """u [B, D] = sum_i w_i S_i over all L positions (give padding weight 0); gradients to both."""
    return _WeightedSum.apply(w_BL, seq_BLD)
