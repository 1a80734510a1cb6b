"""Tests for modules/gru4rec.py: GRU over the valid behaviours, last valid state, [h, h ⊙ v_h]."""
# Shape legend: B batch, L history length (padded), D embedding width, H hidden width.
import pytest
import torch

from tinrec.modules.gru4rec import GRU4Rec

D = 4
CONFIGS = [dict(), dict(hidden=6), dict(hidden=3, num_layers=2)]


def make_batch(lengths, L=5, seed=0):
    """Random inputs with the given history lengths (right-padded to L)."""
    g = torch.Generator().manual_seed(seed)
    mask_BL = torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    B = len(lengths)
    return dict(
        seq_BLD=torch.randn(B, L, D, generator=g),
        mask_BL=mask_BL,
        query_BD=torch.randn(B, D, generator=g),
    )


def with_garbage_padding(batch, extra=3, seed=1):
    """Same batch with large random values under padding and `extra` more padded positions."""
    g = torch.Generator().manual_seed(seed)
    B, L = batch["mask_BL"].shape
    mask_BL = torch.cat([batch["mask_BL"], torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    garbage_BLD = torch.randn(B, L + extra, D, generator=g) * 1e4
    seq_BLD = torch.cat([batch["seq_BLD"], garbage_BLD[:, L:]], dim=1)
    seq_BLD = torch.where(mask_BL.unsqueeze(-1), seq_BLD, garbage_BLD)
    return dict(batch, seq_BLD=seq_BLD, mask_BL=mask_BL)


def make_gru4rec(seed=0, **kwargs):
    torch.manual_seed(seed)
    return GRU4Rec(dim=D, **kwargs)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_shape_padding_invariance_and_empty_rows(kwargs):
    model = make_gru4rec(**kwargs).eval()
    H = kwargs.get("hidden", D)
    assert model.output_dim == 2 * H
    batch = make_batch([5, 2, 0, 1])
    out_BO = model(**batch)
    assert out_BO.shape == (4, 2 * H)
    assert torch.isfinite(out_BO).all()
    assert torch.equal(out_BO[2], torch.zeros(2 * H))
    torch.testing.assert_close(model(**with_garbage_padding(batch)), out_BO, rtol=0, atol=1e-5)
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
    model = make_gru4rec(**kwargs)
    batch = make_batch([5, 3, 0])
    batch["seq_BLD"].requires_grad_()
    model(**batch).pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    mask_BL, grad_BLD = batch["mask_BL"], batch["seq_BLD"].grad
    assert torch.equal(grad_BLD[~mask_BL], torch.zeros(int((~mask_BL).sum()), D))
    assert (grad_BLD[mask_BL].abs().sum(-1) > 0).all()


def test_determinism_under_manual_seed():
    batch = make_batch([4, 2])
    assert torch.equal(make_gru4rec(seed=3)(**batch), make_gru4rec(seed=3)(**batch))
    assert not torch.equal(make_gru4rec(seed=3)(**batch), make_gru4rec(seed=4)(**batch))


def test_dropout_only_in_training():
    batch = make_batch([4, 2, 3])
    plain = make_gru4rec(seed=2).eval()
    dropped = make_gru4rec(seed=2, dropout=0.5)
    torch.testing.assert_close(dropped.eval()(**batch), plain(**batch))
    torch.manual_seed(0)
    assert not torch.equal(dropped.train()(**batch), plain(**batch))


def test_time_inputs_are_accepted_and_ignored():
    model, batch = make_gru4rec().eval(), make_batch([3, 1])
    with_time = dict(batch, seq_time_BLD=torch.randn(2, 5, D), query_time_BD=torch.randn(2, D))
    torch.testing.assert_close(model(**with_time), model(**batch))


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
