"""Tests for modules/masking.py: masked softmax, sum and mean."""
# Shape legend: B batch, L history length (padded), D embedding width.
import pytest
import torch

from tinrec.modules.masking import check_inputs, masked_mean, masked_softmax, masked_sum, masked_topk

MASK_BL = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])


def test_softmax_matches_softmax_over_valid_and_zero_elsewhere():
    torch.manual_seed(0)
    scores_BL = torch.randn(3, 3)
    weight_BL = masked_softmax(scores_BL, MASK_BL)
    torch.testing.assert_close(weight_BL[0, :2], torch.softmax(scores_BL[0, :2], dim=0))
    torch.testing.assert_close(weight_BL[1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(weight_BL[2], torch.zeros(3))
    assert torch.equal(weight_BL[~MASK_BL], torch.zeros(int((~MASK_BL).sum())))


def test_softmax_ignores_garbage_under_padding_and_has_finite_grad():
    scores_BL = torch.tensor(
        [[1.0, 2.0, float("inf")], [0.5, float("nan"), -1e30], [float("nan"), 3.0, 1e30]],
        requires_grad=True,
    )
    weight_BL = masked_softmax(scores_BL, MASK_BL)
    assert torch.isfinite(weight_BL).all()
    torch.testing.assert_close(weight_BL.sum(-1), torch.tensor([1.0, 1.0, 0.0]))
    (weight_BL * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(scores_BL.grad).all()
    assert torch.equal(scores_BL.grad[~MASK_BL], torch.zeros(int((~MASK_BL).sum())))
    assert scores_BL.grad[0, :2].abs().sum() > 0


def test_softmax_is_stable_for_large_logits():
    scores_BL = torch.tensor([[1000.0, 999.0, 0.0]])
    weight_BL = masked_softmax(scores_BL, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(weight_BL[0, :2], torch.softmax(torch.tensor([1.0, 0.0]), dim=0))


def test_sum_and_mean_over_valid_positions():
    seq_BLD = torch.arange(18.0).reshape(3, 3, 2)
    seq_BLD[~MASK_BL] = float("nan")
    torch.testing.assert_close(
        masked_sum(seq_BLD, MASK_BL), torch.tensor([[2.0, 4.0], [6.0, 7.0], [0.0, 0.0]])
    )
    torch.testing.assert_close(
        masked_mean(seq_BLD, MASK_BL), torch.tensor([[1.0, 2.0], [6.0, 7.0], [0.0, 0.0]])
    )


def test_mean_gradient_is_zero_under_padding():
    seq_BLD = torch.randn(3, 3, 2, requires_grad=True)
    masked_mean(seq_BLD, MASK_BL).sum().backward()
    assert torch.equal(seq_BLD.grad[~MASK_BL], torch.zeros(int((~MASK_BL).sum()), 2))
    torch.testing.assert_close(seq_BLD.grad[0, 0], torch.full((2,), 0.5))


def test_check_inputs_rejects_bad_shapes_and_mask_dtype():
    seq_BLD, query_BD = torch.zeros(2, 3, 4), torch.zeros(2, 4)
    mask_BL = torch.ones(2, 3, dtype=torch.bool)
    check_inputs(dim=4, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
    with pytest.raises(ValueError, match="bool"):
        check_inputs(dim=4, seq_BLD=seq_BLD, mask_BL=mask_BL.float(), query_BD=query_BD)
    with pytest.raises(ValueError, match="seq_BLD"):
        check_inputs(dim=5, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
    with pytest.raises(ValueError, match="seq_time_BLD"):
        check_inputs(
            dim=4,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=torch.zeros(2, 2, 4),
        )


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_masked_topk_is_the_brute_force_ranking_with_recency_breaking_ties(k):
    """Sorted by (score desc, position desc) over the valid positions, then padded slots; integer-valued
    scores so that ties are the rule."""
    g = torch.Generator().manual_seed(k)
    lengths = [10, 4, 0, 7, 1]
    B, L = len(lengths), 10
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    for scores in (torch.randint(0, 3, (B, L), generator=g).float(), torch.randint(-2, 2, (B, L), generator=g)):
        scores = scores.masked_fill(~mask, 99)  # garbage under padding must never win
        idx, kept = masked_topk(scores, mask, k)
        assert idx.shape == kept.shape == (B, min(k, L))
        for b, n in enumerate(lengths):
            want = sorted(range(n), key=lambda i: (-float(scores[b, i]), -i))[:k]
            assert idx[b, :len(want)].tolist() == want, (b, scores[b].tolist())
            assert kept[b].tolist() == [True] * len(want) + [False] * (min(k, L) - len(want))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.int32])
def test_masked_topk_threshold_path_ranks_as_the_full_sort(dtype):
    """The top-k-then-ties path against the brute-force (score desc, position desc) ranking on many shapes: few
    distinct values (ties at the k-th score spill over the slots), rows shorter than k, empty rows, k near L."""
    g = torch.Generator().manual_seed(7)
    for _ in range(150):
        B, L = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(2, 60, (1,), generator=g))
        k = int(torch.randint(1, L, (1,), generator=g))  # k < L: the threshold path
        distinct = int(torch.randint(1, 6, (1,), generator=g))
        scores = torch.randint(-distinct, distinct, (B, L), generator=g).to(dtype)
        mask = torch.rand(B, L, generator=g) < torch.rand(B, 1, generator=g)
        idx, kept = masked_topk(scores.masked_fill(~mask, 5), mask, k)
        for b in range(B):
            valid = [i for i in range(L) if mask[b, i]]
            want = sorted(valid, key=lambda i: (-float(scores[b, i]), -i))[:k]
            assert idx[b, :len(want)].tolist() == want
            assert kept[b].tolist() == [True] * len(want) + [False] * (k - len(want))
            assert len(set(idx[b].tolist())) == k  # padded slots are distinct positions too


def test_masked_topk_with_nan_scores_still_returns_k_slots():
    scores = torch.tensor([[0.5, float("nan"), 0.1, 0.9], [0.2, 0.3, 0.4, 0.1]])
    idx, kept = masked_topk(scores, torch.ones(2, 4, dtype=torch.bool), 2)
    assert idx.shape == (2, 2) and kept.all()
    assert idx[1].tolist() == [2, 1]
