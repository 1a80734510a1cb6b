"""The non-finite guard inside the real pipeline: a step with a non-finite loss changes no weight (neither the
fused embedding update nor the dense step), is reported with its batch, and training goes on after it."""

import dataclasses
import itertools
import math
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _weights(model):
    out = {}
    for k, v in model.state_dict().items():
        if hasattr(v, "local_shards"):  # a ShardedTensor: this rank's shards
            v = torch.cat([s.tensor.flatten() for s in v.local_shards()])
        out[k] = v.detach().clone()
    return out


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_non_finite_loss_updates_nothing_and_names_its_batch(tmp_path, mode):
    from tinrec.config import load_config
    from tinrec.distributed import init_distributed
    from tinrec.train import Data, build_training

    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), [
        f"data.path={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}", "data.num_workers=0",
        "data.generate.num_users=60", "data.generate.num_items=40", "data.generate.num_categories=5",
        "data.generate.train_rows=512", "data.generate.valid_rows=64", "data.generate.test_rows=64",
        "data.generate.seq_len_mean=10.0", "data.generate.seq_len_max=20", "data.generate.show_progress=false",
        "data.max_len=16", "train.batch_size=64", "train.sparse_optimizer.lr=0.5", f"train.on_nonfinite={mode}"])
    env = init_distributed()
    data = Data(cfg, env)
    good = list(itertools.islice(data.loader(data.stream("train", train=True)), 3))
    poisoned = dataclasses.replace(good[1], labels=torch.full_like(good[1].labels, math.nan))
    model, _, _, pipeline = build_training(cfg, data, env)
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
