"""AUC, GAUC (DIN paper, impression-weighted over users with both labels) and logloss against brute force."""

import math

import numpy as np
import pytest
import torch

from tinrec.metrics import EvalAccumulator, auc, gauc, logloss


def brute_auc(s, y):
    pos, neg = s[y == 1], s[y == 0]
    return ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))


def test_auc_with_ties_matches_pairwise_count():
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 6, 300).astype(float), rng.integers(0, 2, 300)
    assert auc(s, y) == pytest.approx(brute_auc(s, y), abs=1e-12)
    assert math.isnan(auc(s, np.ones(300)))


def test_gauc_is_impression_weighted_over_users_with_both_labels():
    rng = np.random.default_rng(1)
    s, y, u = rng.random(400).round(2), rng.integers(0, 2, 400), rng.integers(0, 30, 400)
    y[u == 3] = 1  # a user with only positives is left out
    num = den = 0.0
    for k in np.unique(u):
        m = u == k
        if 0 < y[m].sum() < m.sum():
            num, den = num + m.sum() * brute_auc(s[m], y[m]), den + m.sum()
    assert gauc(s, y, u) == pytest.approx(num / den, abs=1e-12)


def test_gauc_hand_example():
    # user 1: scores (0.9 pos, 0.1 neg) -> AUC 1, 2 impressions; user 2: (0.2 pos, 0.8 neg, 0.5 neg) -> 0, 3
    s = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.3])
    y = np.array([1, 0, 1, 0, 0, 1])
    u = np.array([1, 1, 2, 2, 2, 3])  # user 3 has one label only
    assert gauc(s, y, u) == pytest.approx((2 * 1.0 + 3 * 0.0) / 5)


def test_logloss_and_accumulator_drop_zero_weights():
    acc = EvalAccumulator()
    acc.add(torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1, 1, 2]),
            torch.tensor([1.0, 1.0, 0.0]))
    m = acc.compute()
    p = 1 / (1 + np.exp(-np.array([0.0, 2.0])))
    assert m["samples"] == 2 and m["logloss"] == pytest.approx(float(-np.log(p).mean()))
    assert logloss(np.array([0.0, 1.0]), np.array([0.0, 1.0])) < 1e-6


def test_unavailable_metrics_are_null_with_a_reason_and_results_are_strict_json(tmp_path):
    import json

    from tinrec.results import write_json

    acc = EvalAccumulator()
    # leave-one-out: every user has one impression, so no user has both labels
    acc.add(torch.tensor([0.3, -1.0, 2.0]), torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1, 2, 3]), torch.ones(3))
    m = acc.compute()
    assert m["gauc"] is None and "no user has both a positive and a negative impression" in m["gauc_unavailable"]
    assert m["auc"] == pytest.approx(1.0) and "auc_unavailable" not in m
    one_class = EvalAccumulator()
    one_class.add(torch.tensor([0.1, 0.2]), torch.ones(2), torch.tensor([1, 1]), torch.ones(2))
    assert one_class.compute()["auc_unavailable"] == "every sample has label 1"
    nan = EvalAccumulator()
    nan.add(torch.tensor([float("nan"), 0.2]), torch.tensor([1.0, 0.0]), torch.tensor([1, 1]), torch.ones(2))
    got = nan.compute()
    assert got["auc"] is None and got["logloss"] is None and "not finite" in got["logloss_unavailable"]
    path = tmp_path / "m.json"
    write_json(str(path), {"m": m, "x": float("nan"), "y": [np.float32("inf"), 1.5], "z": np.int64(3)})

    def refuse(c):
        raise AssertionError(f"not strict JSON: {c}")

    back = json.loads(path.read_text(), parse_constant=refuse)
    assert back["x"] is None and back["y"] == [None, 1.5] and back["z"] == 3


def test_gauc_pairs_is_the_repositories_per_user_pair_accuracy():
    """By hand: user 1 has positives 0.9, 0.4 and negatives 0.5, 0.4: pairs (0.9 > 0.5) (0.9 > 0.4) (0.4 < 0.5)
    (0.4 = 0.4, a tie: 0) -> 2 / 4; user 2 has positive 0.7 and negatives 0.2, 0.8 -> 1 / 2; user 3 only a
    positive (left out): unweighted mean 0.5. The DIN paper's GAUC counts the tie one half (user 1: 2.5 / 4) and
    weights by impressions: (4 * 0.625 + 3 * 0.5) / 7."""
    from tinrec.metrics import gauc, gauc_pairs

    s = np.array([0.9, 0.4, 0.5, 0.4, 0.7, 0.2, 0.8, 0.3])
    y = np.array([1, 1, 0, 0, 1, 0, 0, 1])
    u = np.array([1, 1, 1, 1, 2, 2, 2, 3])
    assert gauc_pairs(s, y, u) == pytest.approx((2 / 4 + 1 / 2) / 2)
    assert gauc(s, y, u) == pytest.approx((4 * 2.5 / 4 + 3 * 0.5) / 7)
    # one pair per user (leave-one-out): the share of users whose positive scores strictly higher
    s2, y2, u2 = np.array([0.6, 0.1, 0.2, 0.3, 0.5, 0.5]), np.array([1, 0, 1, 0, 1, 0]), np.array([1, 1, 2, 2, 3, 3])
    assert gauc_pairs(s2, y2, u2) == pytest.approx(1 / 3) and gauc(s2, y2, u2) == pytest.approx(1.5 / 3)
