"""Wide & Deep (+TR) (modules/wide_deep.py): the logit is deep + wide on a hand-checked composition; padding,
the trigger binding, gradients."""
import pytest
import torch

from tests.modules.checks import assert_every_parameter_gets_gradient
from tinrec.modules.masking import masked_sum
from tinrec.modules.wide_deep import WideDeep

D, U = 4, 3


def _batch(lengths=(3, 1, 0, 2), L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    return dict(seq_BLD=torch.randn(B, L, D, generator=g), mask_BL=torch.arange(L)[None] < torch.tensor(lengths)[:, None],
                query_BD=torch.randn(B, D, generator=g), user_BU=torch.randn(B, U, generator=g))


@pytest.mark.parametrize("trigger", [False, True])
def test_logit_is_deep_plus_wide(trigger):
    torch.manual_seed(0)
    m = WideDeep(dim=D, user_dim=U, hidden=(5,), trigger=trigger).eval()
    b = _batch()
    if trigger:
        b["trigger_BD"] = torch.randn(4, D)
    out = m(**b)
    s = masked_sum(b["seq_BLD"], b["mask_BL"])
    assert torch.equal(s[2], torch.zeros(D))
    deep_in = torch.cat([b["user_BU"], b["query_BD"], s] + ([b["trigger_BD"]] if trigger else []), dim=-1)
    wide = torch.cat([b["user_BU"], b["query_BD"], b["query_BD"] * s], dim=-1) @ m.wide.weight.t()
    torch.testing.assert_close(out, m.deep(m.norm(deep_in)) + wide)
    assert out.shape == (4, 1) and m.output_dim == 1 and WideDeep.LOGIT_OUTPUT
    junk = dict(b, seq_BLD=torch.where(b["mask_BL"][..., None], b["seq_BLD"], torch.full_like(b["seq_BLD"], 1e4)))
    torch.testing.assert_close(m(**junk), out)  # padding never enters


def test_gradients_and_the_trigger_binding():
    torch.manual_seed(0)
    m = WideDeep(dim=D, user_dim=U, trigger=True).train()
    b = dict(_batch(), trigger_BD=torch.randn(4, D))
    m(**b).pow(2).sum().backward()
    assert_every_parameter_gets_gradient(m)
    with pytest.raises(ValueError, match="trigger_BD exactly when"):
        m(**_batch())
    with pytest.raises(ValueError, match="trigger_BD exactly when"):
        WideDeep(dim=D, user_dim=U)(**b)
