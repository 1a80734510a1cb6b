"""`tinrec plan`: placements, pooling factors, production configs, plan files into training, impossible topologies."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tinrec.cli import build_parser
from tinrec.config import load_config
from tinrec.features import resolve_rows
from tinrec.planning import GB, Cluster, plan, pooling_factors
from tinrec.sharding import load_plan, save_plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(REPO, "configs", "default.yaml")
PRODUCTION = sorted(glob.glob(os.path.join(REPO, "configs", "production", "*.yaml")))
PROD_1B = os.path.join(REPO, "configs", "production", "tin_1b_items.yaml")
PROD_10B = os.path.join(REPO, "configs", "production", "tin_10b_items.yaml")
# the default config with small explicit tables and no dataset
SMALL = ["data.path=/nonexistent", "data.generate=null", "model.embeddings.main.item.rows=500", "model.embeddings.main.category.rows=20",
         "model.embeddings.main.user.rows=50", "model.embeddings.main.age.rows=9", "model.embeddings.main.gender.rows=3"]


def cli_plan(*argv):
    """Run `tinrec plan ...` in this process (as the CLI does, minus its logging set-up and error printing)."""
    args = build_parser().parse_args(["plan", *argv])
    return args.func(args)


def test_small_model_placements_by_hand():
    # two equal table-wise tables on two GPUs go to different ranks; a row-wise table spans both
    cfg = load_config(DEFAULT, SMALL + ["model.embeddings.main.item.rows=100000", "model.embeddings.main.item.sharding_types=[table_wise]",
                                        "model.embeddings.main.category.rows=100000", "model.embeddings.main.category.dim=32",
                                        "model.embeddings.main.category.sharding_types=[table_wise]",
                                        "model.embeddings.temporal.position.sharding_types=[row_wise]"])
    _, rep = plan(cfg, Cluster(nodes=1, gpus_per_node=2))
    t = rep["tables"]
    assert t["item"]["sharding_type"] == "table_wise" and t["category"]["sharding_type"] == "table_wise"
    assert len(t["item"]["ranks"]) == 1 and len(t["category"]["ranks"]) == 1
    assert t["item"]["ranks"] != t["category"]["ranks"]
    assert t["position"]["sharding_type"] == "row_wise" and t["position"]["ranks"] == [0, 1]
    assert all(x["kernel"] == "fused" for x in t.values())
    # per-rank HBM is exactly the sum of the shards placed there; both ranks hold something
    assert sum(r["hbm"] for r in rep["ranks"].values()) == pytest.approx(sum(x["planned_gb"] for x in t.values()) * GB)
    assert all(r["hbm"] > 0 and r["compute_ms"] > 0 and r["comms_ms"] > 0 for r in rep["ranks"].values())
    assert rep["pooling_factors_from"].startswith("data.max_len=200")
    assert t["item"]["ids_per_sample"] == 201 and t["user"]["ids_per_sample"] == 1  # target 1 + history max_len


def test_pooling_factors_sources():
    cfg = load_config(DEFAULT, ["data.max_len=20", "model.embeddings.main.category.pooling_factor=3"])
    pf, src = pooling_factors(cfg, {"mean_history_length": 12.5})
    assert pf["item"] == [1.0, 12.5] and pf["user"] == [1.0] and pf["category"] == [3.0, 3.0] and "meta.json" in src
    assert pooling_factors(cfg, {"mean_history_length": 40.0})[0]["item"] == [1.0, 20.0]  # capped at data.max_len
    pf, src = pooling_factors(cfg, None)  # no dataset: data.generate.seq_len_mean (50) capped at max_len
    assert pf["item"] == [1.0, 20.0] and "seq_len_mean" in src and "not generated" in src
    cfg = load_config(DEFAULT, ["data.generate=null", "data.max_len=30"])
    pf, src = pooling_factors(cfg, None)
    assert pf["position"] == [1.0, 30.0] and src.startswith("data.max_len=30")


def test_plan_reads_the_dataset_meta(tmp_path):
    meta = {"tables": {"item": 700, "category": 30, "user": 90, "age": 9, "gender": 3}, "mean_history_length": 42.0}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    cfg = load_config(DEFAULT, [f"data.path={tmp_path}"])
    _, rep = plan(cfg, Cluster(nodes=1, gpus_per_node=2, compute_device="cpu"))
    assert rep["tables"]["item"]["rows"] == 700 and rep["tables"]["item"]["ids_per_sample"] == 43
    assert "meta.json" in rep["pooling_factors_from"]
    with pytest.raises(ValueError, match=r"has no dataset \(meta.json\).*model.embeddings.GROUP.NAME.rows"):
        plan(load_config(DEFAULT, ["data.path=/nonexistent"]), Cluster(nodes=1))


@pytest.mark.parametrize("path", PRODUCTION, ids=[os.path.basename(p) for p in PRODUCTION])
def test_production_configs_plan(path):
    cfg = load_config(path)
    assert all(isinstance(t.rows, int) for t in cfg.model.tables.values())  # explicit rows: there is no dataset
    _, rep = plan(cfg, Cluster(nodes=8, gpus_per_node=8))
    assert set(rep["tables"]) == set(cfg.model.tables)
    item = rep["tables"]["item"]
    if cfg.model.tables["item"].sharding_types == ["row_wise"]:  # the TIN configs ask for it
        assert item["sharding_type"] == "row_wise" and item["ranks"] == list(range(64))
    else:  # left to the planner (hetero_experts: 100M rows): split over several GPUs, never one
        assert len(item["ranks"]) > 1
    hbm = [r["hbm"] for r in rep["ranks"].values()]
    assert max(hbm) < 80 * GB and min(hbm) > 0.5 * GB
    assert rep["largest"][0] == "item"


def test_production_1b_at_2_and_32_nodes():
    cfg = load_config(PROD_1B)
    for nodes in (2, 32):
        _, rep = plan(cfg, Cluster(nodes=nodes, gpus_per_node=8))
        assert rep["tables"]["item"]["ranks"] == list(range(nodes * 8))
        assert max(r["hbm"] for r in rep["ranks"].values()) < 80 * GB


def test_impossible_topology_names_tables_and_amounts():
    with pytest.raises(ValueError) as e:
        cli_plan(PROD_1B, "--nodes", "1", "--gpus-per-node", "2", "--hbm-gb", "1")
    msg = str(e.value)
    assert "do not fit on 1 x 2 GPUs with 1 GB HBM each" in msg
    assert "item (1,000,000,000 rows x 32): needs 61." in msg and "GB more than a GPU has free" in msg
    assert "GB short" in msg and "Suggestions:" in msg and "fp16" in msg and "smaller dim for item" in msg
    with pytest.raises(ValueError) as e:  # each table fits a GPU; together they need ~5 nodes, not 2
        plan(load_config(PROD_10B), Cluster(nodes=2, gpus_per_node=8))
    msg = str(e.value)
    assert "item (10,000,000,000 rows x 64): needs" in msg and "at least 5 nodes of this kind" in msg


def test_suggests_row_wise_for_a_large_table_wise_table():
    cfg = load_config(PROD_1B, ["model.embeddings.item.item.sharding_types=[table_wise]"])
    with pytest.raises(ValueError, match=r"shard item row-wise \(model.embeddings.item.item.sharding_types=\[row_wise\]\)"):
        plan(cfg, Cluster(nodes=2, gpus_per_node=8))


def test_plan_file_round_trip_and_refusals(tmp_path):
    path = str(tmp_path / "p.plan")
    assert cli_plan(DEFAULT, *SMALL, "--nodes", "1", "--gpus-per-node", "1", "--device", "cpu", "--out", path) == 0
    rep = json.load(open(path + ".json"))
    cfg = load_config(DEFAULT, SMALL)
    rows = resolve_rows(cfg, {})
    shapes = {n: [rows[n], t.dim] for n, t in cfg.model.tables.items()}  # as train.build_training builds them
    loaded = load_plan(path, world_size=1, tables=shapes, compute_device="cpu")
    got = {name: ps for module in loaded.plan.values() for name, ps in module.items()}
    assert set(got) == set(cfg.model.tables)
    for name, ps in got.items():
        assert (ps.sharding_type, ps.compute_kernel, ps.ranks) == (
            rep["tables"][name]["sharding_type"], rep["tables"][name]["kernel"], rep["tables"][name]["ranks"])
    with pytest.raises(ValueError, match=r"p\.plan was made for world size 1, this job has world size 2"):
        load_plan(path, world_size=2, tables=shapes)
    with pytest.raises(ValueError, match=r"made for other tables .*item: plan \[500, 32\], config \[501, 32\]"):
        load_plan(path, world_size=1, tables=dict(shapes, item=[501, 32]))
    with pytest.raises(ValueError, match=r"brand: plan absent"):
        load_plan(path, world_size=1, tables=dict(shapes, brand=[10, 8]))
    (tmp_path / "junk").write_text("not a plan")
    with pytest.raises(ValueError, match="cannot read it as a plan file"):
        load_plan(str(tmp_path / "junk"), world_size=1, tables=shapes)
    with pytest.raises(ValueError, match="file not found"):
        load_plan(str(tmp_path / "nope"), world_size=1, tables=shapes)


def test_save_plan_records_what_it_was_made_for(tmp_path):
    cfg = load_config(DEFAULT, SMALL)
    sp, rep = plan(cfg, Cluster(nodes=1, gpus_per_node=2, compute_device="cpu"))
    path = str(tmp_path / "sub" / "p.plan")
    save_plan(path, sp, rep)
    import torch

    saved = torch.load(path, weights_only=False)
    assert (saved["world_size"], saved["compute_device"], saved["tables"]["item"]) == (2, "cpu", [500, 32])


@pytest.mark.integration
def test_train_on_a_plan_file_end_to_end(tmp_path):
    from tests.tinrec.test_train_cli import TINY

    data, run_dir, path = str(tmp_path / "data"), str(tmp_path / "run"), str(tmp_path / "p.plan")
    overrides = [f"data.path={data}", f"run_dir={run_dir}", *TINY, "train.epochs=1", "train.max_steps=3"]
    from tinrec.config import load_config as load
    from tinrec.data.generate import generate_dataset

    generate_dataset(data, **load(DEFAULT, overrides).data.generate)
    cli_plan(DEFAULT, *overrides, "--nodes", "1", "--gpus-per-node", "1", "--device", "cpu", "--out", path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, "-m", "tinrec.cli", "train", DEFAULT, *overrides, f"plan={path}"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    assert os.path.exists(os.path.join(run_dir, "metrics.json"))
    bad = subprocess.run([sys.executable, "-m", "tinrec.cli", "train", DEFAULT, *overrides, f"run_dir={run_dir}2",
                          f"plan={path}", "data.max_len=20"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "made for other tables" in bad.stderr and "position: plan [17, 64]" in bad.stderr


# the feedback configs' tables with their rows given (no dataset needed)
FEEDBACK_ROWS = ["data.path=/nonexistent", "data.generate=null"] + [
    f"model.embeddings.{group}.{name}.rows={rows}" for group, name, rows in (
        ("main", "item", 20001), ("main", "category", 41), ("main", "time_bin", 11), ("profile", "user", 4001),
        ("profile", "age", 9), ("profile", "gender", 3))]


def test_the_same_job_gets_the_same_plan_in_every_process():
    """TorchRec intersects a table's sharding types as sets, so the order in which equal-cost options were
    tried followed Python's string hashing: with PYTHONHASHSEED 0 and 1 this job's small tables were planned
    table_wise in one process and column_wise in the other (and a run and its --resume trained differently).
    tinrec.sharding.OrderedEnumerator keeps the constraints' order."""
    outputs = []
    for seed in ("0", "1"):
        p = subprocess.run([sys.executable, "-m", "tinrec.cli", "plan", "--nodes", "1", "--gpus-per-node", "2",
                            "--device", "cpu", os.path.join(REPO, "configs", "feedback", "dmt.yaml"), *FEEDBACK_ROWS],
                           cwd=REPO, capture_output=True,
                           text=True, env=dict(os.environ, PYTHONHASHSEED=seed), timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        outputs.append([[c.strip() for c in line.split("|")] for line in p.stdout.splitlines() if "_wise" in line])
    assert len(outputs[0]) == 6 and outputs[0] == outputs[1]
    assert {row[4] for row in outputs[0] if row[0] in ("user", "age", "gender")} == {"table_wise"}, outputs[0]
