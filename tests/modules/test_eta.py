"""Tests for modules/eta.py and the ESU (modules/target_attention.py): SimHash and Hamming scores by hand, the
kept set against a brute-force ranking (ties to the most recent), the ESU's equation, padding, gradients."""
# Shape legend: B batch, L sequence length (padded), D width, K kept, H heads.
import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.eta import ETA
from tinrec.modules.target_attention import MultiHeadTargetAttention

D = 4


def test_simhash_and_hamming_scores_by_hand():
    eta = ETA(dim=2, hashes=3, k=2)
    eta.projection_DM.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]]))
    q = torch.tensor([[1.0, 2.0]])  # x R = (1, 2, 1) -> (+, +, +)
    seq = torch.tensor([[[1.0, -2.0], [-3.0, 1.0], [2.0, 3.0]]])  # (1,-2,-3) -> (+,-,-); (-3,1,4) -> (-,+,+); (+,+,+)
    assert eta.signs(seq).tolist() == [[[1, -1, -1], [-1, 1, 1], [1, 1, 1]]]
    assert eta.scores(seq, q).tolist() == [[-2.0, -1.0, 0.0]]
    # x R exactly 0 counts as +1 in the scores as in the signs; random inputs: -Hamming = (<h(q), h(S_i)> - m) / 2
    assert eta.scores(torch.tensor([[[0.0, 0.0]]]), q).tolist() == [[0.0]]
    x = torch.randn(3, 7, 5)
    y = x[:, 0]  # behaviour 0 is the target: with -y every one of its m bits differs
    for m in (16, 300):  # the counts in bytes, and past 255 differing bits in wider integers
        big = ETA(dim=5, hashes=m, k=2)
        want = (torch.einsum("blm,bm->bl", big.signs(x), big.signs(y)) - m) / 2
        assert torch.equal(big.scores(x, y), want)
        assert torch.equal(big.scores(x, -y), -m - want)  # the opposite target: Hamming m - H
        assert big.scores(x, -y)[:, 0].tolist() == [-m] * 3


def test_the_kept_behaviours_are_the_brute_force_best_with_recency_breaking_ties():
    torch.manual_seed(0)
    eta = ETA(dim=D, hashes=4, k=3)  # 5 possible scores over 9 behaviours: many ties
    batch = batches.make_batch([9, 4, 2], D=D, L=9)
    scores = eta.scores(batch["seq_BLD"], batch["query_BD"])
    z, m = checks.kept_by_search(eta, **batch)
    for b, n in enumerate([9, 4, 2]):
        best = sorted(range(n), key=lambda i: (-float(scores[b, i]), -i))[:3]
        assert m[b].tolist() == [True] * len(best) + [False] * (3 - len(best))
        torch.testing.assert_close(z[b, :len(best)], batch["seq_BLD"][b, best])


def test_esu_is_sims_multi_head_target_attention():
    torch.manual_seed(1)
    esu = MultiHeadTargetAttention(dim=D, heads=2, head_dim=3)
    z = torch.randn(2, 5, D)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    q = torch.randn(2, D)
    out = esu(z_BKZ=z, mask_BK=mask, query_BD=q)
    Wk, Wq = esu.key.weight.view(2, 3, D), esu.query.weight.view(2, 3, D)
    for b in range(2):
        n = int(mask[b].sum())
        heads = []
        for h in range(2):
            logits = (z[b, :n] @ Wk[h].T) @ (Wq[h] @ q[b])  # <W_k^h z_j, W_q^h q>, no scaling (SIM)
            heads.append(torch.softmax(logits, 0) @ z[b, :n])
        torch.testing.assert_close(out[b], torch.cat(heads), rtol=1e-5, atol=1e-6)
    # product: each head's behaviour part times the target, after the heads (query width 3 <= Z = D)
    esu_p = MultiHeadTargetAttention(dim=D, query_dim=3, heads=2, head_dim=3, product=True)
    q3 = torch.randn(2, 3)
    a = esu_p.weights(z, mask, q3)  # [B, H, K]
    heads = torch.einsum("bhk,bkz->bhz", a, z * mask.unsqueeze(-1))
    want = torch.cat([heads.flatten(1), (heads[..., :3] * q3.unsqueeze(1)).flatten(1)], -1)
    torch.testing.assert_close(esu_p(z_BKZ=z, mask_BK=mask, query_BD=q3), want)
    assert esu_p.output_dim == 2 * D + 2 * 3
    with pytest.raises(ValueError, match="product needs"):
        MultiHeadTargetAttention(dim=3, query_dim=D, product=True)


def test_shapes_padding_empty_rows_and_gradients():
    torch.manual_seed(2)
    eta = ETA(dim=D, hashes=8, k=3, heads=2, head_dim=4)
    batch = batches.make_batch([5, 2, 0, 1], D=D)
    out = checks.assert_padding_is_ignored(eta, batch, zero_rows=[2], atol=1e-5)
    assert out.shape == (4, 2 * 2 * D)  # 2 heads, each with its product
    batch = {k: (v.requires_grad_() if v.is_floating_point() else v) for k, v in batches.make_batch([5, 2], D=D).items()}
    eta(**batch).pow(2).sum().backward()
    grad = batch["seq_BLD"].grad
    assert torch.equal(grad[~batch["mask_BL"]], torch.zeros(int((~batch["mask_BL"]).sum()), D))
    assert int(grad.abs().sum(-1).gt(0).sum()) == 3 + 2  # exactly the kept behaviours: 3 of row 0, both of row 1
    checks.assert_every_parameter_gets_gradient(eta)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="ETA"):
        ETA(dim=D, k=0)
