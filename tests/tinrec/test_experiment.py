"""``tinrec experiment``: configs x seeds through the real CLI, one table; finished runs are not repeated."""

import glob
import json
import os

import numpy as np
import pytest
import yaml

from tests.tinrec.test_train_cli import REPO, TINY, run

SLUG = {"Avg": "avg", "TIN w/o TTE": "tin-w-o-tte"}

pytestmark = pytest.mark.integration


def test_experiment_table_relative_change_cost_and_skip(tmp_path):
    data = str(tmp_path / "data")
    common = [f"data.path={data}", *TINY, "train.epochs=1", "train.max_steps=6", "train.checkpoint_every=0"]
    spec = {"name": "exp", "seeds": [0, 1], "baseline": "Avg", "overrides": common,
            "rows": [{"name": "Avg", "config": "configs/avgpool_concat.yaml"},
                     {"name": "TIN w/o TTE", "config": "configs/default.yaml",
                      "overrides": ["model.interests.tin.inputs.seq_time_BLD=null", "model.interests.tin.inputs.query_time_BD=null"]}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    run(["experiment", str(path), "--out-root", str(out)])

    results = json.loads((out / "exp" / "results.json").read_text())["results"]
    files = {(row, s): out / "exp" / f"{SLUG[row]}-s{s}" / "metrics.json" for row in SLUG for s in (0, 1)}
    per_run = {k: json.loads(f.read_text()) for k, f in files.items()}
    for row in ("Avg", "TIN w/o TTE"):
        gauc = [per_run[row, s]["test"]["gauc"] for s in (0, 1)]
        assert results[row]["gauc_mean"] == pytest.approx(np.mean(gauc))
        assert results[row]["gauc_std"] == pytest.approx(np.std(gauc))
        m = per_run[row, 0]
        assert m["train"]["samples"] == 6 * 64 and m["train"]["samples_per_s"] > 0
        assert m["peak_memory_mib"]["host_rss"] > 50  # a torch process holds far more than 50 MiB
        assert results[row]["peak_host_rss_mib_max"] == max(per_run[row, s]["peak_memory_mib"]["host_rss"]
                                                            for s in (0, 1))
    table = (out / "exp" / "results.md").read_text()
    delta = 100 * (results["TIN w/o TTE"]["gauc_mean"] / results["Avg"]["gauc_mean"] - 1)
    tin_line = next(line for line in table.splitlines() if line.startswith("| TIN w/o TTE |"))
    assert f"| {delta:+.2f} |" in tin_line and "model.interests.tin.inputs.seq_time_BLD=null" in tin_line
    assert "peak RSS MiB" in table and "seed=<seed>" in tin_line

    # a re-run reuses finished runs: nothing is trained again, the metrics files are untouched
    stamps = {k: os.path.getmtime(f) for k, f in files.items()}
    again = run(["experiment", str(path), "--out-root", str(out)])
    assert "[experiment]" not in again.stdout
    assert stamps == {k: os.path.getmtime(f) for k, f in files.items()}

    # --records: each finished run's metrics kept as DIR/<run>.json; a run whose folder is gone counts as finished
    rec = tmp_path / "records"
    run(["experiment", str(path), "--out-root", str(out), "--records", str(rec)])
    assert sorted(p.name for p in rec.iterdir()) == sorted(f"{SLUG[row]}-s{s}.json" for row, s in files)
    for (row, s), f in files.items():
        kept = json.loads((rec / f"{SLUG[row]}-s{s}.json").read_text())
        assert kept == dict(per_run[row, s], config=kept["config"])  # the metrics, and the config they came from
        assert kept["config"]["data"]["path"] == data and "run_dir" not in kept["config"]
    assert (json.loads((rec / "tin-w-o-tte-s0.json").read_text())["config"]["model"]["interests"]["tin"]["inputs"]
            ["seq_time_BLD"] is None)
    elsewhere = tmp_path / "fresh_runs"  # a new machine: no run folders, only the records
    moved = run(["experiment", str(path), "--out-root", str(elsewhere), "--records", str(rec)])
    assert "[experiment]" not in moved.stdout
    assert json.loads((elsewhere / "exp" / "results.json").read_text())["results"] == results

    # another spec naming the same records folder (its records key) shares a run by row name when the configs
    # agree, and refuses a record of another config under that name instead of reporting it as this row's
    shared = tmp_path / "shared.yaml"
    shared.write_text(yaml.safe_dump(dict(spec, name="other", records=str(rec), rows=spec["rows"][:1])))
    reused = run(["experiment", str(shared), "--out-root", str(elsewhere)])
    assert "[experiment]" not in reused.stdout
    other_avg = json.loads((elsewhere / "other" / "results.json").read_text())["results"]["Avg"]
    assert {k: v for k, v in other_avg.items() if k != "command"} == {k: v for k, v in results["Avg"].items()
                                                                      if k != "command"}
    clash = [dict(spec["rows"][0], overrides=["model.tower.hidden=[7]"])]
    shared.write_text(yaml.safe_dump(dict(spec, name="other", records=str(rec), rows=clash)))
    refused = run(["experiment", str(shared), "--out-root", str(elsewhere)], check=False)
    assert refused.returncode != 0 and "[experiment]" not in refused.stdout
    assert "avg-s0.json: recorded for another config than this row's: model.tower.hidden is" in refused.stderr

    # --report-only trains nothing: partial rows say which seeds they have, rows without runs are listed
    os.remove(files["TIN w/o TTE", 1])
    spec_more = dict(spec, rows=spec["rows"] + [{"name": "Never", "config": "configs/din.yaml"}])
    path.write_text(yaml.safe_dump(spec_more))
    partial = run(["experiment", str(path), "--out-root", str(out), "--report-only"])
    assert "[experiment]" not in partial.stdout and not files["TIN w/o TTE", 1].exists()
    report = json.loads((out / "exp" / "results.json").read_text())
    assert report["missing"] == ["Never"] and report["results"]["TIN w/o TTE"]["seeds"] == [0]
    assert report["results"]["TIN w/o TTE"]["gauc_mean"] == pytest.approx(per_run["TIN w/o TTE", 0]["test"]["gauc"])
    md = (out / "exp" / "results.md").read_text()
    assert "| TIN w/o TTE (seed 0 only) |" in md and "Not run yet: Never." in md
    path.write_text(yaml.safe_dump(spec))
    only0 = run(["experiment", str(path), "--out-root", str(out), "--seeds", "0"])  # seed 1 is not trained now
    assert "[experiment]" not in only0.stdout and not files["TIN w/o TTE", 1].exists()
    other = run(["experiment", str(path), "--out-root", str(out), "--rows", "Avg"])  # only Avg's runs now
    assert "[experiment]" not in other.stdout and not files["TIN w/o TTE", 1].exists()
    unknown = run(["experiment", str(path), "--out-root", str(out), "--rows", "Nope"], check=False)
    assert unknown.returncode != 0 and "--rows: ['Nope'] not among the rows" in unknown.stderr
    run(["experiment", str(path), "--out-root", str(out), "--seeds", "1", "--rows", "TIN w/o TTE"])
    assert files["TIN w/o TTE", 1].exists()

    # table: cost -> only samples/s and peak memory (for runs that record cost, not accuracy)
    path.write_text(yaml.safe_dump(dict(spec, table="cost")))
    run(["experiment", str(path), "--out-root", str(out)])
    cost = (out / "exp" / "results.md").read_text()
    assert "| model | train samples/s | peak RSS MiB | command |" in cost and "GAUC" not in cost
    rss = max(per_run["Avg", s]["peak_memory_mib"]["host_rss"] for s in (0, 1))
    assert f"| {rss:.0f} |" in next(line for line in cost.splitlines() if line.startswith("| Avg |"))


def test_spec_errors_name_the_key(tmp_path):
    from tinrec.experiment import load_spec

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "rows": [{"name": "A", "config": "c.yaml"}], "baseline": "B"}))
    with pytest.raises(ValueError, match="baseline: 'B' is not the name of a row"):
        load_spec(str(bad))
    bad.write_text(yaml.safe_dump({"name": "x", "rows": [{"name": "A"}]}))
    with pytest.raises(ValueError, match=r"rows\[0\]"):
        load_spec(str(bad))
    bad.write_text(yaml.safe_dump({"name": "x", "rows": [{"name": "A", "config": "c.yaml"}], "table": "speed"}))
    with pytest.raises(ValueError, match="table: 'metrics'"):
        load_spec(str(bad))
    # DIN' and DIN get their own run folders; names that would share one are refused, not silently merged
    rows = [{"name": "DIN'", "config": "c.yaml"}, {"name": "DIN", "config": "c.yaml"}]
    bad.write_text(yaml.safe_dump({"name": "x", "rows": rows}))
    assert [r["name"] for r in load_spec(str(bad))["rows"]] == ["DIN'", "DIN"]
    for clash in ("din", "DIN "):
        bad.write_text(yaml.safe_dump({"name": "x", "rows": rows + [{"name": clash, "config": "c.yaml"}]}))
        with pytest.raises(ValueError, match="would share the run folder din-s<seed>"):
            load_spec(str(bad))


@pytest.mark.parametrize("spec", sorted(glob.glob(os.path.join(REPO, "experiments", "*.yaml"))),
                         ids=lambda p: os.path.basename(p))
def test_every_row_of_every_experiment_spec_builds(spec):
    """A spec's configs and overrides are valid and build a model (on meta), so an experiment never fails
    hours in on a row with a stale key."""
    from tinrec.config import load_config
    from tinrec.features import resolve_rows
    from tinrec.model import build_model

    with open(spec) as f:
        rows = yaml.safe_load(f)["rows"]
    for row in rows:
        cfg = load_config(os.path.join(REPO, row["config"]), list(row.get("overrides", [])))
        tables = {n: 10 for n in ("user", "item", "category", "brand", "author", "age", "gender", "activity", "page")}
        tables.update({f: 10 for t in cfg.model.tables.values() for f in t.features if "_f" in f})  # id families
        build_model(cfg, resolve_rows(cfg, {"tables": tables}))


# settings of inputs CAIN does not give its backbone (modules/cain.py: SIM searches softly on the TCN output)
NEEDS_INPUTS_CAIN_DOES_NOT_PASS = {"search", "soft_input_dim"}
# the inputs CAIN hands its backbone as they are, and the backbone setting that says one is read
PASSED_THROUGH = {"seq_time_BLD": "time_dim", "cross_BLX": "cross_features"}


def test_specs_sharing_a_records_folder_agree_on_each_shared_row(monkeypatch):
    """Specs naming one records folder share a finished run by its row name (experiments/cain_*_graded.yaml):
    every row name they have in common must resolve to one config, or one table would report another's run.
    (A run refuses such a record too, but only once it gets there: this catches it before hours of training.)"""
    from tinrec.experiment import _slug, load_spec, resolved_config

    by_folder = {}
    for path in sorted(glob.glob(os.path.join(REPO, "experiments", "**", "*.yaml"), recursive=True)):
        spec = load_spec(path)
        if spec.get("records"):
            by_folder.setdefault(spec["records"], []).append((os.path.basename(path), spec))
    shared = 0
    monkeypatch.chdir(REPO)  # configs are named relative to the repository root
    for folder, specs in by_folder.items():
        seen = {}
        for name, spec in specs:
            for row in spec["rows"]:
                config = resolved_config(row, list(spec.get("overrides", [])))
                slug = _slug(row["name"])
                if slug in seen:
                    assert seen[slug][1] == config, f"{folder}: {row['name']!r} of {name} and of {seen[slug][0]}"
                    shared += 1
                seen.setdefault(slug, (name, config))
    assert shared >= 6  # Table 2 graded: LAP, LAP + TCN; Table 3 graded: five + TCN rows, LAP + TCN + MSIA


@pytest.mark.parametrize("spec", ["cain_table2.yaml", "cain_table3.yaml", "cain_table2_graded.yaml",
                                  "cain_table3_graded.yaml", "public/cain_table2_taobao.yaml"])
def test_cain_rows_give_each_backbone_its_own_rows_settings(spec):
    """CAIN's Tables 2-3 compare a backbone with and without the TCN: the TCN rows must build the backbone with
    the hyperparameters of the backbone's own row (an SDIM at another tau would be a different model)."""
    import inspect

    from tinrec.config import load_config
    from modules.cain import _backbone

    with open(os.path.join(REPO, "experiments", spec)) as f:
        rows = yaml.safe_load(f)["rows"]
    def alone(kind):  # the backbone's own lifelong config (SIM's TCN rows search softly)
        cfg = load_config(os.path.join(REPO, "configs", "lifelong", ("sim_soft" if kind == "sim" else kind) + ".yaml"))
        return {k: v for k, v in cfg.model.interests[kind].items() if k not in ("_component_", "inputs")}

    checked = 0
    for row in rows:
        cfg = load_config(os.path.join(REPO, row["config"]), list(row.get("overrides", [])))
        cain = cfg.model.interests.get("cain")
        if cain is None:
            continue
        kind = cain["backbone"]
        own = alone(kind)
        module = _backbone(kind, 64, dict(cain.get("backbone_args") or {}))
        params = inspect.signature(type(module).__init__).parameters
        for key, value in own.items():
            if key in params and key not in NEEDS_INPUTS_CAIN_DOES_NOT_PASS:
                got = (cain.get("backbone_args") or {}).get(key, params[key].default)
                assert got == value, f"{spec} row {row['name']!r}: {kind}'s {key} is {got}, its own row has {value}"
        for arg, setting in PASSED_THROUGH.items():  # the backbone's own row reads it: so does its TCN row
            if own.get(setting):
                assert cain["inputs"].get(arg), f"{spec} row {row['name']!r}: {kind} reads {arg}; bind it"
        if kind == "sim" and cain.get("backbone_args", {}).get("search", "soft") == "soft":  # its GSU loss
            bound = cain["inputs"].get("label_B")
            assert bound is not None and cfg.model.inputs[bound].label, \
                f"{spec} row {row['name']!r}: SIM's soft search inside CAIN needs label_B bound to a label input"
        checked += 1
    assert checked >= 5


def test_relaimpr_column_against_its_named_row(tmp_path):
    """``relaimpr: ROW``: (AUC - 0.5) / (AUC_ROW - 0.5) - 1 in %, on the rows' mean test AUCs (DIN paper);
    DEI2N's Table 2 numbers: DEI2N 0.7671 against DMIN 0.6107 is +141.28% as printed there."""
    from tinrec.experiment import relaimpr, run_experiment

    assert relaimpr(0.7671, 0.6107) == pytest.approx(141.28, abs=0.01)
    assert relaimpr(0.6042, 0.6107) == pytest.approx(-5.87, abs=0.01)
    spec = {"name": "t", "seeds": [0, 1], "relaimpr": "Base",
            "rows": [{"name": "Base", "config": "c.yaml"}, {"name": "Better", "config": "c.yaml"}]}
    aucs = {"base": [0.60, 0.62], "better": [0.70, 0.72]}
    for slug, vals in aucs.items():
        for s, auc in enumerate(vals):
            d = tmp_path / "t" / f"{slug}-s{s}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({"test": {"auc": auc, "gauc": 0.5, "logloss": 0.6}}))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = run_experiment(str(path), out_root=str(tmp_path), report_only=True)
    want = 100 * ((0.71 - 0.5) / (0.61 - 0.5) - 1)
    assert results["Better"]["relaimpr_pct"] == pytest.approx(want) and results["Base"]["relaimpr_pct"] == 0
    md = (tmp_path / "t" / "results.md").read_text()
    assert "| RelaImpr |" in md and f"| {want:+.2f}% |" in md and "RelaImpr against Base" in md
    path.write_text(yaml.safe_dump(dict(spec, relaimpr="Nope")))
    with pytest.raises(ValueError, match="relaimpr: 'Nope' is not the name of a row"):
        run_experiment(str(path), out_root=str(tmp_path), report_only=True)


def test_a_record_matches_whatever_its_speed_only_settings():
    """model.indexed_sequences changes how a model is computed, not the model: a record kept before the key
    existed (or with the other value) still matches the row; any other difference is refused."""
    from tinrec.experiment import _check_record

    config = {"model": {"tower": {"hidden": [8]}, "indexed_sequences": True}, "train": {"epochs": 1}}
    for recorded in ({"model": {"tower": {"hidden": [8]}}, "train": {"epochs": 1}},
                     {"model": {"tower": {"hidden": [8]}, "indexed_sequences": False}, "train": {"epochs": 1}}):
        _check_record("r.json", {"config": recorded}, config)
    with pytest.raises(ValueError, match="model.tower.hidden is"):
        _check_record("r.json", {"config": {"model": {"tower": {"hidden": [7]}}, "train": {"epochs": 1}}}, config)
