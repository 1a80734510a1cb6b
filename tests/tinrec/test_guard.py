"""The non-finite guard inside the real pipeline: a step with a non-finite loss changes no weight (neither the
fused embedding update nor the dense step), is reported with its batch, and training goes on after it."""

import dataclasses
import math

import pytest
import torch

from tests.tinrec.training import tiny_training


def _weights(model):
    out = {}
    for k, v in model.state_dict().items():
        if hasattr(v, "local_shards"):  # a ShardedTensor: this rank's shards
            v = torch.cat([s.tensor.flatten() for s in v.local_shards()])
        out[k] = v.detach().clone()
    return out


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_non_finite_loss_updates_nothing_and_names_its_batch(tmp_path, mode):
    good, model, pipeline = tiny_training(tmp_path, f"train.on_nonfinite={mode}")
    poisoned = dataclasses.replace(good[1], labels=torch.full_like(good[1].labels, math.nan))
    model.train()
    it = iter([good[0], poisoned, good[2]])
    pipeline.progress(it)
    assert pipeline.guard.incident is None
    before = _weights(model)
    pipeline.progress(it)
    incident = pipeline.guard.incident
    assert incident is not None and incident.what == "loss" and incident.detail.startswith("nan on ")
    assert "train/part-00000.parquet row group" in incident.detail and "rank(s) 0" in incident.detail
    after = _weights(model)
    assert any("embedding" in k for k in after)  # the tables are compared too
    for k in before:
        assert torch.equal(before[k], after[k]), k
    pipeline.progress(it)
    assert pipeline.guard.incident is None
    moved = _weights(model)
    assert any(not torch.equal(after[k], moved[k]) for k in after if "embedding" in k)
    assert any(not torch.equal(after[k], moved[k]) for k in after if "tower" in k)
