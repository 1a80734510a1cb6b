"""Tests for modules/twin.py: alpha's equation with the per-behaviour cross-feature bias, the CP-GSU's walk over
the heads' rankings against a brute force, the ESU weighing the kept rows with the GSU's own alpha, padding,
gradients."""
# Shape legend: B batch, L sequence length (padded), H width, A heads, J cross features, C their width.
import math

import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.twin import TWIN

D, J, C = 4, 2, 3


def _inputs(lengths, L=8, seed=0):
    batch = batches.make_batch(lengths, D=D, L=L, seed=seed)
    batch["cross_BLX"] = torch.randn(len(lengths), L, J * C, generator=torch.Generator().manual_seed(seed + 1))
    return batch


def test_alpha_is_the_scaled_product_plus_a_squeezed_cross_bias_per_behaviour():
    torch.manual_seed(0)
    twin = TWIN(dim=D, cross_features=J, cross_width=C, heads=2, head_dim=3)
    b = _inputs([8, 5])
    alpha = twin.alpha(b["seq_BLD"], b["cross_BLX"], b["query_BD"])
    Wh, Wq = twin.key.weight.view(2, 3, D), twin.query.weight.view(2, 3, D)
    x, i, a = 1, 4, 1
    want = (Wh[a] @ b["seq_BLD"][x, i]) @ (Wq[a] @ b["query_BD"][x]) / math.sqrt(3)
    want = want + sum(twin.beta[a, j] * (b["cross_BLX"][x, i].view(J, C)[j] @ twin.cross[a, j]) for j in range(J))
    torch.testing.assert_close(alpha[x, a, i], want)
    changed = b["cross_BLX"].clone()
    changed[0, 2] += 1.0  # one behaviour's cross features move its own alpha only
    moved = (twin.alpha(b["seq_BLD"], changed, b["query_BD"]) != alpha).any(1)
    assert moved[0].tolist() == [i == 2 for i in range(8)] and not moved[1].any()
    # cross_bias=False (the diagnostic): the scaled product alone, and what the GSU would keep by it
    plain = twin.alpha(b["seq_BLD"], b["cross_BLX"], b["query_BD"], cross_bias=False)
    torch.testing.assert_close(plain[x, a, i], (Wh[a] @ b["seq_BLD"][x, i]) @ (Wq[a] @ b["query_BD"][x]) / math.sqrt(3))
    with torch.no_grad():
        twin.beta.fill_(100.0)  # a cross bias that dominates the ranking
    kept_with = twin.kept_behaviours(**b)[0]
    kept_without = twin.kept_behaviours(**b, cross_bias=False)[0]
    assert torch.equal(kept_without, twin.search(plain.detach(), b["mask_BL"])[0])
    assert not torch.equal(kept_with, kept_without)


def test_cp_gsu_walks_the_heads_rankings_in_turn_until_k_distinct():
    torch.manual_seed(1)
    for k in (1, 3, 5, 8):
        twin = TWIN(dim=D, k=k, heads=3, head_dim=2)
        lengths = [8, 6, 2, 0]
        b = batches.make_batch(lengths, D=D, L=8)
        alpha = twin.alpha(b["seq_BLD"], None, b["query_BD"]).detach()
        idx, kept = twin.search(alpha, b["mask_BL"])
        for x, n in enumerate(lengths):
            ranks = [sorted(range(n), key=lambda i: (-float(alpha[x, a, i]), -i)) for a in range(3)]
            walk = []
            for r in range(n):
                for a in range(3):
                    if ranks[a][r] not in walk:
                        walk.append(ranks[a][r])
            walk = walk[:k]
            assert kept[x].tolist() == [True] * len(walk) + [False] * (min(k, 8) - len(walk)), (k, x)
            assert idx[x, :len(walk)].tolist() == walk, (k, x)


def test_the_esu_weighs_the_kept_rows_with_the_gsus_alpha():
    torch.manual_seed(2)
    twin = TWIN(dim=D, cross_features=J, cross_width=C, k=3, heads=2, head_dim=3)
    b = _inputs([8, 2])
    alpha = twin.alpha(b["seq_BLD"], b["cross_BLX"], b["query_BD"])
    idx, kept = twin.search(alpha, b["mask_BL"])
    out = twin(**b)
    Wv = twin.value.weight.view(2, 3, D + J * C)
    for x in range(2):
        n = int(kept[x].sum())
        rows = idx[x, :n]
        full = torch.cat([b["seq_BLD"][x, rows], b["cross_BLX"][x, rows]], -1)
        heads = [torch.softmax(alpha[x, a, rows], 0) @ (full @ Wv[a].T) for a in range(2)]
        u = twin.out(torch.cat(heads))
        torch.testing.assert_close(out[x], torch.cat([u, u * b["query_BD"][x]]), rtol=1e-5, atol=1e-6)  # [u, u * q]


def test_shapes_padding_empty_rows_and_gradients():
    torch.manual_seed(3)
    twin = TWIN(dim=D, cross_features=J, cross_width=C, k=3, heads=2, head_dim=4)
    b = _inputs([5, 2, 0, 1], L=5)

    class Bound(torch.nn.Module):  # the padding check garbles seq and mask; the cross features follow
        output_dim = 2 * D

        def forward(self, **kw):
            L = kw["mask_BL"].shape[1]
            cross = torch.cat([b["cross_BLX"], torch.full((4, max(L - 5, 0), J * C), 1e3)], 1)
            return twin(**kw, cross_BLX=cross)

    out = checks.assert_padding_is_ignored(Bound(), {k: v for k, v in b.items() if k != "cross_BLX"}, zero_rows=[2])
    assert out.shape == (4, 2 * D)  # [u, u * q]
    g = {k: (v.requires_grad_() if v.is_floating_point() else v) for k, v in _inputs([6, 3], L=6).items()}
    twin(**g).pow(2).sum().backward()
    checks.assert_every_parameter_gets_gradient(twin)
    touched = g["seq_BLD"].grad.abs().sum(-1) > 0
    assert int(touched.sum()) == 3 + 3 and not touched[~g["mask_BL"]].any()  # the kept behaviours only
    with pytest.raises(ValueError, match="cross_BLX"):
        twin(**{k: v for k, v in b.items() if k != "cross_BLX"})


def test_tied_init_starts_every_learned_search_as_an_inner_product_that_ranks_the_target_itself_first():
    """tied_init (TWIN, LAP's coarse and mid levels, SIM's soft search): W_q starts equal to W_k, so the first
    score is <W s, W q> and a behaviour equal to the target outranks any other of no larger projected norm
    (Cauchy-Schwarz); without it the start is a random bilinear form and the target itself ranks anywhere."""
    from tinrec.modules.lap import LAP
    from tinrec.modules.sim import SIM

    torch.manual_seed(3)
    B, L, H = 64, 6, 8
    q_BH = torch.randn(B, H)
    seq_BLH = torch.randn(B, L, H)
    seq_BLH[:, 2] = q_BH  # behaviour 2 is the target itself
    mask_BL = torch.ones(B, L, dtype=torch.bool)

    def scorers(tied):
        twin = TWIN(dim=H, heads=1, head_dim=H, tied_init=tied)
        lap = LAP(dim=H, coarse_dim=H, mid_dim=H, coarse_k=4, fine_k=2, heads=2, tied_init=tied)
        sim = SIM(dim=H, search="soft", soft_dim=H, tied_init=tied)
        return {"twin": (twin.query, twin.key, lambda s: twin.alpha(s, None, q_BH)[:, 0]),
                "lap": (lap.coarse.q, lap.coarse.k, lambda s: lap.coarse(s, mask_BL, q_BH)[1]),
                "lap mid": (lap.mid.q, lap.mid.k, lambda s: lap.mid(s, mask_BL, q_BH)[1]),
                "sim": (sim.soft_a, sim.soft_b, lambda s: sim.relevance(seq_BLD=s, mask_BL=mask_BL, query_BD=q_BH))}

    for name, (query, key, score) in scorers(True).items():
        assert torch.equal(query.weight, key.weight), name
        # the other behaviours scaled to the target's projected norm, so only their direction differs
        Wq_BH, Ws_BLH = key(q_BH), key(seq_BLH)
        scaled_BLH = seq_BLH * (Wq_BH.norm(dim=-1)[:, None] / Ws_BLH.norm(dim=-1))[..., None]
        assert (score(scaled_BLH).argmax(1) == 2).all(), name
    # and the outputs start as the attended behaviours themselves (values through W^o W^v = I, LAP's W_v = I):
    # one kept behaviour, the target itself, gives u = q, so u * q starts as DIN's match
    twin = TWIN(dim=H, heads=2, head_dim=H, tied_init=True, product=False)
    one_BL = torch.zeros(B, L, dtype=torch.bool)
    one_BL[:, 2] = True
    torch.testing.assert_close(twin(seq_BLD=seq_BLH, mask_BL=one_BL, query_BD=q_BH), q_BH)
    lap = LAP(dim=H, coarse_dim=H, mid_dim=H, coarse_k=4, fine_k=2, heads=2, tied_init=True)
    torch.testing.assert_close(lap.coarse(seq_BLH, one_BL, q_BH)[0], q_BH)
    torch.testing.assert_close(lap.mid(seq_BLH, one_BL, q_BH)[0], q_BH)
    firsts = [(score(seq_BLH).argmax(1) == 2).float().mean() for _, _, score in scorers(False).values()]
    assert min(firsts) < 0.9  # untied: the target is not reliably first
    with pytest.raises(ValueError, match="tied_init"):
        TWIN(dim=H, query_dim=H + 1, product=False, tied_init=True)


def test_esu_sim_reads_the_cp_gsus_kept_rows_with_sims_target_attention():
    """esu = sim (a diagnostic): the output is SIM's ESU over exactly the rows the CP-GSU keeps, [K_h, K_c]."""
    torch.manual_seed(5)
    twin = TWIN(dim=D, cross_features=J, cross_width=C, heads=2, head_dim=3, k=3, esu="sim")
    b = _inputs([8, 5, 0])
    idx_BK, kept_BK = twin.kept_behaviours(**b)
    z_BLZ = torch.cat([b["seq_BLD"], b["cross_BLX"]], dim=-1)
    z_BKZ = torch.gather(z_BLZ, 1, idx_BK.unsqueeze(-1).expand(-1, -1, z_BLZ.shape[-1]))
    want = twin.sim_esu(z_BKZ=z_BKZ, mask_BK=kept_BK, query_BD=b["query_BD"])
    out = twin(**b)
    torch.testing.assert_close(out, want)
    assert out.shape == (3, twin.output_dim) and not out[2].any()  # a row with no behaviour: zeros
    with pytest.raises(ValueError, match="esu"):
        TWIN(dim=D, esu="din")
