"""DIHN and DIAN (modules/dihn.py, modules/dian.py), DEI2N's trigger-induced baselines: their fusions and
mixtures by hand, the same-category auxiliary labels, padding of both sequences, empty rows, gradients."""
# Shape legend: B batch, L behaviours, K trigger-category behaviours, D width, T time width, U user width.
import pytest
import torch
import torch.nn.functional as F

from tests.modules.checks import assert_every_parameter_gets_gradient
from tinrec.modules.dian import DIAN, mixture_logit
from tinrec.modules.dihn import DIHN
from tinrec.modules.masking import masked_mean, masked_sum

D, T, U = 8, 4, 6


def _batch(lengths=(5, 2, 0, 3), hard_lengths=(2, 1, 0, 0), L=5, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    return dict(seq_BLD=torch.randn(B, L, D, generator=g), mask_BL=torch.arange(L)[None] < torch.tensor(lengths)[:, None],
                query_BD=torch.randn(B, D, generator=g), trigger_BD=torch.randn(B, D, generator=g),
                hard_BKD=torch.randn(B, K, D, generator=g),
                hard_mask_BK=torch.arange(K)[None] < torch.tensor(hard_lengths)[:, None],
                user_BU=torch.randn(B, U, generator=g), target_category_B=torch.tensor([3, 1, 2, 2]),
                trigger_category_B=torch.tensor([3, 2, 2, 1]))


def _garbage(b, extra=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = dict(b)
    for seq, mask, others in (("seq_BLD", "mask_BL", ["interval_BLT"]), ("hard_BKD", "hard_mask_BK", [])):
        m = b[mask]
        B, L = m.shape
        m2 = torch.cat([m, torch.zeros(B, extra, dtype=torch.bool)], dim=1)
        out[mask] = m2
        for key in [seq] + [o for o in others if o in b]:
            v = b[key]
            junk = torch.randn(B, L + extra, v.shape[-1], generator=g) * 1e3
            out[key] = torch.where(m2[..., None], torch.cat([v, junk[:, L:]], dim=1), junk)
    return out


def _eval_args(b):
    return {k: v for k, v in b.items() if not k.endswith("category_B")}


# ---- DIHN -------------------------------------------------------------------------------------------------
def _dihn(seed=0, **kw):
    torch.manual_seed(seed)
    return DIHN(**{**dict(dim=D, user_dim=U, time_dim=T, uin_hidden=(16, 8)), **kw})


def test_dihn_fuses_the_trigger_and_target_by_uins_p_and_reads_both_sequences():
    m, b = _dihn().eval(), _batch()
    b["interval_BLT"] = torch.randn(4, 5, T)
    out = m(**_eval_args(b))
    p = torch.softmax(m.intent(seq_BLD=b["seq_BLD"], mask_BL=b["mask_BL"], trigger_BD=b["trigger_BD"],
                               user_BU=b["user_BU"], interval_BLT=b["interval_BLT"]), -1)[:, :1]
    e_f = p * b["trigger_BD"] + (1 - p) * b["query_BD"]  # FEM
    soft = m.soft_attention(m.encode(b["seq_BLD"], b["mask_BL"]), b["mask_BL"], e_f)
    hard = masked_mean(m.encode(b["hard_BKD"], b["hard_mask_BK"]), b["hard_mask_BK"])
    s = masked_sum(b["seq_BLD"], b["mask_BL"])
    torch.testing.assert_close(out, torch.cat([soft, hard, b["query_BD"] * s, s], dim=-1))
    assert out.shape == (4, 4 * D) and m.output_dim == 4 * D
    assert torch.equal(out[2], torch.zeros(4 * D)) and torch.equal(out[3, D:2 * D], torch.zeros(D))
    torch.testing.assert_close(m(**_garbage(_eval_args(b))), out, rtol=0, atol=1e-4)


def test_dihn_auxiliary_label_is_same_category_and_only_in_training():
    m, b = _dihn(time_dim=0).train(), _batch()
    out, aux = m(**b)
    logits = m.intent(seq_BLD=b["seq_BLD"], mask_BL=b["mask_BL"], trigger_BD=b["trigger_BD"], user_BU=b["user_BU"])
    same = torch.tensor([1, 0, 1, 0])  # target category == trigger category
    torch.testing.assert_close(aux["aux"], F.cross_entropy(logits, 1 - same))  # class 0 = follows the trigger
    assert isinstance(m.eval()(**b), torch.Tensor) and isinstance(m.train()(**_eval_args(b)), torch.Tensor)
    (out.pow(2).sum() + aux["aux"]).backward()
    assert_every_parameter_gets_gradient(m)
    with pytest.raises(ValueError, match="interval_BLT exactly when"):
        _dihn()(**b)
    with pytest.raises(ValueError, match="both target_category_B"):
        m(**{k: v for k, v in b.items() if k != "trigger_category_B"})


# ---- DIAN -------------------------------------------------------------------------------------------------
def test_mixture_logit_is_the_logit_of_the_mixed_probability_and_stays_finite():
    g = torch.Generator().manual_seed(0)
    p, a, c = (torch.randn(50, generator=g) * 3 for _ in range(3))
    y = torch.sigmoid(p) * torch.sigmoid(a) + (1 - torch.sigmoid(p)) * torch.sigmoid(c)
    torch.testing.assert_close(mixture_logit(p, a, c), torch.log(y) - torch.log1p(-y), rtol=1e-4, atol=1e-4)
    big = torch.tensor([200.0, -200.0, 0.0])
    assert torch.isfinite(mixture_logit(big, -big, big.flip(0))).all()
    # p = 1 gives the trigger-aware net alone, p = 0 the trigger-free one
    torch.testing.assert_close(mixture_logit(torch.tensor([60.0]), torch.tensor([1.5]), torch.tensor([-2.0])),
                               torch.tensor([1.5]))


def _dian(seed=0, **kw):
    torch.manual_seed(seed)
    return DIAN(**{**dict(dim=D, user_dim=U, heads=2, head_dim=4, intent_hidden=(8,), tower_hidden=(8,)), **kw})


def test_dian_outputs_the_logit_of_its_intent_weighted_mixture_and_ignores_padding():
    m, b = _dian().eval(), _batch()
    out = m(**_eval_args(b))
    p, ya, yf = m.parts(**{k: v for k, v in _eval_args(b).items()})
    y = torch.sigmoid(p) * torch.sigmoid(ya) + (1 - torch.sigmoid(p)) * torch.sigmoid(yf)
    torch.testing.assert_close(torch.sigmoid(out.squeeze(-1)), y)
    assert out.shape == (4, 1) and DIAN.LOGIT_OUTPUT and torch.isfinite(out).all()
    torch.testing.assert_close(m(**_garbage(_eval_args(b))), out, rtol=0, atol=1e-4)


def test_dian_auxiliary_bce_on_same_category_and_gradients():
    m, b = _dian(aux_weight=0.1).train(), _batch()
    out, aux = m(**b)
    p, _, _ = m.parts(**_eval_args(b))
    torch.testing.assert_close(aux["aux"], 0.1 * F.binary_cross_entropy_with_logits(p, torch.tensor([1.0, 0, 1, 0])))
    (out.sum() + aux["aux"]).backward()
    assert_every_parameter_gets_gradient(m)
