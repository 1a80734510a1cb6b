"""Tests for modules/tin.py: TIN's Eq. 2, its ablations and the learned correlation (Eq. 4-5)."""
# Shape legend: B batch, L history length (padded), D embedding width.
import itertools
import math
from functools import partial

import pytest
import torch

from tests.modules import batches, checks
from tests.modules.batches import with_garbage_padding
from tinrec.modules.tin import TIN

FLAGS = list(itertools.product([True, False], repeat=3))  # (temporal, attention, representation)
make_batch = partial(batches.make_batch, D=4, time=True)


def without_time(batch):
    """TIN w/o TTE: the module called without the temporal encodings."""
    return {k: v for k, v in batch.items() if "time" not in k}


# Hand example: B=1, L=3 (last slot padded), D=2.
E = [[1.0, 0.0], [0.5, -1.0]]
P = [[0.1, 0.2], [-0.3, 0.4]]
V, PT = [2.0, 1.0], [0.5, -0.5]
HAND = dict(
    seq_BLD=torch.tensor([[E[0], E[1], [9.0, -9.0]]]),
    mask_BL=torch.tensor([[True, True, False]]),
    query_BD=torch.tensor([V]),
    seq_time_BLD=torch.tensor([[P[0], P[1], [7.0, 7.0]]]),
    query_time_BD=torch.tensor([PT]),
)


def hand_terms():
    """e~_i, v~_t, z_i and softmax alpha_i of the hand example, in plain Python."""
    et = [[E[i][k] + P[i][k] for k in range(2)] for i in range(2)]
    vt = [V[k] + PT[k] for k in range(2)]
    z = [sum(et[i][k] * vt[k] for k in range(2)) / math.sqrt(2) for i in range(2)]
    alpha = [math.exp(zi) / sum(math.exp(zj) for zj in z) for zi in z]
    return et, vt, z, alpha


def test_hand_example_matches_eq2():
    et, vt, _, alpha = hand_terms()
    expected = [sum(alpha[i] * et[i][k] * vt[k] for i in range(2)) for k in range(2)]
    out_BD = TIN(dim=2)(**HAND)
    torch.testing.assert_close(out_BD, torch.tensor([expected]), rtol=1e-6, atol=1e-6)


def test_hand_example_learned_correlation_eq5_and_ablations():
    et, vt, z, _ = hand_terms()
    rep = [[et[i][k] * vt[k] for k in range(2)] for i in range(2)]
    full = [math.exp(z[i]) * math.hypot(*rep[i]) for i in range(2)] + [0.0]
    no_ta = [math.hypot(*rep[i]) for i in range(2)] + [0.0]
    no_tr = [math.exp(z[i]) * math.hypot(*et[i]) for i in range(2)] + [0.0]
    for module, expected in (
        (TIN(dim=2), full),
        (TIN(dim=2, attention=False), no_ta),
        (TIN(dim=2, representation=False), no_tr),
    ):
        cor_BL = module.learned_correlation(**HAND)
        torch.testing.assert_close(cor_BL, torch.tensor([expected]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("temporal,attention,representation", FLAGS)
def test_shape_padding_invariance_and_empty_rows(temporal, attention, representation):
    tin = TIN(dim=4, attention=attention, representation=representation)
    assert tin.output_dim == 4
    batch = make_batch([5, 2, 0, 1])
    batch = batch if temporal else without_time(batch)
    checks.assert_padding_is_ignored(tin, batch, zero_rows=[2], atol=1e-6)
    cor_BL = tin.learned_correlation(**batch)
    torch.testing.assert_close(
        tin.learned_correlation(**with_garbage_padding(batch))[:, :5], cor_BL, rtol=0, atol=1e-6
    )
    assert torch.equal(cor_BL[~batch["mask_BL"]], torch.zeros(int((~batch["mask_BL"]).sum())))


@pytest.mark.parametrize("temporal,attention,representation", FLAGS)
def test_gradients_reach_the_valid_inputs_only(temporal, attention, representation):
    batch = {
        k: (v.requires_grad_() if v.is_floating_point() else v)
        for k, v in make_batch([3, 0]).items()
    }
    tin = TIN(dim=4, attention=attention, representation=representation)
    tin(**(batch if temporal else without_time(batch))).pow(2).sum().backward()
    mask_BL = batch["mask_BL"]
    # With neither TA nor TR the target does not enter u at all (u = mean of e~_i).
    uses_target = attention or representation
    inputs = ["seq_BLD"] + (["seq_time_BLD"] if temporal else [])
    inputs += (["query_BD"] + (["query_time_BD"] if temporal else [])) if uses_target else []
    for key in inputs:
        grad = batch[key].grad
        assert torch.isfinite(grad).all(), key
        assert grad[0].abs().sum() > 0, key  # row 0 has a history
    for key in ("seq_BLD", "seq_time_BLD") if temporal else ("seq_BLD",):
        assert torch.equal(batch[key].grad[~mask_BL], torch.zeros(int((~mask_BL).sum()), 4)), key
    if not temporal:
        assert batch["seq_time_BLD"].grad is None and batch["query_time_BD"].grad is None
    if not uses_target:
        assert batch["query_BD"].grad is None


def test_determinism_under_manual_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        batch = make_batch([4, 1], seed=int(torch.randint(0, 1000, ()).item()))
        outs.append(TIN(dim=4)(**batch))
    assert torch.equal(outs[0], outs[1])


def test_no_tte_equals_tin_fed_zero_time_embeddings():
    batch = make_batch([5, 3, 0])
    zero_time = dict(batch, seq_time_BLD=torch.zeros(3, 5, 4), query_time_BD=torch.zeros(3, 4))
    expected_BD = TIN(dim=4)(**zero_time)
    torch.testing.assert_close(TIN(dim=4)(**without_time(batch)), expected_BD)
    assert not torch.allclose(TIN(dim=4)(**batch)[:2], expected_BD[:2])
    for half in ("seq_time_BLD", "query_time_BD"):  # one encoding without the other is a binding mistake
        with pytest.raises(ValueError, match="both seq_time_BLD and query_time_BD"):
            TIN(dim=4)(**without_time(batch), **{half: batch[half]})


def test_no_ta_is_the_mean_of_the_target_aware_representation():
    batch = make_batch([5, 2, 0])
    et_BLD = batch["seq_BLD"] + batch["seq_time_BLD"]
    vt_BD = batch["query_BD"] + batch["query_time_BD"]
    expected = [
        (et_BLD[b, :n] * vt_BD[b]).mean(0) if n else torch.zeros(4) for b, n in enumerate([5, 2, 0])
    ]
    out_BD = TIN(dim=4, attention=False)(**batch)
    torch.testing.assert_close(out_BD, torch.stack(expected))


def test_no_tr_is_the_softmax_weighted_sum_of_the_encoded_behaviours():
    batch = make_batch([5, 2, 0])
    et_BLD = batch["seq_BLD"] + batch["seq_time_BLD"]
    vt_BD = batch["query_BD"] + batch["query_time_BD"]
    expected = []
    for b, n in enumerate([5, 2, 0]):
        alpha_L = torch.softmax(et_BLD[b, :n] @ vt_BD[b] / 2.0, dim=0)  # sqrt(D) = 2
        expected.append(alpha_L @ et_BLD[b, :n] if n else torch.zeros(4))
    out_BD = TIN(dim=4, representation=False)(**batch)
    torch.testing.assert_close(out_BD, torch.stack(expected))


def test_missing_time_embedding_raises_value_error_naming_it():
    batch = make_batch([2])
    for missing in ("seq_time_BLD", "query_time_BD"):
        with pytest.raises(ValueError, match=missing):
            TIN(dim=4)(**dict(batch, **{missing: None}))
    with pytest.raises(ValueError, match="positive"):
        TIN(dim=0)
    with pytest.raises(ValueError, match="query_BD"):
        TIN(dim=4)(**dict(batch, query_BD=torch.zeros(1, 3)))
