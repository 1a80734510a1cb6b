"""modules/seqdot.py: the sequence-vector products equal their plain ``torch.bmm`` forms in value and gradient
(float64, short and empty rows, finite garbage under padding), and gradcheck passes through their own
backwards."""
# Shape legend: B batch, L sequence length (padded), D width.
import pytest
import torch

from tinrec.modules import seqdot
from tinrec.modules.masking import masked_softmax
from tinrec.modules.target_attention import attention_pool

B, L, D = 4, 7, 5
LENGTHS = [7, 3, 0, 1]


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask_BL = torch.arange(L)[None, :] < torch.tensor(LENGTHS)[:, None]
    seq_BLD = torch.randn(B, L, D, generator=g, dtype=torch.float64) * torch.where(mask_BL, 1.0, 1e3)[..., None]
    return (seq_BLD, torch.randn(B, D, generator=g, dtype=torch.float64),
            torch.randn(B, L, generator=g, dtype=torch.float64), mask_BL, g)


def _plain_scores(seq_BLD, r_BD):
    return torch.bmm(seq_BLD, r_BD.unsqueeze(-1)).squeeze(-1)


def _plain_weighted_sum(w_BL, seq_BLD):
    return torch.bmm(w_BL.unsqueeze(1), seq_BLD).squeeze(1)


def _plain_attention_pool(seq_BLD, r_BD, mask_BL):
    s_BL = _plain_scores(seq_BLD, r_BD)
    return _plain_weighted_sum(masked_softmax(s_BL, mask_BL), seq_BLD), s_BL


def _values_and_grads(f, args, out_weights):
    args = [a.clone().requires_grad_() if a.is_floating_point() else a for a in args]
    outs = f(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    sum((o * w).sum() for o, w in zip(outs, out_weights)).backward()
    return [o.detach() for o in outs] + [a.grad for a in args if a.is_floating_point()]


def test_scores_and_weighted_sum_equal_the_plain_products():
    seq, r, w, _, g = _inputs()
    for fast, plain, args, out_shape in ((seqdot.scores, _plain_scores, (seq, r), (B, L)),
                                         (seqdot.weighted_sum, _plain_weighted_sum, (w, seq), (B, D))):
        weights = [torch.randn(out_shape, generator=g, dtype=torch.float64)]
        for got, want in zip(_values_and_grads(fast, args, weights), _values_and_grads(plain, args, weights)):
            torch.testing.assert_close(got, want)
        torch.autograd.gradcheck(fast, tuple(a.clone().requires_grad_() for a in args))


@pytest.mark.parametrize("use_scores", [False, True])
def test_attention_pool_equals_the_plain_form_with_its_fused_backward(use_scores):
    seq, r, _, mask, g = _inputs(1)
    weights = [torch.randn(B, D, generator=g, dtype=torch.float64),
               torch.randn(B, L, generator=g, dtype=torch.float64) * float(use_scores)]
    got = _values_and_grads(attention_pool, (seq, r, mask), weights)
    for a, b in zip(got, _values_and_grads(_plain_attention_pool, (seq, r, mask), weights)):
        torch.testing.assert_close(a, b)
    u, _, g_seq, _ = got
    assert torch.equal(u[2], torch.zeros(D))  # a row without behaviours pools nothing
    if not use_scores:  # (the raw scores are defined, and differentiable, at every position)
        assert torch.equal(g_seq[2], torch.zeros(L, D)) and torch.equal(g_seq[1, 3:], torch.zeros(L - 3, D))
    torch.autograd.gradcheck(lambda a, b: attention_pool(a, b, mask),
                             (seq.clone().requires_grad_(), r.clone().requires_grad_()))


def test_only_the_gradients_asked_for_are_computed():
    seq, r, w, mask, _ = _inputs(2)
    r_ = r.clone().requires_grad_()
    seqdot.scores(seq, r_).sum().backward()  # seq needs no gradient: none is made, r's is right
    torch.testing.assert_close(r_.grad, seq.sum(1))
    seq_ = seq.clone().requires_grad_()
    u, _ = attention_pool(seq_, r, mask)
    u.sum().backward()
    assert seq_.grad.shape == seq.shape and r_.grad is not None
