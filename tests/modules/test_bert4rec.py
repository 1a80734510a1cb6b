"""Tests for modules/bert4rec.py: bidirectional blocks, [MASK] slot at index length_b, [h, h ⊙ v]."""
# Shape legend: B batch, L history length (padded), M = L + 1, D embedding width.
import pytest
import torch

from tinrec.modules.bert4rec import BERT4Rec

D = 4


def make_batch(lengths, L=5, seed=0, time=True):
    """Random inputs with the given history lengths (right-padded to L)."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    batch = dict(
        seq_BLD=torch.randn(B, L, D, generator=g),
        mask_BL=torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1),
        query_BD=torch.randn(B, D, generator=g),
    )
    if time:
        batch["seq_time_BLD"] = torch.randn(B, L, D, generator=g)
        batch["query_time_BD"] = torch.randn(B, D, generator=g)
    return batch


def with_garbage_padding(batch, extra=3, seed=1):
    """Same batch with large random values under padding and `extra` more padded positions."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    B, L = batch["mask_BL"].shape
    out["mask_BL"] = torch.cat([batch["mask_BL"], torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    for key in ("seq_BLD", "seq_time_BLD"):
        if key in batch:
            garbage_BLD = torch.randn(B, L + extra, D, generator=g) * 1e4
            padded_BLD = torch.cat([batch[key], garbage_BLD[:, L:]], dim=1)
            out[key] = torch.where(out["mask_BL"].unsqueeze(-1), padded_BLD, garbage_BLD)
    return out


def make_bert4rec(seed=0, **kwargs):
    torch.manual_seed(seed)
    return BERT4Rec(dim=D, **kwargs)


@pytest.mark.parametrize("time", [True, False])
def test_shape_padding_invariance_and_empty_rows(time):
    model = make_bert4rec().eval()
    assert model.output_dim == 2 * D
    batch = make_batch([5, 2, 0, 1], time=time)
    out_BO = model(**batch)
    assert out_BO.shape == (4, 2 * D)
    assert torch.isfinite(out_BO).all()  # the empty row reads its [MASK] slot: finite, learned
    torch.testing.assert_close(model(**with_garbage_padding(batch)), out_BO, rtol=0, atol=1e-5)
    assert torch.isfinite(model(**make_batch([0, 0], L=0, time=time))).all()


def test_gradients_reach_every_parameter_and_only_valid_inputs():
    model = make_bert4rec()
    batch = make_batch([5, 3, 0])
    batch["seq_BLD"].requires_grad_()
    model(**batch).pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    mask_BL, grad_BLD = batch["mask_BL"], batch["seq_BLD"].grad
    assert torch.equal(grad_BLD[~mask_BL], torch.zeros(int((~mask_BL).sum()), D))
    assert (grad_BLD[mask_BL].abs().sum(-1) > 0).all()


def test_determinism_and_dropout_only_in_training():
    batch = make_batch([4, 2])
    assert torch.equal(make_bert4rec(seed=3)(**batch), make_bert4rec(seed=3)(**batch))
    assert not torch.equal(make_bert4rec(seed=3)(**batch), make_bert4rec(seed=4)(**batch))
    dropped = make_bert4rec(seed=3, dropout=0.5)
    torch.testing.assert_close(dropped.eval()(**batch), make_bert4rec(seed=3).eval()(**batch))
    torch.manual_seed(0)
    assert not torch.equal(dropped.train()(**batch), dropped.eval()(**batch))


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
