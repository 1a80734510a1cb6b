"""The streaming reader: truncation, derived features, sharding, resume skipping, bad input."""

import numpy as np
import pytest

from tinrec.data.reader import ParquetStream, consumed_per_worker, list_units
from tinrec.data.schema import split_files
from tinrec.data.timebins import compute_edges
from tests.tinrec.datasets import random_rows, write_dataset

FEATURES = ["user_id", "target_item", "target_category", "target_position", "target_time_bin",
            "hist_item", "hist_category", "hist_position", "hist_time_bin"]
ROWS = {"user_id": ("user", 20), "target_item": ("item", 50), "hist_item": ("item", 50),
        "target_category": ("category", 6), "hist_category": ("category", 6), "hist_position": ("position", 6),
        "target_position": ("position", 6), "hist_time_bin": ("time_bin", 5), "target_time_bin": ("time_bin", 5)}


def _stream(root, **kw):
    units = list_units(split_files(str(root), "train"), ["label", "user_id", "hist_item"])
    args = dict(units=units, features=FEATURES, feature_rows=ROWS, batch_size=8, max_len=5,
                time_bin_edges=np.array([100.0, 1000.0, 5000.0, 20000.0]))
    args.update(kw)
    return ParquetStream(**args)


def test_truncation_positions_and_time_bins(tmp_path):
    rows = random_rows(40, seed=1)
    write_dataset(tmp_path, {"train": rows})
    batches = list(_stream(tmp_path))
    assert sum(len(b) for b in batches) == 40
    b = batches[0]
    jt = {k: v.to_dense() for k, v in b.sparse.to_dict().items()}
    for i in range(len(b)):
        r = rows[i]
        keep = r["hist_item"][-5:]
        assert jt["hist_item"][i].tolist() == keep
        L = len(keep)
        assert jt["hist_position"][i].tolist() == list(range(L, 0, -1))  # most recent = 1
        dt = np.array(r["target_timestamp"]) - np.array(r["hist_timestamp"][-5:])
        assert jt["hist_time_bin"][i].tolist() == (1 + np.searchsorted([100, 1000, 5000, 20000], dt, "right")).tolist()
        assert jt["target_position"][i].tolist() == [0] and jt["target_time_bin"][i].tolist() == [0]
        assert jt["target_item"][i].tolist() == [r["target_item"]]
    assert b.labels[:, 0].tolist() == [float(r["label"]) for r in rows[:8]]


def test_skip_recent_leaves_out_the_latest_behaviours_before_keeping_max_len(tmp_path):
    """``data.sequences.NAME.skip_recent``: the lifelong sequence before the short-term window: the behaviours
    before the latest ``skip`` ones, the most recent ``max_len`` of those, with their own time bins; a row with
    at most ``skip`` behaviours gets an empty sequence; only max_len counts as truncation."""
    rows = random_rows(40, seed=7)
    write_dataset(tmp_path, {"train": rows})
    edges = [100, 1000, 5000, 20000]
    b = next(iter(_stream(tmp_path, max_len=3, skip_recent={"hist": 2}, batch_size=40)))
    jt = {k: v.to_dense() for k, v in b.sparse.to_dict().items()}
    empty = 0
    for i, r in enumerate(rows):
        older = r["hist_item"][:-2] if len(r["hist_item"]) > 2 else []
        keep = older[-3:]
        empty += not keep
        assert jt["hist_item"][i].tolist() == keep and int(b.lengths["hist"][i]) == len(keep)
        ts = (r["hist_timestamp"][:-2] if len(r["hist_item"]) > 2 else [])[-3:]
        dt = np.array(r["target_timestamp"]) - np.array(ts, dtype=np.int64)
        assert jt["hist_time_bin"][i].tolist() == (1 + np.searchsorted(edges, dt, "right")).tolist()
        assert jt["hist_position"][i].tolist() == list(range(len(keep), 0, -1))  # from the most recent kept
    assert 0 < empty < len(rows)
    assert b.truncated == sum(len(r["hist_item"]) - 2 > 3 for r in rows)


def test_ranks_and_workers_partition_the_rows(tmp_path):
    write_dataset(tmp_path, {"train": random_rows(100, seed=2)}, row_group_size=10)
    seen = []
    for rank in range(2):
        s = _stream(tmp_path, rank=rank, world_size=2, num_workers=0, batch_size=7)
        for b in s:
            seen += b.sparse.to_dict()["target_item"].values().tolist()
        assert sum(s.worker_batches()) == len(list(_stream(tmp_path, rank=rank, world_size=2, batch_size=7)))
    everything = [v for b in _stream(tmp_path, batch_size=1000) for v in b.sparse.to_dict()["target_item"].values().tolist()]
    assert sorted(seen) == sorted(everything)


def test_skip_resumes_at_the_same_batch(tmp_path):
    write_dataset(tmp_path, {"train": random_rows(100, seed=3)}, row_group_size=9)
    full = list(_stream(tmp_path, shuffle=True, seed=5, epoch=2, drop_last=True))
    resumed = list(_stream(tmp_path, shuffle=True, seed=5, epoch=2, drop_last=True, skip=[4]))
    assert len(resumed) == len(full) - 4
    for a, b in zip(full[4:], resumed):
        assert a.sparse.values().tolist() == b.sparse.values().tolist()
        assert a.labels.tolist() == b.labels.tolist()


def test_shuffle_changes_with_epoch_not_with_rerun(tmp_path):
    write_dataset(tmp_path, {"train": random_rows(100, seed=4)}, row_group_size=10)
    first = lambda e: list(_stream(tmp_path, shuffle=True, epoch=e))[0].labels.tolist() + \
        list(_stream(tmp_path, shuffle=True, epoch=e))[0].user_ids.tolist()
    assert first(0) == first(0)
    assert first(0) != first(1)


def test_consumed_per_worker_round_robin():
    assert consumed_per_worker(5, [3, 3]) == [3, 2]
    assert consumed_per_worker(5, [1, 4]) == [1, 4]
    assert consumed_per_worker(0, [2, 2]) == [0, 0]


def test_missing_column_names_file_and_column(tmp_path):
    rows = random_rows(10)
    for r in rows:
        del r["hist_category"]
    import pyarrow as pa, pyarrow.parquet as pq, os
    os.makedirs(tmp_path / "train")
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "train" / "part-00000.parquet")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match=r"part-00000\.parquet: missing column\(s\) hist_category"):
        list_units(split_files(str(tmp_path), "train"), ["label", "hist_category"])


@pytest.mark.parametrize("column,value,msg", [
    ("target_item", 50, r"row 13: column 'target_item' has id 50, outside \[0, 50\) of table 'item'"),
    ("hist_item", -3, r"row 13: column 'hist_item' has id -3, outside \[0, 50\) of table 'item'"),
    ("label", 2, r"row 13: label must be 0 or 1"),
])
def test_bad_ids_name_file_row_and_column(tmp_path, column, value, msg):
    rows = random_rows(30, seed=5)
    rows[13]["hist_item"] = rows[13]["hist_item"] or [1]
    rows[13]["hist_category"] = rows[13]["hist_category"] or [1]
    rows[13]["hist_brand"], rows[13]["hist_author"] = [1] * len(rows[13]["hist_item"]), [1] * len(rows[13]["hist_item"])
    rows[13]["hist_timestamp"] = [rows[13]["target_timestamp"] - 10] * len(rows[13]["hist_item"])
    if column == "hist_item":
        rows[13][column] = rows[13][column][:-1] + [value]
    else:
        rows[13][column] = value
    write_dataset(tmp_path, {"train": rows}, row_group_size=8)
    with pytest.raises(ValueError, match=r"train/part-00000\.parquet: " + msg):
        list(_stream(tmp_path))


def test_interval_ids_are_the_floored_gap_in_units_of_t_f_capped_by_the_table(tmp_path):
    """DEI2N's ``t_i = floor((t - t_i) / T_f)`` (``hist_interval``, 1-based, 0 the origin); a table of R rows
    holds gaps of R - 2 units or more in its last row."""
    rows = random_rows(40, seed=8)
    write_dataset(tmp_path, {"train": rows})
    feats = ["hist_item", "hist_interval", "target_interval"]
    for T_f, R in ((60, 10_000_000), (3600, 5)):
        fr = dict(ROWS, hist_interval=("interval", R), target_interval=("interval", R))
        b = next(iter(_stream(tmp_path, features=feats, feature_rows=fr, interval_seconds=T_f, batch_size=40)))
        jt = {k: v.to_dense() for k, v in b.sparse.to_dict().items()}
        for i, r in enumerate(rows):
            dt = np.array(r["target_timestamp"]) - np.array(r["hist_timestamp"][-5:])
            assert jt["hist_interval"][i].tolist() == (1 + np.minimum(dt // T_f, R - 2)).tolist()
            assert jt["target_interval"][i].tolist() == [0]
        values = b.sparse.to_dict()["hist_interval"].values()
        assert int(values.max()) <= R - 1
    assert int(values.max()) == 4  # the cap is reached with hours and 5 rows


def test_time_bin_edges_equal_frequency(tmp_path):
    write_dataset(tmp_path, {"train": random_rows(200, seed=6)})
    edges = compute_edges(split_files(str(tmp_path), "train"), 4)
    s = _stream(tmp_path, time_bin_edges=edges, max_len=100, batch_size=1000)
    bins = np.concatenate([b.sparse.to_dict()["hist_time_bin"].values().numpy() for b in s])
    counts = np.bincount(bins, minlength=5)[1:]
    assert counts.min() > 0.2 * len(bins) and counts.max() < 0.3 * len(bins)


def test_coe_calendar_negatives_and_sessions(tmp_path):
    import datetime

    rows = random_rows(30, seed=7)
    write_dataset(tmp_path, {"train": rows})
    feats = ["hist_item", "hist_coe", "target_coe", "hist_hour", "hist_weekday", "hist_month", "target_month",
             "hist_neg_item"]
    fr = dict(ROWS, hist_neg_item=("item", 50))
    mk = lambda: _stream(tmp_path, features=feats, feature_rows=fr, dense_sequence=["hist_timestamp", "hist_session"])
    b = next(iter(mk()))
    jt = {k: v.to_dense() for k, v in b.sparse.to_dict().items()}
    off = 0
    for i in range(len(b)):
        r = rows[i]
        L = len(r["hist_item"][-5:])
        assert jt["hist_coe"][i].tolist() == list(range(1, L + 1)) and jt["target_coe"][i].tolist() == [L + 1]
        ts = r["hist_timestamp"][-5:]
        d = [datetime.datetime.fromtimestamp(t, datetime.timezone.utc) for t in ts]
        assert jt["hist_hour"][i].tolist() == [x.hour for x in d]
        assert jt["hist_weekday"][i].tolist() == [x.weekday() for x in d]
        assert jt["hist_month"][i].tolist() == [x.month - 1 for x in d]
        tgt = datetime.datetime.fromtimestamp(r["target_timestamp"], datetime.timezone.utc)
        assert jt["target_month"][i].tolist() == [tgt.month - 1]
        assert all(1 <= x < 50 for x in jt["hist_neg_item"][i].tolist())
        assert b.dense["hist_timestamp"][off:off + L].tolist() == ts
        # sessions: most recent = 0, a new one after a gap > 30 min
        expect, s = [], 0
        for j in range(L - 1, -1, -1):
            expect.append(s)
            if j > 0 and ts[j] - ts[j - 1] > 1800:
                s += 1
        assert b.dense["hist_session"][off:off + L].tolist() == expect[::-1]
        off += L
    again = next(iter(mk()))
    assert torch_equal(again.sparse["hist_neg_item"].values(), b.sparse["hist_neg_item"].values())


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_the_loaders_sessions_follow_dsins_rule():
    """One session rule: the loader's jagged numpy version equals DSIN.sessions_from_timestamps (SESSION_GAP_S)."""
    import torch

    from tinrec.data.derived import sessions
    from tinrec.modules.dsin import SESSION_GAP_S, DSIN

    rng = np.random.default_rng(8)
    lengths = rng.integers(0, 9, 40)
    gaps = np.where(rng.random(lengths.sum()) < 0.5, rng.integers(1, SESSION_GAP_S, lengths.sum()),
                    rng.integers(SESSION_GAP_S - 2, 3 * SESSION_GAP_S, lengths.sum()))
    gaps[5], gaps[9] = SESSION_GAP_S, SESSION_GAP_S + 1  # the threshold itself: same session; one more: new
    ts = 1_600_000_000 + np.cumsum(gaps)
    got = sessions(ts, lengths)
    L = int(lengths.max())
    ts_BL = torch.zeros(len(lengths), L, dtype=torch.long)
    mask_BL = torch.arange(L)[None, :] < torch.as_tensor(lengths)[:, None]
    ts_BL[mask_BL] = torch.as_tensor(ts)  # rows right-padded, oldest first
    want = DSIN.sessions_from_timestamps(ts_BL, mask_BL)[mask_BL].numpy()
    assert got.tolist() == want.tolist()
    assert got.max() > 0  # several sessions per row were drawn


def test_searched_sequence_keeps_the_most_recent_matches_of_the_target(tmp_path):
    """SIM's hard search in the loader (tinrec/data/search.py): per row, the kept history's behaviours of the
    target's category, the most recent max_len of them, oldest first; their ids, time bins and positions read
    the history's columns at those places; a row without a match is empty; only they reach the KJT."""
    from tinrec.data.search import Search

    rows = random_rows(40, seed=4)
    write_dataset(tmp_path, {"train": rows})
    searches = {"hard": Search(name="hard", source="hist", key="category", target="target_category")}
    feats = FEATURES + ["hard_item", "hard_category", "hard_time_bin", "hard_position"]
    rows_of = dict(ROWS, hard_item=("item", 50), hard_category=("category", 6), hard_time_bin=("time_bin", 5),
                   hard_position=("position", 6))
    edges = np.array([100.0, 1000.0, 5000.0, 20000.0])
    s = _stream(tmp_path, features=feats, feature_rows=rows_of, max_len=6, max_lens={"hard": 2}, searches=searches,
                time_bin_edges={"hist": edges, "hard": edges}, batch_size=40)
    b = next(iter(s))
    jt = {k: v.to_dense() for k, v in b.sparse.to_dict().items()}
    empty = 0
    for i, r in enumerate(rows):
        items, cats, ts = r["hist_item"][-6:], r["hist_category"][-6:], r["hist_timestamp"][-6:]
        hits = [j for j in range(len(items)) if cats[j] == r["target_category"]][-2:]
        empty += not hits
        assert jt["hard_item"][i].tolist() == [items[j] for j in hits]
        assert jt["hard_category"][i].tolist() == [r["target_category"]] * len(hits)
        dt = r["target_timestamp"] - np.array([ts[j] for j in hits], dtype=np.int64)
        assert jt["hard_time_bin"][i].tolist() == (1 + np.searchsorted(edges, dt, "right")).tolist()
        assert jt["hard_position"][i].tolist() == list(range(len(hits), 0, -1))
        assert int(b.lengths["hard"][i]) == len(hits)
    assert 0 < empty < len(rows)  # the case of no match is exercised, and so are matches
    assert b.truncated == sum(len(r["hist_item"]) > 6 for r in rows)  # a search truncates no history


def test_trigger_category_sub_sequence_is_exactly_the_behaviours_of_the_triggers_category(tmp_path):
    """DEI2N's E_b^h (configs/trigger/dei2n.yaml): the kept behaviours whose category is the trigger's, the
    latest T_h of them, oldest first, with their own intervals; a row without one has an empty sequence."""
    import pyarrow.parquet as pq

    from tinrec.data.generate import generate_dataset
    from tinrec.data.search import Search

    generate_dataset(str(tmp_path), num_users=30, num_items=60, num_categories=5, train_rows=200, valid_rows=10,
                     test_rows=10, seq_len_mean=8.0, seq_len_max=20, effects={"trigger": {"enabled": True}},
                     show_progress=False)
    rows = pq.read_table(split_files(str(tmp_path), "train")[0]).to_pylist()
    searches = {"hard": Search(name="hard", source="hist", key="category", target="trigger_category")}
    feats = ["hist_item", "hard_item", "hard_category", "hard_interval", "trigger_category"]
    fr = {"hist_item": ("item", 61), "hard_item": ("item", 61), "hard_category": ("category", 6),
          "hard_interval": ("interval", 100), "trigger_category": ("category", 6)}
    units = list_units(split_files(str(tmp_path), "train"), ["label", "user_id", "hist_item"])
    b = next(iter(ParquetStream(units=units, features=feats, feature_rows=fr, batch_size=200, max_len=10,
                                max_lens={"hard": 3}, searches=searches, time_bin_edges=None, interval_seconds=3600)))
    jt = {k: v.to_dense() for k, v in b.sparse.to_dict().items()}
    counts = set()
    for i, r in enumerate(rows):
        items, cats, ts = r["hist_item"][-10:], r["hist_category"][-10:], r["hist_timestamp"][-10:]
        hits = [j for j in range(len(items)) if cats[j] == r["trigger_category"]][-3:]
        counts.add(len(hits))
        assert jt["hard_item"][i].tolist() == [items[j] for j in hits]
        assert jt["hard_category"][i].tolist() == [r["trigger_category"]] * len(hits)
        dt = r["target_timestamp"] - np.array([ts[j] for j in hits], dtype=np.int64)
        assert jt["hard_interval"][i].tolist() == (1 + np.minimum(dt // 3600, 98)).tolist()
        assert int(b.lengths["hard"][i]) == len(hits)
    assert {0, 3} <= counts  # empty rows and full ones (more matches than T_h) both occur


def test_a_search_on_a_constant_splits_the_history_by_feedback(tmp_path):
    """``{from: hist, key: feedback, equals: V}``: DUMN's click / like / dislike / unclick sequences as the
    kept behaviours of each feedback type, the latest ``max_len`` of each, oldest first."""
    import pyarrow.parquet as pq

    from tinrec.data.generate import generate_dataset
    from tinrec.data.search import Search

    generate_dataset(str(tmp_path), num_users=30, num_items=60, num_categories=5, train_rows=200, valid_rows=10,
                     test_rows=10, seq_len_mean=12.0, seq_len_max=30, effects={"feedback": {"enabled": True}},
                     show_progress=False)
    rows = pq.read_table(split_files(str(tmp_path), "train")[0]).to_pylist()
    kinds = {"click": 0, "like": 1, "dislike": 2, "unclick": 3}
    searches = {n: Search(name=n, source="hist", key="feedback", equals=v) for n, v in kinds.items()}
    feats = ["hist_item"] + [f"{n}_item" for n in kinds]
    fr = {f: ("item", 61) for f in feats}
    units = list_units(split_files(str(tmp_path), "train"), ["label", "user_id", "hist_item"])
    b = next(iter(ParquetStream(units=units, features=feats, feature_rows=fr, batch_size=200, max_len=20,
                                max_lens={n: 4 for n in kinds}, searches=searches, time_bin_edges=None)))
    jt = {k: v.to_dense() for k, v in b.sparse.to_dict().items()}
    full = {n: 0 for n in kinds}
    for i, r in enumerate(rows):
        items, fb = r["hist_item"][-20:], r["hist_feedback"][-20:]
        for n, v in kinds.items():
            hits = [items[j] for j in range(len(items)) if fb[j] == v][-4:]
            assert jt[f"{n}_item"][i].tolist() == hits and int(b.lengths[n][i]) == len(hits), (i, n)
            full[n] += len(hits) == 4
    assert all(full.values())  # every sequence reaches its max_len somewhere
    with pytest.raises(ValueError, match="exactly one of target and equals"):
        Search(name="x", source="hist", key="feedback")


def test_searched_sequence_config_errors(tmp_path):
    from tinrec.config import load_config

    base = ["data.path=" + str(tmp_path / "none")]
    for bad, msg in [({"from": "hist", "key": "category"}, "expected {from: SEQUENCE"),
                     ({"from": "hist", "key": "feedback", "equals": "x"}, "equals: an integer id"),
                     ({"from": "hist", "key": "category", "target": "hist_category"}, "is a sequence column"),
                     ({"from": "hard", "key": "category", "target": "target_category"}, "is a searched sequence")]:
        spec = "{" + ", ".join(f"{k}: {v}" for k, v in bad.items()) + "}"
        with pytest.raises(ValueError, match=r"data\.sequences\.hard\.search"):
            try:
                load_config("configs/sim_hard.yaml", base + [f"data.sequences.hard.search={spec}"])
            except ValueError as e:
                assert msg in str(e), e
                raise


def test_a_config_splits_the_history_by_feedback_with_integer_constants(tmp_path):
    """DUMN's config: four searched sequences on integer ``equals`` (a YAML integer, kept an integer)."""
    from tinrec.config import load_config
    from tinrec.data.search import of_config

    cfg = load_config("configs/feedback/dumn.yaml", ["data.path=" + str(tmp_path / "none")])
    got = {n: (s.source, s.key, s.equals, s.target) for n, s in of_config(cfg).items()}
    assert got == {"click": ("hist", "feedback", 0, None), "unclick": ("hist", "feedback", 3, None),
                   "like": ("hist", "feedback", 1, None), "dislike": ("hist", "feedback", 2, None)}


def test_a_search_on_a_column_the_data_lacks_is_a_config_error(tmp_path):
    from tinrec.config import load_config

    with pytest.raises(ValueError, match=r"data\.sequences\.hard\.search: the search reads 'hist_colour'"):
        load_config("configs/sim_hard.yaml", ["data.sequences.hard.search.key=colour"])


def test_skip_recent_config_errors(tmp_path):
    from tinrec.config import load_config

    base = ["data.path=" + str(tmp_path / "none")]
    with pytest.raises(ValueError, match=r"data\.sequences\.hist\.skip_recent: must be an integer >= 0, got -1"):
        load_config("configs/sim_hard.yaml", base + ["data.sequences.hist.skip_recent=-1"])
    with pytest.raises(ValueError, match=r"data\.sequences\.hard: skip_recent applies to a stored sequence"):
        load_config("configs/sim_hard.yaml", base + ["data.sequences.hard.skip_recent=5"])
    assert load_config("configs/sim_hard.yaml", base + ["data.sequences.hist.skip_recent=5"]).data.skip_recent_of(
        "hist") == 5
