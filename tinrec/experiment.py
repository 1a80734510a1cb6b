"""``tinrec experiment SPEC``: train a list of configs over several seeds, write one comparison table.

A spec (YAML)::

    name: tin_table                # runs go to runs/<name>/<row-slug>-s<seed>
    seeds: [0, 1, 2]
    baseline: Avg Pooling & Concat # the row the relative changes are computed against
    relaimpr: DMIN                 # optional: a RelaImpr column against this row (DIN paper:
                                   #   (AUC(row) - 0.5) / (AUC(base) - 0.5) - 1, in %, on the mean test AUCs)
    overrides: []                  # applied to every row (before the row's own)
    table: metrics                 # metrics (default) | cost: only training samples/s and peak memory
    records: docs/results/x_runs   # optional: the records folder when --records is not given (specs that
                                   #   share one share a run's record by row name: same name, same config)
    rows:
      - {name: TIN, config: configs/default.yaml, overrides: []}
      - {name: TIN w/o TTE, config: configs/default.yaml, overrides: [model.interests.tin.inputs.seq_time_BLD=null, model.interests.tin.inputs.query_time_BD=null]}

Each run is ``tinrec train CONFIG seed=S run_dir=... OVERRIDES --resume`` in a subprocess, so a killed
experiment continues where it stopped and finished runs are not repeated. With ``records=DIR``
(``--records DIR``), each finished run's ``metrics.json`` is also kept as ``DIR/<row-slug>-s<seed>.json``, and a
run whose folder is gone but whose record is there counts as finished: the table outlives the run folders
(a cleaned scratch disk, a new machine), and a record can be committed beside the results. A record keeps the
run's resolved config (less run folder, seed and description): specs sharing a records folder (the spec's
``records`` key) share a run by row name, and a record of another config under the same name is refused. The table (Markdown) and the
numbers (JSON) go to ``runs/<name>/results.{md,json}``: mean and standard deviation over seeds of test GAUC,
AUC and logloss, and the relative change against the baseline as in the TIN paper's Table 1, plus training
samples/s and peak memory (``tinrec train``'s metrics.json) when every run records them. Row names that would
share a run folder are refused.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np
import yaml

from tinrec.results import write_json


def _slug(name: str) -> str:
    """Run-folder name of a row: lower case, "'" spelled "prime" (DIN' vs DIN), other symbols "-"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", " prime")).strip("-")


def load_spec(path: str) -> dict:
    with open(path) as f:
        spec = yaml.safe_load(f)
    for key in ("name", "rows"):
        if key not in spec:
            raise ValueError(f"{path}: {key}: required key is missing")
    unknown = set(spec) - {"name", "seeds", "baseline", "relaimpr", "rows", "overrides", "table", "records"}
    if unknown:
        raise ValueError(f"{path}: {sorted(unknown)[0]}: unknown key")
    for i, row in enumerate(spec["rows"]):
        if set(row) - {"name", "config", "overrides"} or "name" not in row or "config" not in row:
            raise ValueError(f"{path}: rows[{i}]: needs name and config (and optional overrides) only")
    slugs: Dict[str, str] = {}
    for row in spec["rows"]:
        other = slugs.setdefault(_slug(row["name"]), row["name"])
        if other != row["name"] or sum(r["name"] == row["name"] for r in spec["rows"]) > 1:
            raise ValueError(f"{path}: rows: {other!r} and {row['name']!r} would share the run folder "
                             f"{_slug(row['name'])}-s<seed>; rename one")
    if spec.get("table", "metrics") not in ("metrics", "cost"):
        raise ValueError(f"{path}: table: 'metrics' (GAUC, logloss, AUC) or 'cost' (samples/s, peak memory), "
                         f"got {spec['table']!r}")
    for key in ("baseline", "relaimpr"):
        if spec.get(key) and spec[key] not in [r["name"] for r in spec["rows"]]:
            raise ValueError(f"{path}: {key}: {spec[key]!r} is not the name of a row")
    return spec


def relaimpr(auc: float, base_auc: float) -> float:
    """RelaImpr (the DIN paper's; DEI2N's Tables 2-3), in %: ``((AUC - 0.5) / (AUC_base - 0.5) - 1) * 100``."""
    return 100.0 * ((auc - 0.5) / (base_auc - 0.5) - 1.0)


def resolved_config(row: dict, common: List[str]) -> dict:
    """A row's config as trained (the spec's and the row's overrides applied), less what names a run rather than
    a model (run folder, seed, description): what a record shared between specs must agree on."""
    from tinrec.config import load_config, to_dict

    cfg = to_dict(load_config(row["config"], [*common, *row.get("overrides", [])]))
    return {k: v for k, v in cfg.items() if k not in ("run_dir", "seed", "description")}


def _first_difference(a, b, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
    return f"{where or 'config'} is {a!r} there, {b!r} here"


SPEED_ONLY = (("model", "indexed_sequences"),)
"""Config keys that change how a model is computed, not the model (tested equal up to float summation order):
not compared between a record and a row, so records kept before such a key existed still match."""


def _model_keys(config: dict) -> dict:
    out = json.loads(json.dumps(config))
    for section, key in SPEED_ONLY:
        out.get(section, {}).pop(key, None)
    return out


def _check_record(record: str, recorded: dict, config: dict) -> None:
    """A record written for another config is refused (specs sharing a records folder share a run by its row
    name); records from before configs were kept carry none and are taken as they are."""
    if "config" in recorded and _model_keys(recorded["config"]) != _model_keys(config):
        raise ValueError(f"{record}: recorded for another config than this row's: "
                         f"{_first_difference(_model_keys(recorded['config']), _model_keys(config))}; rename the "
                         f"row or use another --records")


def _keep_record(metrics: dict, record: str, config: dict) -> None:
    """Write ``record`` (a run's metrics and its resolved config) unless it already holds exactly these."""
    kept = dict(metrics, config=config)
    if os.path.exists(record):
        with open(record) as f:
            recorded = json.load(f)
        _check_record(record, recorded, config)
        if recorded == kept:
            return
    os.makedirs(os.path.dirname(record) or ".", exist_ok=True)
    write_json(record, kept)


def command(row: dict, seed: int, run_dir: str, common: List[str]) -> List[str]:
    return ["tinrec", "train", row["config"], f"seed={seed}", f"run_dir={run_dir}", *common,
            *row.get("overrides", []), "--resume"]


def run_experiment(path: str, out_root: str = "runs", report_only: bool = False,
                   train_seeds: Optional[List[int]] = None,
                   train_rows: Optional[List[str]] = None, records: Optional[str] = None) -> Dict[str, dict]:
    """Train what is missing (unless ``report_only``; only the seeds in ``train_seeds`` and the rows named in
    ``train_rows`` when given) and write the table. ``records`` defaults to the spec's ``records`` key. Rows are built from the finished runs; a row lists the seeds it has (``seeds``) and one without
    any is left out (``missing``)."""
    spec = load_spec(path)
    if records is None:
        records = spec.get("records")
    seeds = spec.get("seeds", [0])
    if train_seeds is not None and set(train_seeds) - set(seeds):
        raise ValueError(f"--seeds: {sorted(set(train_seeds) - set(seeds))} not among the spec's seeds {seeds}")
    names = [row["name"] for row in spec["rows"]]
    if train_rows is not None and set(train_rows) - set(names):
        raise ValueError(f"--rows: {sorted(set(train_rows) - set(names))} not among the rows of {path}: {names}")
    common = list(spec.get("overrides", []))
    results: Dict[str, dict] = {}
    missing: List[str] = []
    for row in spec["rows"]:
        per_seed, resources = [], []
        config = None  # the row's resolved config, loaded once and only when a record is read or kept
        for seed in seeds:
            run_dir = os.path.join(out_root, spec["name"], f"{_slug(row['name'])}-s{seed}")
            metrics_file = os.path.join(run_dir, "metrics.json")
            record = None if records is None else os.path.join(records, os.path.basename(run_dir) + ".json")
            cmd = command(row, seed, run_dir, common)
            if not os.path.exists(metrics_file) and record is not None and os.path.exists(record):
                metrics_file = record  # finished in an earlier session (or by a spec sharing the records)
            if not os.path.exists(metrics_file):
                if (report_only or (train_seeds is not None and seed not in train_seeds)
                        or (train_rows is not None and row["name"] not in train_rows)):
                    continue
                print(f"[experiment] {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
                exe = [sys.executable, "-m", "tinrec.cli"] + cmd[1:]
                subprocess.run(exe, check=True)
            with open(metrics_file) as f:
                m = json.load(f)
            if record is not None:
                config = resolved_config(row, common) if config is None else config
                if metrics_file == record:
                    _check_record(record, m, config)
                else:
                    _keep_record(m, record, config)
            per_seed.append(dict(m["test"], seed=seed))
            resources.append({k: m[k] for k in ("train", "peak_memory_mib") if k in m})
        if not per_seed:
            missing.append(row["name"])
            continue
        shown = command(row, seeds[0], f"runs/{spec['name']}/{_slug(row['name'])}-s<seed>", common)[:-1]
        results[row["name"]] = {
            "command": " ".join(shown).replace(f"seed={seeds[0]} ", "seed=<seed> "),
            **{f"{k}_{stat}": float(fn([np.nan if m[k] is None else m[k] for m in per_seed]))
               for k in ("gauc", "auc", "logloss") for stat, fn in (("mean", np.mean), ("std", np.std))},
            "seeds": [m["seed"] for m in per_seed],
        }
        if all(m.get("gauc_pairs", None) is not None for m in per_seed):  # runs by tinrec >= session 13
            results[row["name"]].update({f"gauc_pairs_{stat}": float(fn([m["gauc_pairs"] for m in per_seed]))
                                         for stat, fn in (("mean", np.mean), ("std", np.std))})
        if all("peak_memory_mib" in r and "train" in r for r in resources):  # runs by tinrec >= session 3
            results[row["name"]].update(
                train_samples_per_s_mean=float(np.mean([r["train"]["samples_per_s"] for r in resources])),
                peak_host_rss_mib_max=float(max(r["peak_memory_mib"]["host_rss"] for r in resources)))
            cuda = [r["peak_memory_mib"].get("cuda_allocated") for r in resources]
            cuda = [c for c in cuda if c is not None]
            if cuda:
                results[row["name"]]["peak_cuda_allocated_mib_max"] = float(max(cuda))
    base = results.get(spec.get("baseline") or "")
    rela = results.get(spec.get("relaimpr") or "")
    if rela is not None:
        for r in results.values():
            r["relaimpr_pct"] = relaimpr(r["auc_mean"], rela["auc_mean"])
    rela_col = bool(spec.get("relaimpr"))
    cost = all("peak_host_rss_mib_max" in r for r in results.values())  # cost columns when every row has them
    head = ("| model | test GAUC | Δ% | test logloss | Δ% | test AUC |" + (" RelaImpr |" * rela_col)
            + (" train samples/s | peak RSS MiB |" * cost))
    lines = [head + " command |", "|---|---|---|---|---|---|" + "---|" * rela_col + "---|---|" * cost + "---|"]
    def label(name: str) -> str:
        got = results[name]["seeds"]
        if len(got) == len(seeds):
            return name
        return f"{name} (seed{'s' * (len(got) > 1)} {', '.join(map(str, got))} only)"

    for name, r in results.items():
        dg = f"{100 * (r['gauc_mean'] / base['gauc_mean'] - 1):+.2f}" if base and r is not base else "-"
        dl = f"{100 * (r['logloss_mean'] / base['logloss_mean'] - 1):+.2f}" if base and r is not base else "-"
        lines.append(f"| {label(name)} | {r['gauc_mean']:.4f} ± {r['gauc_std']:.4f} | {dg} | "
                     f"{r['logloss_mean']:.4f} ± {r['logloss_std']:.4f} | {dl} | "
                     f"{r['auc_mean']:.4f} ± {r['auc_std']:.4f} |"
                     + ((f" {r['relaimpr_pct']:+.2f}% |" if "relaimpr_pct" in r else " - |") if rela_col else "")
                     + (f" {r['train_samples_per_s_mean']:.0f} | {r['peak_host_rss_mib_max']:.0f} |" if cost else "")
                     + f" `{r['command']}` |")
    if spec.get("table") == "cost":  # runs that record cost, not accuracy (e.g. a few steps at L = 2000)
        lines = ["| model | train samples/s | peak RSS MiB | command |", "|---|---|---|---|"]
        for name, r in results.items():
            if "peak_host_rss_mib_max" not in r:
                raise ValueError(f"{path}: table: cost, but the runs of {name!r} record no cost (rerun them)")
            lines.append(f"| {label(name)} | {r['train_samples_per_s_mean']:.1f} | {r['peak_host_rss_mib_max']:.0f} | "
                         f"`{r['command']}` |")
    table = "\n".join(lines)
    out_dir = os.path.join(out_root, spec["name"])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        head = (f"Seeds {seeds}; training samples/s (mean over seeds, the whole run including its first steps) and "
                f"peak RSS of the trainer process (max over seeds)." if spec.get("table") == "cost" else
                f"Seeds {seeds}; mean ± std over seeds; Δ% against {spec.get('baseline') or 'nothing'}."
                + (f" RelaImpr against {spec['relaimpr']} (on the mean test AUCs)." if rela_col else ""))
        if missing:
            head += f" Not run yet: {', '.join(missing)}."
        f.write(f"{head}\n\n{table}\n")
    write_json(os.path.join(out_dir, "results.json"), {"spec": spec, "results": results, "missing": missing})
    print(table)
    return results
