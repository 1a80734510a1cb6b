"""Config loading, overrides and validation; every file under configs/ loads, builds and plans on meta."""

import glob
import os

import pytest
import torch
import yaml

from tinrec.config import load_config
from tinrec.features import resolve_rows
from tinrec.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_configs_found():
    assert os.path.join(REPO, "configs", "default.yaml") in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_every_config_loads_builds_and_plans_on_meta(path):
    from torch.distributed.optim import _apply_optimizer_in_backward
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.sharding_plan import get_default_sharders

    from tinrec.sharding import constraints

    cfg = load_config(path)
    # real sizes are planned by tests/tinrec/test_plan.py; here the mechanics, on a 2-rank CPU topology
    rows = {n: min(r, 10_000) for n, r in resolve_rows(cfg, {"tables": {n: 1000 for n in cfg.model.tables}}).items()}
    model = build_model(cfg, rows)
    assert all(p.device.type == "meta" for p in model.sparse_arch.parameters())
    _apply_optimizer_in_backward(torch.optim.Adam, list(model.sparse_arch.parameters()), {"lr": 1e-3})
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=2, compute_device="cpu"),
                                       constraints=constraints(cfg, "cpu"), batch_size=cfg.train.batch_size)
    plan = planner.plan(model, sharders=get_default_sharders())
    planned = {t for mod in plan.plan.values() for t in mod}
    assert planned == set(cfg.model.tables)


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def _default_dict():
    with open(os.path.join(REPO, "configs", "default.yaml")) as f:
        return yaml.safe_load(f)


def test_typo_names_key_path_and_file(tmp_path):
    raw = _default_dict()
    raw["train"]["epoch"] = 3
    path = _write(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"c\.yaml: train\.epoch: unknown key \(did you mean 'epochs'\?\)"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=big", r"train\.batch_size: expected an integer"),
    # table widths fbgemm's fused kernels refuse are refused at load time, not deep in fbgemm
    ("model.tables.item.dim=33", r"c\.yaml: model\.tables\.item\.dim: must be a positive multiple of 4 .*got 33"),
    ("train.host_memory=pool", r"c\.yaml: train\.host_memory: expected one of cached, system, got 'pool'"),
    ("model.tables.position.dim=16", r"model\.sequence\.temporal: the table of 'hist_position' must have .*dim 64"),
])
def test_bad_override_names_key_and_file(tmp_path, override, message):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    with pytest.raises(ValueError, match=message):
        load_config(path, [override])


def test_overrides_apply(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    cfg = load_config(path, ["train.epochs=3", "seed=7", "data.max_len=50", "model.tower.hidden=[8,4]",
                             "data.generate.num_users=10"])
    assert (cfg.train.epochs, cfg.seed, cfg.data.max_len, cfg.model.tower.hidden) == (3, 7, 50, [8, 4])
    assert cfg.data.generate["num_users"] == 10


def test_component_arguments_checked_against_signature(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    with pytest.raises(ValueError, match=r"model\.interests\.tin\.temporl: not an argument of .*did you mean 'temporal'"):
        load_config(path, ["model.interests.tin.temporl=false"])
    with pytest.raises(ValueError, match=r"model\.interests\.tin\.dim: set by the model builder"):
        load_config(path, ["model.interests.tin.dim=64"])
    with pytest.raises(ValueError, match=r"model\.interests\.tin\._component_: cannot import"):
        load_config(path, ["model.interests.tin._component_=tinrec.modules.tin.Nope"])


def test_unknown_feature_and_missing_file(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    with pytest.raises(ValueError, match=r"model\.tables\.item\.features: unknown feature 'hist_itm'"):
        load_config(path, ["model.tables.item.features=[target_item, hist_itm]"])
    with pytest.raises(ValueError, match=r"nope\.yaml: config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_bad_override_syntax():
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(os.path.join(REPO, "configs", "default.yaml"), ["train.epochs"])
