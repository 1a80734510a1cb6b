"""tools/msia_scale_probe.py: its synthetic rows carry the drop where the docs say, and the label only through it."""
import importlib.util
import os

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("msia_scale_probe", os.path.join(REPO, "tools", "msia_scale_probe.py"))
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_a_faded_rows_hits_are_followed_by_a_drop_lag_behaviours_on():
    L, hits, lag = 64, 4, 8
    cat, target, watch, label, faded = probe.rows(np.random.default_rng(0), 4000, L=L, C=1000, hits=hits, lag=lag)
    cat, target, watch, label = cat.numpy(), target.numpy(), watch.numpy(), label.numpy()
    low = watch < 0.25 * np.median(watch)
    is_hit = cat == target[:, None]
    after = np.zeros_like(low)
    after[:, :-lag] = low[:, lag:]  # the behaviour lag on (more recent) dropped
    assert 0.45 < faded.mean() < 0.55
    # the planted hits of a faded row drop w.p. 0.8 (plus the 0.05 of any behaviour); a kept row's only by chance
    rate_faded = (after & is_hit)[faded].sum() / is_hit[faded].sum()
    rate_kept = (after & is_hit)[~faded].sum() / is_hit[~faded].sum()
    assert rate_faded > 0.75 and rate_kept < 0.1
    # the label follows the fading alone: sigmoid(+-3)
    assert label[~faded].mean() > 0.9 and label[faded].mean() < 0.1
    # nor on the next behaviour (where a first layer reading its neighbours' watch times would see it)
    nxt = np.zeros_like(low)
    nxt[:, :-1] = low[:, 1:]
    assert (nxt & is_hit)[faded].sum() / is_hit[faded].sum() < 0.2


def test_the_probe_model_scores_a_batch():
    cat, target, watch, _, _ = probe.rows(np.random.default_rng(1), 8, L=64, C=8, hits=4, lag=8)
    for kwargs in ({}, {"identity_init": False}, {"later_random": True}):
        model = probe.Probe(C=8, dim=8, layers=2, L=64, **kwargs)
        out = model(cat, target, watch)
        assert out.shape == (8,) and torch.isfinite(out).all()
