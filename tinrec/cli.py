"""``tinrec`` command line.

    tinrec train CONFIG [key.sub=value ...] [--resume]
    tinrec eval CONFIG checkpoint=PATH [key.sub=value ...]
    tinrec validate CONFIG [key.sub=value ...]
    tinrec gen-data OUT_DIR [key=value ...]                 # generate_dataset keyword arguments (seed=3 ...)
    tinrec check-data PATH [--max-examples N] [--json OUT]  # every problem of a dataset, counted (exit 1 if any)
    tinrec make-meta PATH                                   # infer a dataset's meta.json from its Parquet files
    tinrec experiment SPEC                                  # configs x seeds -> one comparison table
    tinrec plan CONFIG --nodes N [--gpus-per-node M] [--hbm-gb X] [--out PLAN] [...]  # planner dry run
    tinrec analyze stc CONFIG [checkpoint=PATH] [--split test] [--out DIR] [...]  # semantic-temporal correlation
    tinrec analyze abundance CONFIG [overrides] [--full]    # embedding collapse: information abundance per table
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import List, Optional


def _setup_logging(verbose: bool = False) -> None:
    """tinrec's own INFO lines and every library's warnings; ``--verbose`` adds the libraries' INFO lines
    (fbgemm's loaded-library and kernel-argument dumps, TorchRec's planner notes) and tinrec's DEBUG lines."""
    # fbgemm_gpu installs a root handler at import: force=True or nothing of ours is shown.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("tinrec").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # notes about the libraries' own internals, not about this run: TorchRec's planner advice on dry-run
        # estimates, FX tracing notices, deprecations inside TorchRec
        for noisy in ("torchrec", "torch.fx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torchrec|torch\.distributed)\.")
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecating ShardedTensor")


def _config(args) -> "object":
    from tinrec.config import load_config

    return load_config(args.config, args.overrides)


def cmd_validate(args) -> int:
    cfg = _config(args)
    from tinrec.model import build_model
    from tinrec.features import resolve_rows

    # Build on meta with placeholder sizes for 'auto' tables: checks the whole assembly without data.
    meta = {"tables": {n: 2 for n in cfg.model.tables}}
    build_model(cfg, resolve_rows(cfg, meta))
    print(f"{args.config}: OK ({len(cfg.model.interests)} interest module(s), {len(cfg.model.tables)} tables in "
          f"{len(cfg.model.embeddings)} embedding group(s))")
    return 0


def cmd_train(args) -> int:
    from tinrec.train import train

    train(_config(args), resume=args.resume)
    return 0


def cmd_eval(args) -> int:
    from tinrec.train import evaluate_checkpoint

    evaluate_checkpoint(_config(args))
    return 0


def cmd_gen_data(args) -> int:
    import inspect

    from tinrec.config import DELETE, parse_overrides
    from tinrec.data.generate import generate_dataset, parameters

    kwargs = {}
    params = {**inspect.signature(parameters).parameters, "show_progress": None}
    for path, value in parse_overrides(args.overrides):
        if value is DELETE:
            raise ValueError(f"gen-data: {'.'.join(path)}: removing a parameter (~key) has no meaning here")
        if path[0] not in params:
            raise ValueError(f"gen-data: unknown parameter {path[0]!r} (see docs/data.md)")
        node = kwargs
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    meta = generate_dataset(args.out_dir, **kwargs)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{s} {v['rows']} rows" for s, v in meta["splits"].items()))
    return 0


def cmd_check_data(args) -> int:
    import posixpath

    from iopath.common.file_io import g_pathmgr

    from tinrec.data.schema import read_meta
    from tinrec.data.scan import format_report, scan
    from tinrec.results import write_json

    has_meta = g_pathmgr.exists(posixpath.join(args.path, "meta.json"))
    report = scan(args.path, read_meta(args.path) if has_meta else None, max_examples=args.max_examples)
    print(format_report(report))
    if not has_meta:
        print(f"(no meta.json: ids were not checked against table sizes; `tinrec make-meta {args.path}` infers one)")
    if args.json:
        write_json(args.json, report)
    return 0 if report["ok"] else 1


def cmd_make_meta(args) -> int:
    import posixpath

    from iopath.common.file_io import g_pathmgr

    from tinrec.data.io import write_bytes_atomic
    from tinrec.data.scan import infer_meta
    from tinrec.results import dumps

    out = posixpath.join(args.path, "meta.json")
    if g_pathmgr.exists(out):
        raise ValueError(f"{out}: already exists; tinrec never replaces a dataset's meta.json")
    meta = infer_meta(args.path)
    write_bytes_atomic(out, (dumps(meta, indent=2) + "\n").encode("utf-8"))
    tables = ", ".join(f"{t} {n}" for t, n in meta["tables"].items())
    splits = ", ".join(f"{s} {v['rows']} rows" for s, v in meta["splits"].items())
    print(f"wrote {out}: tables {tables}; {splits}. Table sizes are the largest id seen + 1: set larger ones "
          f"if later data can hold larger ids")
    return 0


def cmd_plan(args) -> int:
    from tinrec.planning import Cluster, format_report, plan
    from tinrec.sharding import save_plan
    from tinrec.results import write_json

    cfg = _config(args)
    cluster = Cluster(nodes=args.nodes, gpus_per_node=args.gpus_per_node, compute_device=args.device,
                      **{k: v for k, v in (("hbm_gb", args.hbm_gb), ("ddr_gb", args.ddr_gb)) if v is not None})
    sharding_plan, rep = plan(cfg, cluster, batch_size=args.batch_size)
    print(format_report(rep), flush=True)
    if args.out:
        save_plan(args.out, sharding_plan, rep)
        write_json(args.out + ".json", rep)
        print(f"plan written to {args.out} (report: {args.out}.json); train on it with: "
              f"tinrec train {args.config} plan={args.out}")
    return 0


def cmd_experiment(args) -> int:
    from tinrec.experiment import run_experiment

    run_experiment(args.spec, out_root=args.out_root, report_only=args.report_only, train_seeds=args.seeds,
                   train_rows=args.rows, records=args.records)
    return 0


def cmd_analyze_stc(args) -> int:
    from tinrec.analysis import run_stc, summary

    report = run_stc(_config(args), split=args.split, positions=args.positions, top_k=args.top_k,
                     target=args.target_category, out=args.out, ground_truth_only=args.ground_truth_only,
                     interest=args.interest, normalise=args.normalise)
    print(summary(report))
    return 0


def cmd_analyze_effects(args) -> int:
    from tinrec.analysis import effects_oracle

    print(json.dumps(effects_oracle(_config(args), split=args.split)))
    return 0


def cmd_analyze_long_range(args) -> int:
    from tinrec.analysis import long_range_recall

    print(json.dumps(long_range_recall(_config(args), split=args.split, max_batches=args.max_batches,
                                       interest=args.interest)))
    return 0


def cmd_analyze_abundance(args) -> int:
    from tinrec.analysis import information_abundance

    report = information_abundance(_config(args))
    print(json.dumps(report if args.full else {
        "checkpoint": report["checkpoint"],
        "mean_abundance_by_group": _mean_by(report["tables"], "group"),
        "mean_abundance_of_features_side_by_side": (sum(f["abundance"] for f in report["features"].values())
                                                    / len(report["features"])) if report["features"] else None}))
    return 0


def _mean_by(tables: dict, key: str) -> dict:
    out: dict = {}
    for t in tables.values():
        out.setdefault(t[key], []).append(t["abundance"])
    return {k: sum(v) / len(v) for k, v in out.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinrec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true",
                        help="also show the libraries' INFO logging (fbgemm, TorchRec) and tinrec's DEBUG lines")

    def add_parser(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    def with_config(name: str, help_: str) -> argparse.ArgumentParser:
        sp = add_parser(name, help=help_)
        sp.add_argument("config", help="YAML experiment file")
        sp.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        return sp

    t = with_config("train", "train a config (works alone or under torchrun)")
    t.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint, if any")
    t.set_defaults(func=cmd_train)
    with_config("eval", "evaluate a checkpoint on valid and test (checkpoint=PATH)").set_defaults(func=cmd_eval)
    with_config("validate", "load and check a config, build its model on meta").set_defaults(func=cmd_validate)
    pl = with_config("plan", "embedding-sharding planner dry run for a GPU cluster (no GPU needed)")
    pl.add_argument("--nodes", type=int, required=True)
    pl.add_argument("--gpus-per-node", type=int, default=8)
    pl.add_argument("--hbm-gb", type=float, default=None, help="HBM per GPU in GB (default 80, H100)")
    pl.add_argument("--ddr-gb", type=float, default=None,
                    help="host memory per GPU in GB (default 2 TB per node split across its GPUs)")
    pl.add_argument("--batch-size", type=int, default=None, help="per-rank batch (default train.batch_size)")
    pl.add_argument("--out", default=None, help="write the plan here (tinrec train ... plan=FILE)")
    pl.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="plan for GPUs (default) or CPU ranks")
    pl.set_defaults(func=cmd_plan)
    x = add_parser("experiment", help="train a list of configs over seeds, write a comparison table")
    x.add_argument("spec", help="experiment YAML (experiments/*.yaml)")
    x.add_argument("--out-root", default="runs")
    x.add_argument("--report-only", action="store_true",
                   help="train nothing: write the table from the finished runs (partial rows say which seeds)")
    x.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train only these of the spec's seeds now (e.g. seed 0 of every row first); the table "
                        "reports every finished run")
    x.add_argument("--rows", nargs="+", default=None, metavar="NAME",
                   help="train only these rows now (their names as in the spec); the table reports every "
                        "finished run")
    x.add_argument("--records", default=None, metavar="DIR",
                   help="keep each finished run's metrics as DIR/<run>.json, and count a run whose folder is gone "
                        "but whose record is in DIR as finished (tables that outlive the run folders); default: "
                        "the spec's records key, if it has one")
    x.set_defaults(func=cmd_experiment)
    an = add_parser("analyze", help="analyses of a dataset and a trained model (docs/analysis.md)")
    analyses = an.add_subparsers(dest="analysis", required=True)
    st = analyses.add_parser(
        "stc", parents=[common],
        help="semantic-temporal correlation: ground truth (mutual information) vs. learned (TIN Eq. 1, 4-5)")
    st.add_argument("config", help="YAML experiment file")
    st.add_argument("overrides", nargs="*", help="key.sub=value overrides (checkpoint=PATH: default the latest)")
    st.add_argument("--split", default="test", help="split the learned correlation is measured on")
    st.add_argument("--positions", type=int, default=10)
    st.add_argument("--top-k", type=int, default=20, help="target categories compared (most impressions)")
    st.add_argument("--target-category", type=int, default=None, help="heatmap category (default: the top one)")
    st.add_argument("--interest", default=None, help="interest module (default: the first with learned_correlation)")
    st.add_argument("--normalise", choices=("global", "row"), default="global", help="heatmap scaling")
    st.add_argument("--out", default=None, help="output folder (default <run_dir>/stc)")
    st.add_argument("--ground-truth-only", action="store_true", help="no checkpoint: the ground truth only")
    st.set_defaults(func=cmd_analyze_stc)

    def analysis(name: str, help_: str, config_help: str, overrides_help: str) -> argparse.ArgumentParser:
        """An analysis of a config: CONFIG, its overrides and --split."""
        p = analyses.add_parser(name, parents=[common], help=help_)
        p.add_argument("config", help=config_help)
        p.add_argument("overrides", nargs="*", help=overrides_help)
        p.add_argument("--split", default="test")
        return p

    lr = analysis("long-range", "lifelong data: the share of the planted far-back behaviours a backbone's search keeps",
                  "YAML experiment file", "key.sub=value overrides (checkpoint=PATH: default the latest)")
    lr.add_argument("--interest", default=None, help="interest module (default: the first with a search)")
    lr.add_argument("--max-batches", type=int, default=None)
    lr.set_defaults(func=cmd_analyze_long_range)
    ef = analysis("effects", "generated data: the AUC of the label's own logit and of its parts (the ceiling, "
                  "each effect's worth)", "YAML experiment file (its data.path)", "key.sub=value overrides")
    ef.set_defaults(func=cmd_analyze_effects)
    ab = analyses.add_parser("abundance", parents=[common],
                             help="a trained model's embedding tables: information abundance (embedding collapse; "
                                  "multi-embedding's sets side by side)")
    ab.add_argument("config", help="YAML experiment file")
    ab.add_argument("overrides", nargs="*", help="key.sub=value overrides (checkpoint=PATH: default the latest)")
    ab.add_argument("--full", action="store_true", help="every table and feature, not the means")
    ab.set_defaults(func=cmd_analyze_abundance)
    cd = add_parser("check-data", help="scan a dataset for every kind of problem (counts, first examples)")
    cd.add_argument("path", help="dataset folder (docs/data.md)")
    cd.add_argument("--max-examples", type=int, default=3, help="examples shown per kind of problem")
    cd.add_argument("--json", default=None, help="also write the report to this file")
    cd.set_defaults(func=cmd_check_data)
    mm = add_parser("make-meta", help="infer meta.json (table sizes, splits) from a folder of Parquet files")
    mm.add_argument("path", help="dataset folder with train/, valid/, test/ Parquet files")
    mm.set_defaults(func=cmd_make_meta)
    cv = add_parser("convert", help="a public dataset, from its files as published, to the documented format")
    conv = cv.add_subparsers(dest="dataset", required=True, metavar="NAME")
    from tinrec.convert import CONVERTERS, module

    for name in CONVERTERS:
        sp = conv.add_parser(name, parents=[common], help=(module(name).__doc__ or "").strip().splitlines()[0])
        sp.add_argument("--input", required=True, help="the folder of the published files")
        sp.add_argument("--output", required=True, help="an absent or empty folder (or an earlier conversion's)")
        module(name).add_arguments(sp)
        sp.set_defaults(func=cmd_convert)
    g = add_parser("gen-data", help="generate the built-in synthetic dataset")
    g.add_argument("out_dir")
    g.add_argument("overrides", nargs="*", help="generate_dataset arguments as key=value (effects.trigger.enabled=true)")
    g.set_defaults(func=cmd_gen_data)
    return p


def cmd_convert(args) -> int:
    from tinrec.convert import module

    options = {k: v for k, v in vars(args).items()
               if k not in ("command", "dataset", "input", "output", "func", "verbose")}
    module(args.dataset).convert(args.input, args.output, **options)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_main)(argv)  # under torchrun: the failing rank's traceback goes to the error file


def _report(message: str) -> None:
    """``error: <message>`` on stderr in one write: under torchrun every rank shares the pipe, and print's two
    writes (text, then newline) let two ranks' lines run together into one."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def _main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    from tinrec.errors import CollectiveTimeout, NonFiniteError, SharedSetupError

    try:
        return args.func(args)
    except NonFiniteError as e:
        _report(str(e))
        return 3
    except CollectiveTimeout as e:
        _report(str(e))
        return 4
    except ValueError as e:
        msg = str(e).strip()
        if "Original Traceback" in msg:  # raised in a DataLoader worker: keep the original message only
            msg = msg.splitlines()[-1].removeprefix("ValueError: ")
        _report(msg)
        if isinstance(e, SharedSetupError):
            e.settle()  # every rank has said why before the first one exits
        return 2

if __name__ == "__main__":
    sys.exit(main())
