"""Tests for modules/gru4rec.py: GRU over the valid behaviours, last valid state, [h, h ⊙ v_h]."""
# Shape legend: B batch, L history length (padded), D embedding width, H hidden width.
from functools import partial

import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.gru4rec import GRU4Rec

D = 4
make_batch = partial(batches.make_batch, D=D)
CONFIGS = [dict(), dict(hidden=6), dict(hidden=3, num_layers=2)]
make_gru4rec = checks.seeded(GRU4Rec, dim=D)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_shape_padding_invariance_and_empty_rows(kwargs):
    model = make_gru4rec(**kwargs).eval()
    H = kwargs.get("hidden", D)
    assert model.output_dim == 2 * H
    checks.assert_padding_is_ignored(model, make_batch([5, 2, 0, 1]), zero_rows=[2])
    # all-empty batches, also with no time step at all, give finite zeros
    for L in (3, 0):
        empty = make_batch([0, 0], L=L)
        assert torch.equal(model(**empty), torch.zeros(2, 2 * H))


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_hand_example_matches_nn_gru_on_each_unpadded_row(kwargs):
    model = make_gru4rec(**kwargs).eval()
    lengths = [3, 5, 1]
    batch = make_batch(lengths)
    out_BO = model(**batch)
    for b, n in enumerate(lengths):
        _, h_n = model.gru(batch["seq_BLD"][b : b + 1, :n])  # plain nn.GRU, no padding at all
        h_H = h_n[-1, 0]
        v_H = batch["query_BD"][b] if "hidden" not in kwargs else model.query_proj(batch["query_BD"][b])
        torch.testing.assert_close(out_BO[b], torch.cat([h_H, h_H * v_H]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_gradients_reach_every_parameter_and_only_valid_inputs(kwargs):
    checks.assert_gradient_flow(make_gru4rec(**kwargs), make_batch([5, 3, 0]))


def test_determinism_under_manual_seed():
    checks.assert_seed_determines_the_module(make_gru4rec, make_batch([4, 2]))


def test_dropout_only_in_training():
    checks.assert_dropout_only_in_training(make_gru4rec, make_batch([4, 2, 3]), seed=2)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="hidden"):
        GRU4Rec(dim=D, hidden=0)
    with pytest.raises(ValueError, match="dropout"):
        GRU4Rec(dim=D, dropout=1.0)
    batch = make_batch([2, 1])
    with pytest.raises(ValueError, match="right-padded"):
        make_gru4rec()(**dict(batch, mask_BL=batch["mask_BL"].flip(1)))
    with pytest.raises(ValueError, match="seq_BLD"):
        make_gru4rec()(**dict(batch, seq_BLD=torch.zeros(2, 5, D + 1)))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_run_gru_equals_the_gru_on_each_valid_prefix_values_and_gradients(num_layers):
    """The padded run (linear in L, unlike CPU backward through packed sequences) gives, for every row, the
    outputs and final state of the GRU run on that row's valid steps alone, and the same gradients."""
    from tinrec.modules.gru4rec import run_gru

    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, num_layers=num_layers, batch_first=True)
    lengths = [4, 1, 0, 2]
    mask = torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(4, 4, 3)
    x = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 1e3)).requires_grad_(True)  # garbage padding
    out, last = run_gru(gru, x, mask)
    (out.sin().sum() + last.cos().sum()).backward()
    for b, n in enumerate(lengths):
        xb = x.detach()[b:b + 1, :n].clone().requires_grad_(True)
        if n == 0:
            assert not out[b].any() and not last[b].any() and not x.grad[b].any()
            continue
        ref_out, ref_h = gru(xb)
        torch.testing.assert_close(out[b, :n], ref_out[0])
        torch.testing.assert_close(last[b], ref_h[-1, 0])
        assert not out[b, n:].any()
        (ref_out.sin().sum() + ref_h[-1].cos().sum()).backward()
        torch.testing.assert_close(x.grad[b, :n], xb.grad[0])
        assert not x.grad[b, n:].any()
