"""Tests for modules/lap.py: the coarse level over the whole sequence by hand, each level keeping the best of
the previous one (brute force), all three outputs used, gradients reaching every behaviour, padding, and the
consistency measure."""
# Shape legend: B batch, L sequence length (padded), D width.
import math

import torch

from tests.modules import batches, checks
from tinrec.modules.lap import LAP

D = 8


def test_the_levels_by_hand():
    torch.manual_seed(0)
    lap = LAP(dim=D, coarse_dim=4, mid_dim=3, coarse_k=5, fine_k=2, heads=2)
    lengths = [9, 4]
    b = batches.make_batch(lengths, D=D, L=9)
    seq, mask, q = b["seq_BLD"], b["mask_BL"], b["query_BD"]
    u1, u2, u3, s1, i1, i2, kept2 = lap.levels(seq, mask, q)
    c, m = lap.coarse, lap.mid
    for x, n in enumerate(lengths):
        S = seq[x, :n]
        s = (S @ c.k.weight.T) @ (c.q.weight @ q[x]) / math.sqrt(4)
        torch.testing.assert_close(s1[x, :n], s)
        torch.testing.assert_close(u1[x], torch.softmax(s, 0) @ (S @ c.v.weight.T))  # CSA: the whole sequence
        top1 = sorted(range(n), key=lambda i: (-float(s[i].detach()), -i))[:5]
        assert i1[x, :len(top1)].tolist() == top1
        s2 = (seq[x, top1] @ m.k.weight.T) @ (m.q.weight @ q[x]) / math.sqrt(3)
        torch.testing.assert_close(u2[x], torch.softmax(s2, 0) @ (seq[x, top1] @ m.v.weight.T))
        top2 = [top1[j] for j in sorted(range(len(top1)), key=lambda j: (-float(s2[j].detach()), -j))[:2]]
        assert i2[x, :len(top2)].tolist() == top2 and kept2[x].tolist() == [True] * len(top2) + [False] * (2 - len(top2))
    out = lap(**b)
    assert out.shape == (2, lap.output_dim) == (2, 2 * (2 * D + 2 * D))  # with the products
    torch.testing.assert_close(out, torch.cat([u1, u2, u3, u1 * q, u2 * q], -1))  # u3 carries its heads' products
    plain = LAP(dim=D, coarse_dim=4, mid_dim=3, coarse_k=5, fine_k=2, heads=2, product=False)
    plain.load_state_dict(lap.state_dict())
    torch.testing.assert_close(plain(**b), torch.cat([u1, u2, u3[:, :2 * D]], -1))


def test_gradients_reach_every_behaviour_through_the_coarse_level_and_padding_is_ignored():
    torch.manual_seed(1)
    lap = LAP(dim=D, coarse_k=4, fine_k=2, heads=2)
    b = {k: (v.requires_grad_() if v.is_floating_point() else v) for k, v in batches.make_batch([5, 3], D=D).items()}
    lap(**b).pow(2).sum().backward()
    grad = b["seq_BLD"].grad
    assert grad[b["mask_BL"]].abs().sum(-1).gt(0).all() and not grad[~b["mask_BL"]].any()
    checks.assert_every_parameter_gets_gradient(lap)
    torch.manual_seed(2)
    lap = LAP(dim=D, coarse_k=4, fine_k=2, heads=2).eval()
    out = checks.assert_padding_is_ignored(lap, batches.make_batch([5, 2, 0, 1], D=D), zero_rows=[2], atol=1e-5)
    assert out.shape == (4, lap.output_dim)


def test_consistency_is_one_when_the_mid_level_scores_as_the_coarse_one():
    torch.manual_seed(3)
    lap = LAP(dim=D, coarse_k=5, fine_k=2, heads=2)
    b = batches.make_batch([9, 6, 1], D=D, L=9)
    share = lap.consistency(**b)
    assert share.shape == (3,) and ((share >= 0) & (share <= 1)).all()
    lap.mid.load_state_dict(lap.coarse.state_dict())
    assert torch.equal(lap.consistency(**b), torch.ones(3))
