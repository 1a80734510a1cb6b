"""Tests for modules/mlp.py: MLP shapes, activations, and Dice's batch/running statistics."""
# Shape legend: B batch, L history length, N rows, H units.
import pytest
import torch
from torch import nn

from tinrec.modules.mlp import MLP, Dice


@pytest.mark.parametrize("activation", ["relu", "prelu", "sigmoid", "dice"])
def test_shapes_on_leading_dims_and_output_dim(activation):
    torch.manual_seed(0)
    mlp = MLP(in_dim=6, hidden_dims=(5, 3), activation=activation, dropout=0.1, out_dim=1)
    assert mlp.output_dim == 1
    assert mlp(torch.randn(4, 7, 6)).shape == (4, 7, 1)
    assert mlp(torch.randn(4, 6)).shape == (4, 1)
    assert MLP(in_dim=6, hidden_dims=(5, 3)).output_dim == 3
    assert MLP(in_dim=6, hidden_dims=()).output_dim == 6


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        MLP(in_dim=4, hidden_dims=(2,), activation="tanh")
    with pytest.raises(ValueError, match="dropout"):
        MLP(in_dim=4, hidden_dims=(2,), dropout=1.0)
    with pytest.raises(ValueError, match="positive"):
        MLP(in_dim=4, hidden_dims=(0,))
    with pytest.raises(ValueError, match="last dim 4"):
        MLP(in_dim=4, hidden_dims=(2,))(torch.zeros(3, 5))


def test_prelu_slope_is_per_unit_on_the_last_dim():
    mlp = MLP(in_dim=3, hidden_dims=(4,), activation="prelu")
    assert mlp.layers[1].weight.shape == (4,)
    assert mlp(torch.randn(2, 5, 3)).shape == (2, 5, 4)  # L=5 != H=4 must not matter


def test_gradient_reaches_every_parameter_and_the_input():
    torch.manual_seed(0)
    for activation in ("relu", "prelu", "sigmoid", "dice"):
        mlp = MLP(in_dim=4, hidden_dims=(8, 8), activation=activation, out_dim=2)
        x = torch.randn(16, 4, requires_grad=True)
        mlp(x).pow(2).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        for name, param in mlp.named_parameters():
            assert torch.isfinite(param.grad).all(), (activation, name)
            assert param.grad.abs().sum() > 0, (activation, name)


def test_determinism_under_manual_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        mlp = MLP(in_dim=4, hidden_dims=(5,), activation="dice", out_dim=1)
        outs.append(mlp(torch.randn(6, 4)))
    assert torch.equal(outs[0], outs[1])


def test_dice_formula_and_batchnorm_equivalence_in_train_and_eval():
    torch.manual_seed(0)
    dice, bn = Dice(dim=3), nn.BatchNorm1d(3, affine=False, eps=1e-8, momentum=0.1)
    with torch.no_grad():
        dice.alpha_H.copy_(torch.tensor([0.0, 0.5, -1.0]))
    for _ in range(3):  # several steps so the running averages are compared too
        x_NH = torch.randn(10, 3) * 2 + 5
        p_NH = torch.sigmoid(bn(x_NH))
        expected_NH = p_NH * x_NH + (1 - p_NH) * dice.alpha_H.detach() * x_NH
        torch.testing.assert_close(dice(x_NH), expected_NH)
    torch.testing.assert_close(dice.running_mean_H, bn.running_mean)
    torch.testing.assert_close(dice.running_var_H, bn.running_var)
    dice.eval(), bn.eval()
    x_NH = torch.randn(4, 3)
    p_NH = torch.sigmoid(bn(x_NH))
    torch.testing.assert_close(
        dice(x_NH), p_NH * x_NH + (1 - p_NH) * dice.alpha_H.detach() * x_NH
    )


def test_dice_eval_uses_running_stats_not_the_batch():
    torch.manual_seed(0)
    dice = Dice(dim=2)
    with torch.no_grad():
        dice.alpha_H.fill_(0.3)
    x_NH = torch.randn(8, 2) + 4.0  # non-centred: batch mean far from the running mean 0
    before = (dice.running_mean_H.clone(), dice.running_var_H.clone())
    dice.eval()
    eval_out = dice(x_NH)
    assert torch.equal(dice.running_mean_H, before[0])  # eval does not update
    assert torch.equal(dice.running_var_H, before[1])
    dice.train()
    train_out = dice(x_NH)
    assert not torch.allclose(eval_out, train_out, atol=1e-3)
    assert not torch.equal(dice.running_mean_H, before[0])  # train does update


def test_dice_mask_keeps_padded_rows_out_of_the_statistics():
    torch.manual_seed(0)
    x_NH = torch.randn(6, 3)
    mask_N = torch.tensor([True, True, True, True, False, False])
    garbage_NH = x_NH.clone()
    garbage_NH[~mask_N] = 1e6
    a, b = Dice(dim=3), Dice(dim=3)
    out_a, out_b = a(x_NH, mask_N), b(garbage_NH, mask_N)
    torch.testing.assert_close(out_a[mask_N], out_b[mask_N])
    torch.testing.assert_close(out_a[mask_N], Dice(dim=3)(x_NH[mask_N]))
    torch.testing.assert_close(a.running_mean_H, b.running_mean_H)


def test_dice_with_fewer_than_two_valid_rows_is_finite_and_skips_the_update():
    dice = Dice(dim=2)
    for mask_N in (torch.tensor([False, False]), torch.tensor([True, False])):
        out = dice(torch.randn(2, 2), mask_N)
        assert torch.isfinite(out).all()
        assert torch.equal(dice.running_mean_H, torch.zeros(2))
        assert torch.equal(dice.running_var_H, torch.ones(2))


def test_mlp_passes_the_mask_to_dice_on_3d_input():
    torch.manual_seed(0)
    mlp = MLP(in_dim=3, hidden_dims=(4,), activation="dice", out_dim=1)
    x_BLH = torch.randn(2, 4, 3)
    mask_BL = torch.tensor([[True, True, False, False], [True, True, True, False]])
    garbage_BLH = torch.where(mask_BL.unsqueeze(-1), x_BLH, torch.full_like(x_BLH, 50.0))
    torch.testing.assert_close(mlp(x_BLH, mask_BL)[mask_BL], mlp(garbage_BLH, mask_BL)[mask_BL])
    with pytest.raises(ValueError, match="mask"):
        mlp(x_BLH, mask_BL[:, :3])
