"""tinrec analyze stc: ground-truth CTC (mutual information), learned CTC, Pearson bins, plots, the CLI."""

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from tinrec.analysis import (compare, ground_truth_ctc, learned_ctc, mutual_information, pearson, significant_cells,
                             top_categories)
from tests.tinrec.datasets import random_rows, write_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "default.yaml")
TABLES = {"user": 20, "item": 50, "category": 6, "brand": 2, "author": 2, "age": 2, "gender": 2}


def _row(base, target_category, hist, label):
    L = len(hist)
    t = base["target_timestamp"]
    return dict(base, target_category=target_category, label=label, hist_item=[1 + c for c in hist],
                hist_category=list(hist), hist_brand=[1] * L, hist_author=[1] * L,
                hist_timestamp=[t - 100 * (L - j) for j in range(L)])


# (target category, history oldest first, label)
HAND = [(1, [3, 2], 1), (1, [2], 1), (1, [4, 2], 0), (1, [2, 3], 0), (1, [3], 0), (1, [], 1), (1, [5, 5, 4], 1),
        (2, [2], 1), (2, [2], 1), (2, [3], 0), (2, [3, 2, 4], 0)]


@pytest.fixture(scope="module")
def hand_data(tmp_path_factory):
    base = random_rows(1, seed=3)[0]
    rows = [_row(base, tc, h, y) for tc, h, y in HAND]
    root = str(tmp_path_factory.mktemp("hand"))
    write_dataset(root, {"train": rows, "valid": rows, "test": rows}, row_group_size=3, tables=TABLES)
    return root, rows


def _mi(table):
    """MI (nats) from a 2x2 table [[n(X=1,Y=1), n(X=1,Y=0)], [n(X=0,Y=1), n(X=0,Y=0)]], by the definition."""
    t = np.asarray(table, float)
    n = t.sum()
    return sum(t[x, y] / n * math.log(t[x, y] * n / (t[x].sum() * t[:, y].sum()))
               for x in range(2) for y in range(2) if t[x, y] > 0)


def test_mutual_information_matches_hand_computed_tables(hand_data):
    root, _ = hand_data
    gt = ground_truth_ctc(root, positions=3)  # 4 row groups of 3 rows: counts accumulate across them
    assert gt["ctc"].shape == (6, 6, 3) and gt["rows"] == len(HAND) and gt["unit"] == "nats"
    assert gt["impressions"].tolist() == [0, 7, 4, 0, 0, 0] and gt["clicks"].tolist() == [0, 4, 2, 0, 0, 0]
    # c_t = 1, p = 1: six impressions have a behaviour there (the empty history is left out);
    # category 2 at p = 1: rows 0, 1 (clicked), 2 (not); elsewhere: row 6 (clicked), rows 3, 4 (not)
    assert gt["samples"][1].tolist() == [6, 4, 1]
    assert gt["ctc"][1, 2, 0] == pytest.approx(_mi([[2, 1], [1, 2]]))
    assert gt["ctc"][1, 2, 0] == pytest.approx(2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3))
    # c_t = 1, p = 2 (rows 0, 2, 3, 6): category 3 only in row 0 (clicked); rows 2, 3 not clicked, row 6 clicked
    assert gt["ctc"][1, 3, 1] == pytest.approx(_mi([[1, 0], [1, 2]]))
    # c_t = 2, p = 1: category 2 <=> clicked (rows 7, 8 vs 9, 10): MI = H(Y) = log 2
    assert gt["ctc"][2, 2, 0] == pytest.approx(math.log(2))
    assert gt["ctc"][2, 4, 0] == pytest.approx(_mi([[0, 1], [2, 1]]))
    assert gt["ctc"][1, 1].tolist() == [0, 0, 0]  # never seen: 0, not NaN
    assert gt["ctc"][1, 5, 2] == 0.0  # category 5 at p = 3 in the only row with 3 behaviours: X constant
    part = ground_truth_ctc(root, positions=3, max_rows=4)  # rows 0..3 only
    assert part["rows"] == 4 and part["ctc"][1, 2, 0] == pytest.approx(_mi([[2, 1], [0, 1]]))
    assert mutual_information(np.array([0]), np.array([0]), np.array([0]), np.array([0])).tolist() == [0.0]


def test_learned_ctc_averages_per_category_and_position(hand_data, tmp_path):
    """An untrained model saved as a checkpoint: learned_ctc equals a per-row loop over the raw lists."""
    import torch.distributed.checkpoint as dcp

    from tinrec.config import load_config
    from tinrec.features import resolve_rows
    from tinrec.model import build_model

    root, rows = hand_data
    cfg = load_config(CONFIG, [f"data.path={root}", "data.generate=null", f"run_dir={tmp_path}", "data.max_len=2"])
    torch.manual_seed(0)
    model = build_model(cfg, resolve_rows(cfg, {"tables": TABLES}), sparse_device=torch.device("cpu"))
    ckpt = str(tmp_path / "ckpt")
    with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": intended
        warnings.simplefilter("ignore")
        dcp.save({"model": model.state_dict()}, checkpoint_id=ckpt)
    with open(os.path.join(ckpt, "train_state.json"), "w") as f:
        json.dump({"step": 0}, f)
    got = learned_ctc(cfg, ckpt, split="test", positions=3)
    assert got["interest"] == "tin" and got["checkpoint"] == ckpt
    # expected: the module's correlation on the padded batch, attributed from the raw lists (max_len 2)
    from tinrec.analysis import _analysis_data

    data = _analysis_data(cfg)
    from tinrec.data.reader import ParquetStream

    batch = next(iter(ParquetStream(units=data.units("test"), features=data.features, feature_rows=data.feature_rows,
                                    batch_size=64, max_len=2, time_bin_edges=None)))
    with torch.no_grad():
        inp = model.module_inputs(batch)["tin"]
        cor = model.interest_modules()["tin"].learned_correlation(
            **{k: inp[k] for k in ("seq_BLD", "mask_BL", "query_BD", "seq_time_BLD", "query_time_BD")})
    acc = {}
    for b, r in enumerate(rows):
        kept = r["hist_category"][-2:]
        for j, c in enumerate(kept):
            acc.setdefault((r["target_category"], c, len(kept) - j), []).append(float(cor[b, j]))
    assert int(got["count"].sum()) == sum(len(v) for v in acc.values())
    for (ct, cb, p), v in acc.items():
        assert got["ctc"][ct, cb, p - 1] == pytest.approx(np.mean(v), rel=1e-5), (ct, cb, p)
        assert got["count"][ct, cb, p - 1] == len(v)
    assert np.isnan(got["ctc"][1, 1, 0]) and np.isnan(got["ctc"][:, :, 2]).all()  # max_len 2: no p = 3


def test_learned_ctc_needs_learned_correlation_and_category_features(hand_data, tmp_path):
    from tinrec.config import load_config

    root, _ = hand_data
    over = [f"data.path={root}", "data.generate=null", f"run_dir={tmp_path}", "data.max_len=4"]
    cfg = load_config(os.path.join(REPO, "configs", "avgpool_concat.yaml"), over)
    with pytest.raises(ValueError, match=r"no module of model.interests \(AvgPooling\) has a learned_correlation"):
        learned_ctc(cfg, str(tmp_path / "none"))
    cfg = load_config(CONFIG, over + ["model.embeddings.main.category.features=[target_brand, hist_brand]",
                                      "model.inputs.behaviours.features=[hist_item, hist_brand]",
                                      "model.inputs.target.features=[target_item, target_brand]"])
    with pytest.raises(ValueError, match="needs the feature 'hist_category'"):
        learned_ctc(cfg, str(tmp_path / "none"))
    cfg = load_config(CONFIG, over)
    with pytest.raises(ValueError, match="no checkpoint"):
        learned_ctc(cfg)


# ---- generated data ------------------------------------------------------------------------------------------
# strength 2 and tau_position 2 (defaults 1 and 8): with histories of mean length 8 the default decay is
# mild (d(8) = 0.42) and a user's favourite categories recur at every position, so at this size the
# default effect's decay is within noise; the stronger, faster one shows it on every seed tried (0-4).
GEN = dict(num_users=3000, num_items=500, num_categories=10, train_rows=10000, valid_rows=50, test_rows=50,
           seq_len_mean=8.0, seq_len_max=24, row_group_size=1000, show_progress=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from tinrec.data.generate import generate_dataset

    out = {}
    for name, effects in (("effect", {"semantic_temporal": {"strength": 2.0, "tau_position": 2.0}}),
                          ("none", {"semantic_temporal": {"enabled": False}})):
        out[name] = str(tmp_path_factory.mktemp(name))
        generate_dataset(out[name], effects=effects, **GEN)
    return out


def test_planted_effect_decays_with_position_and_no_effect_is_near_zero(generated):
    eff = ground_truth_ctc(generated["effect"], positions=10)
    none = ground_truth_ctc(generated["none"], positions=10)
    top = top_categories(eff, 5)
    same = np.stack([eff["ctc"][c, c] for c in top])  # [5, P]
    assert (same[:, 0] > same[:, 7]).all(), same
    assert same[:, :2].mean() > 2 * same[:, 6:8].mean()
    assert significant_cells(eff)["significant"] > 0
    # "Near zero" without the effect: under independence 2 n MI ~ chi^2(1) (n = the cell's impressions), so
    # (a) no cell is significant at family-wise error 0.01 (G-test, Bonferroni over the 1000 cells),
    # (b) the mean of 2 n MI is about 1 (the chi^2(1) mean; 1.5 leaves room for users seen twice), and
    # (c) the largest cell stays well below the planted effect's same-category MI at p = 1.
    sig = significant_cells(none)
    assert sig["cells"] == 1000 and sig["significant"] == 0, sig
    g = 2 * none["samples"][1:, None, :] * none["ctc"][1:, 1:]
    assert g.mean() < 1.5
    assert none["ctc"].max() < 0.5 * same[:, 0].mean()


def test_cli_ground_truth_only_on_data_without_effect(generated, tmp_path, capsys):
    from tinrec.cli import build_parser

    out = str(tmp_path / "stc")
    args = build_parser().parse_args(["analyze", "stc", CONFIG, f"data.path={generated['none']}",
                                      f"run_dir={tmp_path}", "--ground-truth-only", "--out", out, "--top-k", "4"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "0 of 1000 (c_t, c_b, p) cells significantly > 0" in printed
    rep = json.load(open(os.path.join(out, "stc.json")))
    assert rep["significance"]["significant"] == 0 and len(rep["top_categories"]) == 4 and "pearson" not in rep
    c = rep["target_category"]
    assert os.path.exists(os.path.join(out, f"stc_heatmap_c{c}.png"))
    hm = rep["heatmaps"][str(c)]
    assert len(hm["behaviour_categories"]) == 5 and np.array(hm["ground_truth"]).shape == (5, 10)


# ---- comparison --------------------------------------------------------------------------------------------


def _with_pearson(x, r, rng):
    """A series whose Pearson coefficient with x is exactly r."""
    xc = x - x.mean()
    z = rng.normal(size=x.size)
    z -= z.mean()
    z -= (z @ xc) / (xc @ xc) * xc
    z *= np.linalg.norm(xc) / np.linalg.norm(z)
    return 3.0 + 2.0 * (r * xc + math.sqrt(1 - r * r) * z)


def test_compare_bins_known_pearson_coefficients(tmp_path):
    from tinrec.analysis import plot_pearson_bins

    rng = np.random.default_rng(0)
    C, P = 8, 10
    gt = {"ctc": rng.random((C, C, P)), "impressions": np.array([10**6, 90, 80, 70, 60, 50, 40, 30])}
    learned = {"ctc": rng.random((C, C, P))}
    wanted = {1: 1.0, 2: 0.95, 3: 0.5, 4: 0.15, 5: -0.7, 6: 0.81, 7: 0.9}
    for c, r in wanted.items():
        learned["ctc"][c, c] = _with_pearson(gt["ctc"][c, c], r, rng)
    learned["ctc"][6, 6, 3] = np.nan  # a position without behaviours is skipped, not fatal
    wanted[6] = pearson(gt["ctc"][6, 6], learned["ctc"][6, 6])
    learned["ctc"][7, 7] = 0.4  # constant: undefined
    cmp = compare(gt, learned, top_k=7)
    assert cmp["categories"] == [1, 2, 3, 4, 5, 6, 7]  # category 0 (unknown) never counts
    for c in range(1, 7):
        assert cmp["pearson"][c] == pytest.approx(wanted[c], abs=1e-9)
        ok = np.isfinite(learned["ctc"][c, c])
        assert cmp["pearson"][c] == pytest.approx(np.corrcoef(gt["ctc"][c, c][ok], learned["ctc"][c, c][ok])[0, 1])
    assert math.isnan(cmp["pearson"][7]) and cmp["undefined"] == [7]
    # 0.15 and -0.7 poor; 0.5 medium; 1.0, 0.95 and the 6th (~0.8 +- a little) strong or medium
    strong6 = wanted[6] > 0.8
    assert cmp["bins"] == {"poor": 2, "medium": 2 - strong6, "strong": 2 + strong6}
    assert sum(cmp["fractions"].values()) == pytest.approx(1.0)
    assert compare(gt, learned, top_k=2)["categories"] == [1, 2]
    assert os.path.getsize(plot_pearson_bins(cmp, str(tmp_path / "bins.png"))) > 1000


def test_decay_ratio_separates_decaying_from_flat_rows():
    from tinrec.analysis import decay_ratio

    p = np.arange(1, 11)
    assert decay_ratio(np.exp(-(p - 1) / 8.0)) == pytest.approx(np.exp(-np.arange(3) / 8).mean()
                                                                 / np.exp(-np.arange(7, 10) / 8).mean())
    assert decay_ratio(np.full(10, 0.3)) == pytest.approx(1.0)
    row = np.full(10, 2.0)
    row[:3], row[8] = [4.0, 4.0, np.nan], np.nan  # NaN (no behaviour there) is skipped at either end
    assert decay_ratio(row) == pytest.approx(2.0)
    assert math.isnan(decay_ratio(np.r_[np.full(7, 1.0), np.full(3, np.nan)]))
    with pytest.raises(ValueError, match="at least 6 positions"):
        decay_ratio(np.ones(5))
    C, P = 4, 10
    gt = {"ctc": np.ones((C, C, P)), "impressions": np.array([0, 30, 20, 10])}
    learned = {"ctc": np.ones((C, C, P))}
    learned["ctc"][1, 1] = np.exp(-(p - 1) / 4.0)
    cmp = compare(gt, learned, top_k=3)
    assert cmp["decay"][1] > 5 and cmp["decay"][2] == pytest.approx(1.0) and cmp["decay_median"] == pytest.approx(1.0)
    assert cmp["ground_truth_decay_median"] == pytest.approx(1.0)


# ---- end to end ----------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_analyze_stc_on_a_trained_checkpoint(tmp_path):
    from tests.tinrec.test_train_cli import TINY, run

    data, run_dir, out = str(tmp_path / "data"), str(tmp_path / "run"), str(tmp_path / "stc")
    common = [CONFIG, f"run_dir={run_dir}", f"data.path={data}", *TINY]
    run(["train", *common, "train.epochs=1"])
    p = run(["analyze", "stc", *common, "--out", out, "--top-k", "5", "--target-category", "3"])
    assert "learned (tin, test split) vs ground truth over the top-5 categories" in p.stdout, p.stdout
    rep = json.load(open(os.path.join(out, "stc.json")))
    assert rep["interest"] == "tin" and rep["checkpoint"].startswith(os.path.join(run_dir, "checkpoints"))
    assert len(rep["top_categories"]) == 5 and rep["target_category"] == 3
    for name in ("stc.json", "stc_heatmap_c3.png", "stc_pearson_bins.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000, name
    assert sum(rep["bins"].values()) + len(rep["undefined"]) == 5
    assert sum(rep["fractions"].values()) == pytest.approx(1.0)
    for c in map(str, rep["top_categories"]):
        assert rep["pearson"][c] is None or -1.0 <= rep["pearson"][c] <= 1.0
        assert all(math.isfinite(v) and v >= 0 for v in rep["ground_truth_same_category"][c])
        learned = [v for v in rep["learned_same_category"][c] if v is not None]
        assert len(learned) >= 3 and all(math.isfinite(v) and v > 0 for v in learned)
    assert sum(r is not None for r in rep["pearson"].values()) >= 4
    hm = rep["heatmaps"]["3"]
    assert np.array(hm["ground_truth"]).shape == (5, 10) and np.array(hm["learned"]).shape == (5, 10)


@pytest.mark.integration
def test_long_range_recall_of_a_hard_search_is_complete_and_a_k_of_one_keeps_one_per_row(tmp_path):
    """``tinrec analyze long-range``: SIM's hard search (in the module) with k above the history keeps every
    behaviour of the target's category, so every planted far-back behaviour (recall 1, every kept slot of the
    target's category); with k = 1 it keeps at most one per impression."""
    from tests.tinrec.test_train_cli import TINY, run

    data, run_dir = str(tmp_path / "data"), str(tmp_path / "run")
    lifelong = ["data.generate.seq_len_mean=30.0", "data.generate.seq_len_max=40", "data.max_len=40",
                "data.generate.effects.long_range.enabled=true", "data.generate.effects.long_range.min_position=8",
                "data.generate.effects.long_range.share=0.2", "data.generate.effects.long_range.target_share=0.5"]
    common = ["configs/sim_hard_after_lookup.yaml", f"run_dir={run_dir}", f"data.path={data}", *TINY, *lifelong]
    run(["train", *common, "train.epochs=1", "train.max_steps=2"])
    full = json.loads(run(["analyze", "long-range", *common]).stdout.strip().splitlines()[-1])
    assert full["interest"] == "sim" and full["min_position"] == 8
    assert full["impressions_with_far_back_interest"] > 20 and full["far_back_behaviours"] > full[
        "impressions_with_far_back_interest"]
    assert full["far_back_recall"] == 1.0 and full["impressions_with_one_kept"] == 1.0
    assert full["kept_slots_of_target_category"] == 1.0
    assert 0.0 <= full["cosine_recall"] <= 1.0 and "recall_without_cross_bias" not in full
    one = json.loads(run(["analyze", "long-range", *common, "model.interests.sim.k=1"]).stdout.strip().splitlines()[-1])
    assert one["far_back_behaviours"] == full["far_back_behaviours"]
    assert one["far_back_recall"] * one["far_back_behaviours"] <= one["impressions_with_far_back_interest"] + 1e-9
    assert one["far_back_recall"] < 1.0


def test_cosine_kept_keeps_the_smallest_angles_per_row_most_recent_first_on_ties_never_padding():
    """The reference search of ``analyze long-range``: per row the ``count`` valid behaviours nearest in angle."""
    from tinrec.analysis import cosine_kept

    seq = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]],
                        [[0.0, 1.0], [0.0, 3.0], [0.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    query = torch.tensor([[5.0, 0.0], [0.0, 1.0]])
    kept = cosine_kept(seq, mask, query, torch.tensor([2, 1]))
    assert kept.tolist() == [[True, False, True, False], [False, True, False, False]]  # row 1: a tie, the newer
    assert cosine_kept(seq, mask, query, torch.tensor([4, 4])).tolist() == mask.tolist()


def test_effects_oracle_ranks_the_label_logit_first_and_refuses_data_that_differs(tmp_path):
    """``tinrec analyze effects``: on generated data with a strong long-range effect, dropping it costs AUC, the
    user's bias is the gap between the label logit and the learnable part (in AUC; in GAUC it is none); changed
    labels are refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinrec.analysis import effects_oracle
    from tinrec.config import load_config
    from tinrec.data.generate import generate_dataset

    data = str(tmp_path / "data")
    meta = generate_dataset(data, seed=1, num_users=200, num_items=500, num_categories=10, train_rows=100,
                            valid_rows=100, test_rows=2000, seq_len_mean=60.0, seq_len_max=100, row_group_size=500,
                            show_progress=False, effects={"long_range": {"enabled": True, "min_position": 20,
                                                                         "share": 0.2, "strength": 3.0}})
    cfg = load_config("configs/default.yaml", [f"data.path={data}"])
    out = effects_oracle(cfg)
    a = out["auc"]
    assert out["rows"] == 2000 and set(a) == {"label logit", "learnable", "target alone",
                                              "learnable without semantic_temporal", "learnable without long_range"}
    assert a["label logit"] > a["learnable"] > a["learnable without long_range"] + 0.03
    assert a["learnable"] > a["learnable without semantic_temporal"] > a["target alone"] > 0.5
    g = out["gauc"]  # within a user, the user's own bias ranks nothing: GAUC is the same with or without it
    assert set(g) == set(a) and g["label logit"] == pytest.approx(g["learnable"], abs=1e-12)
    assert g["learnable"] > g["learnable without long_range"] + 0.01
    first = os.path.join(data, meta["splits"]["test"]["files"][0])
    t = pq.read_table(first)
    pq.write_table(t.set_column(0, "label", pa.array(1 - t.column("label").to_numpy(), type=pa.int8())), first)
    with pytest.raises(ValueError, match="labels differ"):
        effects_oracle(cfg)


@pytest.mark.integration
def test_long_range_recall_of_twin_reports_its_references_consistently(tmp_path):
    """``tinrec analyze long-range`` on TWIN: the recall without the cross bias and by the inputs' angle are
    shares of the same far-back behaviours, and the spreads of alpha's two parts are reported; with a k above
    the history every search keeps everything (recall 1 for all three)."""
    from tests.tinrec.test_train_cli import TINY, run

    data, run_dir = str(tmp_path / "data"), str(tmp_path / "run")
    lifelong = ["data.generate.seq_len_mean=30.0", "data.generate.seq_len_max=40", "data.max_len=40",
                "data.generate.effects.long_range.enabled=true", "data.generate.effects.long_range.min_position=8",
                "data.generate.effects.long_range.share=0.2", "data.generate.effects.long_range.target_share=0.5"]
    common = ["configs/twin.yaml", f"run_dir={run_dir}", f"data.path={data}", *TINY, *lifelong]
    run(["train", *common, "model.interests.twin.k=5", "train.epochs=1", "train.max_steps=2"])
    few = json.loads(run(["analyze", "long-range", *common, "model.interests.twin.k=5"]).stdout.strip().splitlines()[-1])
    assert few["interest"] == "twin" and few["far_back_behaviours"] > 0
    for key in ("far_back_recall", "recall_without_cross_bias", "cosine_recall"):
        assert 0.0 <= few[key] < 1.0, (key, few)
    assert few["alpha_std"]["inherent"] > 0 and few["alpha_std"]["cross_bias"] > 0
    every = json.loads(run(["analyze", "long-range", *common, "model.interests.twin.k=100"]).stdout.strip().splitlines()[-1])
    assert every["far_back_recall"] == every["recall_without_cross_bias"] == every["cosine_recall"] == 1.0


def test_information_abundance_is_one_for_rank_one_and_the_width_for_orthogonal_equal_columns():
    from tinrec.analysis import abundance

    g = torch.Generator().manual_seed(0)
    u = torch.randn(50, 1, generator=g)
    assert abundance(u @ torch.randn(1, 6, generator=g)) == pytest.approx(1.0, abs=1e-6)
    q, _ = torch.linalg.qr(torch.randn(50, 6, generator=g))
    assert abundance(q) == pytest.approx(6.0, abs=1e-6)
    assert abundance(q * torch.tensor([1.0, 1, 1, 0.5, 0.5, 0])) == pytest.approx(4.0, abs=1e-6)  # 1+1+1+.5+.5


@pytest.mark.integration
def test_analyze_abundance_reports_every_table_and_multi_embedded_features_side_by_side(tmp_path):
    """``tinrec analyze abundance`` on a trained heterogeneous backbone: every table of every group, and each
    feature of the three sets with its tables side by side (24 + 16 + 8 columns)."""
    from tests.tinrec.test_train_cli import run
    from tinrec.analysis import abundance, information_abundance
    from tinrec.config import load_config

    data, run_dir = str(tmp_path / "data"), str(tmp_path / "run")
    small = [f"run_dir={run_dir}", f"data.path={data}", "data.generate.train_rows=512", "data.generate.valid_rows=64",
             "data.generate.test_rows=64", "data.generate.num_users=50", "data.generate.num_items=300",
             "train.batch_size=64", "train.max_steps=3", "data.num_workers=0"]
    run(["train", "configs/hetero_experts.yaml", *small])
    out = json.loads(run(["analyze", "abundance", "configs/hetero_experts.yaml", *small, "--full"]).stdout.strip()
                     .splitlines()[-1])
    assert {t["group"] for t in out["tables"].values()} == {"e1", "e2", "e3"} and len(out["tables"]) == 3 * 53
    f = out["features"]["user_f07"]
    assert f["tables"] == ["e1_user_f07", "e2_user_f07", "e3_user_f07"] and f["width"] == 48
    assert 1.0 <= f["abundance"] <= 48.0
    assert all(1.0 <= t["abundance"] <= t["width"] for t in out["tables"].values())
    cfg = load_config("configs/hetero_experts.yaml", small)
    again = information_abundance(cfg)
    assert again["tables"]["e2_item_f03"]["abundance"] == pytest.approx(out["tables"]["e2_item_f03"]["abundance"])
    assert abundance(torch.zeros(3, 4)) == 0.0
