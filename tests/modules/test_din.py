"""Tests for modules/din.py: DIN (softmax, released code) and DIN' (raw weights)."""
# Shape legend: B batch, L history length (padded), D embedding width.
import itertools
import math
from functools import partial

import pytest
import torch

from tests.modules import batches, checks
from tests.modules.batches import with_garbage_padding
from tinrec.modules.din import DIN

D = 4
make_batch = partial(batches.make_batch, D=D)
VARIANTS = list(itertools.product([True, False], [True, False]))  # (softmax, product)
make_din = checks.seeded(DIN, dim=D, attention_hidden=(8, 4))


@pytest.mark.parametrize("softmax,product", VARIANTS)
@pytest.mark.parametrize("activation", ["prelu", "dice"])
def test_shape_padding_invariance_and_empty_rows(softmax, product, activation):
    din = make_din(softmax=softmax, product=product, activation=activation)
    assert din.output_dim == (2 * D if product else D)
    batch = make_batch([5, 2, 0, 1])
    for training in (True, False):  # Dice uses batch stats in train, running stats in eval
        checks.assert_padding_is_ignored(din.train(training), batch, zero_rows=[2], atol=1e-6)


@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("activation", ["prelu", "dice"])
def test_gradients(softmax, activation):
    din = make_din(softmax=softmax, activation=activation)
    batch = make_batch([5, 3, 0])
    batch["seq_BLD"].requires_grad_()
    batch["query_BD"].requires_grad_()
    din(**batch).pow(2).sum().backward()
    last_bias = din.activation_unit.layers[-1].bias
    checks.assert_every_parameter_gets_gradient(din, except_for=[last_bias] if softmax else [])
    if softmax:
        # softmax is shift invariant: the final bias gets no gradient (up to rounding)
        assert last_bias.grad.abs().max() < 1e-5
    checks.assert_gradient_only_at(batch["seq_BLD"].grad, batch["mask_BL"])
    assert torch.isfinite(batch["query_BD"].grad).all()
    assert (batch["query_BD"].grad[:2].abs().sum(-1) > 0).all()


def test_determinism_under_manual_seed():
    checks.assert_seed_determines_the_module(make_din, make_batch([4, 2]))


def test_activation_unit_input_and_scaled_logits():
    din, batch = make_din().eval(), make_batch([3, 2])
    seq_BLD, query_BD = batch["seq_BLD"], batch["query_BD"]
    v_BLD = query_BD.unsqueeze(1).expand_as(seq_BLD)
    unit_in = torch.cat([v_BLD, seq_BLD, v_BLD - seq_BLD, v_BLD * seq_BLD], dim=-1)
    expected_BL = din.activation_unit(unit_in).squeeze(-1) / math.sqrt(D)
    logit_BL = din.attention_logits(**batch)
    torch.testing.assert_close(logit_BL[batch["mask_BL"]], expected_BL[batch["mask_BL"]])


@pytest.mark.parametrize("activation", ["prelu", "dice"])
def test_factorised_first_layer_equals_the_concatenated_input_values_and_gradients(activation):
    """The unit never builds [v, e, v - e, v ⊙ e]; values and every gradient match the form that does."""
    batch = make_batch([5, 2, 4], seed=2)

    def run(factorised):
        din = make_din(seed=7, activation=activation).train()
        seq = batch["seq_BLD"].clone().requires_grad_(True)
        query = batch["query_BD"].clone().requires_grad_(True)
        if factorised:
            logit = din.attention_logits(seq_BLD=seq, mask_BL=batch["mask_BL"], query_BD=query)
        else:
            e = seq * batch["mask_BL"].unsqueeze(-1)
            v = query.unsqueeze(1).expand_as(e)
            unit_in = torch.cat([v, e, v - e, v * e], dim=-1)
            logit = din.activation_unit(unit_in, batch["mask_BL"]).squeeze(-1) / math.sqrt(D)
        (logit[batch["mask_BL"]] ** 2).sum().backward()
        return logit[batch["mask_BL"]], seq.grad, query.grad, din.activation_unit.layers[0].weight.grad

    for got, want in zip(run(True), run(False)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_softmax_weights_sum_to_one_over_valid_positions():
    din, batch = make_din().eval(), make_batch([5, 2, 0])
    weight_BL = din.attention_weights(**batch)
    torch.testing.assert_close(weight_BL.sum(-1), torch.tensor([1.0, 1.0, 0.0]))
    assert torch.equal(weight_BL[~batch["mask_BL"]], torch.zeros(int((~batch["mask_BL"]).sum())))
    pooled_BD = (weight_BL.unsqueeze(-1) * batch["seq_BLD"]).sum(1)
    out_B2D = din(**batch)
    torch.testing.assert_close(out_B2D, torch.cat([pooled_BD, pooled_BD * batch["query_BD"]], -1))


def test_din_prime_scales_with_duplicated_behaviours_din_does_not():
    batch = make_batch([2], L=2)
    doubled = dict(
        batch, seq_BLD=batch["seq_BLD"].repeat(1, 2, 1), mask_BL=batch["mask_BL"].repeat(1, 2)
    )
    din, din_prime = make_din().eval(), make_din(softmax=False).eval()
    torch.testing.assert_close(din(**doubled), din(**batch))
    torch.testing.assert_close(din_prime(**doubled), 2 * din_prime(**batch))
    raw_BL = din_prime.attention_logits(**batch)
    torch.testing.assert_close(din_prime.attention_weights(**batch), raw_BL)  # no normalisation


def test_product_flag_changes_the_output_width_only_by_the_product():
    batch = make_batch([3, 1])
    with_product = make_din(seed=5, product=True).eval()(**batch)
    without = make_din(seed=5, product=False).eval()(**batch)
    assert with_product.shape == (2, 2 * D) and without.shape == (2, D)
    torch.testing.assert_close(with_product, torch.cat([without, without * batch["query_BD"]], -1))


@pytest.mark.parametrize("softmax,product", VARIANTS)
def test_learned_correlation(softmax, product):
    din, batch = make_din(softmax=softmax, product=product).eval(), make_batch([4, 2, 0])
    mask_BL, seq_BLD, query_BD = batch["mask_BL"], batch["seq_BLD"], batch["query_BD"]
    rep_BLD = seq_BLD * query_BD.unsqueeze(1) if product else seq_BLD
    expected_BL = torch.exp(din.attention_logits(**batch)) * rep_BLD.norm(dim=-1)
    cor_BL = din.learned_correlation(**batch)
    torch.testing.assert_close(cor_BL[mask_BL], expected_BL[mask_BL])
    assert torch.equal(cor_BL[~mask_BL], torch.zeros(int((~mask_BL).sum())))
    garbage_cor_BL = din.learned_correlation(**with_garbage_padding(batch))
    torch.testing.assert_close(garbage_cor_BL[:, :5], cor_BL, rtol=0, atol=1e-6)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown activation"):
        DIN(dim=D, activation="swish")
    with pytest.raises(ValueError, match="positive"):
        DIN(dim=0)
    with pytest.raises(ValueError, match="seq_BLD"):
        make_din()(seq_BLD=torch.zeros(2, 3, D + 1), mask_BL=torch.ones(2, 3, dtype=torch.bool),
                   query_BD=torch.zeros(2, D))


def test_temporal_encodings_given_are_added():
    batch = make_batch([4, 2, 0])
    g = torch.Generator().manual_seed(3)
    B, L, _ = batch["seq_BLD"].shape
    time = dict(seq_time_BLD=torch.randn(B, L, D, generator=g), query_time_BD=torch.randn(B, D, generator=g))
    din = make_din()
    summed = dict(batch, seq_BLD=batch["seq_BLD"] + time["seq_time_BLD"], query_BD=batch["query_BD"] + time["query_time_BD"])
    torch.testing.assert_close(din(**batch, **time), din(**summed))
    assert not torch.allclose(din(**batch, **time), din(**batch))
    with pytest.raises(ValueError, match="seq_time_BLD"):
        din(**batch, seq_time_BLD=time["seq_time_BLD"])
