"""The synthetic dataset generator: determinism, the format contract, planted effects, crash safety."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tinrec.data.generate as gen
from tinrec.data import format as fmt

SMALL = dict(num_users=300, num_items=2000, num_categories=20, num_brands=40, num_authors=50, train_rows=3000,
             valid_rows=500, test_rows=500, seq_len_mean=20.0, seq_len_max=60, rows_per_file=1500,
             row_group_size=400, gt_positions=20, show_progress=False)

ID_TABLES = {"user_id": "user", "user_age": "age", "user_gender": "gender", "target_item": "item",
             "target_category": "category", "target_brand": "brand", "target_author": "author",
             "hist_item": "item", "hist_category": "category", "hist_brand": "brand", "hist_author": "author",
             "trigger_item": "item", "trigger_category": "category"}


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def _read(root, meta, split):
    return pa.concat_tables([pq.read_table(os.path.join(root, f)) for f in meta["splits"][split]["files"]])


def _lists(table, col):
    arr = table.column(col).combine_chunks()
    return np.diff(arr.offsets.to_numpy()), arr.flatten().to_numpy()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("small"))
    effects = {"feedback": {"enabled": True}, "trigger": {"enabled": True}, "context": {"enabled": True}}
    return root, gen.generate_dataset(root, seed=3, effects=effects, **SMALL)


def test_deterministic_by_seed(tmp_path, small):
    root, _ = small
    effects = {"feedback": {"enabled": True}, "trigger": {"enabled": True}, "context": {"enabled": True}}
    again = str(tmp_path / "again")
    gen.generate_dataset(again, seed=3, effects=effects, **SMALL)
    a, b = _files(root), _files(again)
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    other = str(tmp_path / "other")
    gen.generate_dataset(other, seed=4, effects=effects, **SMALL)
    assert _files(other)["train/part-00000.parquet"] != a["train/part-00000.parquet"]


def test_rows_do_not_depend_on_file_size(tmp_path):
    kw = dict(SMALL, train_rows=900, valid_rows=50, test_rows=50)
    a = gen.generate_dataset(str(tmp_path / "a"), **kw)
    b = gen.generate_dataset(str(tmp_path / "b"), **dict(kw, rows_per_file=250))
    assert len(a["splits"]["train"]["files"]) == 1 and len(b["splits"]["train"]["files"]) == 4
    assert _read(str(tmp_path / "a"), a, "train").equals(_read(str(tmp_path / "b"), b, "train"))


def test_meta_schema_and_layout(small):
    root, meta = small
    with open(os.path.join(root, "meta.json")) as f:
        assert json.load(f) == meta
    assert meta["format_version"] == fmt.FORMAT_VERSION
    assert meta["tables"] == {"user": 301, "item": 2001, "category": 21, "brand": 41, "author": 51, "age": 9,
                              "gender": 3, "page": 21}
    assert meta["max_seq_len"] == 60
    assert meta["generator"]["effects"]["feedback"] == {"enabled": True, "click_noise": 0.3, "disliked": 0,
                                                           "clickbait": 0.5}
    assert meta["splits"]["train"] == {"rows": 3000, "files": ["train/part-00000.parquet",
                                                                "train/part-00001.parquet"]}
    for split in fmt.SPLITS:
        files = meta["splits"][split]["files"]
        assert sorted(os.listdir(os.path.join(root, split))) == sorted(os.path.basename(f) for f in files)
        for f in files:
            pf = pq.ParquetFile(os.path.join(root, f))
            assert pf.schema_arrow.equals(fmt.arrow_schema())
            assert all(pf.metadata.row_group(g).num_rows <= SMALL["row_group_size"]
                       for g in range(pf.num_row_groups))
        t = _read(root, meta, split)
        assert t.num_rows == meta["splits"][split]["rows"]
        assert set(fmt.REQUIRED_COLUMNS + fmt.OPTIONAL_COLUMNS) <= set(t.column_names)
        assert meta["ctr"][split] == pytest.approx(t.column("label").to_numpy().mean())
        assert 0.1 < meta["ctr"][split] < 0.6


def test_ids_lengths_and_timestamps(small):
    root, meta = small
    for split in fmt.SPLITS:
        t = _read(root, meta, split)
        for col, table in ID_TABLES.items():
            v = _lists(t, col)[1] if col.startswith("hist_") else t.column(col).to_numpy()
            assert v.min() >= 1 and v.max() < meta["tables"][table], col
        lens = {c: _lists(t, c)[0] for c in fmt.LIST_COLUMNS}
        L = lens[fmt.HIST_TIMESTAMP]
        assert all((v == L).all() for v in lens.values())
        assert L.min() >= 1 and L.max() <= meta["max_seq_len"]
        _, ts = _lists(t, fmt.HIST_TIMESTAMP)
        row = np.repeat(np.arange(t.num_rows), L)
        target = t.column(fmt.TARGET_TIMESTAMP).to_numpy()
        assert (ts < target[row]).all()
        same_row = row[1:] == row[:-1]
        assert (np.diff(ts)[same_row] >= 0).all()  # oldest first
        assert set(np.unique(_lists(t, fmt.HIST_FEEDBACK)[1])) <= {0, 1, 2, 3}
        assert (_lists(t, fmt.HIST_WATCH_TIME)[1] > 0).all()
        page = t.column(fmt.PAGE).to_numpy()
        assert page.min() >= 1 and page.max() <= 20
        assert set(np.unique(t.column("label").to_numpy())) <= {0, 1}
    day = (_read(root, meta, "valid").column(fmt.TARGET_TIMESTAMP).to_numpy() - gen.EPOCH_BASE) // 86400
    assert (day == 21).all()


def _ctr_gap(root, meta):
    """CTR of rows whose 3 most recent behaviours include the target category minus rows with none of it."""
    t = _read(root, meta, "train")
    L, cats = _lists(t, "hist_category")
    row = np.repeat(np.arange(t.num_rows), L)
    p = np.cumsum(L)[row] - np.arange(cats.size)
    match = cats == t.column("target_category").to_numpy()[row]
    recent = np.bincount(row, weights=match & (p <= 3), minlength=t.num_rows) > 0
    none = np.bincount(row, weights=match, minlength=t.num_rows) == 0
    label = t.column("label").to_numpy()
    assert recent.sum() > 300 and none.sum() > 300
    return label[recent].mean() - label[none].mean()


def test_semantic_temporal_effect_is_planted(tmp_path):
    kw = dict(SMALL, train_rows=4000, valid_rows=50, test_rows=50)
    on = gen.generate_dataset(str(tmp_path / "on"), effects={"bias": -1.0}, **kw)
    off = gen.generate_dataset(str(tmp_path / "off"),
                               effects={"bias": -1.0, "semantic_temporal": {"enabled": False}}, **kw)
    assert _ctr_gap(str(tmp_path / "on"), on) > 0.3
    assert abs(_ctr_gap(str(tmp_path / "off"), off)) < 0.06
    with np.load(str(tmp_path / "off" / "ground_truth.npz")) as z:
        assert not z["stc_weight"].any()


def test_ground_truth(tmp_path, small):
    root, meta = small
    with np.load(os.path.join(root, "ground_truth.npz")) as z:
        stc, positions = z["stc_weight"], z["positions"]
    assert stc.shape == (21, 21, 20) and stc.dtype == np.float32
    assert (positions == np.arange(1, 21)).all()
    np.testing.assert_allclose(stc[3, 3], np.exp(-np.arange(20) / 8.0), rtol=1e-6)
    np.testing.assert_allclose(stc[3, 4], 0.5 * stc[3, 3])
    np.testing.assert_allclose(stc[4, 3], 0.5 * stc[3, 3])
    assert not stc[3, 5].any() and not stc[0].any() and not stc[:, 0].any()

    kw = dict(SMALL, valid_rows=10, test_rows=10)
    gen.generate_dataset(str(tmp_path / "t"), effects={"semantic_temporal": {"decay": "time", "strength": 2}}, **kw)
    with np.load(str(tmp_path / "t" / "ground_truth.npz")) as z:
        stc = z["stc_weight"]
    assert (np.diff(stc[5, 5]) < 0).all() and 0 < stc[5, 5, -1] < stc[5, 5, 0] <= 2.0
    np.testing.assert_allclose(stc[5, 6], 0.5 * stc[5, 5])


@pytest.mark.parametrize("fresh", [True, False])
def test_interrupted_run_leaves_no_meta(tmp_path, monkeypatch, fresh):
    root = str(tmp_path / "d")
    kw = dict(SMALL, train_rows=1200, valid_rows=50, test_rows=50)
    if not fresh:  # a complete dataset being regenerated stops looking complete
        gen.generate_dataset(root, **kw)
        assert os.path.exists(os.path.join(root, "meta.json"))

    calls = []

    class Boom(pq.ParquetWriter):
        def write_table(self, table, *a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("killed")
            return super().write_table(table, *a, **k)

    import tinrec.data.io as data_io

    monkeypatch.setattr(data_io.pq, "ParquetWriter", Boom)
    with pytest.raises(RuntimeError, match="killed"):
        gen.generate_dataset(root, seed=1, **kw)
    assert not os.path.exists(os.path.join(root, "meta.json"))
    assert not os.path.exists(os.path.join(root, "ground_truth.npz"))
    assert not any(n.endswith(".parquet") for n in os.listdir(os.path.join(root, "train")))


def test_merge_effects():
    m = gen.merge_effects({"trigger": {"enabled": True}, "bias": -1})
    assert m["trigger"] == {"enabled": True, "strength": 1.0, "tau_page": 3.0} and m["bias"] == -1.0
    assert m["semantic_temporal"] == gen.DEFAULT_EFFECTS["semantic_temporal"]
    assert gen.merge_effects(None) == gen.DEFAULT_EFFECTS
    with pytest.raises(ValueError, match=r"effects\.semantic_temporal\.decya"):
        gen.merge_effects({"semantic_temporal": {"decya": "time"}})
    with pytest.raises(ValueError, match=r"effects\.semantic_temporal\.decay"):
        gen.merge_effects({"semantic_temporal": {"decay": "linear"}})
    with pytest.raises(ValueError, match=r"effects\.context\.enabled"):
        gen.merge_effects({"context": {"enabled": "yes"}})
    with pytest.raises(ValueError, match=r"effects\.trigger\.tau_page"):
        gen.merge_effects({"trigger": {"tau_page": 0}})
    with pytest.raises(ValueError, match=r"effects\.feedback\.click_noise"):
        gen.merge_effects({"feedback": {"click_noise": 1.5}})
    with pytest.raises(ValueError, match=r"effects\.temporal"):
        gen.merge_effects({"temporal": {}})
    with pytest.raises(ValueError, match=r"effects\.trigger"):
        gen.merge_effects({"trigger": True})
    with pytest.raises(ValueError, match="num_categories"):
        gen.generate_dataset("/nonexistent/never", num_categories=3, show_progress=False)


def test_optional_sequences_and_id_families_leave_the_rest_unchanged(tmp_path):
    """short_len and extra_features add columns (a short-term sequence, extra id families) and change nothing
    else; meta.json describes every column (kind, sequence) and sizes the new tables."""
    base = gen.generate_dataset(str(tmp_path / "base"), **SMALL)
    more = gen.generate_dataset(str(tmp_path / "more"), **SMALL, short_len=5,
                                extra_features={"user": 3, "item": 2, "ctx": 12, "rows": 30})
    a, b = _read(str(tmp_path / "base"), base, "train"), _read(str(tmp_path / "more"), more, "train")
    assert b.column_names == a.column_names + gen.columns(short_len=5, extra_features={"user": 3, "item": 2, "ctx": 12})[
        len(a.column_names):]
    for c in a.column_names:
        assert a.column(c).equals(b.column(c)), c
    # the short sequence is the history's most recent min(L, 5) behaviours, field by field
    for short, hist in (("short_item", "hist_item"), ("short_timestamp", "hist_timestamp"),
                        ("short_watch_time", "hist_watch_time")):
        for s, h in zip(b.column(short).to_pylist()[:200], b.column(hist).to_pylist()[:200]):
            assert s == h[-5:]
    # user and item families are fixed per user / per target item; context ids vary per row
    users, items = b.column("user_id").to_numpy(), b.column("target_item").to_numpy()
    for fam, key in (("user_f02", users), ("item_f01", items)):
        v = b.column(fam).to_numpy()
        for k in np.unique(key)[:50]:
            assert len(set(v[key == k])) == 1, fam
        assert 1 <= v.min() and v.max() < 30
    assert len(set(b.column("ctx_f11").to_numpy()[users == users[0]])) > 1 or (users == users[0]).sum() == 1
    assert more["tables"]["ctx_f11"] == 30 and "user_f03" not in more["tables"]
    cols = more["columns"]
    assert cols["short_watch_time"] == {"type": "list<item: float>", "kind": "float_sequence", "sequence": "short"}
    assert cols["hist_item"]["kind"] == "id_sequence" and cols["user_f00"] == {"type": "int64", "kind": "id",
                                                                                "sequence": None}
    assert set(cols) == set(b.column_names)


def test_lifelong_mode_plants_interests_far_back_that_only_a_long_window_sees(tmp_path):
    """effects.long_range: each user's persistent interests (ground truth) appear far back (p > min_position)
    much more than recently, and a target in one is clicked more when the row has such far behaviours;
    profile: the activity bucket and the history's most watched author."""
    root = str(tmp_path / "ll")
    params = dict(SMALL, seq_len_mean=120.0, seq_len_max=300, train_rows=4000, profile=True, short_len=20,
                  effects={"long_range": {"enabled": True, "min_position": 40, "share": 0.1, "strength": 3.0},
                           "context": {"enabled": True, "by_activity": True}})
    meta = gen.generate_dataset(root, **params)
    gt = np.load(os.path.join(root, "ground_truth.npz"))
    pers = gt["persistent"]
    assert pers.shape == (SMALL["num_users"] + 1, 2) and (pers[1:] >= 1).all() and (pers[1:, 0] != pers[1:, 1]).all()
    t = _read(root, meta, "train")
    users = t.column("user_id").to_numpy()
    lens, cats = _lists(t, "hist_category")
    row = np.repeat(np.arange(len(lens)), lens)
    p = np.concatenate([np.arange(n, 0, -1) for n in lens])  # 1 = most recent
    in_pers = (pers[users[row]] == cats[:, None]).any(1)
    far, near = p > 40, p <= 40
    assert in_pers[far].mean() > 5 * in_pers[near].mean()  # thin, and far back
    # the label: targets in a persistent interest, with or without such behaviours far back in their row
    target = t.column("target_category").to_numpy()
    label = t.column("label").to_numpy()
    t_pers = (pers[users] == target[:, None]).any(1)
    far_hit = np.bincount(row, weights=(in_pers & far & (cats == target[row])).astype(float), minlength=len(lens)) > 0
    assert t_pers.mean() > 0.2 and label[t_pers & far_hit].mean() > label[t_pers & ~far_hit].mean() + 0.15
    # profile columns and their tables
    act = t.column("user_activity").to_numpy()
    assert set(np.unique(act)) <= {1, 2, 3, 4, 5} and all(len(set(act[users == u])) == 1 for u in np.unique(users)[:30])
    _, authors = _lists(t, "hist_author")
    top = t.column("user_top_author").to_numpy()
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    assert all(top[i] in authors[starts[i]:starts[i] + lens[i]] for i in range(200) if lens[i])
    assert meta["tables"]["activity"] == 6 and meta["columns"]["short_item"]["sequence"] == "short"


def test_long_range_items_make_each_persistent_interest_a_few_items_of_its_own(tmp_path):
    """long_range.items = 3: every far-back persistent behaviour and every target sent to a persistent interest
    is one of that user's 3 items of the interest (ground truth ``persistent_items``, items of the persistent
    category); items = 0 (the default) leaves the data of the plain long-range mode bitwise unchanged."""
    base = dict(SMALL, seq_len_mean=120.0, seq_len_max=300, train_rows=3000, valid_rows=100, test_rows=100)
    lr = {"enabled": True, "min_position": 40, "share": 0.1, "strength": 3.0}
    meta = gen.generate_dataset(str(tmp_path / "items"), **dict(base, effects={"long_range": dict(lr, items=3)}))
    gt = np.load(os.path.join(str(tmp_path / "items"), "ground_truth.npz"))
    pers, own = gt["persistent"], gt["persistent_items"]
    assert own.shape == (SMALL["num_users"] + 1, 2, 3)
    world_cat = np.zeros(SMALL["num_items"] + 1, np.int64)
    t = _read(str(tmp_path / "items"), meta, "train")
    lens, cats = _lists(t, "hist_category")
    _, items = _lists(t, "hist_item")
    world_cat[items] = cats  # every item has one category
    assert (world_cat[own[1:]] == pers[1:, :, None]).all()  # the items belong to their interest's category
    users = t.column("user_id").to_numpy()
    row = np.repeat(np.arange(len(lens)), lens)
    p = np.concatenate([np.arange(n, 0, -1) for n in lens])
    far_pers = (pers[users[row]] == cats[:, None]).any(1) & (p > 40)
    mine = (own[users[row]].reshape(len(row), -1) == items[:, None]).any(1)
    assert far_pers.sum() > 500 and mine[far_pers].mean() > 0.75  # (the others: exploration draws of the category)
    target, t_item = t.column("target_category").to_numpy(), t.column("target_item").to_numpy()
    t_pers = (pers[users] == target[:, None]).any(1)
    t_mine = (own[users].reshape(len(users), -1) == t_item[:, None]).any(1)
    assert t_pers.mean() > 0.2 and t_mine[t_pers].mean() > 0.8
    # items = 0: the plain mode's data, bitwise
    gen.generate_dataset(str(tmp_path / "a"), **dict(base, effects={"long_range": lr}))
    gen.generate_dataset(str(tmp_path / "b"), **dict(base, effects={"long_range": dict(lr, items=0)}))
    for split in ("train", "test"):
        assert _read(str(tmp_path / "a"), meta, split).equals(_read(str(tmp_path / "b"), meta, split))


def test_long_range_fading_interests_end_in_drops_and_count_against_their_targets(tmp_path):
    """long_range.fading: a fading interest's far-back behaviours are followed by a sharp watch-time drop far
    more often than others (the evidence a context-aware model reads), and for the less active users (context
    by_activity) a target in a faded interest is clicked less than one in a kept interest, while for the active
    ones it is not; fading = 0 (the default) leaves the data bitwise unchanged."""
    base = dict(SMALL, seq_len_mean=120.0, seq_len_max=300, train_rows=6000, valid_rows=100, test_rows=100,
                profile=True)
    lr = {"enabled": True, "min_position": 40, "share": 0.1, "strength": 3.0, "items": 3, "target_share": 0.5}
    ctx = {"enabled": True, "by_activity": True}
    root = str(tmp_path / "fade")
    meta = gen.generate_dataset(root, **dict(base, effects={"long_range": dict(lr, fading=0.5, fading_drop=0.6),
                                                             "context": ctx}))
    gt = np.load(os.path.join(root, "ground_truth.npz"))
    pers, fading = gt["persistent"], gt["persistent_fading"]
    assert fading.shape == pers.shape and not fading[0].any() and 0.4 < fading[1:].mean() < 0.6
    t = _read(root, meta, "train")
    users = t.column("user_id").to_numpy()
    lens, cats = _lists(t, "hist_category")
    _, watch = _lists(t, "hist_watch_time")
    row = np.repeat(np.arange(len(lens)), lens)
    p = np.concatenate([np.arange(n, 0, -1) for n in lens])
    # a drop after behaviour i = the next (more recent, stored next) behaviour watched for a tenth as long
    nxt = np.r_[watch[1:], np.inf]
    dropped = (p >= 2) & (nxt < 0.25 * np.median(watch))
    hit = pers[users[row]] == cats[:, None]
    far = p > 40
    fade_b = far & (hit & fading[users[row]]).any(1)
    kept_b = far & (hit & ~fading[users[row]]).any(1)
    assert dropped[fade_b].mean() > 0.45 and dropped[kept_b].mean() < 0.15
    # the label: targets in a persistent interest seen far back, faded or kept, less or more active users
    target, label = t.column("target_category").to_numpy(), t.column("label").to_numpy()
    t_hit = pers[users] == target[:, None]
    far_hit = np.bincount(row, weights=(hit.any(1) & far & (cats == target[row])).astype(float),
                          minlength=len(lens)) > 0
    faded, kept = far_hit & (t_hit & fading[users]).any(1), far_hit & (t_hit & ~fading[users]).any(1)
    less = t.column("user_activity").to_numpy() <= 2
    assert label[faded & less].mean() < label[kept & less].mean() - 0.3
    assert abs(label[faded & ~less].mean() - label[kept & ~less].mean()) < 0.1
    # fading = 0: the data without the option, bitwise
    other = dict(base, train_rows=1000, effects={"long_range": lr, "context": ctx})
    small = gen.generate_dataset(str(tmp_path / "a"), **other)
    gen.generate_dataset(str(tmp_path / "b"), **dict(other, effects={"long_range": dict(lr, fading=0.0),
                                                                     "context": ctx}))
    for split in ("train", "test"):
        assert _read(str(tmp_path / "a"), small, split).equals(_read(str(tmp_path / "b"), small, split))


def test_a_fading_lag_moves_the_drop_further_on_and_changes_nothing_else(tmp_path):
    """long_range.fading_lag: a fading interest's drop lands on the lag-th more recent behaviour instead of the
    next one (context beyond a first TCN layer's reach); the labels and every column but the watch times (and the
    most-watched author, counted from them) are those of lag 1, and lag 1 (the default) is the data without the
    option, bitwise."""
    base = dict(SMALL, seq_len_mean=120.0, seq_len_max=300, train_rows=3000, valid_rows=100, test_rows=100,
                profile=True)
    lr = {"enabled": True, "min_position": 40, "share": 0.1, "strength": 3.0, "items": 3, "target_share": 0.5,
          "fading": 0.5, "fading_drop": 0.6}
    ctx = {"enabled": True, "by_activity": True}
    metas = {}
    for name, extra in (("default", {}), ("lag1", {"fading_lag": 1}), ("lag12", {"fading_lag": 12})):
        metas[name] = gen.generate_dataset(str(tmp_path / name),
                                           **dict(base, effects={"long_range": dict(lr, **extra), "context": ctx}))
    for split in ("train", "test"):
        assert _read(str(tmp_path / "default"), metas["default"], split).equals(
            _read(str(tmp_path / "lag1"), metas["lag1"], split))
    a = _read(str(tmp_path / "lag1"), metas["lag1"], "train")
    b = _read(str(tmp_path / "lag12"), metas["lag12"], "train")
    for col in a.column_names:
        if col not in ("hist_watch_time", "user_top_author"):
            assert a.column(col).equals(b.column(col)), col
    gt = np.load(str(tmp_path / "lag12" / "ground_truth.npz"))
    pers, fading = gt["persistent"], gt["persistent_fading"]
    users = b.column("user_id").to_numpy()
    lens, cats = _lists(b, "hist_category")
    row = np.repeat(np.arange(len(lens)), lens)
    p = np.concatenate([np.arange(n, 0, -1) for n in lens])
    hit = pers[users[row]] == cats[:, None]
    fade_b = (p > 40) & (hit & fading[users[row]]).any(1)
    for name, tab in (("lag1", a), ("lag12", b)):
        _, watch = _lists(tab, "hist_watch_time")
        low = watch < 0.25 * np.median(watch)
        after = {k: np.r_[low[k:], np.zeros(k, bool)] for k in (1, 12)}  # the k-th more recent behaviour low
        rate = {k: after[k][fade_b].mean() for k in (1, 12)}
        lagged = 12 if name == "lag12" else 1
        other = 1 if lagged == 12 else 12
        assert rate[lagged] > 0.45 and rate[other] < 0.15, (name, rate)


def test_logit_parts_regenerate_a_split_and_its_terms_add_up_to_the_labels_logit(tmp_path, small):
    """``logit_parts``: the split regenerated in memory has the stored labels, the terms add up to the logit, and
    the context effect's sign flips are what separates a term from its ``_without_context`` twin."""
    root, meta = small
    parts = gen.logit_parts(meta["generator"], "valid")
    assert np.array_equal(parts["label"], _read(root, meta, "valid").column("label").to_numpy())
    total = parts["base"] + parts["user"] + parts["semantic_temporal"] + parts["trigger"]
    np.testing.assert_allclose(parts["logit"], total, atol=1e-9)
    flipped = parts["semantic_temporal"] != parts["semantic_temporal_without_context"]
    assert 0 < flipped.mean() < 1 and "long_range" not in parts


def _planted(tmp_path, extra, effects):
    """The data with ``effects`` planted on the extra fields ``extra``: (meta, its valid split, its ground truth),
    after checking that only the labels differ from the same data without them."""
    plain = gen.generate_dataset(str(tmp_path / "plain"), **SMALL, extra_features=extra)
    meta = gen.generate_dataset(str(tmp_path / "planted"), **SMALL, extra_features=extra, effects=effects)
    a, b = _read(str(tmp_path / "plain"), plain, "valid"), _read(str(tmp_path / "planted"), meta, "valid")
    for c in b.column_names:
        assert c == "label" or a.column(c).equals(b.column(c)), c
    return meta, b, np.load(str(tmp_path / "planted" / "ground_truth.npz"))


def test_field_triples_plant_third_order_interactions_of_extra_fields(tmp_path):
    """effects.field_triples: the logit gains strength sum_k z_a,k z_b,k z_c,k / sqrt(T) over T triples of extra
    fields, recomputed from the columns and the ground truth; the columns do not change, only the labels."""
    extra = {"user": 3, "item": 3, "ctx": 4, "rows": 12}
    effects = {"field_triples": {"enabled": True, "strength": 2.0, "triples": 5, "rank": 3},
               "field_pairs": {"enabled": True}}  # both: one field_names in the ground truth
    meta, b, truth = _planted(tmp_path, extra, effects)
    names, triples, z = list(truth["field_names"]), truth["field_triples"], truth["field_triple_latent"]
    assert triples.shape == (5, 3) and z.shape == (10, 12, 3) and len({tuple(sorted(t)) for t in triples}) == 5
    col = lambda n: z[names.index(n)][b.column(n).to_numpy()]  # noqa: E731
    want = sum((col(x) * col(y) * col(w)).sum(1) for x, y, w in triples) * 2.0 / np.sqrt(5)
    parts = gen.logit_parts(meta["generator"], "valid")
    np.testing.assert_allclose(parts["field_triples"], want, rtol=1e-5, atol=1e-5)
    assert 1.2 < parts["field_triples"].std() < 2.8  # each triple's product has unit variance
    with pytest.raises(ValueError, match=r"effects\.field_triples\.triples: 500 triples need more extra fields"):
        gen.generate_dataset(str(tmp_path / "bad"), **SMALL, extra_features=extra,
                             effects={"field_triples": {"enabled": True, "triples": 500}})


def test_trigger_ground_truth_is_the_trigger_term_of_each_rows_logit(small):
    """``trigger_weight[c_t, c_tr, page - 1]`` looked up with a row's target category, trigger category and page
    is exactly the trigger term ``logit_parts`` reports; it fades over the pages (DEI2N's data, issue 16)."""
    root, meta = small
    truth = np.load(os.path.join(root, "ground_truth.npz"))["trigger_weight"]
    t = _read(root, meta, "valid")
    col = lambda c: t.column(c).to_numpy()  # noqa: E731
    got = truth[col("target_category"), col("trigger_category"), col("page") - 1]
    parts = gen.logit_parts(meta["generator"], "valid")
    np.testing.assert_allclose(got, parts["trigger"], rtol=1e-6, atol=1e-6)
    assert (got > 0).mean() > 0.15  # about a fifth of the targets are the trigger's category
    same = truth[np.arange(1, 21), np.arange(1, 21)]  # [C, pages]: w = 1
    assert np.allclose(same[:, 0], 1.0) and (np.diff(same, axis=1) < 0).all()


def test_field_pairs_plant_pairwise_interactions_of_extra_fields(tmp_path):
    """effects.field_pairs: the logit gains strength <z_a[id_a], z_b[id_b]> / sqrt(P) over P pairs of extra
    fields; recomputed from the written columns and the exported ground truth it is the term ``logit_parts``
    reports, and the extra id columns themselves do not change (only the labels do)."""
    extra = {"user": 3, "item": 3, "ctx": 4, "rows": 12}
    effects = {"field_pairs": {"enabled": True, "strength": 2.0, "pairs": 6, "rank": 3}}
    meta, b, truth = _planted(tmp_path, extra, effects)
    names, pairs, latent = list(truth["field_names"]), truth["field_pairs"], truth["field_latent"]
    assert names == gen.columns(extra_features=extra)[-10:] and pairs.shape == (6, 2) and latent.shape == (10, 12, 3)
    assert len({tuple(sorted(p)) for p in pairs}) == 6 and all(x != y for x, y in pairs)
    want = sum((latent[names.index(x)][b.column(x).to_numpy()] * latent[names.index(y)][b.column(y).to_numpy()]).sum(1)
               for x, y in pairs) * 2.0 / np.sqrt(6)
    parts = gen.logit_parts(meta["generator"], "valid")
    np.testing.assert_allclose(parts["field_pairs"], want, rtol=1e-5, atol=1e-5)
    assert 1.5 < parts["field_pairs"].std() < 2.5  # each pair's product has unit variance
    # the labels follow the term: the clicked rows have the larger planted interaction
    label = b.column("label").to_numpy()
    assert parts["field_pairs"][label == 1].mean() > parts["field_pairs"][label == 0].mean() + 0.5
    with pytest.raises(ValueError, match=r"effects\.field_pairs\.pairs: 6 pairs need more extra fields than the 3"):
        gen.parameters(extra_features={"user": 3}, effects=effects)


def test_gen_data_command_passes_its_key_values_to_the_generator(tmp_path, capsys):
    """``tinrec gen-data OUT seed=3 effects.trigger.enabled=true ...`` is generate_dataset with those arguments
    (nested keys included); an unknown key or a ``~key`` is an error naming it, and writes nothing."""
    from tinrec.cli import _main

    small = [f"{k}={v}" for k, v in SMALL.items()]
    assert _main(["gen-data", str(tmp_path / "cli"), "seed=3", "effects.trigger.enabled=true", *small]) == 0
    gen.generate_dataset(str(tmp_path / "api"), seed=3, effects={"trigger": {"enabled": True}}, **SMALL)
    assert _files(tmp_path / "cli") == _files(tmp_path / "api")
    assert json.load(open(tmp_path / "cli" / "meta.json"))["generator"]["seed"] == 3
    for bad, msg in (("sede=3", "unknown parameter 'sede'"), ("~seed", "removing a parameter")):
        assert _main(["gen-data", str(tmp_path / "bad"), bad]) == 2
        assert msg in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_disliked_categories_hold_the_dislikes_and_the_clickbait_and_a_second_label(tmp_path):
    """effects.feedback.disliked (DUMN's data, issue 17): each user's disliked categories (ground truth, none a
    favourite) hold every dislike and the clickbait share of the accidental clicks; ``hist_accidental`` marks
    exactly the accidental clicks; ``label_dislike`` follows the target's category being disliked, as the
    ``label_dislike_logit`` that ``logit_parts`` reports (not a term of the click label's logit). Nothing else
    moves: the feedback types, timestamps and the genuine clicks' categories are those of the same data without
    disliked categories."""
    fb = {"enabled": True, "click_noise": 0.4}
    plain = gen.generate_dataset(str(tmp_path / "plain"), **SMALL, effects={"feedback": fb})
    meta = gen.generate_dataset(str(tmp_path / "dis"), **SMALL,
                                effects={"feedback": {**fb, "disliked": 2, "clickbait": 0.75}})
    a, b = _read(str(tmp_path / "plain"), plain, "train"), _read(str(tmp_path / "dis"), meta, "train")
    assert "label_dislike" not in a.column_names and "hist_accidental" not in a.column_names
    assert b.column_names == a.column_names + ["label_dislike", "hist_accidental"]
    assert gen.columns(**SMALL, effects={"feedback": {**fb, "disliked": 2}}) == b.column_names
    for c in ("user_id", "hist_timestamp", "hist_feedback", "hist_watch_time", "trigger_item", "page"):
        assert a.column(c).equals(b.column(c)), c
    disliked = np.load(str(tmp_path / "dis" / "ground_truth.npz"))["disliked"]
    assert disliked.shape == (301, 2) and (disliked[1:, 0] != disliked[1:, 1]).all()
    world = gen._World(np.random.default_rng([0, 999]), 300, 2000, 20, 40, 50)
    assert not (world.fav[1:, :, None] == disliked[1:, None, :]).any()  # none is a favourite
    lens, fbk = _lists(b, "hist_feedback")
    user_T = np.repeat(b.column("user_id").to_numpy(), lens)
    cat_a, cat_b = _lists(a, "hist_category")[1], _lists(b, "hist_category")[1]
    acc = _lists(b, "hist_accidental")[1].astype(bool)
    in_dis = (disliked[user_T] == cat_b[:, None]).any(1)
    assert in_dis[fbk == fmt.FEEDBACK_DISLIKE].all()
    assert not acc[fbk != fmt.FEEDBACK_CLICK].any() and abs(acc[fbk == fmt.FEEDBACK_CLICK].mean() - 0.4) < 0.02
    genuine = (fbk == fmt.FEEDBACK_CLICK) & ~acc
    assert (cat_a[genuine] == cat_b[genuine]).all() and (cat_a[fbk == fmt.FEEDBACK_LIKE] == cat_b[fbk == fmt.FEEDBACK_LIKE]).all()
    # clickbait: 0.75 of the accidental clicks in a disliked category, the rest uniform over 20 (2 of them disliked)
    assert abs(in_dis[acc].mean() - (0.75 + 0.25 * 2 / 20)) < 0.03
    v = _read(str(tmp_path / "dis"), meta, "valid")
    target_dis = (disliked[v.column("user_id").to_numpy()] == v.column("target_category").to_numpy()[:, None]).any(1)
    parts = gen.logit_parts(meta["generator"], "valid")
    np.testing.assert_allclose(parts["label_dislike_logit"],
                               gen.DISLIKE_LABEL_BIAS + gen.DISLIKE_LABEL_GAIN * target_dis)
    np.testing.assert_allclose(sum(parts[k] for k in ("base", "user", "semantic_temporal")), parts["logit"])
    ld = v.column("label_dislike").to_numpy()
    assert target_dis.mean() > 0.05 and ld[target_dis].mean() > 0.5 > 0.1 > ld[~target_dis].mean()


def test_context_active_factor_sets_what_an_active_users_faded_interest_counts(tmp_path):
    """context.active_factor (with by_activity): a target in a faded far-back interest counts ``active_factor``
    times the long-range strength for an active user, ``-context.strength`` times it for a less active one, and a
    kept one the full strength; leaving it out is 1.0, the active users keeping their faded interests."""
    base = dict(SMALL, seq_len_mean=120.0, seq_len_max=300, train_rows=1500, valid_rows=100, test_rows=100,
                profile=True)
    lr = {"enabled": True, "min_position": 40, "share": 0.1, "strength": 3.0, "items": 3, "target_share": 0.5,
          "fading": 0.5}
    ctx = {"enabled": True, "by_activity": True, "strength": 0.5}
    terms = {}
    for factor in (1.0, 0.0):
        root = str(tmp_path / f"f{factor}")
        meta = gen.generate_dataset(root, **dict(base, effects={"long_range": lr,
                                                                 "context": dict(ctx, active_factor=factor)}))
        parts = gen.logit_parts(meta["generator"], "train")
        t = _read(root, meta, "train")
        gt = np.load(os.path.join(root, "ground_truth.npz"))
        users, target = t.column("user_id").to_numpy(), t.column("target_category").to_numpy()
        faded = (gt["persistent"][users] == target[:, None]) & gt["persistent_fading"][users]
        faded, hit = faded.any(1), parts["long_range_without_context"] > 0
        active = t.column("user_activity").to_numpy() > 2
        groups = {"kept": hit & ~faded, "faded, active": hit & faded & active, "faded, less": hit & faded & ~active}
        assert all(m.sum() >= 5 for m in groups.values()), {g: int(m.sum()) for g, m in groups.items()}
        terms[factor] = {g: np.unique(parts["long_range"][m]) for g, m in groups.items()}
        terms[factor]["label"] = t.column("label").to_numpy()
    for factor, want_active in ((1.0, 3.0), (0.0, 0.0)):
        assert np.array_equal(terms[factor]["kept"], [3.0])
        assert np.allclose(terms[factor]["faded, active"], [want_active])
        assert np.allclose(terms[factor]["faded, less"], [-1.5])
    plain = str(tmp_path / "plain")  # the option left out: the same labels as 1.0
    meta = gen.generate_dataset(plain, **dict(base, effects={"long_range": lr, "context": ctx}))
    assert np.array_equal(_read(plain, meta, "train").column("label").to_numpy(), terms[1.0]["label"])
