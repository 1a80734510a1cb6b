"""Tests for modules/sasrec.py (causal self-attention, last valid output) and the shared
modules/transformer.py block and mask."""
# Shape legend: B batch, L history length (padded), D embedding width.
from functools import partial

import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.sasrec import SASRec
from tinrec.modules.transformer import TransformerBlock, attention_mask

D = 4
make_batch = partial(batches.make_batch, D=D, time=True, query_time=False)  # no target position
make_sasrec = checks.seeded(SASRec, dim=D)


@pytest.mark.parametrize("time", [True, False])
@pytest.mark.parametrize("num_heads", [1, 2])
def test_shape_padding_invariance_and_empty_rows(time, num_heads):
    model = make_sasrec(num_heads=num_heads).eval()
    assert model.output_dim == 2 * D
    checks.assert_padding_is_ignored(model, make_batch([5, 2, 0, 1], time=time), zero_rows=[2])
    assert torch.equal(model(**make_batch([0, 0], L=0, time=time)), torch.zeros(2, 2 * D))


def test_gradients_reach_every_parameter_and_only_valid_inputs():
    checks.assert_gradient_flow(make_sasrec(), make_batch([5, 3, 0]))


def test_determinism_and_dropout_only_in_training():
    batch = make_batch([4, 2])
    checks.assert_seed_determines_the_module(make_sasrec, batch)
    checks.assert_dropout_only_in_training(make_sasrec, batch)


def test_output_is_the_last_valid_position_and_later_behaviours_do_not_count():
    model, batch = make_sasrec().eval(), make_batch([3, 5], L=5)
    out_BO = model(**batch)
    enc_BLD = model.encode(
        seq_BLD=batch["seq_BLD"], mask_BL=batch["mask_BL"], seq_time_BLD=batch["seq_time_BLD"]
    )
    h_BD = torch.stack([enc_BLD[0, 2], enc_BLD[1, 4]])
    torch.testing.assert_close(out_BO, torch.cat([h_BD, h_BD * batch["query_BD"]], -1))
    # Real-looking behaviours appended after the last valid one but marked as padding: no change.
    appended = make_batch([3, 5], L=8, seed=5)
    appended["seq_BLD"][:, :5] = batch["seq_BLD"]
    appended["seq_time_BLD"][:, :5] = batch["seq_time_BLD"]
    padding_B3 = torch.zeros(2, 3, dtype=torch.bool)
    appended.update(query_BD=batch["query_BD"], mask_BL=torch.cat([batch["mask_BL"], padding_B3], 1))
    torch.testing.assert_close(model(**appended), out_BO, rtol=0, atol=1e-6)
    # Changing an earlier behaviour changes h.
    changed = dict(batch, seq_BLD=batch["seq_BLD"].clone())
    changed["seq_BLD"][:, 0] += torch.randn(2, D)  # not a constant shift: LayerNorm ignores those
    assert ((model(**changed) - out_BO).abs().sum(-1) > 1e-4).all()


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal_block_output_at_t_ignores_later_positions(norm_first):
    torch.manual_seed(0)
    block = TransformerBlock(dim=D, num_heads=2, ffn_dim=D, norm_first=norm_first).eval()
    x_BLD, mask_BL = torch.randn(1, 5, D), torch.ones(1, 5, dtype=torch.bool)
    out_BLD = block(x_BLD=x_BLD, mask_BL=mask_BL, causal=True)
    for t in range(4):
        later = x_BLD.clone()
        later[:, t + 1 :] = torch.randn(1, 4 - t, D)
        out2_BLD = block(x_BLD=later, mask_BL=mask_BL, causal=True)
        torch.testing.assert_close(out2_BLD[:, : t + 1], out_BLD[:, : t + 1], rtol=0, atol=1e-6)
        assert (out2_BLD[0, t + 1 :] - out_BLD[0, t + 1 :]).abs().sum() > 1e-4
        earlier = x_BLD.clone()
        earlier[:, t] += torch.randn(1, D)  # position t + 1 sees position t
        out3_BLD = block(x_BLD=earlier, mask_BL=mask_BL, causal=True)
        assert (out3_BLD[0, t + 1] - out_BLD[0, t + 1]).abs().sum() > 1e-4


def test_attention_mask_masks_padded_keys_and_never_a_whole_row():
    mask_BL = torch.tensor([[True, True, False], [False, False, False]])
    causal = attention_mask(mask_BL, causal=True)
    assert causal.shape == (2, 1, 3, 3)
    expected_row0 = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    expected_row0[2, :2] = True  # padded query 2 sees the real keys and itself
    assert torch.equal(causal[0, 0], expected_row0)
    assert torch.equal(causal[1, 0], torch.eye(3, dtype=torch.bool))  # empty row: itself only
    keys = attention_mask(mask_BL)
    assert keys.shape == (2, 1, 1, 3)
    assert torch.equal(keys[:, 0, 0], torch.tensor([[True, True, False], [True, False, False]]))


def test_seq_time_is_added():
    model, batch = make_sasrec().eval(), make_batch([4, 2])
    summed = dict(batch, seq_BLD=batch["seq_BLD"] + batch.pop("seq_time_BLD"))
    torch.testing.assert_close(model(**make_batch([4, 2])), model(**summed))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_heads"):
        SASRec(dim=D, num_heads=3)
    with pytest.raises(ValueError, match="num_blocks"):
        SASRec(dim=D, num_blocks=0)
    with pytest.raises(ValueError, match="seq_BLD"):
        make_sasrec()(**dict(make_batch([2, 1], time=False), seq_BLD=torch.zeros(2, 5, D + 1)))


@pytest.mark.parametrize("norm_first", [True, False])
def test_right_padded_causal_uses_sdpa_is_causal_and_matches_the_explicit_mask(norm_first, monkeypatch):
    """Right-padded rows take SDPA's built-in causal mask (no [B, 1, L, L] tensor); values and gradients at
    real positions equal those of the explicit causal + key-padding mask."""
    from tinrec.modules import transformer

    torch.manual_seed(0)
    block = TransformerBlock(dim=D, num_heads=2, ffn_dim=D, norm_first=norm_first).train()
    lengths = torch.tensor([5, 3, 0, 1])
    mask_BL = torch.arange(5)[None, :] < lengths[:, None]
    assert transformer.is_right_padded(mask_BL)
    assert not transformer.is_right_padded(torch.tensor([[False, True, True]]))
    x_BLD = torch.randn(4, 5, D)

    original = transformer.is_right_padded

    def run(force_mask):
        monkeypatch.setattr(transformer, "is_right_padded", (lambda m: False) if force_mask else original)
        x = x_BLD.clone().requires_grad_(True)
        out = block(x_BLD=x, mask_BL=mask_BL, causal=True)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        return out, x.grad

    calls = []
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        _recording(torch.nn.functional.scaled_dot_product_attention, calls))
    out_fast, grad_fast = run(force_mask=False)
    out_mask, grad_mask = run(force_mask=True)
    assert calls == [(None, True), ("mask", False)]
    torch.testing.assert_close(out_fast, out_mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_fast, grad_mask, rtol=1e-5, atol=1e-6)
    assert not out_fast[~mask_BL].any()


def _recording(fn, calls):
    def wrapped(*args, attn_mask=None, is_causal=False, **kwargs):
        calls.append((None if attn_mask is None else "mask", is_causal))
        return fn(*args, attn_mask=attn_mask, is_causal=is_causal, **kwargs)
    return wrapped
