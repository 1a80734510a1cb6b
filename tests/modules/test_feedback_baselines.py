"""DUMN's Table 1 baselines new to the project (MODELS.md C): DeepFM, AutoInt, DFN, DMT. Each equation on a hand
computation; padding invariance, empty sequences and gradients for the sequence models."""
import itertools

import pytest
import torch

from tests.modules.checks import assert_every_parameter_gets_gradient
from tinrec.modules.autoint import AutoInt
from tinrec.modules.deepfm import DeepFM, fm_pairwise
from tinrec.modules.dfn import DFN
from tinrec.modules.dmt import DMT

B, F, D, E, P = 4, 5, 8, 6, 4


def _fields(seed=0):
    return torch.randn(B, F, D, generator=torch.Generator().manual_seed(seed))


def test_fm_pairwise_is_the_sum_over_field_pairs_of_inner_products():
    v = _fields()
    want = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(F), 2))
    torch.testing.assert_close(fm_pairwise(v), want)


@pytest.mark.parametrize("linear", [False, True])
def test_deepfm_logit_is_first_order_plus_pairwise_plus_dnn(linear):
    torch.manual_seed(0)
    m = DeepFM(dim=D, fields=F, hidden=(7, 3)).eval()
    torch.nn.init.normal_(m.first_order)
    v = _fields()
    w = torch.randn(B, F, 4) if linear else None
    out = m(fields_BFD=v, linear_BFW=w)
    first = w.sum((1, 2)) if linear else (v * m.first_order).sum((1, 2))
    pairs = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(F), 2))
    torch.testing.assert_close(out, (first + pairs).unsqueeze(-1) + m.dnn(v.flatten(1)))
    assert out.shape == (B, 1) and DeepFM.LOGIT_OUTPUT
    with pytest.raises(ValueError, match="fields_BFD has shape"):
        m(fields_BFD=v[:, :3])


def test_autoint_interacting_layer_against_its_equation():
    torch.manual_seed(0)
    m = AutoInt(dim=D, fields=F, layers=1, heads=2, head_dim=3).eval()
    v = _fields()
    layer = m.layers[0]
    wq, wk, wv = layer.qkv.weight.split(6, dim=0)  # [H A, D] each
    out = []
    for h in range(2):
        q, k, val = (v @ w[3 * h:3 * h + 3].t() for w in (wq, wk, wv))  # [B, F, A]
        a = torch.softmax(q @ k.transpose(1, 2), -1)  # unscaled (Eq. 5)
        out.append(a @ val)
    e = torch.relu(torch.cat(out, -1) + v @ layer.res.weight.t())
    torch.testing.assert_close(m(fields_BFD=v), e.flatten(1) @ m.out.weight.t())
    plus = AutoInt(dim=D, fields=F, layers=2, hidden=(5,))
    v.requires_grad_()
    plus(fields_BFD=v).sum().backward()
    assert_every_parameter_gets_gradient(plus)
    assert (v.grad.abs().sum(-1) > 0).all()


def _seqs(names, lengths, seed=0, L=4):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, n in zip(names, lengths):
        out[f"{k}_BLE"] = torch.randn(B, L, E, generator=g)
        out[f"{k}_mask_BL"] = torch.arange(L)[None] < torch.tensor(n)[:, None]
        out[f"{k}_position_BLP"] = torch.randn(B, L, P, generator=g)
    return out


def _garbage(batch, names):
    out = dict(batch)
    for k in names:
        m = batch[f"{k}_mask_BL"]
        for key in (f"{k}_BLE", f"{k}_position_BLP"):
            out[key] = torch.where(m[..., None], batch[key], torch.full_like(batch[key], 1e3))
        # more padding: two extra padded slots
        for key in (f"{k}_BLE", f"{k}_position_BLP"):
            out[key] = torch.cat([out[key], torch.full_like(out[key][:, :2], -7.0)], 1)
        out[f"{k}_mask_BL"] = torch.cat([m, torch.zeros_like(m[:, :2])], 1)
    return out


FEEDBACK3 = ("click", "unclick", "dislike")


def test_dfn_ignores_padding_handles_empty_sequences_and_composes_wide_fm_deep():
    torch.manual_seed(0)
    m = DFN(dim=D, fields=F, seq_dim=E, position_dim=P, heads=2).eval()
    batch = dict(fields_BFD=_fields(), target_BE=torch.randn(B, E),
                 **_seqs(FEEDBACK3, [(3, 0, 4, 1), (2, 4, 0, 0), (1, 1, 0, 4)]))
    out = m(**batch)
    assert out.shape == (B, 1) and torch.isfinite(out).all()
    torch.testing.assert_close(m(**_garbage(batch, FEEDBACK3)), out, rtol=0, atol=1e-5)
    # the aggregation on the module's own field vectors: v = [fields; f_c, f_u, f_d, f_uc, f_ud]
    seen = {}
    m.deep.register_forward_hook(lambda mod, inp, o: seen.update(flat=inp[0]))
    m(**batch)
    v = seen["flat"].view(B, F + 5, D)
    assert torch.equal(v[:, :F], batch["fields_BFD"])
    # f_c: the internal Transformer's outputs over [target; clicks] averaged over the valid slots
    t = m.inp(torch.cat([batch["target_BE"], torch.zeros(B, P)], -1))
    x = m.inp(torch.cat([batch["click_BLE"], batch["click_position_BLP"]], -1)) * batch["click_mask_BL"][..., None]
    both_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool), batch["click_mask_BL"]], 1)
    inner = m.internal["click"](x_BLD=torch.cat([t[:, None], x], 1), mask_BL=both_mask)
    torch.testing.assert_close(v[:, F], inner.sum(1) / both_mask.sum(1, keepdim=True))
    fm = sum(v[:, i] * v[:, j] for i, j in itertools.combinations(range(F + 5), 2))
    torch.testing.assert_close(out, m.out(torch.cat([m.wide(v.flatten(1)), fm, m.deep(v.flatten(1))], -1)))
    # rows 2 and 3 have no unclick: the external attention over unclicks gives f_uc = f_ud = 0
    assert torch.equal(v[2, F + 3], torch.zeros(D)) and torch.equal(v[2, F + 4], torch.zeros(D))
    m.train()
    for k in FEEDBACK3:
        batch[f"{k}_BLE"].requires_grad_()
    m(**batch).sum().backward()
    assert_every_parameter_gets_gradient(m)
    for k in FEEDBACK3:
        g = batch[f"{k}_BLE"].grad
        assert torch.equal(g[~batch[f"{k}_mask_BL"]], torch.zeros_like(g[~batch[f"{k}_mask_BL"]]))


def test_dmt_ignores_padding_an_empty_sequence_reads_nothing_and_the_gate_mixes_the_experts():
    torch.manual_seed(0)
    names = ("click", "unclick", "like", "dislike")
    m = DMT(dim=E, model_dim=8, heads=2, position_dim=P, experts=3, expert_hidden=(6, 5)).eval()
    batch = dict(target_BE=torch.randn(B, E), **_seqs(names, [(3, 0, 4, 1), (2, 4, 0, 1), (1, 1, 0, 4), (4, 4, 4, 0)]))
    out = m(**batch)
    assert out.shape == (B, 5) and torch.isfinite(out).all()
    torch.testing.assert_close(m(**_garbage(batch, names)), out, rtol=0, atol=1e-5)
    seen = {}
    m.gate.register_forward_hook(lambda mod, inp, o: seen.update(h=inp[0]))
    m(**batch)
    h = seen["h"]
    # row 1 has no click (length 0): its click interest (the first 8 columns) is zero
    assert torch.equal(h[1, :8], torch.zeros(8)) and torch.equal(h[:, -E:], batch["target_BE"])
    g = torch.softmax(m.gate(h), -1)
    torch.testing.assert_close(out, sum(g[:, x:x + 1] * m.experts[x](h) for x in range(3)))
    m.train()
    m(**batch).sum().backward()
    assert_every_parameter_gets_gradient(m)
    only = DMT(dim=E, model_dim=8, heads=2, sequences=["click"])
    with pytest.raises(ValueError, match="bind like_BLE and like_mask_BL exactly when 'like' is read"):
        only(target_BE=batch["target_BE"], click_BLE=batch["click_BLE"], click_mask_BL=batch["click_mask_BL"],
             like_BLE=batch["like_BLE"], like_mask_BL=batch["like_mask_BL"])
