"""Tests for modules/bert4rec.py: bidirectional blocks, [MASK] slot at index length_b, [h, h ⊙ v]."""
# Shape legend: B batch, L history length (padded), M = L + 1, D embedding width.
from functools import partial

import pytest
import torch

from tests.modules import batches, checks
from tinrec.modules.bert4rec import BERT4Rec

D = 4
make_batch = partial(batches.make_batch, D=D, time=True)  # BERT4Rec reads both encodings
make_bert4rec = checks.seeded(BERT4Rec, dim=D)


@pytest.mark.parametrize("time", [True, False])
def test_shape_padding_invariance_and_empty_rows(time):
    model = make_bert4rec().eval()
    assert model.output_dim == 2 * D
    # the empty row reads its [MASK] slot: finite, learned, not zero
    checks.assert_padding_is_ignored(model, make_batch([5, 2, 0, 1], time=time))
    assert torch.isfinite(model(**make_batch([0, 0], L=0, time=time))).all()


def test_gradients_reach_every_parameter_and_only_valid_inputs():
    checks.assert_gradient_flow(make_bert4rec(), make_batch([5, 3, 0]))


def test_determinism_and_dropout_only_in_training():
    batch = make_batch([4, 2])
    checks.assert_seed_determines_the_module(make_bert4rec, batch)
    checks.assert_dropout_only_in_training(make_bert4rec, batch)


def test_mask_slot_sits_at_index_length_and_is_what_forward_reads():
    model, batch = make_bert4rec().eval(), make_batch([5, 2, 0], L=5)
    slot_BD = torch.randn(3, D)
    x_BMD, mask_BM, length_B = model.insert_mask_slot(
        seq_BLD=batch["seq_BLD"], mask_BL=batch["mask_BL"], slot_BD=slot_BD
    )
    assert x_BMD.shape == (3, 6, D) and length_B.tolist() == [5, 2, 0]
    expected_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]).bool()
    assert torch.equal(mask_BM, expected_mask)
    for b, n in enumerate([5, 2, 0]):
        assert torch.equal(x_BMD[b, n], slot_BD[b])
        assert torch.equal(x_BMD[b, :n], batch["seq_BLD"][b, :n])
        assert torch.equal(x_BMD[b, n + 1 :], torch.zeros(5 - n, D))
    out_BMD, _, _ = model.encode(
        seq_BLD=batch["seq_BLD"],
        mask_BL=batch["mask_BL"],
        seq_time_BLD=batch["seq_time_BLD"],
        query_time_BD=batch["query_time_BD"],
    )
    h_BD = torch.stack([out_BMD[0, 5], out_BMD[1, 2], out_BMD[2, 0]])
    torch.testing.assert_close(model(**batch), torch.cat([h_BD, h_BD * batch["query_BD"]], -1))


def test_bidirectional_changing_the_last_behaviour_changes_every_position():
    model, batch = make_bert4rec().eval(), make_batch([4, 3], L=4, time=False)
    kwargs = dict(seq_BLD=batch["seq_BLD"], mask_BL=batch["mask_BL"])
    out_BMD, mask_BM, _ = model.encode(**kwargs)
    changed_BLD = batch["seq_BLD"].clone()
    changed_BLD[0, 3] += torch.randn(D)
    changed_BLD[1, 2] += torch.randn(D)
    changed_BMD, _, _ = model.encode(**dict(kwargs, seq_BLD=changed_BLD))
    diff_BM = (changed_BMD - out_BMD).abs().sum(-1)
    assert (diff_BM[mask_BM] > 1e-5).all()  # every valid position, the first one and the slot included
    assert torch.equal(diff_BM[~mask_BM], torch.zeros(int((~mask_BM).sum())))


def test_query_time_is_the_mask_slots_position_and_seq_time_is_added():
    model, batch = make_bert4rec().eval(), make_batch([3, 1], time=False)
    p_D = torch.randn(D)
    shifted = make_bert4rec().eval()
    with torch.no_grad():
        shifted.mask_token_D += p_D
    torch.testing.assert_close(model(**batch, query_time_BD=p_D.expand(2, D)), shifted(**batch))
    seq_time_BLD = torch.randn(2, 5, D)
    torch.testing.assert_close(
        model(**batch, seq_time_BLD=seq_time_BLD),
        model(**dict(batch, seq_BLD=batch["seq_BLD"] + seq_time_BLD)),
    )


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_heads"):
        BERT4Rec(dim=D, num_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        BERT4Rec(dim=D, dropout=1.0)
    with pytest.raises(ValueError, match="query_time_BD"):
        make_bert4rec()(**dict(make_batch([2, 1]), query_time_BD=torch.zeros(2, D + 1)))
