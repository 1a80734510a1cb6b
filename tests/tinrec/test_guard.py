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


def test_watched_groups_report_each_modules_gradient_norm_before_clipping(tmp_path):
    """``train.log_grad_norms``: the guard's per-module norms equal the norms of the gradients by hand, taken
    before the optimizer clips them (a tiny clip changes the gradients the step applies, not the report)."""
    batches, model, pipeline = tiny_training(tmp_path, "train.log_grad_norms=true", "train.grad_clip=1e-6")
    model.train()
    seen = {}

    def keep(name):
        def hook(grad):
            seen[name] = grad.detach().clone()
        return hook

    named = {n: p for n, p in model.named_parameters() if any(p is q for q in pipeline.guard.dense_params)}
    for n, p in named.items():
        p.register_hook(keep(n))
    pipeline.progress(iter(batches))
    norms = pipeline.guard.group_norms
    assert any(k.startswith("over_arch.tower.") for k in norms) and "(all)" in norms
    assert not any(k.startswith(("_dmp_wrapped_module", "module.", "dense_arch")) for k in norms)
    for group, value in norms.items():
        if group == "(all)":
            continue
        members = [g for n, g in seen.items() if n.rpartition(".")[0].endswith(group)]
        assert members, group
        assert float(value) == pytest.approx(math.sqrt(sum(float(g.pow(2).sum()) for g in members)), rel=1e-5)
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in seen.values()))
    assert float(norms["(all)"]) == pytest.approx(total, rel=1e-5) and total > 1e-3  # far above the clip
