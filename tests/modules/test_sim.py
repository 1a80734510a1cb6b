"""Tests for modules/sim.py: hard search keeps the most recent matching behaviours (brute force, ties), soft
search's relevance and auxiliary CTR loss by hand, the scorer learning from that loss only, time-gap
embeddings in the ESU, padding and empty rows."""
# Shape legend: B batch, L sequence length (padded), D width, T time width, K kept.
import pytest
import torch
import torch.nn.functional as F

from tests.modules import batches, checks
from tinrec.modules.sim import SIM

D = 4


def _categories(B, L, seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, n + 1, (B, L), generator=g), torch.randint(1, n + 1, (B,), generator=g)


def test_hard_search_keeps_the_most_recent_matching_behaviours_only():
    sim = SIM(dim=D, search="hard", k=3)
    lengths = [9, 5, 0, 2]
    batch = batches.make_batch(lengths, D=D, L=9)
    cats, target = _categories(4, 9)
    z, m = checks.kept_by_search(sim, **batch, seq_category_BL=cats, query_category_B=target)
    for b, n in enumerate(lengths):
        want = [i for i in range(n - 1, -1, -1) if cats[b, i] == target[b]][:3]  # newest first
        assert m[b].tolist() == [True] * len(want) + [False] * (3 - len(want))
        torch.testing.assert_close(z[b, :len(want)], batch["seq_BLD"][b, want])


def test_soft_search_relevance_and_its_auxiliary_loss_by_hand():
    torch.manual_seed(1)
    sim = SIM(dim=D, search="soft", k=2, soft_dim=3, aux_hidden=[5])
    batch = batches.make_batch([5, 3], D=D)
    seq, mask, q = batch["seq_BLD"], batch["mask_BL"], batch["query_BD"]
    r = sim.relevance(seq_BLD=seq, mask_BL=mask, query_BD=q)
    torch.testing.assert_close(r, torch.einsum("bld,bd->bl", seq @ sim.soft_b.weight.T, q @ sim.soft_a.weight.T))
    z, m = checks.kept_by_search(sim, **batch)
    for b, n in enumerate([5, 3]):
        best = torch.argsort(r[b, :n], descending=True)[:2]
        torch.testing.assert_close(z[b], seq[b, best])
    sim = SIM(dim=D, search="soft", k=2, soft_dim=3, aux_hidden=[5])
    label = torch.tensor([1.0, 0.0])
    sim.train()
    out, losses = sim(**batch, label_B=label)
    r = sim.relevance(seq_BLD=seq, mask_BL=mask, query_BD=q)
    u_r = torch.stack([(r[b, :n, None] * seq[b, :n]).sum(0) / n for b, n in enumerate([5, 3])])
    want = F.binary_cross_entropy_with_logits(sim.aux(torch.cat([u_r, q], -1)).squeeze(-1), label)
    torch.testing.assert_close(losses["gsu"], want)
    assert out.shape == (2, 4 * D + 4 * D)  # 4 heads and their products
    out_g, losses_g = sim(**batches.with_garbage_padding(batch), label_B=label)  # large values under padding
    torch.testing.assert_close(losses_g["gsu"], want)
    torch.testing.assert_close(out_g, out)
    sim.eval()
    assert isinstance(sim(**batch), torch.Tensor)  # no label outside training: no auxiliary loss


def test_the_soft_scorer_learns_from_its_auxiliary_loss_only():
    torch.manual_seed(2)
    batch = batches.make_batch([5, 4], D=D)
    soft = torch.randn(2, 5, 6, requires_grad=True)
    soft_q = torch.randn(2, 6, requires_grad=True)
    sim = SIM(dim=D, search="soft", k=2, soft_dim=3, soft_input_dim=6).train()
    out, losses = sim(**batch, soft_seq_BLD=soft, soft_query_BD=soft_q, label_B=torch.tensor([1.0, 0.0]))
    out.sum().backward(retain_graph=True)
    assert sim.soft_b.weight.grad is None and soft.grad is None  # the top-k carries no gradient to the scorer
    losses["gsu"].backward()
    assert sim.soft_b.weight.grad.abs().sum() > 0 and sim.soft_a.weight.grad.abs().sum() > 0
    assert soft.grad[~batch["mask_BL"]].abs().sum() == 0 and soft.grad[batch["mask_BL"]].abs().sum() > 0


def test_time_gap_embeddings_join_the_kept_behaviours():
    torch.manual_seed(3)
    sim = SIM(dim=D, search="hard", k=2, time_dim=3)
    batch = batches.make_batch([4, 2], D=D)
    time = torch.randn(2, 5, 3)
    cats = torch.ones(2, 5, dtype=torch.long)
    z, m = checks.kept_by_search(sim, **batch, seq_time_BLD=time, seq_category_BL=cats, query_category_B=torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(z[0], torch.cat([batch["seq_BLD"][0, [3, 2]], time[0, [3, 2]]], -1))
    assert SIM(dim=D, search="hard", k=2, time_dim=3).output_dim == 4 * (D + 3) + 4 * D  # products: the e part
    with pytest.raises(ValueError, match="time_dim"):
        SIM(dim=D, search="hard", time_dim=3)(**batch, seq_category_BL=cats, query_category_B=torch.ones(2, dtype=torch.long))


@pytest.mark.parametrize("search", ["hard", "soft"])
def test_shapes_padding_and_empty_rows(search):
    torch.manual_seed(4)
    sim = SIM(dim=D, search=search, k=3, heads=2, head_dim=4).eval()
    batch = batches.make_batch([5, 2, 0, 1], D=D)
    cats, target = _categories(4, 5, n=2)
    extra = {"seq_category_BL": cats, "query_category_B": target} if search == "hard" else {}

    class Bound(torch.nn.Module):  # the padding check garbles seq / mask only; categories follow the mask
        output_dim = sim.output_dim

        def forward(self, **kw):
            L = kw["mask_BL"].shape[1]
            c = torch.cat([cats, torch.zeros(4, L - 5, dtype=torch.long)], 1) if L > 5 else cats
            return sim(**kw, **({"seq_category_BL": c, "query_category_B": target} if search == "hard" else {}))

    out = checks.assert_padding_is_ignored(Bound(), batch, zero_rows=[2], atol=1e-5)
    assert out.shape == (4, 2 * 2 * D) and torch.equal(out, sim(**batch, **extra))


def test_the_loaders_search_gives_the_same_output_as_the_hard_search_here():
    """search: loader on the sequence the loader selected (the k most recent behaviours of the target's category,
    oldest first, tinrec/data/search.py) equals search: hard on the whole sequence, the same weights; longer than
    k, it keeps the most recent k; no match gives zeros."""
    torch.manual_seed(5)
    lengths = [9, 5, 0, 2, 7]
    batch = batches.make_batch(lengths, D=D, L=9)
    cats, target = _categories(5, 9, seed=3)
    hard = SIM(dim=D, search="hard", k=3, heads=2, head_dim=4).eval()
    loader = SIM(dim=D, search="loader", k=3, heads=2, head_dim=4).eval()
    loader.load_state_dict(hard.state_dict())
    kept = [[i for i in range(n) if cats[b, i] == target[b]][-3:] for b, n in enumerate(lengths)]
    searched = torch.zeros(5, 3, D)
    for b, idx in enumerate(kept):
        searched[b, :len(idx)] = batch["seq_BLD"][b, idx]
    mask = torch.tensor([[j < len(idx) for j in range(3)] for idx in kept])
    want = hard(**batch, seq_category_BL=cats, query_category_B=target)
    got = loader(seq_BLD=searched, mask_BL=mask, query_BD=batch["query_BD"])
    torch.testing.assert_close(got, want)
    assert any(len(k) == 0 for k in kept) and torch.equal(got[[len(k) == 0 for k in kept]], torch.zeros_like(got[:1]).expand(sum(len(k) == 0 for k in kept), -1))
    # a searched sequence longer than k: the most recent k
    all_rows = loader(**batch)
    recent = torch.stack([batch["seq_BLD"][b, max(n - 3, 0):max(n - 3, 0) + 3] for b, n in enumerate(lengths)])
    rmask = torch.tensor([[j < min(n, 3) for j in range(3)] for n in lengths])
    torch.testing.assert_close(all_rows, loader(seq_BLD=recent, mask_BL=rmask, query_BD=batch["query_BD"]))
    with pytest.raises(ValueError, match="hard, soft or loader"):
        SIM(dim=D, search="exact")
