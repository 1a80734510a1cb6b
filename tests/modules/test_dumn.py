"""DUMN (modules/dumn.py): the orthogonal mapping, memory read and write and the triplet loss against hand
computations; Eq. 1-5 by hand; padding of the four sequences, empty ones, gradients, the ablations' widths,
the memory written only in training."""
# Shape legend: B batch, L behaviours, E width, U user width, I target width, M slots, Z slot width.
import math

import pytest
import torch

from tests.modules.checks import assert_every_parameter_gets_gradient
from tinrec.modules.dumn import DUMN, FEEDBACK, project

E, U, I, M, Z = 8, 4, 6, 5, 3


def _batch(lengths=None, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or {"click": (6, 2, 0, 3), "unclick": (1, 4, 0, 2), "like": (3, 0, 0, 1), "dislike": (2, 1, 0, 0)}
    b = {"user_BU": torch.randn(4, U, generator=g), "item_BI": torch.randn(4, I, generator=g)}
    for k, n in lengths.items():
        b[f"{k}_BLE"] = torch.randn(4, L, E, generator=g)
        b[f"{k}_mask_BL"] = torch.arange(L)[None] < torch.tensor(n)[:, None]
    return b


def _make(seed=0, **kw):
    torch.manual_seed(seed)
    return DUMN(**{**dict(dim=E, user_dim=U, item_dim=I, seq_len=6, slots=M, slot_dim=Z, controller_hidden=7), **kw})


def test_orthogonal_mapping_removes_the_explicit_direction_and_keeps_an_orthogonal_vector():
    a, b = torch.tensor([[3.0, 4.0, 0.0]]), torch.tensor([[2.0, 0.0, 0.0]])
    torch.testing.assert_close(project(a, b), torch.tensor([[3.0, 0.0, 0.0]]))
    purified = a - project(a, b)
    assert torch.allclose((purified * b).sum(-1), torch.zeros(1))  # orthogonal to the explicit vector
    ortho = torch.tensor([[0.0, 1.0, 5.0]])
    torch.testing.assert_close(ortho - project(ortho, b), ortho)  # already orthogonal: unchanged
    torch.testing.assert_close(project(a, torch.zeros(1, 3)), torch.zeros(1, 3))  # no explicit feedback: nothing


def test_memory_read_and_write_by_hand():
    """Eq. 9-11: w_j = softmax_j cos(k, M_j), r = sum_j w_j M_j; Eq. 12 for two samples: the mean of their
    updates (1 - w (x) e) (.) M + w (x) a."""
    mem = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    key = torch.tensor([[2.0, 0.0]])
    w, r = DUMN.read(None, key, mem)
    cos = torch.tensor([1.0, 0.0, 1 / math.sqrt(2)])
    want_w = torch.exp(cos) / torch.exp(cos).sum()
    torch.testing.assert_close(w[0], want_w)
    torch.testing.assert_close(r[0], want_w @ mem)
    w2 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    erase = torch.tensor([[0.5, 0.0], [1.0, 1.0]])
    add = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    new = DUMN.write(mem, w2, erase, add)
    one = (1 - torch.outer(w2[0], erase[0])) * mem + torch.outer(w2[0], add[0])
    two = (1 - torch.outer(w2[1], erase[1])) * mem + torch.outer(w2[1], add[1])
    torch.testing.assert_close(new, (one + two) / 2)
    # slot 0: sample 0 erases half of x and adds 1 to both ([1.5, 1]), sample 1 leaves it ([1, 0]): the mean
    torch.testing.assert_close(new[0], torch.tensor([1.25, 0.5]))


def test_triplet_loss_takes_the_hardest_positive_and_negative_by_hand():
    m = _make(margin=0.2)
    q = torch.tensor([[1.0, 0.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # distances 0 and 1: the hardest is 1
    neg = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # distances 2 and 1 - 1/sqrt 2: the hardest is the latter
    want = max(1.0 - (1 - 1 / math.sqrt(2)) + 0.2, 0.0)
    torch.testing.assert_close(m.triplet_loss(q, pos, neg), torch.tensor(want))
    easy = m.triplet_loss(q, pos[:1], neg[:1])  # 0 - 2 + 0.2 < 0
    assert easy.item() == 0.0
    assert m.triplet_loss(q, pos[:0], neg).item() == 0.0  # an empty pool adds nothing


def test_feature_purification_attention_by_hand():
    """Eq. 1-5 for one row of the click sequence: head-sliced self-attention scaled by 1/sqrt(T), W^F, the
    ReLU scores over [e_user, e_item, o_j], softmax over the valid behaviours."""
    m, b = _make(heads=2), _batch()
    fp = m.fp["click"]
    n, x = 6, b["click_BLE"][0, :6]
    heads = []
    for h in range(2):
        xh = x[:, h * 4:(h + 1) * 4]
        att = torch.softmax((xh @ fp.wq[h]) @ (xh @ fp.wk[h]).t() / math.sqrt(6), -1)
        heads.append(att @ (xh @ fp.wv[h]))
    o = fp.wf(torch.cat(heads, -1))
    a = torch.relu(fp.score(torch.cat([b["user_BU"][0].expand(n, U), b["item_BI"][0].expand(n, I), o], -1))).squeeze(-1)
    want = torch.softmax(a, 0) @ o
    got = fp(b["click_BLE"], b["click_mask_BL"], b["user_BU"], b["item_BI"])
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[2], torch.zeros(E))  # an empty sequence pools to zeros


def test_key_strength_sharpens_the_addressing_by_hand():
    """``key_strength``: w_j = softmax_j(beta cos(k, M_j)), beta = 1 + softplus of the controller's two extra
    outputs (read, write); beta = 1 is Eq. 9 as printed, a large beta picks the closest slot."""
    mem = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    key = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    cos = torch.tensor([1.0, 0.0, 1 / math.sqrt(2)])
    w, _ = DUMN.read(None, key, mem, torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(w[0], torch.softmax(cos, 0))
    torch.testing.assert_close(w[1], torch.softmax(3 * cos, 0))
    w, r = DUMN.read(None, key[:1], mem, torch.tensor([1000.0]))
    torch.testing.assert_close(r[0], mem[0])
    m = _make(key_strength=1 + math.log(2))
    f, user = torch.randn(5, E), torch.randn(5, U)
    *_, beta_r, beta_w = m.controller("click", f, user)
    out = m.controllers["click"](torch.cat([f, user], -1))
    torch.testing.assert_close(beta_r, 1 + torch.nn.functional.softplus(out[:, 4 * Z]))
    torch.testing.assert_close(beta_w, 1 + torch.nn.functional.softplus(out[:, 4 * Z + 1]))
    assert _make().controller("click", f, user)[4:] == (None, None)
    m = _make(key_strength=20.0)  # the number is beta's value at the start: the heads' bias
    with torch.no_grad():
        m.controllers["click"][-1].weight[4 * Z:] = 0
    for beta in m.controller("click", f, user)[4:]:
        torch.testing.assert_close(beta, torch.full((5,), 20.0))
    for bad in (True, 1.0, 0.5):
        with pytest.raises(ValueError, match="key_strength"):
            _make(key_strength=bad)


def test_padding_empty_users_and_eval_reads_without_writing():
    m, b = _make().eval(), _batch()
    before = m.memory_SMZ.clone()
    out = m(**b)
    assert out.shape == (4, 4 * (E + Z)) and m.output_dim == 4 * (E + Z) and torch.isfinite(out).all()
    assert torch.equal(m.memory_SMZ, before)  # evaluation only reads
    g = torch.Generator().manual_seed(3)
    junk = dict(b)
    for k in FEEDBACK:
        mask = b[f"{k}_mask_BL"]
        junk[f"{k}_BLE"] = torch.where(mask[..., None], b[f"{k}_BLE"], torch.randn(4, 6, E, generator=g) * 1e3)
    torch.testing.assert_close(m(**junk), out, rtol=0, atol=1e-5)


def test_training_writes_the_memory_and_every_parameter_learns():
    # several behaviours in every sequence (Eq. 3's ReLU scores can all be 0 for a row of one or two)
    m, b = _make().train(), _batch({k: (6, 5, 0, 4) for k in FEEDBACK})
    before = m.memory_SMZ.clone()
    for k in FEEDBACK:
        b[f"{k}_BLE"].requires_grad_()
    out, losses = m(**b)
    assert set(losses) == {"triplet"} and losses["triplet"] >= 0
    assert not torch.equal(m.memory_SMZ, before)  # written in training (after the forward's read)
    (out.pow(2).sum() + losses["triplet"]).backward()
    assert_every_parameter_gets_gradient(m)
    for k in FEEDBACK:
        mask = b[f"{k}_mask_BL"]
        assert not b[f"{k}_BLE"].grad[~mask].any(), k


@pytest.mark.parametrize("kw,width", [
    (dict(memories="one"), 4 * (E + Z)), (dict(memories="none", triplet="none"), 4 * E),
    (dict(fusion="concat"), 4 * (E + Z)), (dict(fusion="cross"), 4 * 3 * E), (dict(fusion="ffn"), 4 * (E + Z)),
    (dict(fusion="attention"), 4 * E), (dict(purify=False), 4 * (E + Z)), (dict(triplet="random"), 4 * (E + Z)),
    (dict(feedback=["click", "unclick"]), 2 * (E + Z))])
def test_ablations(kw, width):
    m, b = _make(**kw).train(), _batch()
    if "feedback" in kw:
        b = {k: v for k, v in b.items() if not k.startswith(("like", "dislike"))}
    res = m(**b)
    out = res[0] if isinstance(res, tuple) else res
    assert out.shape == (4, width) and torch.isfinite(out).all()
    if kw.get("memories") == "one":
        assert m.memory_SMZ.shape == (1, M, Z)
    if kw.get("triplet") == "none":
        assert not isinstance(res, tuple)


def test_purify_makes_the_click_interest_orthogonal_to_the_dislike_interest():
    """With ``purify`` the short-term click part fed to the fusion is f_c minus its projection on f_d."""
    m, b = _make(memories="none", triplet="none"), _batch()
    f = {k: m.fp[k](b[f"{k}_BLE"], b[f"{k}_mask_BL"], b["user_BU"], b["item_BI"]) for k in FEEDBACK}
    seen = {}
    m.fuse = lambda k, f_BE, r: seen.setdefault(k, f_BE)
    m(**b)
    assert torch.allclose((seen["click"] * f["dislike"]).sum(-1), torch.zeros(4), atol=1e-5)
    assert torch.allclose((seen["unclick"] * f["like"]).sum(-1), torch.zeros(4), atol=1e-5)
    torch.testing.assert_close(seen["like"], f["like"])


def test_bindings_must_match_the_feedback_read():
    b = _batch()
    with pytest.raises(ValueError, match="bind like_BLE and like_mask_BL exactly when"):
        _make()(**{k: v for k, v in b.items() if not k.startswith("like")})
    with pytest.raises(ValueError, match="bind like_BLE"):
        _make(feedback=["click", "unclick"])(**b)
    with pytest.raises(ValueError, match="heads=3 must divide"):
        _make(heads=3)


def test_activation_unit_scoring_pools_by_the_din_unit_with_the_target_as_query():
    """scoring=activation_unit: Eq. 4-5's weights are DIN's unit over the self-attention outputs with the target
    as query (so the pooling reads the target-behaviour product Eq. 3's linear score lacks); padding and empty
    sequences are handled as with Eq. 3; it needs the target as wide as the behaviours."""
    torch.manual_seed(0)
    m = DUMN(dim=E, user_dim=U, item_dim=E, seq_len=6, slots=M, slot_dim=Z, controller_hidden=7,
             scoring="activation_unit").eval()
    b = _batch()
    b["item_BI"] = torch.randn(4, E)
    fp = m.fp["click"]
    seen = {}
    fp.wf.register_forward_hook(lambda mod, inp, o: seen.update(o=o))
    f = fp(b["click_BLE"], b["click_mask_BL"], b["user_BU"], b["item_BI"])
    o = seen["o"] * b["click_mask_BL"][..., None]
    w = fp.unit.weights(o, b["click_mask_BL"], b["item_BI"], None)
    torch.testing.assert_close(f, torch.bmm(w.unsqueeze(1), o).squeeze(1))
    assert torch.equal(f[2], torch.zeros(E))  # row 2 has no click
    out = m(**b)
    junk = dict(b, click_BLE=torch.where(b["click_mask_BL"][..., None], b["click_BLE"], torch.full_like(b["click_BLE"], 1e3)))
    torch.testing.assert_close(m(**junk), out, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="activation_unit \\(needs item_dim == dim\\)"):
        _make(scoring="activation_unit")


def test_residual_keeps_each_behaviour_in_its_position():
    """residual=True: o_j = e_j + MHSA(e)_j (Eq. 2 plus the input), so positions of different behaviours stay
    apart even when the attention is uniform; without it every o_j is the same vector."""
    b = _batch()
    for residual in (False, True):
        fp = _make(residual=residual).eval().fp["click"]
        with torch.no_grad():
            fp.wq.zero_()  # uniform attention: every position's MHSA output is the same mean
            o = fp.outputs(b["click_BLE"], b["click_mask_BL"])[0, :6]  # row 0: six valid clicks
        spread = (o - o.mean(0)).abs().max()
        assert (spread < 1e-6) if not residual else (spread > 0.1)
        if residual:
            fp.residual = False
            torch.testing.assert_close(o, fp.outputs(b["click_BLE"], b["click_mask_BL"])[0, :6] + b["click_BLE"][0, :6])
