"""DEI2N (modules/dei2n.py): Eq. 1's p_tr + p_ta = 1 and its reading of the page, the fusion (Eq. 5) and the
interaction layer (Eq. 6) on hand cases, padding of both sequences, gradients, the ablations of Table 3."""
# Shape legend: B batch, L behaviours, K trigger-category behaviours, D width, T time width.
import pytest
import torch

from tests.modules.checks import assert_every_parameter_gets_gradient
from tinrec.modules.dei2n import DEI2N

D, T, U, C = 8, 4, 6, 3


def _batch(lengths=(5, 2, 0, 3), hard_lengths=(2, 1, 0, 0), L=5, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    hmask = torch.arange(K)[None] < torch.tensor(hard_lengths)[:, None]
    return dict(seq_BLD=torch.randn(B, L, D, generator=g), mask_BL=mask, target_BD=torch.randn(B, D, generator=g),
                trigger_BD=torch.randn(B, D, generator=g), hard_BKD=torch.randn(B, K, D, generator=g),
                hard_mask_BK=hmask, interval_BLT=torch.randn(B, L, T, generator=g),
                hard_interval_BKT=torch.randn(B, K, T, generator=g), user_BU=torch.randn(B, U, generator=g),
                context_BC=torch.randn(B, C, generator=g))


def _make(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(dim=D, time_dim=T, user_dim=U, context_dim=C, dropout=0.0)
    args.update(kw)
    return DEI2N(**args).eval()


def _garbage(batch, extra=2, seed=1):
    """Large values under every padded slot of both sequences, and ``extra`` more padded slots each."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    for seq, mask, others in (("seq_BLD", "mask_BL", ["interval_BLT"]), ("hard_BKD", "hard_mask_BK", ["hard_interval_BKT"])):
        m = batch[mask]
        B, L = m.shape
        m2 = torch.cat([m, torch.zeros(B, extra, dtype=torch.bool)], dim=1)
        out[mask] = m2
        for key in [seq] + others:
            v = batch[key]
            junk = torch.randn(B, L + extra, v.shape[-1], generator=g) * 1e4
            out[key] = torch.where(m2[..., None], torch.cat([v, junk[:, L:]], dim=1), junk)
    return out


def test_instant_weights_sum_to_one_and_follow_the_page():
    m, b = _make(), _batch()
    p_tr, p_ta = m.instant_weights(user_BU=b["user_BU"], context_BC=b["context_BC"], trigger_BD=b["trigger_BD"],
                                   hard_BKD=b["hard_BKD"], hard_mask_BK=b["hard_mask_BK"])
    torch.testing.assert_close(p_tr + p_ta, torch.ones(4), rtol=0, atol=1e-6)
    assert ((p_tr > 0) & (p_tr < 1)).all()
    p_tr2, _ = m.instant_weights(user_BU=b["user_BU"], context_BC=b["context_BC"] + 1.0, trigger_BD=b["trigger_BD"],
                                 hard_BKD=b["hard_BKD"], hard_mask_BK=b["hard_mask_BK"])
    assert not torch.allclose(p_tr, p_tr2)  # the context (the page) moves the mix


def test_fusion_is_eq_5_on_a_hand_case():
    """p_tr = 3/4 (UI2M's logits log 3 and 0), e_tr^s = e_1, e_ta^s = e_2: e_mix = [3/4, 1/4, 0, ...]."""
    m, b = _make(hard=False, interaction=False), _batch()
    B = b["mask_BL"].shape[0]
    m.trigger_attention.forward = lambda *a: torch.eye(D)[0].expand(B, D)
    m.target_attention.forward = lambda *a: torch.eye(D)[1].expand(B, D)
    m.instant_mlp.forward = lambda x: torch.tensor([[torch.log(torch.tensor(3.0)), 0.0]]).expand(B, 2)
    want = torch.zeros(B, D)
    want[:, 0], want[:, 1] = 0.75, 0.25
    torch.testing.assert_close(m(**b), want)
    m.instant = False  # NO-UI2M: the mean
    want[:, 0], want[:, 1] = 0.5, 0.5
    torch.testing.assert_close(m(**b), want)


def test_interaction_layer_is_eq_6_on_a_hand_case():
    """e^i = ReLU(W [e_ta, e_tr, e_tr (.) e_ta] + b) with one hidden unit of known weights, D = 4."""
    torch.manual_seed(0)
    m = DEI2N(dim=4, soft=False, hard=False, interaction_hidden=(1,)).eval()
    lin = m.interaction_mlp.layers[0]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 3.0, 0]]))
        lin.bias.fill_(-1.0)
    ta = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 2.0, 0.0]])
    tr = torch.tensor([[0.5, 1.0, 2.0, 1.0], [1.0, -2.0, 1.0, 1.0]])
    out = m(seq_BLD=torch.zeros(2, 1, 4), mask_BL=torch.zeros(2, 1, dtype=torch.bool), target_BD=ta, trigger_BD=tr)
    # row 0: 1*1 + 2*1.0 + 3*(2*3) - 1 = 20; row 1: 0 + 2*(-2) + 3*(1*2) - 1 = 1
    torch.testing.assert_close(out, torch.tensor([[20.0], [1.0]]))
    ta[1, 2] = -2.0  # row 1: -4 + 3 * (-2) - 1 < 0 -> ReLU gives 0
    out = m(seq_BLD=torch.zeros(2, 1, 4), mask_BL=torch.zeros(2, 1, dtype=torch.bool), target_BD=ta, trigger_BD=tr)
    assert out[1, 0] == 0


def test_padding_of_both_sequences_is_ignored_and_empty_users_get_zeros():
    m, b = _make(), _batch()
    out = m(**b)
    assert out.shape == (4, m.output_dim) and m.output_dim == 2 * D + 72 and torch.isfinite(out).all()
    torch.testing.assert_close(m(**_garbage(b)), out, rtol=0, atol=1e-5)
    assert torch.equal(out[2, :2 * D], torch.zeros(2 * D))  # no behaviour at all: e_mix = e_ta^h = 0
    assert torch.equal(out[3, D:2 * D], torch.zeros(D))  # none of the trigger's category: e_ta^h = 0


def test_gradients_reach_every_parameter_and_no_padded_slot():
    m, b = _make(), _batch()
    m.train()
    for k in ("seq_BLD", "hard_BKD", "interval_BLT"):
        b[k].requires_grad_()
    m(**b).pow(2).sum().backward()
    assert_every_parameter_gets_gradient(m)
    for k, mask in (("seq_BLD", "mask_BL"), ("hard_BKD", "hard_mask_BK"), ("interval_BLT", "mask_BL")):
        g = b[k].grad
        assert torch.equal(g[~b[mask]], torch.zeros_like(g[~b[mask]])), k
        assert (g[b[mask]].abs().sum(-1) > 0).all(), k


@pytest.mark.parametrize("flags,width", [
    (dict(instant=False), 2 * D + 72), (dict(interaction=False), 2 * D), (dict(hard=False), D + 72),
    (dict(soft=False), D + 72), (dict(time_dim=0), 2 * D + 72)])
def test_ablations_change_the_output_as_table_3_says(flags, width):
    b = _batch()
    m = _make(**flags)
    if flags.get("time_dim") == 0:
        b = dict(b, interval_BLT=None, hard_interval_BKT=None)
    out = m(**b)
    assert out.shape == (4, width) and m.output_dim == width and torch.isfinite(out).all()
    if "soft" in flags:
        assert not hasattr(m, "instant_mlp") and not hasattr(m, "encoder")  # UI2M has nothing left to fuse
    if "hard" in flags:
        assert not hasattr(m, "hard_attention")


def test_bad_bindings_are_refused_with_what_to_bind():
    b = _batch()
    with pytest.raises(ValueError, match="interval_BLT"):
        _make()(**dict(b, interval_BLT=None))
    with pytest.raises(ValueError, match="interval_BLT"):
        _make(time_dim=0)(**b)
    with pytest.raises(ValueError, match="user_BU and context_BC"):
        _make()(**dict(b, context_BC=None))
    with pytest.raises(ValueError, match="hard_BKD"):
        _make()(**dict(b, hard_BKD=None))
    with pytest.raises(ValueError, match="user_dim and context_dim"):
        DEI2N(dim=D)
    with pytest.raises(ValueError, match="divide"):
        DEI2N(dim=D, user_dim=U, context_dim=C, heads=3)
