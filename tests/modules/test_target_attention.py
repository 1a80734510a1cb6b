"""The activation unit with a side vector (modules/target_attention.py ActivationUnitAttention), shared by
DEI2N, DMIN and DIHN: its factorised first layer equals the concatenated form; the pooling by hand."""
import pytest
import torch

from tinrec.modules.target_attention import ActivationUnitAttention


@pytest.mark.parametrize("side,activation", [(0, "prelu"), (3, "prelu"), (3, "relu")])
def test_factorised_first_layer_equals_the_concatenated_unit(side, activation):
    torch.manual_seed(0)
    unit = ActivationUnitAttention(dim=5, side_dim=side, hidden=(7, 4), activation=activation)
    g = torch.Generator().manual_seed(1)
    seq, q = torch.randn(3, 6, 5, generator=g), torch.randn(3, 5, generator=g)
    s = torch.randn(3, 6, side, generator=g) if side else None
    mask = torch.arange(6)[None] < torch.tensor([6, 2, 0])[:, None]
    w = unit.weights(seq, mask, q, s)
    ref = torch.softmax(unit.concatenated_logits(seq, q, s)[0], 0)
    torch.testing.assert_close(w[0], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w[1, :2], torch.softmax(unit.concatenated_logits(seq, q, s)[1, :2], 0))
    assert torch.equal(w[2], torch.zeros(6)) and torch.equal(w[1, 2:], torch.zeros(4))
    out = unit(seq, mask, q, s)
    torch.testing.assert_close(out[0], w[0] @ seq[0])
    with pytest.raises(ValueError, match="side_BLS exactly when"):
        unit.weights(seq, mask, q, None if side else torch.randn(3, 6, 2))
