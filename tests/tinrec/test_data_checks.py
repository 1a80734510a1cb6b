"""Bad data never trains and a user's folder is never written: the generator's ownership rule, make-meta,
check-data (every kind of problem, counted, cached), and the reader's own checks whatever the settings,
with property-based malformed files (hypothesis)."""

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinrec.data import format as fmt
from tinrec.data.generate import generate_dataset
from tinrec.data.reader import ParquetStream, list_units, required_columns
from tinrec.data.schema import split_files
from tinrec.data.scan import cached_check, infer_meta, scan
from tests.tinrec.datasets import random_rows, rows_table, write_dataset

TINY_GEN = dict(num_users=20, num_items=60, num_categories=6, num_brands=10, num_authors=10, train_rows=300,
                valid_rows=50, test_rows=50, seq_len_mean=5.0, seq_len_max=12, row_group_size=100,
                show_progress=False)
FEATURES = ["user_id", "target_item", "target_category", "target_position", "hist_item", "hist_category",
            "hist_position"]
ROWS = {"user_id": ("user", 20), "target_item": ("item", 50), "hist_item": ("item", 50),
        "target_category": ("category", 6), "hist_category": ("category", 6), "hist_position": ("position", 13),
        "target_position": ("position", 13)}


def _digest(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


# ---- a user's folder ---------------------------------------------------------------------------------------


def test_the_generator_never_writes_into_a_folder_it_did_not_create(tmp_path):
    users = tmp_path / "mine"
    write_dataset(str(users), {"train": random_rows(30)})
    os.remove(users / "meta.json")  # a user's Parquet files without meta.json
    before = _digest(users)
    with pytest.raises(ValueError, match=r"mine: holds files tinrec did not create \(train\); tinrec generates "
                                         r"data only into an empty or absent folder"):
        generate_dataset(str(users), **TINY_GEN)
    assert _digest(users) == before
    # absent and empty folders are generated into; a folder tinrec generated is regenerated into
    generate_dataset(str(tmp_path / "absent"), **TINY_GEN)
    (tmp_path / "empty").mkdir()
    generate_dataset(str(tmp_path / "empty"), **TINY_GEN)
    assert _digest(tmp_path / "absent") == _digest(tmp_path / "empty")
    generate_dataset(str(tmp_path / "absent"), **dict(TINY_GEN, seed=1))
    assert json.load(open(tmp_path / "absent" / "meta.json"))["generator"]["seed"] == 1


def test_make_meta_infers_tables_and_splits_and_never_replaces_one(tmp_path):
    rows = random_rows(40, seed=2)
    root = write_dataset(str(tmp_path / "d"), {"train": rows[:30], "valid": rows[30:35], "test": rows[35:]})
    os.remove(os.path.join(root, "meta.json"))
    meta = infer_meta(root, show_progress=False)
    assert meta["tables"]["item"] == 1 + max(max([r["target_item"]] + r["hist_item"]) for r in rows)
    assert meta["tables"]["user"] == 1 + max(r["user_id"] for r in rows)
    assert meta["splits"]["train"] == {"rows": 30, "files": ["train/part-00000.parquet"]}
    assert meta["max_seq_len"] == max(len(r["hist_item"]) for r in rows)
    assert "generator" not in meta  # an inferred meta.json does not make the folder tinrec's


# ---- check-data --------------------------------------------------------------------------------------------


def _planted(tmp_path):
    """A dataset with one problem of each kind at known rows."""
    rows = random_rows(60, seed=3, max_len=6)
    for r in rows:
        if not r["hist_item"]:
            r["hist_item"], r["hist_category"], r["hist_brand"], r["hist_author"] = [1], [1], [1], [1]
            r["hist_timestamp"] = [r["target_timestamp"] - 5]
    rows[4]["label"] = 2
    rows[9]["hist_item"] = rows[9]["hist_item"][:-1] + [999]  # outside the item table (50 rows)
    rows[12]["hist_timestamp"] = rows[12]["hist_timestamp"][:-1] + [rows[12]["target_timestamp"] + 60]
    rows[15]["hist_timestamp"] = [rows[15]["target_timestamp"] - 10] * len(rows[15]["hist_timestamp"])
    rows[15]["hist_timestamp"][0] += 5  # not oldest first
    rows[15]["hist_timestamp"] = rows[15]["hist_timestamp"] + [rows[15]["target_timestamp"] - 1]
    for c in ("hist_item", "hist_category", "hist_brand", "hist_author"):
        rows[15][c] = rows[15][c] + [1]
    rows[20]["hist_category"] = rows[20]["hist_category"] + [1]  # one element too many
    root = write_dataset(str(tmp_path / "bad"), {"train": rows, "valid": random_rows(10), "test": random_rows(10)},
                         row_group_size=16)
    meta = json.load(open(os.path.join(root, "meta.json")))
    meta["splits"]["valid"]["rows"] = 11
    json.dump(meta, open(os.path.join(root, "meta.json"), "w"))
    # a test file whose ids are floats (a NaN among them)
    t = rows_table(random_rows(10, seed=4), fmt.arrow_schema(with_feedback=False, with_watch_time=False,
                                                            with_trigger=False))
    t = t.set_column(t.schema.get_field_index("target_item"), "target_item",
                     pa.array([float("nan")] + [1.0] * 9, pa.float64()))
    pq.write_table(t, os.path.join(root, "test", "part-00000.parquet"))
    return root


def test_check_data_counts_every_kind_of_problem_with_file_row_and_column(tmp_path):
    root = _planted(tmp_path)
    report = scan(root, json.load(open(os.path.join(root, "meta.json"))), show_progress=False)
    kinds = {k["kind"]: k for k in report["problems"]}
    assert not report["ok"]
    assert set(kinds) == {"label", "id_range", "behaviour_after_target", "history_order", "list_length",
                          "column_type"}
    train = os.path.join(root, "train", "part-00000.parquet")
    assert kinds["label"]["examples"] == [f"{train}: row 4: label must be 0 or 1, got 2"]
    assert kinds["id_range"]["examples"][0] == f"{train}: row 9: column 'hist_item' has id 999, outside [0, 50) of " \
                                               f"table 'item'"
    assert kinds["behaviour_after_target"]["examples"][0].startswith(f"{train}: row 12: column 'hist_timestamp' has "
                                                                     f"a behaviour at")
    assert kinds["history_order"]["examples"][0].startswith(f"{train}: row 15: column 'hist_timestamp' is not sorted")
    assert kinds["list_length"]["examples"][0].startswith(f"{train}: row 20: column 'hist_category' has")
    assert kinds["column_type"]["examples"] == [
        f"{os.path.join(root, 'test', 'part-00000.parquet')}: column 'target_item' has type double, expected an "
        f"integer column (values are never cast, see docs/data.md)"]
    assert {k: v["count"] for k, v in kinds.items() if v["unit"] == "rows"} == {
        "label": 1, "id_range": 1, "behaviour_after_target": 1, "history_order": 1, "list_length": 1}
    assert [w["examples"][0] for w in report["warnings"]] == [
        f"{os.path.join(root, 'meta.json')}: says split 'valid' has 11 rows, its files have 10"]


def test_check_data_result_is_cached_and_invalidated_by_a_changed_file(tmp_path):
    rows = random_rows(40, seed=5)
    root = write_dataset(str(tmp_path / "d"), {"train": rows, "valid": rows[:10], "test": rows[:10]})
    meta = json.load(open(os.path.join(root, "meta.json")))
    assert cached_check(root, meta, show_progress=False)["ok"]
    cache = os.path.join(root, ".tinrec", "check.json")
    stamp = os.stat(cache).st_mtime_ns
    assert cached_check(root, meta, show_progress=False)["ok"] and os.stat(cache).st_mtime_ns == stamp  # reused
    rows[7]["label"] = 5
    write_dataset(root, {"train": rows})
    report = cached_check(root, meta, show_progress=False)
    assert not report["ok"] and "row 7: label must be 0 or 1" in report["problems"][0]["examples"][0]
    assert sorted(os.listdir(root)) == [".tinrec", "meta.json", "test", "train", "valid"]  # nothing else written


# ---- the reader, whatever the settings ----------------------------------------------------------------------


def _stream(root, split="train", features=FEATURES, edges=None):
    units = list_units(split_files(str(root), split), required_columns(features))
    return ParquetStream(units=units, features=features, feature_rows=ROWS, batch_size=8, max_len=12,
                         time_bin_edges=edges)


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_behaviour_after_the_target_is_refused_by_a_model_that_reads_no_timestamps(tmp_path, split):
    rows = random_rows(30, seed=6)
    rows[11]["hist_item"], rows[11]["hist_category"] = [3, 4], [1, 2]
    rows[11]["hist_brand"], rows[11]["hist_author"] = [1, 1], [1, 1]
    rows[11]["hist_timestamp"] = [rows[11]["target_timestamp"] - 9, rows[11]["target_timestamp"] + 1]
    root = write_dataset(str(tmp_path / "d"), {split: rows})
    with pytest.raises(ValueError, match=rf"{split}/part-00000\.parquet: row 11: column 'hist_timestamp' has a "
                                         rf"behaviour at \d+, after the target's target_timestamp"):
        list(_stream(root, split))


def test_a_missing_required_column_is_refused_by_the_reader_for_every_model(tmp_path):
    import glob

    from tinrec.config import load_config
    from tinrec.features import used_features

    rows = random_rows(10, seed=7)
    for r in rows:
        del r["hist_timestamp"]
    os.makedirs(tmp_path / "train")
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "train" / "part-00000.parquet")
    files = [str(tmp_path / "train" / "part-00000.parquet")]
    for path in glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "*.yaml")):
        cfg = load_config(path)
        with pytest.raises(ValueError, match=r"part-00000\.parquet: missing column\(s\) hist_timestamp"):
            list_units(files, required_columns(used_features(cfg)))


# ---- hostile files (hypothesis) ----------------------------------------------------------------------------

ID_COLUMNS = ["target_item", "target_category", "user_id"]
LIST_COLUMNS = ["hist_item", "hist_category"]
CORRUPTIONS = ["none", "float_ids", "string_ids", "float_list_ids", "null_scalar", "null_in_list", "null_list",
               "bad_label", "id_too_large", "negative_id", "short_list", "unsorted", "after_target",
               "missing_column"]


def _corrupt(rows, kind, row, column, rng):
    """Rows -> an Arrow table with one planted problem; returns (table, column named, row named or None)."""
    schema = fmt.arrow_schema(with_feedback=False, with_watch_time=False, with_trigger=False)
    r = rows[row]
    if kind in ("null_in_list", "short_list", "unsorted", "after_target") and len(r["hist_item"]) < 2:
        n = 3
        r["hist_item"], r["hist_category"] = [1] * n, [1] * n
        r["hist_brand"], r["hist_author"] = [1] * n, [1] * n
        r["hist_timestamp"] = [r["target_timestamp"] - 30, r["target_timestamp"] - 20, r["target_timestamp"] - 10]
    if kind == "bad_label":
        r["label"] = int(rng.choice([2, -1, 7]))
        return rows_table(rows, schema), None, row
    if kind == "id_too_large":
        bound = dict(ROWS)[column][1]
        if column in LIST_COLUMNS:
            r[column] = r[column] + [bound + int(rng.integers(0, 1000))]
            for c in ("hist_item", "hist_category", "hist_brand", "hist_author"):
                if c != column:
                    r[c] = r[c] + [1]
            r["hist_timestamp"] = r["hist_timestamp"] + [r["target_timestamp"]]
        else:
            r[column] = bound + int(rng.integers(0, 1000))
        return rows_table(rows, schema), column, row
    if kind == "negative_id":
        r[column] = -int(rng.integers(1, 100))
        return rows_table(rows, schema), column, row
    if kind == "short_list":
        r["hist_category"] = r["hist_category"][:-1]
        return rows_table(rows, schema), "hist_category", row
    if kind == "unsorted":
        ts = r["hist_timestamp"]
        ts[0], ts[-1] = ts[-1], ts[0]
        return rows_table(rows, schema), "hist_timestamp", row
    if kind == "after_target":
        r["hist_timestamp"][-1] = r["target_timestamp"] + int(rng.integers(1, 10_000))
        return rows_table(rows, schema), "hist_timestamp", row
    t = rows_table(rows, schema)
    i = t.schema.get_field_index(column if kind in ("float_ids", "string_ids", "null_scalar") else "hist_item")
    if kind == "float_ids":
        vals = [float(v) for v in t.column(i).to_pylist()]
        vals[row] = float("nan")
        return t.set_column(i, column, pa.array(vals, pa.float64())), column, None
    if kind == "string_ids":
        return t.set_column(i, column, pa.array([str(v) for v in t.column(i).to_pylist()])), column, None
    if kind == "float_list_ids":
        vals = [[float(x) for x in v] for v in t.column(i).to_pylist()]
        return t.set_column(i, "hist_item", pa.array(vals, pa.list_(pa.float64()))), "hist_item", None
    if kind == "null_scalar":
        vals = t.column(i).to_pylist()
        vals[row] = None
        return t.set_column(i, column, pa.array(vals, pa.int64())), column, row
    if kind == "null_in_list":
        vals = t.column(i).to_pylist()
        vals[row][1] = None
        return t.set_column(i, "hist_item", pa.array(vals, pa.list_(pa.int64()))), "hist_item", row
    if kind == "null_list":
        vals = t.column(i).to_pylist()
        vals[row] = None
        return t.set_column(i, "hist_item", pa.array(vals, pa.list_(pa.int64()))), "hist_item", row
    if kind == "missing_column":
        return t.drop_columns([column]), column, None
    return t, None, None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(CORRUPTIONS), row=st.integers(0, 24), seed=st.integers(0, 10_000),
       column=st.sampled_from(ID_COLUMNS + LIST_COLUMNS), group=st.sampled_from([5, 8, 25]))
def test_malformed_files_end_in_a_named_error_or_a_correct_batch(tmp_path_factory, kind, row, seed, column, group):
    if kind in ("float_ids", "string_ids", "null_scalar", "negative_id") and column in LIST_COLUMNS:
        column = "target_item"
    rng = np.random.default_rng(seed)
    rows = random_rows(25, seed=seed, max_len=6)
    table, named_column, named_row = _corrupt(rows, kind, row, column, rng)
    root = tmp_path_factory.mktemp("hostile")
    os.makedirs(root / "train")
    file = str(root / "train" / "part-00000.parquet")
    pq.write_table(table, file, row_group_size=group)
    (root / "meta.json").write_text(json.dumps({"format_version": 1, "tables": {
        "user": 20, "item": 50, "category": 6, "brand": 2, "author": 2, "age": 2, "gender": 2}}))
    try:
        batches = list(_stream(root))
    except ValueError as e:
        msg = str(e)
        assert kind != "none", msg
        assert msg.startswith(f"{file}: "), msg
        if named_row is not None:
            assert f": row {named_row}: " in msg, msg
        if named_column is not None:
            assert repr(named_column) in msg or f"missing column(s) {named_column}" in msg, msg
        assert "\n" not in msg
    else:
        assert kind == "none", f"{kind} at row {row} of {column} was read without an error"
        got = {k: [] for k in ("target_item", "hist_item", "label")}
        for b in batches:
            d = b.sparse.to_dict()
            got["target_item"] += d["target_item"].values().tolist()
            got["hist_item"] += [x.tolist() for x in d["hist_item"].to_dense()]
            got["label"] += b.labels[:, 0].tolist()
        assert got["target_item"] == [r["target_item"] for r in rows]  # never a silently changed value
        assert got["hist_item"] == [r["hist_item"][-12:] for r in rows]
        assert got["label"] == [float(r["label"]) for r in rows]
    # check-data finds the same file (and says the dataset is fine exactly when the reader was)
    report = scan(str(root), json.load(open(root / "meta.json")), show_progress=False)
    assert report["ok"] == (kind == "none")
    if not report["ok"]:
        assert any(file in e for k in report["problems"] for e in k["examples"])


def test_task_labels_are_checked_like_the_label(tmp_path):
    rows = random_rows(20, seed=14)
    t = rows_table(rows, fmt.arrow_schema(with_feedback=False, with_watch_time=False, with_trigger=False))
    like = [0] * 20
    like[5] = 3
    os.makedirs(tmp_path / "train")
    file = str(tmp_path / "train" / "part-00000.parquet")
    pq.write_table(t.append_column("label_like", pa.array(like, pa.int8())), file)
    report = scan(str(tmp_path), None, show_progress=False)
    assert report["problems"][0]["examples"] == [f"{file}: row 5: column 'label_like' must be 0 or 1, got 3"]
    pq.write_table(t.append_column("label_like", pa.array([0.5] * 20, pa.float32())), file)
    with pytest.raises(ValueError, match=r"column 'label_like' has type float, expected an integer column"):
        list_units([file], ["label", "label_like"])


def test_every_sequence_is_checked_on_its_own(tmp_path):
    """A second sequence (``short_*``): its list columns share its lengths, not the history's; its timestamps
    must be sorted and before the target; its ids are in their tables. check-data and the reader agree."""
    root = str(tmp_path / "d")
    meta = generate_dataset(root, **TINY_GEN, short_len=3)
    assert scan(root, meta, show_progress=False)["ok"]
    file = os.path.join(root, meta["splits"]["train"]["files"][0])
    t = pq.read_table(file)
    ts = t.column("short_timestamp").to_pylist()
    row = next(i for i, v in enumerate(ts) if len(v) >= 2)
    ts[row] = [ts[row][1], ts[row][0]] + ts[row][2:]  # two behaviours swapped
    items = t.column("short_item").to_pylist()
    other = next(i for i, v in enumerate(items) if v and i != row)
    items[other] = [meta["tables"]["item"]] + items[other][1:]  # one past the item table
    t = t.set_column(t.column_names.index("short_timestamp"), "short_timestamp", pa.array(ts, pa.list_(pa.int64())))
    t = t.set_column(t.column_names.index("short_item"), "short_item", pa.array(items, pa.list_(pa.int64())))
    pq.write_table(t, file, row_group_size=100)
    report = scan(root, meta, show_progress=False)
    kinds = {k["kind"]: k["examples"][0] for k in report["problems"]}
    assert kinds["history_order"].startswith(f"{file}: row {row}: column 'short_timestamp' is not sorted oldest first")
    assert kinds["id_range"].startswith(f"{file}: row {other}: column 'short_item' has id {meta['tables']['item']}, "
                                        f"outside [0, {meta['tables']['item']}) of table 'item'")
    stream = ParquetStream(units=list_units([file], required_columns(["short_item"])), features=["short_item"],
                           feature_rows={"short_item": ("item", meta["tables"]["item"])}, batch_size=50,
                           max_len=12, time_bin_edges=None)
    with pytest.raises(ValueError, match=rf"{file}: row {min(row, other)}: column 'short_"):
        list(stream)


def test_a_generated_dataset_of_other_parameters_is_refused_untouched(tmp_path):
    """data.generate describes the data a run trains on: a generated dataset at data.path made with other
    parameters is an error naming the first difference (nothing regenerated, nothing trained)."""
    from tinrec.analysis import _analysis_data
    from tinrec.config import load_config

    root = str(tmp_path / "d")
    generate_dataset(root, **TINY_GEN)
    before = _digest(root)
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                          "default.yaml")
    over = [f"data.path={root}", f"run_dir={tmp_path / 'run'}", "data.generate=null"]
    same = [f"data.generate.{k}={v}" for k, v in TINY_GEN.items()]
    _analysis_data(load_config(config, over + same))  # the same parameters: fine
    with pytest.raises(ValueError, match=rf"data\.path: {root} was generated with other parameters \(train_rows=300 "
                                         rf"there, 999 in data\.generate\)"):
        _analysis_data(load_config(config, over + same + ["data.generate.train_rows=999"]))
    assert _digest(root) == {**before, **{k: v for k, v in _digest(root).items() if k.startswith(".tinrec")}}
