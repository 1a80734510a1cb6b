"""Tests for modules/pooling.py: Avg Pooling & Concat / & Product."""
# Shape legend: B batch, L history length (padded), D embedding width.
from functools import partial

import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.pooling import AvgPooling

D = 3
make_batch = partial(batches.make_batch, D=D, L=4)
with_garbage_padding = partial(batches.with_garbage_padding, extra=2)


@pytest.mark.parametrize("product", [False, True])
def test_values_shape_padding_invariance_and_empty_rows(product):
    pool = AvgPooling(dim=D, product=product)
    assert pool.output_dim == (2 * D if product else D)
    batch = make_batch([4, 2, 0])
    out_BO = pool(**batch)
    assert out_BO.shape == (3, pool.output_dim)
    mean_BD = torch.stack(
        [batch["seq_BLD"][0].mean(0), batch["seq_BLD"][1, :2].mean(0), torch.zeros(D)]
    )
    expected = torch.cat([mean_BD, mean_BD * batch["query_BD"]], -1) if product else mean_BD
    torch.testing.assert_close(out_BO, expected)
    assert torch.equal(out_BO[2], torch.zeros(pool.output_dim))
    torch.testing.assert_close(pool(**with_garbage_padding(batch)), out_BO, rtol=0, atol=1e-6)


@pytest.mark.parametrize("product", [False, True])
def test_gradients_and_determinism(product):
    batch = make_batch([3, 0])
    batch["seq_BLD"].requires_grad_()
    batch["query_BD"].requires_grad_()
    pool = AvgPooling(dim=D, product=product)
    out_BO = pool(**batch)
    out_BO.pow(2).sum().backward()
    mask_BL = batch["mask_BL"]
    seq_grad_BLD = batch["seq_BLD"].grad
    assert torch.isfinite(seq_grad_BLD).all()
    checks.assert_gradient_only_at(seq_grad_BLD, mask_BL)
    if product:
        assert batch["query_BD"].grad[0].abs().sum() > 0
    else:
        assert batch["query_BD"].grad is None
    assert list(pool.parameters()) == []
    torch.manual_seed(0)
    again = make_batch([3, 0])
    assert torch.equal(AvgPooling(dim=D, product=product)(**again), out_BO.detach())


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="positive"):
        AvgPooling(dim=0)
    with pytest.raises(ValueError, match="mask_BL"):
        AvgPooling(dim=D)(seq_BLD=torch.zeros(2, 4, D), mask_BL=torch.ones(2, 3, dtype=torch.bool),
                          query_BD=torch.zeros(2, D))
