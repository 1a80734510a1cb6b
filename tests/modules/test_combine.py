"""Tests for modules/combine.py: concat, sum and the softmax gate by hand; the gate starts as the mean."""
# Shape legend: B batch, H an expert's width, C the tower's other inputs.
import pytest
import torch

from tinrec.modules.combine import ExpertCombine

A = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
B = torch.tensor([[3.0, -2.0], [2.0, 0.0]])
C = torch.tensor([[1.0], [-1.0]])


def test_concat_and_sum():
    assert torch.equal(ExpertCombine(how="concat", widths=[2, 2])([A, B], [C]), torch.cat([A, B], -1))
    assert torch.equal(ExpertCombine(how="sum", widths=[2, 2])([A, B], [C]), A + B)
    assert ExpertCombine(how="concat", widths=[2, 3]).output_dim == 5


def test_gate_starts_as_the_mean_and_weighs_by_its_softmax():
    gate = ExpertCombine(how="gate", widths=[2, 2], context_dim=1)
    assert gate.output_dim == 2
    torch.testing.assert_close(gate([A, B], [C]), (A + B) / 2)
    with torch.no_grad():  # scores: expert 0 reads the context with weight 1, expert 1 nothing
        gate.gate.weight[0, 4] = 1.0
    w0 = torch.sigmoid(C)  # softmax of (c, 0) gives expert 0 the weight sigmoid(c)
    torch.testing.assert_close(gate.weights([A, B], [C]), torch.cat([w0, 1 - w0], -1))
    torch.testing.assert_close(gate([A, B], [C]), w0 * A + (1 - w0) * B)


def test_sum_and_gate_need_one_width():
    for how in ("sum", "gate"):
        with pytest.raises(ValueError, match=r"needs every expert of one width, got widths \[2, 3\]"):
            ExpertCombine(how=how, widths=[2, 3])
    with pytest.raises(ValueError, match="combine must be one of"):
        ExpertCombine(how="mean", widths=[2])
