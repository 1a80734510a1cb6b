"""Tests for modules/dien.py: extractor GRU, auxiliary loss, attention and the AUGRU."""
# Shape legend: B batch, L history length (padded), D embedding width, H hidden width.
from functools import partial

import pytest
import torch

from tests.modules import batches, checks
from tests.modules.batches import with_garbage_padding
from tinrec.modules.dien import DIEN

D = 4
make_batch = partial(batches.make_batch, D=D, negatives=True)  # neg_seq_BLD for the auxiliary loss
make_dien = checks.seeded(DIEN, dim=D, aux_hidden=(8, 4))


def aux_of(result):
    """(out, {"aux": loss}) -> (out, loss): the auxiliary loss is DIEN's one named loss."""
    out_BO, losses = result
    assert isinstance(losses, dict) and set(losses) == {"aux"}
    return out_BO, losses["aux"]


def without_negatives(batch):
    return {k: v for k, v in batch.items() if k != "neg_seq_BLD"}


@pytest.mark.parametrize("hidden", [None, 6])
def test_shape_padding_invariance_and_empty_rows(hidden):
    model = make_dien(hidden=hidden).train()
    H = hidden or D
    assert model.output_dim == 2 * H
    batch = make_batch([5, 2, 0, 1, 3])
    out_BO, aux = aux_of(model(**batch))
    assert out_BO.shape == (5, 2 * H) and aux.shape == ()
    assert torch.isfinite(out_BO).all() and torch.isfinite(aux)
    assert torch.equal(out_BO[2], torch.zeros(2 * H))
    garbage_out_BO, garbage_aux = aux_of(model(**with_garbage_padding(batch)))
    torch.testing.assert_close(garbage_out_BO, out_BO, rtol=0, atol=1e-5)
    torch.testing.assert_close(garbage_aux, aux, rtol=0, atol=1e-5)
    # all-empty batches (also with no time step at all): zeros and a zero auxiliary loss
    for L in (3, 0):
        out_BO, aux = aux_of(model(**make_batch([0, 0], L=L)))
        assert torch.equal(out_BO, torch.zeros(2, 2 * H)) and aux.item() == 0.0


def test_aux_loss_only_in_training_with_negatives():
    model, batch = make_dien(), make_batch([4, 2])
    out_train, aux = aux_of(model.train()(**batch))
    assert isinstance(model.train()(**without_negatives(batch)), torch.Tensor)
    out_eval = model.eval()(**batch)
    assert isinstance(out_eval, torch.Tensor)
    torch.testing.assert_close(out_eval, out_train)  # no dropout / batch statistics in DIEN
    torch.testing.assert_close(model(**without_negatives(batch)), out_eval)


@pytest.mark.parametrize("hidden", [None, 6])
def test_gradients_reach_every_parameter_and_only_valid_inputs(hidden):
    model = make_dien(hidden=hidden).train()
    batch = make_batch([5, 3, 0])
    for key in ("seq_BLD", "neg_seq_BLD"):
        batch[key].requires_grad_()
    out_BO, aux = aux_of(model(**batch))
    (out_BO.pow(2).sum() + aux).backward()
    checks.assert_every_parameter_gets_gradient(model)
    mask_BL = batch["mask_BL"]
    checks.assert_gradient_only_at(batch["seq_BLD"].grad, mask_BL)
    assert torch.equal(batch["neg_seq_BLD"].grad[~mask_BL], torch.zeros(int((~mask_BL).sum()), D))
    # a negative enters only as e~_{t+1} of a valid pair: never the first behaviour
    assert torch.equal(batch["neg_seq_BLD"].grad[:, 0], torch.zeros(3, D))


def test_determinism_under_manual_seed():
    batch = make_batch([4, 2])
    a_out, a_aux = aux_of(make_dien(seed=3)(**batch))
    b_out, b_aux = aux_of(make_dien(seed=3)(**batch))
    assert torch.equal(a_out, b_out) and torch.equal(a_aux, b_aux)
    assert not torch.equal(make_dien(seed=4)(**batch)[0], a_out)


def _paper_gru_step(augru, x_I, h_H, a):
    """One AUGRU step written from the paper's equations (Eq. 1-4 with u scaled by a, Eq. 9-10)."""
    H = augru.hidden
    W_r, W_u, W_h = augru.input_proj.weight.split(H)
    b_r, b_u, b_h = augru.input_proj.bias.split(H)
    U_r, U_u, U_h = augru.hidden_proj.weight.split(H)
    c_r, c_u, c_h = augru.hidden_proj.bias.split(H)
    r = torch.sigmoid(W_r @ x_I + b_r + U_r @ h_H + c_r)
    u = a * torch.sigmoid(W_u @ x_I + b_u + U_u @ h_H + c_u)
    h_tilde = torch.tanh(W_h @ x_I + b_h + r * (U_h @ h_H + c_h))
    return (1 - u) * h_H + u * h_tilde


def test_augru_with_unit_attention_is_a_plain_gru():
    model = make_dien(hidden=3).eval()
    augru, H = model.augru, 3
    g = torch.Generator().manual_seed(5)
    x_BTI = torch.randn(2, 4, H, generator=g)
    mask_BT = torch.tensor([[True, True, True, True], [True, True, False, False]])
    final_BH = augru(x_BTI, torch.ones(2, 4), mask_BT)
    # plain GRU recurrence, step by step, from the paper's equations
    for b, n in enumerate([4, 2]):
        h_H = torch.zeros(H)
        for t in range(n):
            h_H = _paper_gru_step(augru, x_BTI[b, t], h_H, 1.0)
        torch.testing.assert_close(final_BH[b], h_H, rtol=1e-5, atol=1e-6)
    # and PyTorch's GRUCell with the same weights (its z is 1 - u: negate the update-gate rows)
    cell = torch.nn.GRUCell(H, H)
    sign_3H1 = torch.tensor([1.0, -1.0, 1.0]).repeat_interleave(H).unsqueeze(1)
    with torch.no_grad():
        cell.weight_ih.copy_(augru.input_proj.weight * sign_3H1)
        cell.bias_ih.copy_(augru.input_proj.bias * sign_3H1[:, 0])
        cell.weight_hh.copy_(augru.hidden_proj.weight * sign_3H1)
        cell.bias_hh.copy_(augru.hidden_proj.bias * sign_3H1[:, 0])
    h_BH = torch.zeros(1, H)
    for t in range(4):
        h_BH = cell(x_BTI[:1, t], h_BH)
    torch.testing.assert_close(final_BH[:1], h_BH, rtol=1e-5, atol=1e-6)


def test_augru_zero_attention_keeps_the_state():
    augru = make_dien(hidden=3).augru
    g = torch.Generator().manual_seed(6)
    x_BTI = torch.randn(1, 3, 3, generator=g)
    full_BT = torch.ones(1, 3, dtype=torch.bool)
    # a_2 = 0: the state after step 2 equals the one after step 1, so step 3 sees h'_1
    skipped_BH = augru(x_BTI, torch.tensor([[0.7, 0.0, 0.4]]), full_BT)
    expected_BH = augru(x_BTI[:, [0, 2]], torch.tensor([[0.7, 0.4]]), full_BT[:, :2])
    torch.testing.assert_close(skipped_BH, expected_BH, rtol=1e-6, atol=1e-7)
    # a_3 = 0 at the last step: the final state is the one after step 2
    last_zero_BH = augru(x_BTI, torch.tensor([[0.7, 0.2, 0.0]]), full_BT)
    torch.testing.assert_close(last_zero_BH, augru(x_BTI[:, :2], torch.tensor([[0.7, 0.2]]), full_BT[:, :2]))
    # a_t = 0 everywhere: the state never leaves h'_0 = 0
    assert torch.equal(augru(x_BTI, torch.zeros(1, 3), full_BT), torch.zeros(1, 3))
    # padded steps keep the state whatever their attention and inputs hold
    first_two_BT = torch.tensor([[True, True, False]])
    garbage_BTI = torch.cat([x_BTI[:, :2], torch.full((1, 1, 3), 1e4)], dim=1)
    torch.testing.assert_close(augru(garbage_BTI, torch.tensor([[0.7, 0.2, 5.0]]), first_two_BT),
                               augru(x_BTI[:, :2], torch.tensor([[0.7, 0.2]]), full_BT[:, :2]))


def test_forward_composes_extractor_attention_and_augru():
    model, batch = make_dien(hidden=6).eval(), make_batch([3, 5, 1])
    out_BO = model(**without_negatives(batch))
    for b, n in enumerate([3, 5, 1]):
        e_1TD, v_D = batch["seq_BLD"][b : b + 1, :n], batch["query_BD"][b]
        h_1TH, _ = model.extractor(e_1TD)
        a_T = torch.softmax(h_1TH[0] @ model.att_proj.weight @ v_D, dim=0)  # h_t^T W v
        h_H = torch.zeros(6)
        for t in range(n):
            h_H = _paper_gru_step(model.augru, h_1TH[0, t], h_H, a_T[t])
        v_H = model.query_proj(v_D)
        torch.testing.assert_close(out_BO[b], torch.cat([h_H, h_H * v_H]), rtol=1e-5, atol=1e-6)


def test_trigger_attention_drives_its_own_augru_over_the_same_states():
    """DIEN+TRA: the output gains h'^tr_T, the second AUGRU's state under the trigger's attention
    softmax_t(h_t^T W_tr e_tr); the first 2H values are DIEN's own; padding is ignored; a mismatched binding
    is refused."""
    plain, model = make_dien(hidden=6).eval(), make_dien(hidden=6, trigger=True).eval()
    batch = make_batch([3, 5, 0])
    trigger_BD = torch.randn(3, D, generator=torch.Generator().manual_seed(5))
    out_BO = model(**without_negatives(batch), trigger_BD=trigger_BD)
    assert out_BO.shape == (3, 18) and model.output_dim == 18
    torch.testing.assert_close(out_BO[:, :12], plain(**without_negatives(batch)))
    assert torch.equal(out_BO[2], torch.zeros(18))
    for b, n in enumerate([3, 5]):
        h_1TH, _ = model.extractor(batch["seq_BLD"][b : b + 1, :n])
        a_T = torch.softmax(h_1TH[0] @ model.trigger_att_proj.weight @ trigger_BD[b], dim=0)
        h_H = torch.zeros(6)
        for t in range(n):
            h_H = _paper_gru_step(model.trigger_augru, h_1TH[0, t], h_H, a_T[t])
        torch.testing.assert_close(out_BO[b, 12:], h_H, rtol=1e-5, atol=1e-6)
    garbage = with_garbage_padding(without_negatives(batch))
    torch.testing.assert_close(model(**garbage, trigger_BD=trigger_BD), out_BO, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="trigger_BD exactly when"):
        model(**without_negatives(batch))
    with pytest.raises(ValueError, match="trigger_BD exactly when"):
        plain(**without_negatives(batch), trigger_BD=trigger_BD)


def test_aux_loss_hand_example():
    model = make_dien(aux_weight=0.5).train()
    lengths = [3, 1, 0, 2]  # valid pairs (t, t+1): row 0 -> (0,1), (1,2); row 3 -> (0,1)
    batch = make_batch(lengths, L=4)
    _, aux = aux_of(model(**batch))
    terms = []
    for b, n in enumerate(lengths):
        h_1TH, _ = model.extractor(batch["seq_BLD"][b : b + 1, :n]) if n else (None, None)
        for t in range(n - 1):
            h_H = h_1TH[0, t]
            pos = torch.sigmoid(model.aux_net(torch.cat([h_H, batch["seq_BLD"][b, t + 1]])))
            neg = torch.sigmoid(model.aux_net(torch.cat([h_H, batch["neg_seq_BLD"][b, t + 1]])))
            terms.append(-torch.log(pos) - torch.log(1 - neg))
    assert len(terms) == 3
    expected = 0.5 * torch.stack(terms).mean()
    torch.testing.assert_close(aux, expected, rtol=1e-5, atol=1e-6)
    # no valid pair in the batch: the loss is 0 (and still differentiable)
    _, aux = aux_of(model(**make_batch([1, 0, 1], L=3)))
    assert aux.item() == 0.0
    aux.backward()


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="positive"):
        DIEN(dim=0)
    with pytest.raises(ValueError, match="aux_weight"):
        DIEN(dim=D, aux_weight=-1.0)
    batch = make_batch([2, 1])
    with pytest.raises(ValueError, match="neg_seq_BLD"):
        make_dien()(**dict(batch, neg_seq_BLD=torch.zeros(2, 4, D)))
    with pytest.raises(ValueError, match="right-padded"):
        make_dien()(**dict(batch, mask_BL=batch["mask_BL"].flip(1)))
