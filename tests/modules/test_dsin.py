"""Tests for modules/dsin.py: session split, [B, K, T, D] layout, extractor, Bi-LSTM, activation."""
# Shape legend: B batch, L history length (padded), K sessions, T behaviours per session,
# D embedding width, H Bi-LSTM hidden width (= D).
import math

import pytest
import torch

from tests.modules import batches, checks
from tests.modules.batches import MIN
from tinrec.modules.dsin import DSIN

D = 4


def make_batch(lengths, L=8, seed=0, time=True):
    """Shared random batch (no target position: no query_time_BD) with ``session_BL`` from its timestamps
    by the 30-minute rule."""
    batch = batches.make_batch(lengths, D=D, L=L, seed=seed, time=time, query_time=False, timestamps=True)
    batch["session_BL"] = DSIN.sessions_from_timestamps(batch.pop("timestamp_BL"), batch["mask_BL"])
    return batch


make_dsin = checks.seeded(DSIN, dim=D)


def test_sessions_from_timestamps_hand_example():
    ts_BL = torch.tensor(
        [
            [0, 10 * MIN, 50 * MIN, 55 * MIN, 999],  # gaps 10, 40, 5 min; padding
            [0, 30 * MIN, 61 * MIN, 0, 0],  # exactly 30 min stays, 31 min splits
            [5, 7, 9, 11, 13],  # empty row
        ]
    )
    mask_BL = torch.arange(5).unsqueeze(0) < torch.tensor([[4], [3], [0]])
    session_BL = DSIN.sessions_from_timestamps(ts_BL, mask_BL)
    expected = torch.tensor([[1, 1, 0, 0, -1], [1, 1, 0, -1, -1], [-1, -1, -1, -1, -1]])
    assert session_BL.dtype == torch.int64 and torch.equal(session_BL, expected)
    short_BL = DSIN.sessions_from_timestamps(ts_BL, mask_BL, gap_seconds=5 * MIN)
    assert torch.equal(short_BL[0, :4], torch.tensor([2, 1, 0, 0]))  # 5 min is not > 5 min
    assert DSIN.sessions_from_timestamps(ts_BL[:, :0], mask_BL[:, :0]).shape == (3, 0)


def layout_batch():
    """Row 0: sessions [2, 1, 1, 1, 0, 0] + padding; row 1: one behaviour; row 2: empty."""
    seq_BLD = torch.arange(1, 22, dtype=torch.float).view(3, 7, 1).expand(3, 7, D).clone()
    mask_BL = torch.arange(7).unsqueeze(0) < torch.tensor([[6], [1], [0]])
    session_BL = torch.tensor([[2, 1, 1, 1, 0, 0, -1], [0] + [-1] * 6, [-1] * 7])
    g = torch.Generator().manual_seed(0)
    query_BD = torch.randn(3, D, generator=g)
    return dict(seq_BLD=seq_BLD, mask_BL=mask_BL, session_BL=session_BL, query_BD=query_BD)


def test_layout_keeps_the_most_recent_t_behaviours_of_the_k_most_recent_sessions():
    model, batch = make_dsin(max_sessions=2, session_len=2), layout_batch()
    slots_BKTD, slot_mask_BKT, num_sessions_B = model.build_sessions(
        seq_BLD=batch["seq_BLD"], mask_BL=batch["mask_BL"], session_BL=batch["session_BL"]
    )
    assert slots_BKTD.shape == (3, 2, 2, D) and num_sessions_B.tolist() == [2, 1, 0]
    # Row 0: slot k=0 = session 1 (older) keeps behaviours 3, 4 of (2, 3, 4); k=1 = session 0: 5, 6.
    # Row 1: its one behaviour (value 8) at k=0, t=0. Row 2: nothing.
    expected_BKT = torch.tensor(
        [[[3.0, 4.0], [5.0, 6.0]], [[8.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
    )
    assert torch.equal(slots_BKTD, expected_BKT.unsqueeze(-1).expand(3, 2, 2, D))
    assert torch.equal(slot_mask_BKT, expected_BKT > 0)


def test_sessions_beyond_k_and_behaviours_beyond_t_do_not_affect_the_output():
    model, batch = make_dsin(max_sessions=2, session_len=2).eval(), layout_batch()
    out_BO = model(**batch)
    dropped = dict(batch, seq_BLD=batch["seq_BLD"].clone())
    dropped["seq_BLD"][0, 0] += 10.0  # session 2: beyond K
    dropped["seq_BLD"][0, 1] += 10.0  # session 1's third most recent: beyond T
    torch.testing.assert_close(model(**dropped), out_BO, rtol=0, atol=0)
    kept = dict(batch, seq_BLD=batch["seq_BLD"].clone())
    kept["seq_BLD"][0, 2] += torch.randn(D)
    assert (model(**kept)[0] - out_BO[0]).abs().sum() > 1e-4
    torch.testing.assert_close(model(**kept)[1:], out_BO[1:], rtol=0, atol=0)


@pytest.mark.parametrize("time", [True, False])
@pytest.mark.parametrize("kt", [(5, 10), (2, 2)])
def test_shape_padding_invariance_and_empty_rows(time, kt):
    model = make_dsin(max_sessions=kt[0], session_len=kt[1]).eval()
    assert model.output_dim == 3 * D
    checks.assert_padding_is_ignored(model, make_batch([8, 3, 0, 1], time=time), zero_rows=[2])
    assert torch.equal(model(**make_batch([0, 0], L=0, time=time)), torch.zeros(2, 3 * D))


def test_bilstm_runs_over_the_present_sessions_only():
    model = make_dsin(max_sessions=3).eval()
    num_sessions_B = torch.tensor([3, 1, 0])
    present_BK = torch.arange(3).unsqueeze(0) < num_sessions_B.unsqueeze(1)
    garbage_BKD = torch.randn(3, 3, D) * 1e4
    interest_BKD = torch.where(present_BK.unsqueeze(-1), torch.randn(3, 3, D), garbage_BKD)
    out_BK2H = model.interact(interest_BKD, num_sessions_B)
    assert out_BK2H.shape == (3, 3, 2 * D)
    for b, n in enumerate(num_sessions_B.tolist()):
        if n:
            alone_1N2H, _ = model.lstm(interest_BKD[b : b + 1, :n])  # no padding at all
            torch.testing.assert_close(out_BK2H[b, :n], alone_1N2H[0], rtol=1e-5, atol=1e-6)
        assert torch.equal(out_BK2H[b, n:], torch.zeros(3 - n, 2 * D))


def test_activation_is_target_attention_over_both_levels():
    model, batch = make_dsin(max_sessions=3, session_len=4).eval(), make_batch([8, 2])
    x_BLD = batch["seq_BLD"] + batch["seq_time_BLD"]
    interest_BKD, num_sessions_B = model.extract(
        seq_BLD=x_BLD, mask_BL=batch["mask_BL"], session_BL=batch["session_BL"]
    )
    inter_BK2H = model.interact(interest_BKD, num_sessions_B)
    expected = []
    for b, n in enumerate(num_sessions_B.tolist()):
        v_D = batch["query_BD"][b]
        a_i = torch.softmax(interest_BKD[b, :n] @ model.att_extracted(v_D) / math.sqrt(D), 0)
        a_h = torch.softmax(inter_BK2H[b, :n] @ model.att_interacted(v_D) / math.sqrt(2 * D), 0)
        expected.append(torch.cat([a_i @ interest_BKD[b, :n], a_h @ inter_BK2H[b, :n]]))
    torch.testing.assert_close(model(**batch), torch.stack(expected))


def test_gradients_reach_every_parameter_and_only_valid_inputs():
    model = make_dsin(max_sessions=2, session_len=3)
    batch = layout_batch()
    batch["seq_BLD"] = torch.randn(3, 7, D, requires_grad=True)
    model(**batch).pow(2).sum().backward()
    checks.assert_every_parameter_gets_gradient(model)
    assert (model.bias_K.grad != 0).all() and (model.bias_T.grad != 0).all()
    kept_BL = torch.tensor([[0, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0, 0], [0] * 7]).bool()
    checks.assert_gradient_only_at(batch["seq_BLD"].grad, kept_BL)


def test_determinism_and_dropout_only_in_training():
    batch = make_batch([6, 2])
    checks.assert_seed_determines_the_module(make_dsin, batch)
    checks.assert_dropout_only_in_training(make_dsin, batch)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_heads"):
        DSIN(dim=D, num_heads=3)
    with pytest.raises(ValueError, match="max_sessions"):
        DSIN(dim=D, max_sessions=0)
    batch = make_batch([2, 1])
    with pytest.raises(ValueError, match="session_BL"):
        make_dsin()(**dict(batch, session_BL=batch["session_BL"].float()))
    with pytest.raises(ValueError, match="session_BL"):
        make_dsin()(**dict(batch, session_BL=batch["session_BL"][:, :3]))
