"""`tinrec plan`: placements, production configs, plan files into training, impossible topologies."""

import os

import pytest

from tinrec.config import load_config
from tinrec.planning import Cluster, load_plan, plan, save_plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(REPO, "configs", "default.yaml")
PROD = os.path.join(REPO, "configs", "production", "tin_1b_items.yaml")


def test_small_model_placements_by_hand():
    # two equal table-wise tables on two GPUs go to different ranks; a row-wise table spans both
    cfg = load_config(DEFAULT, ["data.path=/nonexistent", "data.generate=null",
                                "model.tables.item.rows=100000", "model.tables.item.sharding_types=[table_wise]",
                                "model.tables.category.rows=100000", "model.tables.category.sharding_types=[table_wise]",
                                "model.tables.position.sharding_types=[row_wise]",
                                "model.tables.user.rows=1000", "model.tables.age.rows=9", "model.tables.gender.rows=3"])
    _, rep = plan(cfg, Cluster(nodes=1, gpus_per_node=2))
    t = rep["tables"]
    assert t["item"]["sharding_type"] == "table_wise" and t["category"]["sharding_type"] == "table_wise"
    assert len(t["item"]["ranks"]) == 1 and t["item"]["ranks"] != t["category"]["ranks"]
    assert t["position"]["sharding_type"] == "row_wise" and t["position"]["ranks"] == [0, 1]
    assert all(x["kernel"] == "fused" for x in t.values())
    assert rep["pooling_factors_from"].startswith("data.max_len")


def test_production_config_plans_for_16_gpus():
    cfg = load_config(PROD)
    _, rep = plan(cfg, Cluster(nodes=2, gpus_per_node=8))
    item = rep["tables"]["item"]
    assert item["sharding_type"] == "row_wise" and item["ranks"] == list(range(16))
    hbm = [r["hbm"] for r in rep["ranks"].values()]
    assert max(hbm) < 80 * 1024**3 and min(hbm) > 1024**3  # the 119 GB item table is spread, and it fits
    assert rep["largest"][0]["table"] == "item"


def test_impossible_topology_is_explained():
    cfg = load_config(PROD)
    with pytest.raises(ValueError) as e:
        plan(cfg, Cluster(nodes=1, gpus_per_node=2, hbm_gb=1, ddr_gb=1))
    msg = str(e.value)
    assert "do not fit on 1 x 2 GPUs" in msg and "item: 1,000,000,000 rows x 32 = 119.2 GB" in msg
    assert "GB short" in msg and "Suggestions" in msg


def test_plan_file_round_trip_and_refusals(tmp_path):
    cfg = load_config(DEFAULT, ["data.path=/nonexistent", "data.generate=null", "model.tables.item.rows=500",
                                "model.tables.category.rows=20", "model.tables.user.rows=50",
                                "model.tables.age.rows=9", "model.tables.gender.rows=3"])
    sp, rep = plan(cfg, Cluster(nodes=1, gpus_per_node=2, compute_device="cpu"))
    path = str(tmp_path / "p.plan")
    save_plan(path, sp, cfg, 2)
    shapes = {n: [t.rows if t.rows != "auto" else cfg.data.max_len + 1, t.dim] for n, t in cfg.model.tables.items()}
    loaded = load_plan(path, world_size=2, tables=shapes)
    for module, params in sp.plan.items():
        for name, ps in params.items():
            got = loaded.plan[module][name]
            assert (got.sharding_type, got.compute_kernel, got.ranks) == (ps.sharding_type, ps.compute_kernel, ps.ranks)
    with pytest.raises(ValueError, match=r"made for 2 ranks, this job has 4"):
        load_plan(path, world_size=4, tables=shapes)
    with pytest.raises(ValueError, match=r"made for tables"):
        load_plan(path, world_size=2, tables=dict(shapes, item=[501, 32]))
