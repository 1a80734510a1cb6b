"""Tests for modules/din_split.py: DIN with separate TA / TR embedding spaces (TIN paper A.2, Eq. 6)."""
# Shape legend: B batch, L history length (padded), D behaviour width.
import math

import pytest
import torch

from tests.modules.batches import make_batch, with_garbage_padding
from tinrec.modules.din_split import SplitDIN

D, F = 6, 2  # two fields of width 3


@pytest.mark.parametrize("attention_dim", [0, 2, 4])
def test_shape_padding_invariance_and_empty_rows(attention_dim):
    mod = SplitDIN(dim=D, fields=F, attention_dim=attention_dim)
    R = D - attention_dim
    assert mod.output_dim == 3 * R
    batch = make_batch([5, 2, 0, 1], D=D)
    out = mod(**batch)
    assert out.shape == (4, 3 * R) and torch.isfinite(out).all()
    # empty history: u = 0 and u * v = 0, but v^TR is still there
    assert torch.equal(out[2, :R], torch.zeros(R)) and torch.equal(out[2, 2 * R:], torch.zeros(R))
    torch.testing.assert_close(out[2, R:2 * R], mod.split(batch["query_BD"])[1][2])
    torch.testing.assert_close(mod(**with_garbage_padding(batch)), out, rtol=0, atol=1e-6)


def test_equation_6_by_hand():
    """Columns 0 and 3 (the first of each field) are the TA space, 1, 2, 4, 5 the TR space."""
    mod = SplitDIN(dim=D, fields=F, attention_dim=2)
    batch = make_batch([3, 1], D=D, L=4, seed=3)
    out = mod(**batch)
    ta, tr = [0, 3], [1, 2, 4, 5]
    for b in range(2):
        n = int(batch["mask_BL"][b].sum())
        e, v = batch["seq_BLD"][b, :n], batch["query_BD"][b]
        z = torch.tensor([float(e[i, ta] @ v[ta]) / math.sqrt(2) for i in range(n)])
        alpha = torch.exp(z) / torch.exp(z).sum()
        u = sum(alpha[i] * e[i, tr] for i in range(n))
        torch.testing.assert_close(out[b], torch.cat([u, v[tr], u * v[tr]]))
        cor = mod.learned_correlation(**batch)[b, :n]
        torch.testing.assert_close(cor, torch.exp(z) * torch.linalg.vector_norm(e[:, tr] * v[tr], dim=-1))


def test_attention_disabled_is_the_mean_and_ta_columns_only_steer_weights():
    batch = make_batch([4, 2], D=D)
    off = SplitDIN(dim=D, fields=F, attention_dim=0)
    mask = batch["mask_BL"].unsqueeze(-1).float()
    mean = (batch["seq_BLD"] * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(off(**batch)[:, :D], mean)
    # with d_TA > 0, changing only the TA columns changes the weights, never the TR values pooled
    on = SplitDIN(dim=D, fields=F, attention_dim=2)
    moved = dict(batch, seq_BLD=batch["seq_BLD"].clone())
    moved["seq_BLD"][..., [0, 3]] += torch.randn(2, 5, 2)  # per behaviour, so softmax sees it
    w0, w1 = on.attention_weights(**{k: batch[k] for k in ("seq_BLD", "mask_BL", "query_BD")}), \
        on.attention_weights(**{k: moved[k] for k in ("seq_BLD", "mask_BL", "query_BD")})
    assert not torch.allclose(w0, w1)
    _, tr0 = on.split(batch["seq_BLD"])
    _, tr1 = on.split(moved["seq_BLD"])
    assert torch.equal(tr0, tr1)


def test_gradients_reach_both_spaces():
    mod = SplitDIN(dim=D, fields=F, attention_dim=2)
    batch = make_batch([4, 3, 0], D=D)
    batch["seq_BLD"].requires_grad_()
    batch["query_BD"].requires_grad_()
    mod(**batch).pow(2).sum().backward()
    for name in ("seq_BLD", "query_BD"):
        grad = batch[name].grad
        assert torch.isfinite(grad).all()
        assert grad[..., [0, 3]].abs().sum() > 0, f"{name}: no gradient to the TA columns"
        assert grad[..., [1, 2, 4, 5]].abs().sum() > 0, f"{name}: no gradient to the TR columns"
    assert batch["seq_BLD"].grad[:, :, :][~batch["mask_BL"]].abs().sum() == 0  # nothing flows into padding


@pytest.mark.parametrize("kwargs", [dict(dim=6, fields=4, attention_dim=0), dict(dim=6, fields=2, attention_dim=3),
                                    dict(dim=6, fields=2, attention_dim=6), dict(dim=6, fields=2, attention_dim=-2)])
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(ValueError, match="SplitDIN"):
        SplitDIN(**kwargs)
