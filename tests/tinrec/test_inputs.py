"""The inputs-by-name contract end to end: several sequences with their own max lengths and float side
information, profile and trigger inputs; one feature embedded by two groups; two modules sharing a group; a
family of 200 generated id features validated, planned and trained."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(REPO, "configs", "default.yaml")

TINY = ["data.generate.num_users=60", "data.generate.num_items=80", "data.generate.num_categories=6",
        "data.generate.train_rows=512", "data.generate.valid_rows=128", "data.generate.test_rows=128",
        "data.generate.seq_len_mean=10.0", "data.generate.seq_len_max=20", "data.generate.row_group_size=128",
        "data.generate.show_progress=false", "data.num_workers=0", "train.batch_size=64", "train.eval_batch_size=128",
        "model.tower.hidden=[16]", "train.log_every=1"]

TWO_SEQUENCES = [
    "data.generate.short_len=6", "data.sequences={hist: {max_len: 16}, short: {max_len: 4}}",
    "model.embeddings.main.item.features=[target_item, hist_item, short_item, trigger_item]",
    "model.embeddings.main.category.features=[target_category, hist_category, short_category, trigger_category]",
    "model.inputs.short={features: [short_item, short_category]}", "model.inputs.short_mask={mask: short}",
    "model.inputs.watch={dense: hist_watch_time}", "model.inputs.trigger={features: [trigger_item, trigger_category]}",
    "model.interests={two: {_component_: tests.tinrec.multi.TwoSequences, inputs: {long_BLD: behaviours, "
    "long_mask_BL: mask, watch_BL: watch, short_BSD: short, short_mask_BS: short_mask, profile_BP: user, "
    "trigger_BD: trigger}}}",
]


def _setup(tmp_path, *overrides):
    """(config, train.Data, the first training batch, an unsharded model with CPU tables)."""
    from tinrec.analysis import _analysis_data
    from tinrec.config import load_config
    from tinrec.model import build_model

    cfg = load_config(DEFAULT, [f"data.path={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}", *TINY, *overrides])
    data = _analysis_data(cfg)
    batch = next(iter(data.stream("train")))
    torch.manual_seed(0)
    return cfg, data, batch, build_model(cfg, data.rows, sparse_device=torch.device("cpu"))


def _cli(*args, timeout=600):
    p = subprocess.run([sys.executable, "-m", "tinrec.cli", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def _kept(table, column, max_len):
    """The most recent ``max_len`` values of list column ``column`` of each row (oldest first)."""
    return [v[-max_len:] if max_len else [] for v in table.column(column).to_pylist()]


def test_a_module_reads_two_sequences_with_their_own_lengths_side_information_profile_and_trigger(tmp_path):
    cfg, data, batch, model = _setup(tmp_path, *TWO_SEQUENCES)
    assert (cfg.data.max_len_of("hist"), cfg.data.max_len_of("short")) == (16, 4)
    got = model.module_inputs(batch)["two"]
    # the batch's rows, read straight from the file (the stream is not shuffled)
    table = pq.read_table(data.units("train")[0].file).slice(0, len(batch))
    hist_items, short_items = _kept(table, "hist_item", 16), _kept(table, "short_item", 4)
    watch = _kept(table, "hist_watch_time", 16)
    B, L = len(batch), max(map(len, hist_items))
    S = max(map(len, short_items))
    assert got["long_BLD"].shape == (B, L, 64) and got["short_BSD"].shape == (B, S, 64) and S == 4 < L <= 16
    assert got["long_mask_BL"].sum(1).tolist() == [len(h) for h in hist_items]
    assert got["short_mask_BS"].sum(1).tolist() == [len(s) for s in short_items]
    # the float side information, per kept behaviour, 0 at padding
    assert got["watch_BL"].dtype == torch.float32 and got["watch_BL"].shape == (B, L)
    for b in range(B):
        np.testing.assert_allclose(got["watch_BL"][b, :len(watch[b])].numpy(), watch[b], rtol=1e-6)
        assert not got["watch_BL"][b, len(watch[b]):].any()
    # the short sequence is the history's most recent behaviours (same tables): its rows are the last ones
    item = model.sparse_arch.ecs["main"].embeddings["item"].weight
    for b in range(B):
        k, n = len(short_items[b]), len(hist_items[b])
        torch.testing.assert_close(got["short_BSD"][b, :k], got["long_BLD"][b, n - k:n])
        assert torch.equal(got["short_BSD"][b, :k, :32], item[torch.tensor(short_items[b])])
    trigger = table.column("trigger_item").to_pylist()
    assert torch.equal(got["trigger_BD"][:, :32], item[torch.tensor(trigger)])
    assert got["profile_BP"].shape == (B, 32)
    loss, _ = model(batch)
    loss.backward()
    assert item.grad[torch.tensor(trigger)].abs().sum() > 0  # the trigger's rows learn through the module
    # and the same model trains through the real pipeline, from the command line
    run_dir = tmp_path / "cli"
    _cli("train", DEFAULT, f"data.path={tmp_path / 'data'}", f"run_dir={run_dir}", *TINY, *TWO_SEQUENCES,
         "train.max_steps=4")
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["auc"] is not None


WIDE = ["model.embeddings.wide={item_wide: {dim: 16, features: [hist_item, target_item]}}",
        "model.inputs.behaviours.group=main", "model.inputs.target.group=main",
        "model.inputs.behaviours_wide={features: [hist_item], group: wide}",
        "model.interests.pool={_component_: tests.tinrec.multi.Pool, inputs: {seq_BLD: behaviours_wide, mask_BL: mask}}",
        "model.interests.pool_main={_component_: tests.tinrec.multi.Pool, inputs: {seq_BLD: behaviours, mask_BL: mask}}"]


def _grads(model, output):
    model.zero_grad(set_to_none=True)
    output.sum().backward(retain_graph=True)
    ecs = model.sparse_arch.ecs
    return ecs["main"].embeddings["item"].weight.grad, ecs["wide"].embeddings["item_wide"].weight.grad


def test_one_feature_in_two_groups_has_two_tables_with_their_own_gradients(tmp_path):
    cfg, data, batch, model = _setup(tmp_path, *WIDE)
    assert {t: cfg.model.group_of(t) for t in ("item", "item_wide")} == {"item": "main", "item_wide": "wide"}
    mods = model.interest_modules()
    inputs = model.module_inputs(batch)
    assert inputs["pool"]["seq_BLD"].shape[-1] == 16 and inputs["tin"]["seq_BLD"].shape[-1] == 64
    rows = torch.unique(batch.sparse["hist_item"].values())
    main, wide = _grads(model, mods["pool"](**inputs["pool"]))
    assert main is None and wide[rows].abs().sum(1).gt(0).all()  # the wide module reaches its table only
    main, wide = _grads(model, mods["tin"](**inputs["tin"]))
    assert wide is None and main[rows].abs().sum() > 0


def test_two_modules_reading_one_group_update_the_same_rows(tmp_path):
    cfg, data, batch, model = _setup(tmp_path, *WIDE)
    mods, inputs = model.interest_modules(), model.module_inputs(batch)
    # one input, computed once, handed to both modules
    assert inputs["tin"]["seq_BLD"] is inputs["pool_main"]["seq_BLD"]
    g_tin, _ = _grads(model, mods["tin"](**inputs["tin"]))
    g_pool, _ = _grads(model, mods["pool_main"](**inputs["pool_main"]))
    g_tin, g_pool = g_tin.clone(), g_pool.clone()
    touched = lambda g: set(torch.nonzero(g.abs().sum(1)).flatten().tolist())  # noqa: E731
    hist = set(batch.sparse["hist_item"].values().tolist())
    assert touched(g_pool) == hist and hist <= touched(g_tin)
    both, _ = _grads(model, mods["tin"](**inputs["tin"]).sum() + mods["pool_main"](**inputs["pool_main"]).sum())
    torch.testing.assert_close(both, g_tin + g_pool)  # the table's rows get both modules' gradients


FAMILY = ["data.generate.extra_features={user: 200, rows: 50}",
          "model.embeddings.wide={'user_f{000..199}': {dim: 4, pooled: true}}",
          "model.inputs.wide={features: ['user_f{000..199}']}", "model.tower.inputs=[target, user, wide]"]


def test_a_family_of_200_generated_id_features_is_validated_planned_and_trained(tmp_path):
    from tinrec.config import load_config

    over = [f"data.path={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}", *TINY, *FAMILY]
    cfg = load_config(DEFAULT, over)
    wide = cfg.model.embeddings["wide"]
    assert len(wide) == 200 and wide["user_f137"].features == ["user_f137"]
    with pytest.raises(ValueError, match=r"model\.embeddings\.wide\.user_f200\.features: unknown feature 'user_f200': "
                                         r"not a column of the dataset"):
        load_config(DEFAULT, over + ["model.embeddings.wide.user_f200={dim: 4, pooled: true, features: [user_f200]}"])
    _cli("validate", DEFAULT, *over)
    _cli("train", DEFAULT, *over, "train.max_steps=3")  # generates the data, with the 200 columns
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["auc"] is not None
    p = _cli("plan", DEFAULT, *over, "--nodes", "1", "--gpus-per-node", "2", "--out", str(tmp_path / "plan.pt"))
    planned = torch.load(tmp_path / "plan.pt", weights_only=False)["tables"]
    assert {f"user_f{i:03d}" for i in range(200)} <= set(planned) and "HBM per rank: " in p.stdout, p.stdout[-2000:]
    # the family's pattern matches the dataset's columns once it exists (a glob needs them)
    cfg = load_config(DEFAULT, [o.replace("{000..199}", "*") for o in over])
    assert sorted(cfg.model.embeddings["wide"]) == sorted(wide)


@pytest.mark.parametrize("override, message", [
    ("model.interests.tin.inputs.mask_BL=null", "model.interests.tin.inputs.mask_BL: argument of "
                                                "tinrec.modules.tin.TIN.forward has no binding"),
    ("model.interests.tin.inputs.neg_seq_BLD=behaviours", "model.interests.tin.inputs.neg_seq_BLD: not an argument of "
                                                          "tinrec.modules.tin.TIN.forward"),
])
def test_tinrec_validate_names_the_key_of_a_bad_binding(override, message):
    p = subprocess.run([sys.executable, "-m", "tinrec.cli", "validate", DEFAULT, override], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_a_label_input_reaches_a_module_in_training_only(tmp_path):
    """For auxiliary losses (SIM's soft search): the batch's label in training, None in evaluation, so that no
    prediction can depend on it."""
    cfg, data, batch, model = _setup(tmp_path, "model.interests.probe={_component_: tests.tinrec.multi.LabelProbe, "
                                               "inputs: {seq_BLD: behaviours, mask_BL: mask, label_B: {label: label}}}")
    probe = model.interest_modules()["probe"]
    model.train()
    model(batch)
    assert torch.equal(probe.labels[-1], batch.labels[:, 0])
    model.eval()
    model(batch)
    assert probe.labels[-1] is None
    from tinrec.config import load_config

    with pytest.raises(ValueError, match=r"model\.interests\.probe\.inputs\.label_B\.label: 'label_like' is not one of "
                                         r"data\.labels \(label\)"):
        load_config(DEFAULT, [f"data.path={tmp_path / 'data'}", "model.interests.probe={_component_: "
                              "tests.tinrec.multi.LabelProbe, inputs: {seq_BLD: behaviours, mask_BL: mask, "
                              "label_B: {label: label_like}}}"])


def test_a_pooled_table_over_a_sequence_is_one_field_per_sample_its_mean_or_sum(tmp_path):
    """A sequence feature read by a pooled table (``pooling: mean`` or ``sum``) is a per-sample input: the mean
    (sum) of the table's rows of the sample's kept behaviours, 0 for an empty history; it stacks with the
    profile's fields into a [B, F, D] field stack (the non-sequence baselines' input, MODELS.md C)."""
    over = ["data.sequences={hist: {max_len: 8}}",
            "model.embeddings.bags={cat_mean: {dim: 16, features: [hist_category], pooled: true, pooling: mean}, "
            "item_sum: {dim: 16, features: [hist_item], pooled: true}, uid: {dim: 16, features: [user_id], pooled: true}}",
            "model.inputs.fields={features: [user_id, hist_category, hist_item], combine: stack, group: bags}",
            "model.inputs.behaviours.group=main", "model.inputs.user.group=main",
            "model.interests.pnn={_component_: tinrec.modules.pnn.PNN, hidden: [8], inputs: {fields_BFD: fields}}"]
    cfg, data, batch, model = _setup(tmp_path, *over)
    from tinrec.inputs import named

    values = model.dense_arch.input_arch(*model.sparse_arch(batch.sparse), batch.lengths, batch.dense, batch.labels)
    stack = values[named(cfg)["fields"].key]
    assert stack.shape == (batch.labels.shape[0], 3, 16)
    bags = model.sparse_arch.ebcs["bags"].embedding_bags
    ids_c, ids_i = batch.sparse["hist_category"], batch.sparse["hist_item"]
    want_c = torch.stack([bags["cat_mean"].weight[v].mean(0) if len(v) else torch.zeros(16)
                          for v in ids_c.to_dense()])
    want_i = torch.stack([bags["item_sum"].weight[v].sum(0) for v in ids_i.to_dense()])
    torch.testing.assert_close(stack[:, 1], want_c)
    torch.testing.assert_close(stack[:, 2], want_i)
    assert (ids_c.lengths() <= 8).all() and ids_c.lengths().max() == 8  # the kept behaviours only
