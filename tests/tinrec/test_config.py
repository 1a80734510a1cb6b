"""Config loading, overrides and validation; every file under configs/ loads, builds and plans on meta."""

import glob
import importlib
import inspect
import os
import re
import typing

import pytest
import torch
import yaml

from tinrec.config import BUILDER_ARGS, TowerConfig, _convert, check_component, load_config
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
    ("model.embeddings.main.item.dim=33", r"c\.yaml: model\.embeddings\.main\.item\.dim: must be a positive multiple of 4 .*got 33"),
    ("train.host_memory=pool", r"c\.yaml: train\.host_memory: expected one of cached, system, got 'pool'"),
    ("model.embeddings.main.item.dim=16", r"c\.yaml: model\.embeddings\.main: tables '\w+' \(dim \d+\) and '\w+' \(dim \d+\) "
                                          r"differ in width; .*put them in separate groups$"),
    # a typo in a module argument must not silently run the default model (YAML reads it as a string)
    ("model.interests.tin.attention=flase",
     r"c\.yaml: model\.interests\.tin\.attention: expected true or false, got 'flase'$"),
    ("model.tower.activation=swish", r"c\.yaml: model\.tower\.activation: must be one of \[.*'dice'\], got 'swish'$"),
    ("train.dense_optimizer.lr=-0.001", r"c\.yaml: train\.dense_optimizer\.lr: must be a finite number > 0, got -0\.001$"),
    ("train.sparse_optimizer.lr=.nan", r"c\.yaml: train\.sparse_optimizer\.lr: must be a finite number > 0, got nan$"),
    ("train.on_nonfinite=ignore", r"c\.yaml: train\.on_nonfinite: must be one of \['stop', 'skip'\], got 'ignore'$"),
    ("train.dense_optimizer.lr=1e-3x", r"c\.yaml: train\.dense_optimizer\.lr: expected a number, got '1e-3x'$"),
])
def test_bad_override_names_key_and_file(tmp_path, override, message):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    with pytest.raises(ValueError, match=message):
        load_config(path, [override])


def test_exponents_without_a_decimal_point_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads 1e30 as a string; a float key takes it as the number it means."""
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    cfg = load_config(path, ["train.dense_optimizer.lr=1e30", "train.sparse_optimizer.lr=5E-2", "train.grad_clip=2e0"])
    assert (cfg.train.dense_optimizer.lr, cfg.train.sparse_optimizer.lr, cfg.train.grad_clip) == (1e30, 0.05, 2.0)


def test_overrides_apply(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    cfg = load_config(path, ["train.epochs=3", "seed=7", "data.max_len=50", "model.tower.hidden=[8,4]",
                             "data.generate.num_users=10"])
    assert (cfg.train.epochs, cfg.seed, cfg.data.max_len, cfg.model.tower.hidden) == (3, 7, 50, [8, 4])
    assert cfg.data.generate["num_users"] == 10


def test_component_arguments_checked_against_signature(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    with pytest.raises(ValueError, match=r"model\.interests\.tin\.atention: not an argument of .*did you mean 'attention'"):
        load_config(path, ["model.interests.tin.atention=false"])
    with pytest.raises(ValueError, match=r"model\.interests\.tin\.dim: set by the model builder"):
        load_config(path, ["model.interests.tin.dim=64"])
    with pytest.raises(ValueError, match=r"model\.interests\.tin\._component_: cannot import"):
        load_config(path, ["model.interests.tin._component_=tinrec.modules.tin.Nope"])


def test_unknown_feature_and_missing_file(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    with pytest.raises(ValueError, match=r"model\.embeddings\.main\.item\.features: unknown feature 'hist_itm'"):
        load_config(path, ["model.embeddings.main.item.features=[target_item, hist_itm]"])
    with pytest.raises(ValueError, match=r"nope\.yaml: config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("override, message", [
    # a forward argument without a default and no binding; a binding the module does not take
    ("model.interests.tin.inputs.mask_BL=null",
     r"c\.yaml: model\.interests\.tin\.inputs\.mask_BL: argument of tinrec\.modules\.tin\.TIN\.forward has no binding$"),
    ("model.interests.tin.inputs.session_BL=mask",
     r"c\.yaml: model\.interests\.tin\.inputs\.session_BL: not an argument of tinrec\.modules\.tin\.TIN\.forward "
     r"\(its arguments: seq_BLD, mask_BL, query_BD, seq_time_BLD, query_time_BD\)$"),
    ("model.interests.tin.inputs.query_BD=targett",
     r"c\.yaml: model\.interests\.tin\.inputs\.query_BD: no input named 'targett' in model\.inputs"),
    ("model.inputs.target.features=[target_item, hist_item]",
     r"c\.yaml: model\.inputs\.target\.features: .* mix sequences and per-sample features"),
    ("model.inputs.user.combine=sum", r"c\.yaml: model\.inputs\.user\.combine: sum needs features of one width, "
                                      r"got user_id 16, user_age 8, user_gender 8$"),
    ("model.inputs.user.combine=stack", r"c\.yaml: model\.inputs\.user\.combine: stack needs features of one width"),
    ("model.inputs.mask={mask: long}", r"c\.yaml: model\.inputs\.mask\.mask: 'long' is not a sequence any table reads"),
    ("model.inputs.mask={mask: hist, dense: hist_timestamp}",
     r"c\.yaml: model\.inputs\.mask: set exactly one of features, mask, dense, label \(got mask, dense\)$"),
    ("model.inputs.behaviours.group=temporal",
     r"c\.yaml: model\.inputs\.behaviours\.features: 'hist_item' is not read by any table of group 'temporal'$"),
    ("model.inputs.user.negatives=in_batch", r"c\.yaml: model\.inputs\.user\.negatives: needs sequence features"),
    ("model.tower.inputs=[behaviours]", r"c\.yaml: model\.tower\.inputs\[0\]: the tower concatenates \[B, D\] inputs; "
                                        r"this one is \[B, L, 64\]$"),
    ("model.embeddings.temporal.item={dim: 64, features: [hist_position]}",
     r"c\.yaml: model\.embeddings\.temporal\.item: table name 'item' is already used in group 'main'"),
    ("model.embeddings.main.item2={dim: 32, features: [hist_item]}",
     r"c\.yaml: model\.embeddings\.main\.item2\.features: 'hist_item' is already read by table 'item' of group 'main'"),
    ("model.embeddings.main.item.pooling=mean",
     r"c\.yaml: model\.embeddings\.main\.item\.pooling: mean pools a pooled table's ids; this table has pooled: false"),
    ("model.embeddings.main.user.pooling=max", r"c\.yaml: model\.embeddings\.main\.user\.pooling: expected 'sum' or 'mean'"),
])
def test_bad_binding_names_the_key(tmp_path, override, message):
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    with pytest.raises(ValueError, match=message):
        load_config(path, [override])


def test_inputs_that_do_not_fit_a_module_are_a_config_error_before_training():
    """The builder calls each module once on zero inputs of the bound shapes (tinrec/model.py dry_run)."""
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), ["model.embeddings.temporal.position.dim=32"])
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"^model\.interests\.tin\.inputs: the bound inputs \(seq_BLD \[B, L, 64\], .*"
                                         r"seq_time_BLD \[B, L, 32\], .*\) do not fit the module: seq_time_BLD must have"):
        build_model(cfg, resolve_rows(cfg, {"tables": {n: 10 for n in cfg.model.tables}}))
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("config, overrides, name", [
    ("configs/lifelong/sim_soft.yaml", ["~model.interests.sim.inputs.label_B"], "sim"),
    ("configs/lifelong/cain.yaml", ["model.interests.cain.backbone=sim",
                                    "model.interests.cain.backbone_args={k: 100, heads: 4}"], "cain")])
def test_a_soft_search_without_its_label_is_a_config_error(config, overrides, name):
    """SIM's soft search (alone or as CAIN's backbone) learns its search only from its auxiliary loss on the
    click label: a config that does not bind label_B would train a search that never moves."""
    cfg = load_config(os.path.join(REPO, config), overrides)
    rows = resolve_rows(cfg, {"tables": {n: 10 for n in cfg.model.tables}})
    with pytest.raises(ValueError, match=rf"^model\.interests\.{name}: .* bind it: .*"
                                         rf"model\.interests\.{name}\.inputs\.label_B: label$"):
        build_model(cfg, rows)
    bound = load_config(os.path.join(REPO, config), overrides + [
        "model.inputs.label={label: label}", f"model.interests.{name}.inputs.label_B=label"])
    build_model(bound, resolve_rows(bound, {"tables": {n: 10 for n in bound.model.tables}}))


def test_a_feature_in_two_groups_needs_the_group_named(tmp_path):
    """The same ids embedded twice (multi-embedding): an input must say which group it reads."""
    path = _write(tmp_path, yaml.safe_dump(_default_dict()))
    twice = ["model.embeddings.wide={item_wide: {dim: 16, features: [hist_item, target_item]}}"]
    with pytest.raises(ValueError, match=r"model\.inputs\.behaviours\.group: 'hist_item' is read in groups main, wide: "
                                         r"say which one$"):
        load_config(path, twice)
    cfg = load_config(path, twice + ["model.inputs.behaviours.group=main", "model.inputs.target.group=main"])
    assert cfg.model.group_of("item_wide") == "wide"


@pytest.mark.parametrize("key", ["tables", "sequence", "user_features", "target_in_tower"])
def test_a_key_of_the_old_contract_says_where_it_went(tmp_path, key):
    raw = _default_dict()
    raw["model"][key] = {"x": 1}
    path = _write(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=rf"c\.yaml: model\.{key}: replaced by .*docs/config\.md, 'Migrating'$"):
        load_config(path)


def test_bad_override_syntax():
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(os.path.join(REPO, "configs", "default.yaml"), ["train.epochs"])


def test_a_tilde_override_removes_a_key():
    """``~model.interests.ipnn`` removes that expert (Hydra's spelling); removing a key that is not there is an
    error naming it."""
    path = os.path.join(REPO, "configs", "hetero_experts.yaml")
    cfg = load_config(path, ["~model.interests.ipnn", "~model.interests.dcnv2", "~model.inputs.fields3"])
    assert sorted(cfg.model.interests) == ["flatdnn", "gwpfm"] and "fields3" not in cfg.model.inputs
    from tinrec.config import parse_overrides

    # a family's name keeps its dots (experiments/hetero_experts.yaml widens every e1 table this way)
    assert parse_overrides(["model.embeddings.e1.e1_user_f{00..19}.dim=48"]) == [
        (["model", "embeddings", "e1", "e1_user_f{00..19}", "dim"], 48)]
    widths = [f"model.embeddings.e1.{t}.dim=48" for t in ("item", "category", "user", "e1_user_f{00..19}",
                                                           "e1_item_f{00..19}", "e1_ctx_f{00..09}")]
    assert load_config(path, widths).model.embeddings["e1"]["e1_user_f07"].dim == 48
    with pytest.raises(ValueError, match=r"cannot remove model\.interests\.nope: there is no such key"):
        load_config(path, ["~model.interests.nope"])


def _components(node):
    """Every ``_component_`` dotted path in a parsed YAML tree."""
    if isinstance(node, dict):
        found = {node["_component_"]} if "_component_" in node else set()
        return found.union(*(_components(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_components(v) for v in node))
    return set()


def _module_classes():
    """Classes of modules/*.py used as a ``_component_`` under configs/, and every other nn.Module there with
    a keyword-only constructor: {dotted path: class}."""
    used = set()
    for path in CONFIGS:
        with open(path) as f:
            used |= {c for c in _components(yaml.safe_load(f)) if c.startswith("tinrec.modules.")}
    classes = {}
    for path in sorted(glob.glob(os.path.join(REPO, "modules", "*.py"))):
        mod = importlib.import_module(f"tinrec.modules.{os.path.basename(path)[:-3]}")
        for name, cls in vars(mod).items():
            if not inspect.isclass(cls) or cls.__module__ != mod.__name__:
                continue
            params = inspect.signature(cls.__init__).parameters.values()
            keyword_only = any(p.kind is p.KEYWORD_ONLY for p in params)
            if f"{mod.__name__}.{name}" in used or (issubclass(cls, torch.nn.Module) and keyword_only):
                classes[f"{mod.__name__}.{name}"] = cls
    assert used <= set(classes), used - set(classes)
    return classes


MODULE_CLASSES = _module_classes()


@pytest.mark.parametrize("dotted", sorted(MODULE_CLASSES))
def test_module_arguments_are_annotated_and_type_checked(dotted):
    params = inspect.signature(MODULE_CLASSES[dotted].__init__).parameters
    hints = typing.get_type_hints(MODULE_CLASSES[dotted].__init__)
    assert [n for n in params if n != "self" and n not in hints] == []
    for name, p in params.items():
        if name == "self" or name in BUILDER_ARGS:
            continue
        if p.default is not p.empty:  # a default passes its own annotation
            _convert(hints[name], p.default, name, "default")
        bad = 1 if hints[name] is str else "x"
        message = rf"^c\.yaml: model\.interests\.m\.{name}: (expected|must be one of) .*got {re.escape(repr(bad))}$"
        with pytest.raises(ValueError, match=message):
            check_component({"_component_": dotted, name: bad}, "model.interests.m", "c.yaml")


def test_module_arguments_of_the_right_type_pass_as_given():
    spec = {"_component_": "tinrec.modules.bst.BST", "dropout": 0, "pool": "target", "num_heads": 4}
    check_component(spec, "model.interests.m", "c.yaml")  # an integer for a float is a number
    assert spec["dropout"] == 0
    check_component({"_component_": "tinrec.modules.dien.DIEN", "hidden": None, "aux_hidden": [8, 4]}, "m", "c.yaml")
    with pytest.raises(ValueError, match=r"c\.yaml: m\.aux_hidden\[1\]: expected an integer, got 'x'$"):
        check_component({"_component_": "tinrec.modules.dien.DIEN", "aux_hidden": [8, "x"]}, "m", "c.yaml")


class Unannotated(torch.nn.Module):
    """A module whose argument ``scale`` lacks an annotation, so its config values could not be checked."""

    def __init__(self, *, dim: int, scale=1.0) -> None:
        super().__init__()


def test_component_with_an_unannotated_argument_is_refused():
    spec = {"_component_": f"{__name__}.Unannotated"}
    with pytest.raises(ValueError, match=r"c\.yaml: model\.interests\.m\._component_: .*Unannotated does not "
                                         r"annotate its argument 'scale'"):
        check_component(spec, "model.interests.m", "c.yaml")


def test_tower_activations_are_the_mlp_activations():
    from tinrec.modules.mlp import ACTIVATIONS

    assert typing.get_args(typing.get_type_hints(TowerConfig)["activation"]) == ACTIVATIONS
