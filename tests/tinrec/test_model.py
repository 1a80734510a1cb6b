"""Model assembly: tables shared by target and history, padding, weighted loss; the same on a GPU."""

import glob
import os

import numpy as np
import pytest
import torch

from tinrec.data import search
from tinrec.config import load_config
from tinrec.data.generate import generate_dataset
from tinrec.data.reader import ParquetStream, list_units
from tinrec.data.schema import split_files
from tinrec.features import feature_rows, resolve_rows, used_features
from tinrec.inputs import dense_used
from tinrec.model import build_model
from tests.tinrec.datasets import random_rows, write_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLES = {"user": 20, "item": 50, "category": 6, "brand": 2, "author": 2, "age": 2, "gender": 2}


def _setup(tmp_path, config="default.yaml", overrides=()):
    cfg = load_config(os.path.join(REPO, "configs", config), ["data.max_len=8", *overrides])
    rows, tables = None, TABLES
    gen = cfg.data.generate or {}
    # id families (configs/hetero_experts*.yaml), triggers and pages (configs/trigger/*.yaml): the generator
    # and the lifelong data's sequences, profile and watch times (configs/lifelong/*.yaml)
    effects = gen.get("effects", {})
    if gen.get("extra_features") or effects.get("trigger") or effects.get("long_range"):
        small = dict(num_users=20, num_items=50, num_categories=6, num_brands=2, num_authors=2, train_rows=64,
                     valid_rows=8, test_rows=8, seq_len_mean=5.0, seq_len_max=8, row_group_size=64)
        tables = generate_dataset(str(tmp_path), **{**cfg.data.generate, **small, "show_progress": False})["tables"]
    else:
        rows = random_rows(64, seed=11)
        write_dataset(str(tmp_path), {"train": rows}, row_group_size=64, tables=TABLES)
    nrows = resolve_rows(cfg, {"tables": tables})
    feats = used_features(cfg)
    searches = search.of_config(cfg)  # SIM hard's searched sequence (configs/sim_hard.yaml)
    stream = ParquetStream(units=list_units(split_files(str(tmp_path), "train"), ["label"]), features=feats,
                           feature_rows=feature_rows(cfg, nrows), batch_size=64, max_len=8,
                           time_bin_edges={s: np.array([100.0, 1000.0]) for s in ["hist", *searches]},
                           dense_sequence=dense_used(cfg), searches=searches,
                           max_lens={s: cfg.data.max_len_of(s) for s in searches})
    torch.manual_seed(0)
    model = build_model(cfg, nrows, sparse_device=torch.device("cpu"))
    return cfg, model, next(iter(stream)), rows


def test_target_and_history_share_one_table(tmp_path):
    cfg, model, batch, rows = _setup(tmp_path)
    seqs, _ = model.sparse_arch(batch.sparse)
    emb = seqs["main"]
    hist_ids = batch.sparse["hist_item"].values()
    target_ids = batch.sparse["target_item"].values()
    common = set(hist_ids.tolist()) & set(target_ids.tolist())
    assert common
    x = next(iter(common))
    h = emb["hist_item"].values()[hist_ids == x][0]
    t = emb["target_item"].values()[target_ids == x][0]
    assert torch.equal(h, t)


def test_input_arch_pads_right_with_mask(tmp_path):
    cfg, model, batch, rows = _setup(tmp_path)
    out = model.module_inputs(batch)["tin"]
    lengths = batch.sparse["hist_item"].lengths()
    assert out["mask_BL"].sum(1).tolist() == lengths.tolist()
    assert out["seq_BLD"].shape == (64, int(lengths.max()), 64)
    assert torch.all(out["seq_BLD"][~out["mask_BL"]] == 0)
    # row i, slot j holds the j-th kept behaviour: item embedding then category embedding
    i = int(torch.argmax(lengths))
    item_tab = model.sparse_arch.ecs["main"].embeddings["item"].weight
    start = int(lengths[:i].sum())
    first_id = batch.sparse["hist_item"].values()[start]
    assert torch.equal(out["seq_BLD"][i, 0, :32], item_tab[first_id])
    assert torch.equal(out["query_time_BD"], model.sparse_arch.ecs["temporal"].embeddings["position"].weight[0].expand(64, 64))


def test_jagged_to_padded_matches_a_loop_and_routes_gradients():
    from tinrec.model import _padded, _slots

    lengths = torch.tensor([3, 0, 5, 1, 0, 2])
    B, L, N, d = 6, 7, int(lengths.sum()), 4  # L above the longest row: trailing padding everywhere
    values = torch.randn(N, d, requires_grad=True)
    out = _padded(values, _slots(lengths, L, N), B, L)
    want, n = torch.zeros(B, L, d), 0
    for b, k in enumerate(lengths.tolist()):
        want[b, :k] = values[n:n + k].detach()
        n += k
    assert torch.equal(out, want)
    weight = torch.randn(B, L, d)
    (out * weight).sum().backward()
    mask = torch.arange(L)[None, :] < lengths[:, None]
    assert torch.equal(values.grad, weight[mask])  # each value's gradient is its own slot's, padding drops
    ints = _padded(torch.arange(N).unsqueeze(-1) + 10, _slots(lengths, L, N), B, L).squeeze(-1)
    assert ints[mask].tolist() == list(range(10, 10 + N)) and not ints[~mask].any()


def test_jagged_to_padded_of_full_rows_is_the_values_viewed():
    from tinrec.model import _padded, _slots

    B, L, d = 3, 4, 2
    values = torch.randn(B * L, d, requires_grad=True)
    out = _padded(values, _slots(torch.full((B,), L), L, B * L), B, L)
    assert torch.equal(out, values.detach().view(B, L, d)) and out.data_ptr() == values.data_ptr()  # no copy
    out.sum().backward()
    assert torch.equal(values.grad, torch.ones(B * L, d))


def test_loss_ignores_zero_weight_samples(tmp_path):
    cfg, model, batch, rows = _setup(tmp_path)
    loss, (logits, labels, users, weights, terms) = model(batch)
    assert set(terms) == {"bce"} and torch.equal(terms["bce"], loss.detach())  # the loss, named
    assert logits.shape == (64, 1) and labels.shape == (64, 1) and torch.isfinite(loss)
    flipped = batch.as_padding()
    flipped.weights[:32] = 1.0
    flipped.labels[32:] = 1.0 - flipped.labels[32:]  # changing labels under weight 0 changes nothing
    loss_half, _ = model(flipped)
    expect = torch.nn.functional.binary_cross_entropy_with_logits(logits[:32], batch.labels[:32])
    torch.testing.assert_close(loss_half, expect)


@pytest.mark.parametrize("config", sorted(os.path.relpath(p, os.path.join(REPO, "configs")) for p in
                                          glob.glob(os.path.join(REPO, "configs", "*.yaml"))
                                          + glob.glob(os.path.join(REPO, "configs", "trigger", "*.yaml"))
                                          + glob.glob(os.path.join(REPO, "configs", "lifelong", "*.yaml"))))
def test_every_config_trains_a_step(tmp_path, config):
    cfg, model, batch, rows = _setup(tmp_path, config)
    loss, _ = model(batch)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_on_gpu_matches_cpu(tmp_path):
    cfg, model, batch, rows = _setup(tmp_path)
    # move before any forward: KeyedJaggedTensor.to keeps a per-key cache computed on the old device
    batch_gpu = batch.to(torch.device("cuda"))
    loss_cpu, (logits_cpu, *_) = model(batch)
    gpu = model.to("cuda")
    loss_gpu, (logits_gpu, *_) = gpu(batch_gpu)
    torch.testing.assert_close(logits_gpu.cpu(), logits_cpu, rtol=1e-4, atol=1e-4)
    loss_gpu.backward()


def test_split_din_gets_fields_from_the_builder_and_the_tower_sees_only_v_tr(tmp_path):
    """configs/din_split.yaml: two 64-wide features, d_TA = 64; Eq. 6's tower input has no target of its own."""
    cfg, model, batch, rows = _setup(tmp_path, "din_split.yaml", ["model.interests.din.attention_dim=16"])
    mod = model.interest_modules()["din"]
    assert (mod.fields, mod.attention_dim, mod.representation_dim) == (2, 16, 112)
    assert cfg.model.tower.inputs == ["user"]
    user_width = sum(cfg.model.tables[t].dim for t in ("user", "age", "gender"))
    assert model.dense_arch.over_arch.tower.layers[0].in_features == 3 * 112 + user_width
    # the target's TA columns reach the loss only through the attention weights
    out = mod(**model.module_inputs(batch)["din"])
    assert out.shape == (64, 3 * 112)


@pytest.mark.integration
def test_model_compile_keeps_parameter_names_values_and_gradients(tmp_path):
    """model.compile=true: torch.compile in place, so checkpoints are interchangeable with eager ones."""
    _, eager, batch, _ = _setup(tmp_path)
    cfg, compiled, _, _ = _setup(tmp_path, overrides=["model.compile=true"])
    assert cfg.model.compile and list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())
    results = []
    for model in (eager, compiled):
        loss, (logits, *_) = model(batch)
        loss.backward()
        results.append((loss.detach(), logits, model.sparse_arch.ecs["main"].embeddings["item"].weight.grad))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_tables_init_max_sets_its_initial_range_and_the_others_keep_torchrecs(tmp_path):
    """``model.embeddings.GROUP.TABLE.init_max``: that table starts uniform in [-init_max, init_max]; a table
    without it keeps TorchRec's default, uniform in +-sqrt(1 / rows)."""
    _, model, _, _ = _setup(tmp_path, overrides=["model.embeddings.main.item.init_max=0.5"])
    weights = {k.split(".")[-2]: v for k, v in model.state_dict().items() if k.endswith(".weight") and "embedding" in k}
    item, category = weights["item"], weights["category"]
    assert item.abs().max() <= 0.5 and item.abs().max() > 0.4  # 50 x dim draws reach near the bound
    assert category.abs().max() <= (1 / TABLES["category"]) ** 0.5 and category.abs().max() > 0.3
    with pytest.raises(ValueError, match=r"model\.embeddings\.main\.item\.init_max: must be a finite number > 0"):
        load_config(os.path.join(REPO, "configs", "default.yaml"), ["model.embeddings.main.item.init_max=0"])


POOL = ("model.interests.pool={_component_: tinrec.modules.pooling.AvgPooling, product: true, "
        "inputs: {seq_BLD: behaviours, mask_BL: mask, query_BD: target}}")


def test_tower_combine_gate_mixes_the_experts_and_learns(tmp_path):
    """``model.tower.combine: gate``: DIN and Avg Pooling (both 2D wide) meet in a softmax gate that starts as
    their mean; the tower reads the mix and its own inputs; the gate gets a gradient."""
    cfg, model, batch, _ = _setup(tmp_path, "din.yaml", [POOL, "model.tower.combine=gate"])
    combine = model.dense_arch.over_arch.combine
    from tinrec.inputs import bindings

    context = sum(i.width for i in bindings(cfg)[1])
    assert context > 0 and combine.how == "gate" and combine.output_dim == 128  # DIN's [u, u * v], D = 64
    assert model.dense_arch.over_arch.tower.in_dim == 128 + context
    loss, _ = model(batch)
    loss.backward()
    assert combine.gate.weight.grad.abs().sum() > 0
    _, concat, _, _ = _setup(tmp_path / "c", "din.yaml", [POOL])
    assert concat.dense_arch.over_arch.combine is None  # concat (the default) keeps the path it always had


def test_tower_combine_sum_refuses_experts_of_different_widths(tmp_path):
    with pytest.raises(ValueError, match=r"model\.tower\.combine: combine 'sum' needs every expert of one width.*"
                                         r"model\.interests: din 128, pool 64"):
        _setup(tmp_path, "din.yaml", [POOL.replace("product: true", "product: false"), "model.tower.combine=sum"])


def test_experts_sharing_an_embedding_set_update_the_same_rows_and_no_other_set(tmp_path):
    """configs/hetero_experts_tin.yaml (multi-embedding): GwPFM and FlatDNN, both on e1, send gradients to the
    same rows of every e1 table (the batch's ids) and to nothing in e2 or e3; IPNN only to e2; TIN only to e1's
    category table (its sequence and target) and its own position table."""
    cfg, model, batch, _ = _setup(tmp_path, "hetero_experts_tin.yaml")
    modules = model.interest_modules()
    tables = {name: p for name, p in model.sparse_arch.named_parameters()}
    group_of = {t: g for g, ts in cfg.model.embeddings.items() for t in ts}

    def rows_touched(expert):
        model.zero_grad(set_to_none=True)
        out = modules[expert](**model.module_inputs(batch)[expert])
        out.pow(2).sum().backward()
        touched = {}
        for name, p in tables.items():
            if p.grad is not None and p.grad.abs().sum() > 0:
                touched[name.split(".")[-2]] = set((p.grad.abs().sum(1) > 0).nonzero().flatten().tolist())
        return touched

    def ids(*features):
        return {int(v) for f in features for v in batch.sparse[f].values().tolist()}

    gwpfm, flat, ipnn, tin = (rows_touched(e) for e in ("gwpfm", "flatdnn", "ipnn", "tin"))
    e1 = {t for t, g in group_of.items() if g == "e1"}
    assert set(gwpfm) == set(flat) == e1 and gwpfm == flat
    assert gwpfm["item"] == ids("target_item") and gwpfm["e1_ctx_f03"] == ids("ctx_f03")
    assert gwpfm["category"] == ids("target_category")  # the fields read the target's row of the shared table
    assert set(ipnn) == {t for t, g in group_of.items() if g == "e2"} and ipnn["e2_item"] == ids("target_item")
    assert set(tin) == {"category", "position"}  # e1's category (sequence + target) and TTE-P's own table
    assert tin["category"] == ids("hist_category", "target_category") >= gwpfm["category"]


def test_the_tin_expert_computes_what_tin_alone_computes_on_the_same_tables(tmp_path):
    """configs/hetero_experts_tin.yaml's TIN expert, given the same weights, outputs exactly what a model of TIN
    alone (the same config without the other experts and their embedding sets) outputs: sharing e1 with GwPFM
    and FlatDNN changes nothing TIN reads."""
    import yaml

    with open(os.path.join(REPO, "configs", "hetero_experts_tin.yaml")) as f:
        raw = yaml.safe_load(f)
    for expert in ("gwpfm", "flatdnn", "ipnn", "dcnv2"):
        del raw["model"]["interests"][expert]
    for group in ("e2", "e3"):
        del raw["model"]["embeddings"][group]
    for name in ("fields1", "fields2", "fields3"):
        del raw["model"]["inputs"][name]
    raw["model"]["embeddings"]["e1"] = {"category": raw["model"]["embeddings"]["e1"]["category"]}
    alone_cfg = tmp_path / "tin_alone.yaml"
    alone_cfg.write_text(yaml.safe_dump(raw))
    _, full, batch, _ = _setup(tmp_path / "full", "hetero_experts_tin.yaml")
    _, alone, batch_alone, _ = _setup(tmp_path / "alone", str(alone_cfg))
    assert len(list(alone.interest_modules())) == 1
    shared = {k: v for k, v in full.state_dict().items() if k in alone.state_dict() and "tower" not in k}
    assert any(".category." in k for k in shared) and any(".position." in k for k in shared)  # TIN's own weights:
    # its tables (TIN's equations have no other parameters)
    alone.load_state_dict(shared, strict=False)
    for k, v in alone.state_dict().items():  # every weight of TIN alone is one of the full model's
        assert k in shared or "tower" in k, k
    out_full = full.interest_modules()["tin"](**full.module_inputs(batch)["tin"])
    out_alone = alone.interest_modules()["tin"](**alone.module_inputs(batch_alone)["tin"])
    torch.testing.assert_close(out_full, out_alone, rtol=0, atol=0)


def test_a_pooled_field_stack_is_a_view_of_its_groups_lookups_in_the_inputs_order(tmp_path):
    """A stack of one group's pooled features comes from the group's pooled values without a per-feature split:
    the same tensor as stacking the features one by one, in the input's order (reordered or a subset too), and
    the gradient reaches the same rows."""
    from torchrec import KeyedTensor

    from tinrec.inputs import Input
    from tinrec.model import InputArch

    B, D = 3, 4
    kt = KeyedTensor(keys=["a", "b", "c"], length_per_key=[D, D, D], values=torch.randn(B, 3 * D, requires_grad=True))
    parts = kt.to_dict()
    for order in (["a", "b", "c"], ["c", "a"], ["b", "a", "c"]):
        inp = Input(key=f"s{order}", kind="ids", sequence=None, features=tuple(order), groups=("g",) * len(order),
                    pooled=(True,) * len(order), combine="stack", width=D, fields=len(order))
        out = InputArch(inputs=[inp])({}, {"g": kt}, {}, {}, torch.zeros(B, 1))[inp.key]
        torch.testing.assert_close(out, torch.stack([parts[f] for f in order], dim=1), rtol=0, atol=0)
        if order == ["a", "b", "c"]:
            assert out.data_ptr() == kt.values().data_ptr()  # the group's own order: a view, no copy
    # a group whose pooled features differ in width: the stack falls back to feature by feature
    mixed = KeyedTensor(keys=["a", "w"], length_per_key=[D, 2 * D], values=torch.randn(B, 3 * D))
    inp = Input(key="s", kind="ids", sequence=None, features=("a",), groups=("g",), pooled=(True,), combine="stack", width=D, fields=1)
    out = InputArch(inputs=[inp])({}, {"g": mixed}, {}, {}, torch.zeros(B, 1))["s"]
    torch.testing.assert_close(out, mixed.to_dict()["a"].unsqueeze(1))


WD = ("model.interests.wd={_component_: tinrec.modules.wide_deep.WideDeep, user_dim: 32, "
      "inputs: {seq_BLD: behaviours, mask_BL: mask, query_BD: target, user_BU: user}}")


def test_a_module_that_outputs_logits_adds_them_to_the_towers(tmp_path):
    """``LOGIT_OUTPUT`` (Wide&Deep, DIAN): the module's [B, 1] is added to the tower's logit, not concatenated
    into its input; alone, with no tower inputs, the tower is one bias; beside DIN, DIN's output alone feeds the
    tower MLP. A tower with hidden layers and no input is a config error."""
    alone = ["~model.interests.din", WD, "model.tower.hidden=[]", "model.tower.inputs=[]"]
    cfg, model, batch, _ = _setup(tmp_path, "din.yaml", alone)
    wd = model.interest_modules()["wd"]
    tower = model.dense_arch.over_arch.tower
    with torch.no_grad():
        tower.bias.fill_(0.25)
    model.eval()
    _, (logits, *_rest) = model(batch)
    want = wd(**model.module_inputs(batch)["wd"]) + 0.25
    torch.testing.assert_close(logits, want)
    _, both, batch2, _ = _setup(tmp_path / "b", "din.yaml", [WD])
    din_width = both.interest_modules()["din"].output_dim
    assert both.dense_arch.over_arch.tower.in_dim == din_width + 64 + 32  # DIN, then [target, user]; no wide logit
    loss, _ = both(batch2)
    loss.backward()
    assert both.interest_modules()["wd"].wide.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"model\.tower\.hidden: the tower has no input"):
        _setup(tmp_path / "c", "din.yaml", alone[:-2] + ["model.tower.inputs=[]"])
