"""Semantic-temporal correlation (TIN paper, arXiv 2308.08487): ground truth vs. what a model learned.

- :func:`ground_truth_ctc` -- Eq. 1, the category-wise target-aware correlation (CTC): for target category
  c_t, behaviour category c_b and target-relative position p (most recent = 1), the mutual information (in
  **nats**) between X = [the behaviour at position p has category c_b] and the label Y, over the impressions
  with target category c_t **whose history has a behaviour at position p** (our choice: a missing behaviour
  is not counted as X = 0, so the history-length distribution does not leak into the decay over p).
  Plug-in estimate from 2x2 tables; under independence 2 n MI ~ chi^2(1), so its noise floor is about
  1 / (2 n) for n impressions in a cell (``samples``).
- :func:`learned_ctc` -- Eq. 4-5 / Table 2: a trained interest module's ``learned_correlation``
  (exp(z) * ||r||_2) averaged per (c_t, c_b, p) over the behaviours of a split.
- :func:`compare` -- Appendix A.2 / Fig. 6: Pearson coefficient between ground-truth and learned CTC over
  positions 1..P on the same-category row (c_b = c_t), for the top-K target categories by impressions,
  binned poor [-1, 0.2], medium (0.2, 0.8], strong (0.8, 1].
- :func:`plot_heatmaps`, :func:`plot_pearson_bins` -- Fig. 1/3 and Fig. 6 style PNGs (matplotlib, Agg).

Arrays are indexed ``[c_t, c_b, p - 1]`` with C = the ``category`` table's rows from meta.json (id 0 =
unknown). Legend: B batch, L padded history length, N behaviours, C categories, P positions.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from iopath.common.file_io import g_pathmgr

from tinrec.data import format as fmt
from tinrec.data.checks import list_parts
from tinrec.data.schema import read_meta, split_files
from tinrec.results import write_json

BINS = (("poor", -1.0, 0.2), ("medium", 0.2, 0.8), ("strong", 0.8, 1.0))  # (name, low excl., high incl.)


# ---- Ground truth (Eq. 1) --------------------------------------------------------------------------------


def mutual_information(n11: np.ndarray, n10: np.ndarray, n01: np.ndarray, n00: np.ndarray) -> np.ndarray:
    """Plug-in MI (nats) of 2x2 count tables n[x][y] (broadcast elementwise); 0 where a table is empty."""
    cells = np.stack([n11, n10, n01, n00]).astype(np.float64)  # xy = 11, 10, 01, 00
    total, x1, y1 = cells.sum(axis=0), cells[0] + cells[1], cells[0] + cells[2]
    px, py = np.stack([x1, x1, total - x1, total - x1]), np.stack([y1, total - y1, y1, total - y1])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = cells * np.log(cells * total / (px * py))
        mi = np.where(cells > 0, terms, 0.0).sum(axis=0) / total
    return np.where(total > 0, np.maximum(mi, 0.0), 0.0)


def _num_categories(meta: dict, path: str) -> int:
    rows = meta.get("tables", {}).get("category")
    if rows is None:
        raise ValueError(f"{path}/meta.json: no 'category' table size (tables.category), needed for the CTC")
    return int(rows)


def ground_truth_ctc(dataset_path: str, split: str = "train", positions: int = 10,
                     max_rows: Optional[int] = None) -> Dict[str, Any]:
    """Eq. 1 CTC from a dataset split, one row group at a time.

    Returns a dict: ``ctc`` float [C, C, P] (nats), ``samples`` int [C, P] (impressions of target category
    c_t with a behaviour at position p: the n of each cell), ``impressions`` int [C] and ``clicks`` int [C]
    per target category, ``positions`` [P], ``rows`` (impressions read), ``unit`` "nats".
    """
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    meta = read_meta(dataset_path)
    C, P, seen = _num_categories(meta, dataset_path), positions, 0
    joint = np.zeros(C * C * P * 2, dtype=np.int64)  # [c_t, c_b, p, y]: behaviour at p has category c_b
    marg = np.zeros(C * P * 2, dtype=np.int64)  # [c_t, p, y]: a behaviour exists at p
    impressions, clicks = np.zeros(C, dtype=np.int64), np.zeros(C, dtype=np.int64)
    for path in split_files(dataset_path, split, meta):
        with g_pathmgr.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            for g in range(pf.num_row_groups):
                if max_rows is not None and seen >= max_rows:
                    break
                table = pf.read_row_group(g, columns=[fmt.LABEL, "target_category", "hist_category"])
                if max_rows is not None and table.num_rows > max_rows - seen:
                    table = table.slice(0, max_rows - seen)
                seen += table.num_rows
                y = table.column(fmt.LABEL).to_numpy().astype(np.int64)
                tc = table.column("target_category").to_numpy().astype(np.int64)
                off, cb = list_parts(table.column("hist_category"))
                cb = cb.astype(np.int64)
                for name, v in (("target_category", tc), ("hist_category", cb)):
                    if v.size and (v.min() < 0 or v.max() >= C):
                        raise ValueError(f"{path}: row group {g}: {name} outside [0, {C}) of table 'category'")
                impressions += np.bincount(tc, minlength=C)
                clicks += np.bincount(tc, weights=y, minlength=C).astype(np.int64)
                k = np.minimum(np.diff(off), P)  # (row, p) of every behaviour with p <= P, most recent p = 1
                rows = np.repeat(np.arange(k.size), k)
                p = np.arange(rows.size) - np.repeat(np.cumsum(k) - k, k) + 1
                ct, yy, c = tc[rows], y[rows], cb[off[rows + 1] - p]
                joint += np.bincount(((ct * C + c) * P + p - 1) * 2 + yy, minlength=joint.size)
                marg += np.bincount((ct * P + p - 1) * 2 + yy, minlength=marg.size)
    joint, marg = joint.reshape(C, C, P, 2), marg.reshape(C, 1, P, 2)
    n11, n10 = joint[..., 1], joint[..., 0]  # X=1 & Y=1, X=1 & Y=0
    ctc = mutual_information(n11, n10, marg[..., 1] - n11, marg[..., 0] - n10)
    return {"ctc": ctc, "samples": marg.sum(-1)[:, 0, :], "impressions": impressions, "clicks": clicks,
            "positions": np.arange(1, P + 1), "rows": seen, "unit": "nats", "split": split}


def significant_cells(gt: Dict[str, Any], alpha: float = 0.01) -> Dict[str, Any]:
    """Cells (c_t, c_b > 0, p) whose MI is significantly above 0: the G-test 2 n MI ~ chi^2(1) under
    independence, Bonferroni-corrected over the cells with data (family-wise error ``alpha``)."""
    from statistics import NormalDist

    n = np.asarray(gt["samples"], np.float64)[1:, None, :]
    g = 2.0 * n * np.asarray(gt["ctc"])[1:, 1:]
    cells = int(np.broadcast_to(n > 0, g.shape).sum())
    threshold = NormalDist().inv_cdf(1.0 - alpha / (2.0 * max(cells, 1))) ** 2
    return {"significant": int((g > threshold).sum()), "cells": cells, "alpha": alpha, "g_threshold": threshold}


# ---- Learned correlation (Eq. 4-5, Table 2) --------------------------------------------------------------


def correlation_module(model: torch.nn.Module, interest: Optional[str] = None) -> str:
    """The interest module to measure: ``interest`` or the first one with ``learned_correlation``."""
    modules = model.interest_modules()
    if interest is not None and interest not in modules:
        raise ValueError(f"interest {interest!r}: no such module in model.interests ({', '.join(modules)})")
    names = [interest] if interest is not None else list(modules)
    for name in names:
        if callable(getattr(modules[name], "learned_correlation", None)):
            return name
    classes = ", ".join(type(modules[n]).__name__ for n in names)
    which = f"model.interests.{interest} ({classes}) has no" if interest else f"no module of model.interests " \
        f"({classes}) has a"
    raise ValueError(f"{which} learned_correlation method (TIN paper Table 2; implemented by TIN and DIN)")


def _load_trained(cfg, model, checkpoint: Optional[str], hint: str = "") -> str:
    """Load ``checkpoint`` (default ``cfg.checkpoint``, else the run's latest) into the plain ``model`` (eval
    mode); returns its path."""
    from tinrec import checkpoint as ckpt

    path = checkpoint or cfg.checkpoint or ckpt.latest(os.path.join(cfg.run_dir, "checkpoints"))
    if path is None:
        raise ValueError(f"checkpoint: not set and {cfg.run_dir}/checkpoints has no checkpoint{hint}")
    with warnings.catch_warnings():  # DCP warns that it loads in a single process: that is the intent
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled")
        ckpt.load(path, model)
    model.eval()
    return path


def _eval_stream(cfg, data, split: str):
    """The evaluation batches of ``split`` as training reads them (one process)."""
    from tinrec.data.reader import ParquetStream

    return ParquetStream(units=data.units(split), features=data.features, feature_rows=data.feature_rows,
                         batch_size=cfg.train.eval_batch_size, max_len=cfg.data.max_len,
                         time_bin_edges=data.edges, dense_sequence=data.dense, max_lens=data.max_lens,
                         searches=data.searches, skip_recent=data.skip_recent,
                         interval_seconds=cfg.data.interval_seconds)


def _split_scores(cfg, data, model, split: str):
    """The trained ``model``'s logits and labels of ``split`` for the first label (one process, no grad)."""
    scores, labels = [], []
    with torch.no_grad():
        for batch in _eval_stream(cfg, data, split):
            _, (logits, y, *_) = model(batch)
            scores.append((logits[:, 0] if logits.dim() > 1 else logits).numpy())
            labels.append((y[:, 0] if y.dim() > 1 else y).numpy())
    return np.concatenate(scores), np.concatenate(labels)


def _analysis_data(cfg):
    """train.Data for one process, without a process group (barriers are no-ops when none exists)."""
    from tinrec.distributed import DistEnv
    from tinrec.train import Data

    return Data(cfg, DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu")))


def learned_ctc(config, checkpoint: Optional[str] = None, split: str = "test", positions: int = 10,
                max_batches: Optional[int] = None, interest: Optional[str] = None) -> Dict[str, Any]:
    """Mean learned correlation per (c_t, c_b, p) over the behaviours of ``split``.

    ``config``: a Config or a YAML path; ``checkpoint``: a checkpoint folder (default ``config.checkpoint``,
    else the run's latest). Returns ``ctc`` float [C, C, P] (NaN where no behaviour), ``count`` int
    [C, C, P], ``positions``, ``interest`` (the module measured), ``checkpoint``.
    """
    from tinrec.config import Config, load_config
    from tinrec.model import build_model

    cfg = config if isinstance(config, Config) else load_config(str(config))
    data = _analysis_data(cfg)
    for f in ("hist_category", "target_category"):
        if f not in data.features:
            raise ValueError(f"learned CTC needs the feature {f!r} in the model (read by a table of "
                             f"model.embeddings); this config reads: {', '.join(data.features)}")
    C, P = _num_categories(data.meta, cfg.data.path), positions
    model = build_model(cfg, data.rows, sparse_device=torch.device("cpu"))
    name = correlation_module(model, interest)
    path = _load_trained(cfg, model, checkpoint, " (train first, pass checkpoint=PATH, or use --ground-truth-only)")
    stream = _eval_stream(cfg, data, split)
    total, count = np.zeros(C * C * P, dtype=np.float64), np.zeros(C * C * P, dtype=np.int64)
    module = model.interest_modules()[name]
    accepted = inspect.signature(module.learned_correlation).parameters
    with torch.no_grad():
        for i, batch in enumerate(stream):
            if max_batches is not None and i >= max_batches:
                break
            inputs = model.module_inputs(batch)[name]  # the forward arguments: learned_correlation takes the same
            cor_BL, mask_BL = module.learned_correlation(**{k: v for k, v in inputs.items() if k in accepted}), \
                inputs["mask_BL"]
            kjt = batch.sparse.to_dict()
            lengths_B = kjt["hist_category"].lengths().long()
            cb_N = kjt["hist_category"].values().numpy()
            ct_N = np.repeat(kjt["target_category"].values().numpy(), lengths_B.numpy())
            # jagged order = row-major True slots of the mask; p = length - column (most recent = 1)
            col_N = (torch.arange(mask_BL.shape[1])[None, :].expand_as(mask_BL))[mask_BL]
            p_N = (lengths_B.repeat_interleave(lengths_B) - col_N).numpy()
            cor_N, keep = cor_BL[mask_BL].double().numpy(), p_N <= P
            idx = (ct_N[keep] * C + cb_N[keep]) * P + p_N[keep] - 1
            total += np.bincount(idx, weights=cor_N[keep], minlength=total.size)
            count += np.bincount(idx, minlength=count.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        ctc = np.where(count > 0, total / np.maximum(count, 1), np.nan).reshape(C, C, P)
    return {"ctc": ctc, "count": count.reshape(C, C, P), "positions": np.arange(1, P + 1), "interest": name,
            "checkpoint": path, "split": split}


# ---- Comparison (Appendix A.2, Fig. 6) -------------------------------------------------------------------


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson coefficient over the entries finite in both; NaN if fewer than 3 or either is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 1e-300 else math.nan


def bin_of(r: float) -> Optional[str]:
    """poor [-1, 0.2], medium (0.2, 0.8], strong (0.8, 1]; None for NaN."""
    return None if not math.isfinite(r) else "poor" if r <= 0.2 else "medium" if r <= 0.8 else "strong"


def top_categories(gt: Dict[str, Any], top_k: int) -> List[int]:
    """The ``top_k`` target categories (id > 0) with the most impressions, most first (ties: lower id)."""
    imp = np.asarray(gt["impressions"]).copy()
    imp[0] = 0
    order = np.lexsort((np.arange(imp.size), -imp))
    return [int(c) for c in order[:top_k] if imp[c] > 0]


def decay_ratio(row: np.ndarray, span: int = 3) -> float:
    """How much a correlation row over positions 1..P falls with time: the mean of its first ``span`` positions
    over the mean of its last ``span`` (NaN-skipping; NaN without data at either end). 1 = no temporal decay
    (what a model without temporal information learns), > 1 = the most recent behaviours correlate more."""
    row = np.asarray(row, np.float64)
    if row.size < 2 * span:
        raise ValueError(f"decay ratio needs at least {2 * span} positions, got {row.size}")
    head, tail = row[:span][np.isfinite(row[:span])], row[-span:][np.isfinite(row[-span:])]
    if not head.size or not tail.size or tail.mean() <= 0:
        return math.nan
    return float(head.mean() / tail.mean())


def compare(gt: Dict[str, Any], learned: Dict[str, Any], top_k: int = 20) -> Dict[str, Any]:
    """Pearson(ground truth, learned) over positions of the same-category row, for the top-K categories.

    ``gt`` needs ``ctc`` [C, C, P] and ``impressions`` [C]; ``learned`` needs ``ctc`` [C, C, P'] (the first
    min(P, P') positions are used). Categories whose coefficient is undefined (a constant row, or fewer
    than 3 positions with data) are listed in ``undefined`` and left out of the bin fractions.
    ``decay`` / ``ground_truth_decay``: :func:`decay_ratio` of the learned / ground-truth same-category row
    per category, and their medians over the categories (``decay_median``, ``ground_truth_decay_median``).
    """
    P = min(gt["ctc"].shape[-1], learned["ctc"].shape[-1])
    cats = top_categories(gt, top_k)
    per = {c: pearson(gt["ctc"][c, c, :P], learned["ctc"][c, c, :P]) for c in cats}
    bins = {name: 0 for name, _, _ in BINS}
    for r in per.values():
        if bin_of(r) is not None:
            bins[bin_of(r)] += 1
    defined = sum(bins.values())
    decay = {c: decay_ratio(learned["ctc"][c, c, :P]) if P >= 6 else math.nan for c in cats}
    gt_decay = {c: decay_ratio(gt["ctc"][c, c, :P]) if P >= 6 else math.nan for c in cats}

    def median(d: Dict[int, float]) -> float:
        v = [x for x in d.values() if math.isfinite(x)]
        return float(np.median(v)) if v else math.nan

    return {"categories": cats, "pearson": per, "bins": bins, "decay": decay, "decay_median": median(decay),
            "ground_truth_decay": gt_decay, "ground_truth_decay_median": median(gt_decay),
            "fractions": {k: (v / defined if defined else math.nan) for k, v in bins.items()},
            "undefined": [c for c, r in per.items() if not math.isfinite(r)], "positions": P}


def heatmap(gt: Dict[str, Any], learned: Optional[Dict[str, Any]], target: int, rows: int = 5,
            positions: int = 10) -> Dict[str, Any]:
    """Fig. 1/3 matrices for ``target``: the ``rows`` behaviour categories with the largest ground-truth CTC
    summed over positions x positions 1..P (raw values: nats, and learned units)."""
    P = min(positions, gt["ctc"].shape[-1])
    total = gt["ctc"][target, :, :P].sum(-1)
    total[0] = -np.inf
    order = [int(c) for c in np.lexsort((np.arange(total.size), -total))[:rows] if np.isfinite(total[c])]
    out = {"target_category": int(target), "behaviour_categories": order, "positions": list(range(1, P + 1)),
           "ground_truth": gt["ctc"][target][order, :P]}
    return out if learned is None else dict(out, learned=learned["ctc"][target][order, :P])


# ---- Plots -----------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _normalise(m: np.ndarray, mode: str) -> np.ndarray:
    m = np.asarray(m, np.float64)  # NaN (no behaviour) stays NaN: drawn grey
    if mode == "row":
        return m / np.maximum(np.nan_to_num(np.abs(m)).max(axis=1, keepdims=True), 1e-300)
    if mode == "global":
        return m / max(float(np.nan_to_num(np.abs(m)).max(initial=0.0)), 1e-300)
    raise ValueError(f"normalise: 'global' or 'row', got {mode!r}")


def plot_heatmaps(hm: Dict[str, Any], path: str, normalise: str = "global",
                  titles: Sequence[str] = ("ground truth (MI)", "learned")) -> str:
    """Ground truth and learned side by side (one panel without learned). Each panel is scaled to [0, 1]
    on its own (``global``: by its largest value, keeping rows comparable; ``row``: each row by its own)."""
    plt = _pyplot()
    panels = [hm["ground_truth"]] + ([hm["learned"]] if "learned" in hm else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 2.8), squeeze=False)
    for ax, m, title in zip(axes[0], panels, titles):
        im = ax.imshow(_normalise(m, normalise), cmap=plt.get_cmap("Reds").with_extremes(bad="lightgrey"),
                       vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(hm["positions"])), [str(p) for p in hm["positions"]])
        ax.set_yticks(range(len(hm["behaviour_categories"])), [str(c) for c in hm["behaviour_categories"]])
        ax.set_xlabel("target-relative position (1 = most recent)")
        ax.set_ylabel("behaviour category")
        ax.set_title(f"{title}, target category {hm['target_category']}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(plt, fig, path)


def plot_pearson_bins(cmp: Dict[str, Any], path: str, label: str = "model") -> str:
    """Fig. 6: fraction of the top-K categories per Pearson bin."""
    plt = _pyplot()
    fracs = [0.0 if not math.isfinite(cmp["fractions"][n]) else cmp["fractions"][n] for n, _, _ in BINS]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    bars = ax.bar([f"{n}\n{'[' if lo == -1 else '('}{lo}, {hi}]" for n, lo, hi in BINS], fracs,
                  color=["#d9a5a5", "#d96b6b", "#a61c1c"])
    for b, f in zip(bars, fracs):
        ax.text(b.get_x() + b.get_width() / 2, f + 0.01, f"{100 * f:.0f}%", ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction of categories")
    ax.set_title(f"{label}: Pearson(GT, learned CTC), top-{len(cmp['categories'])}", fontsize=9)
    return _save(plt, fig, path)


# ---- The command -----------------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return int(x) if isinstance(x, np.integer) else x


def run_stc(cfg, *, split: str = "test", positions: int = 10, top_k: int = 20, target: Optional[int] = None,
            out: Optional[str] = None, ground_truth_only: bool = False, interest: Optional[str] = None,
            normalise: str = "global", max_batches: Optional[int] = None) -> Dict[str, Any]:
    """``tinrec analyze stc``: writes ``<out>/stc.json`` and PNGs; returns the report (JSON-ready)."""
    out = out or os.path.join(cfg.run_dir, "stc")
    if not g_pathmgr.exists(os.path.join(cfg.data.path, "meta.json")):
        _analysis_data(cfg)  # generates a missing dataset from data.generate (or says it cannot)
    gt = ground_truth_ctc(cfg.data.path, "train", positions)
    learned = None if ground_truth_only else learned_ctc(cfg, None, split, positions, max_batches, interest)
    cats = top_categories(gt, top_k)
    if not cats:
        raise ValueError(f"{cfg.data.path}: the train split has no impression with a known target category")
    target = cats[0] if target is None else int(target)
    if not 0 < target < gt["ctc"].shape[0]:
        raise ValueError(f"--target-category: {target} outside [1, {gt['ctc'].shape[0]})")
    os.makedirs(out, exist_ok=True)
    report: Dict[str, Any] = {
        "dataset": cfg.data.path, "unit": gt["unit"], "positions": gt["positions"], "train_rows": gt["rows"],
        "top_categories": cats, "impressions": {c: gt["impressions"][c] for c in cats},
        "ground_truth_same_category": {c: gt["ctc"][c, c] for c in cats},
        "ground_truth_max": float(gt["ctc"][1:, 1:].max(initial=0.0)), "significance": significant_cells(gt),
        "heatmaps": {c: heatmap(gt, learned, c, positions=positions) for c in set(cats) | {target}},
        "target_category": target, "normalise": normalise, "files": {}}
    if learned is not None:
        cmp = compare(gt, learned, top_k)
        report.update(checkpoint=learned["checkpoint"], interest=learned["interest"], split=split,
                      learned_same_category={c: learned["ctc"][c, c] for c in cats}, pearson=cmp["pearson"],
                      bins=cmp["bins"], fractions=cmp["fractions"], undefined=cmp["undefined"],
                      **{k: cmp[k] for k in ("decay", "decay_median", "ground_truth_decay",
                                             "ground_truth_decay_median")})
        report["files"]["pearson_bins"] = plot_pearson_bins(cmp, os.path.join(out, "stc_pearson_bins.png"),
                                                            label=learned["interest"])
    report["files"]["heatmap"] = plot_heatmaps(report["heatmaps"][target],
                                               os.path.join(out, f"stc_heatmap_c{target}.png"), normalise)
    report["files"]["json"] = os.path.join(out, "stc.json")
    report = _jsonable(report)
    write_json(report["files"]["json"], report)
    return report


def summary(report: Dict[str, Any]) -> str:
    """A few lines for the terminal."""
    sig = report["significance"]
    lines = [f"ground-truth CTC ({report['unit']}, train split, {report['train_rows']} rows): max "
             f"{report['ground_truth_max']:.4f}; {sig['significant']} of {sig['cells']} (c_t, c_b, p) cells "
             f"significantly > 0 (G-test, Bonferroni, alpha {sig['alpha']})"]
    for c in map(str, report["top_categories"][:5]):
        r = report.get("pearson", {}).get(c)
        lines.append(f"  target category {c:>4} ({report['impressions'][c]} impressions): same-category CTC at "
                     f"p=1,2,3: " + " ".join(f"{v:.4f}" for v in report["ground_truth_same_category"][c][:3])
                     + (f"; Pearson with learned {r:.3f}" if r is not None else ""))
    if "fractions" in report:
        lines.append(f"learned ({report['interest']}, {report['split']} split) vs ground truth over the top-"
                     f"{len(report['top_categories'])} categories: " + ", ".join(
                         f"{k} {'-' if v is None else f'{100 * v:.0f}%'}" for k, v in report["fractions"].items())
                     + (f" ({len(report['undefined'])} undefined)" if report["undefined"] else ""))
        g, m = report["ground_truth_decay_median"], report["decay_median"]
        lines.append("temporal decay of the same-category row (mean of p=1-3 / mean of the last 3 positions, median "
                     f"over the categories): ground truth {'-' if g is None else f'{g:.2f}'}, learned "
                     f"{'-' if m is None else f'{m:.2f}'} (1 = no decay)")
    return "\n".join(lines + ["wrote " + ", ".join(report["files"].values())])


# ---- Long-range recall (issue 14: do the lifelong backbones find the far-back behaviours?) ---------------------

def _marked(like_BL: torch.Tensor, idx_BK: torch.Tensor, kept_BK: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: True at the positions a search kept. A search's unfilled slots may repeat a kept position
    (TWIN's walk with fewer distinct behaviours than k): a plain scatter could then overwrite True with False."""
    return torch.zeros(like_BL.shape, dtype=torch.int32).scatter_add_(1, idx_BK, kept_BK.to(torch.int32)) > 0


def cosine_kept(seq_BLD: torch.Tensor, mask_BL: torch.Tensor, query_BD: torch.Tensor,
                count_B: torch.Tensor) -> torch.Tensor:
    """A reference search, [B, L] bool: in each row the ``count_B`` valid behaviours whose input vectors make
    the smallest angle with the target's (ETA's SimHash estimates this angle; ties: the most recent first)."""
    from tinrec.modules.masking import masked_topk

    cos_BL = torch.nn.functional.cosine_similarity(seq_BLD, query_BD.unsqueeze(1), dim=-1)
    idx_BK, ok_BK = masked_topk(cos_BL, mask_BL, seq_BLD.shape[1])
    ok_BK &= torch.arange(idx_BK.shape[1]).unsqueeze(0) < count_B.unsqueeze(1)
    return _marked(mask_BL, idx_BK, ok_BK)


def long_range_recall(config, checkpoint: Optional[str] = None, split: str = "test",
                      max_batches: Optional[int] = None, interest: Optional[str] = None) -> Dict[str, Any]:
    """How much of the planted long-range signal a search-based backbone keeps (``effects.long_range``).

    On the impressions of ``split`` whose target category is one of the user's persistent interests
    (``ground_truth.npz`` ``persistent``) with behaviours of it further back than ``min_position`` (the rows
    where the effect fires), the share of those far-back behaviours the module's search keeps
    (``kept_behaviours``: SIM's GSU, ETA's Hamming top-k, TWIN's CP-GSU, LAP's fine level). Also: the share of
    such impressions with at least one kept, and the share of the kept slots holding the target's category.
    Two references on the same rows: ``cosine_recall``, what keeping as many per row by the angle between the
    module's input vectors of behaviour and target would find (:func:`cosine_kept`; None when their widths
    differ), and for TWIN with cross features ``recall_without_cross_bias``, what its CP-GSU would keep
    ranking by the inherent part of alpha alone, and ``alpha_std``: the spread (standard deviation over valid
    behaviours and heads) of alpha's inherent part and of its cross bias.
    ``config``: a Config or YAML path; ``checkpoint`` as in :func:`learned_ctc`.
    """
    from tinrec.config import Config, load_config
    from tinrec.model import build_model

    cfg = config if isinstance(config, Config) else load_config(str(config))
    data = _analysis_data(cfg)
    lr = ((data.meta.get("generator") or {}).get("effects") or {}).get("long_range") or {}
    if not lr.get("enabled"):
        raise ValueError(f"{cfg.data.path}: not generated with effects.long_range enabled: no planted long-range "
                         f"behaviours to look for")
    persistent = np.load(os.path.join(cfg.data.path, "ground_truth.npz"))["persistent"]
    model = build_model(cfg, data.rows, sparse_device=torch.device("cpu"))
    searching = {n: m for n, m in model.interest_modules().items() if hasattr(m, "kept_behaviours")}
    if interest is not None and interest not in searching:
        raise ValueError(f"--interest: {interest!r} is not a module with a search (kept_behaviours): "
                         f"{', '.join(searching) or 'none'}")
    if not searching:
        raise ValueError("model.interests: no module with a search (kept_behaviours): SIM, ETA, TWIN or LAP")
    name = interest or next(iter(searching))
    module = searching[name]
    binding = model.dense_arch.interest_arch.bindings[name]
    seq = next(i.sequence for i in model.dense_arch.input_arch.inputs if i.key == binding["mask_BL"])
    if seq in data.searches:
        raise ValueError(f"model.interests.{name}: reads the searched sequence {seq!r}, selected on ids by the "
                         f"loader (every match among its max_len most recent): nothing to measure here")
    path = _load_trained(cfg, model, checkpoint)
    stream = _eval_stream(cfg, data, split)
    accepted = inspect.signature(module.kept_behaviours).parameters
    takes_all = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
    far_total = far_kept = rows = rows_hit = slots = slots_target = far_cos = far_nocross = 0
    with_cross = getattr(module, "cross_features", 0) and "cross_bias" in accepted
    spread: List[Any] = []
    with torch.no_grad():
        for i, batch in enumerate(stream):
            if max_batches is not None and i >= max_batches:
                break
            inputs = model.module_inputs(batch)[name]
            args = {k: v for k, v in inputs.items() if takes_all or k in accepted}
            idx_BK, kept_BK = module.kept_behaviours(**args)
            kjt = batch.sparse.to_dict()
            cats = kjt[f"{seq}_category"].to_padded_dense(padding_value=0)  # [B, L'] oldest first
            L = inputs["mask_BL"].shape[1]
            cats = torch.nn.functional.pad(cats, (0, L - cats.shape[1])) if cats.shape[1] < L else cats[:, :L]
            lengths = batch.lengths[seq]
            target = kjt["target_category"].values()
            users = batch.user_ids.long()
            persist = torch.from_numpy(persistent)[users.clamp(max=len(persistent) - 1)]  # [B, I]
            is_persistent = (persist == target.unsqueeze(1)).any(1)
            pos_BL = lengths.unsqueeze(1) - torch.arange(L).unsqueeze(0)  # 1 = most recent
            far_BL = inputs["mask_BL"] & (cats == target.unsqueeze(1)) & (pos_BL > int(lr["min_position"]))
            far_BL &= is_persistent.unsqueeze(1)
            kept_BL = _marked(far_BL, idx_BK, kept_BK)
            far_total += int(far_BL.sum())
            far_kept += int((far_BL & kept_BL).sum())
            seq_BLD, query_BD = inputs["seq_BLD"], inputs["query_BD"]
            if far_cos is not None and seq_BLD.shape[-1] == query_BD.shape[-1]:
                far_cos += int((far_BL & cosine_kept(seq_BLD, inputs["mask_BL"], query_BD, kept_BK.sum(1))).sum())
            else:
                far_cos = None
            if with_cross:
                i_BK, k_BK = module.kept_behaviours(**args, cross_bias=False)
                far_nocross += int((far_BL & _marked(far_BL, i_BK, k_BK)).sum())
                full = module.alpha(args["seq_BLD"], args.get("cross_BLX"), args["query_BD"])
                inherent = module.alpha(args["seq_BLD"], args.get("cross_BLX"), args["query_BD"], cross_bias=False)
                valid = inputs["mask_BL"].unsqueeze(1).expand_as(full)
                spread.append((inherent[valid], (full - inherent)[valid]))
            fired = far_BL.any(1)
            rows += int(fired.sum())
            rows_hit += int((fired & (far_BL & kept_BL).any(1)).sum())
            slots += int(kept_BK.sum())
            slots_target += int((torch.gather(cats, 1, idx_BK) == target.unsqueeze(1))[kept_BK].sum())
    return {"interest": name, "sequence": seq, "checkpoint": path, "split": split,
            "min_position": int(lr["min_position"]), "impressions_with_far_back_interest": rows,
            "far_back_behaviours": far_total,
            "far_back_recall": far_kept / far_total if far_total else None,
            "cosine_recall": far_cos / far_total if far_total and far_cos is not None else None,
            **({"recall_without_cross_bias": far_nocross / far_total if far_total else None,
                "alpha_std": {"inherent": float(torch.cat([a for a, _ in spread]).std()) if spread else None,
                              "cross_bias": float(torch.cat([b for _, b in spread]).std()) if spread else None}}
               if with_cross else {}),
            "impressions_with_one_kept": rows_hit / rows if rows else None,
            "kept_slots_of_target_category": slots_target / slots if slots else None}


# ---- What each planted effect is worth (how far a model could get) ---------------------------------------------

def effects_oracle(config, split: str = "test") -> Dict[str, Any]:
    """The AUC and GAUC of the label's own logit and of its parts on ``split`` of a generated dataset
    (regenerated in memory from ``meta.json``'s generator parameters; ``tinrec.data.generate.logit_parts``):
    the ceiling of any model, and what each effect adds to it (GAUC: within each user's impressions, what a
    model's test GAUC can gain from the effect).

    ``learnable`` drops the user's own bias (a user seen a few times cannot be learned); ``learnable without
    E`` drops effect E too; ``learnable without E's context`` undoes the context effect's sign flips in E;
    ``target alone`` keeps the global and the target item's bias. Raises ValueError if the dataset was not
    generated by tinrec or its labels differ from the regenerated ones.
    """
    from tinrec.config import Config, load_config
    from tinrec.data.generate import logit_parts
    from tinrec.metrics import auc, gauc

    cfg = config if isinstance(config, Config) else load_config(str(config))
    path = cfg.data.path
    meta = read_meta(path)
    if not isinstance(meta.get("generator"), dict):
        raise ValueError(f"{path}: not generated by tinrec (meta.json has no generator parameters)")
    parts = logit_parts(meta["generator"], split, show_progress=True)
    stored, users = [], []
    for f in split_files(path, split, meta):
        with g_pathmgr.open(f, "rb") as fh:
            table = pq.read_table(fh, columns=[fmt.LABEL, "user_id"])
        stored.append(table.column(fmt.LABEL).to_numpy())
        users.append(table.column("user_id").to_numpy())
    stored, users = np.concatenate(stored), np.concatenate(users)
    if not np.array_equal(stored, parts["label"]):
        raise ValueError(f"{path}: the {split} labels differ from those its meta.json's generator parameters give "
                         f"(not this generator's data, or changed since)")
    label, logit = parts.pop("label"), parts.pop("logit")
    learnable = logit - parts["user"]
    effects = [k for k in parts if k not in ("base", "user") and not k.endswith("_without_context")
               and not k.startswith("label_")]  # label_<task>_logit: another label's logit, not a term of this one
    rows = {"label logit": logit, "learnable": learnable, "target alone": parts["base"]}
    for e in effects:
        rows[f"learnable without {e}"] = learnable - parts[e]
        if f"{e}_without_context" in parts and not np.array_equal(parts[e], parts[f"{e}_without_context"]):
            rows[f"learnable without {e}'s context"] = learnable - parts[e] + parts[f"{e}_without_context"]
    return {"data": path, "split": split, "rows": int(label.size), "ctr": float(label.mean()),
            "auc": {name: auc(score, label) for name, score in rows.items()},
            "gauc": {name: gauc(score, label, users) for name, score in rows.items()}}


def abundance(matrix: torch.Tensor) -> float:
    """Information abundance of an embedding matrix (Guo et al., ICML 2024, arXiv 2310.04400, the measure of
    embedding collapse): ``||sigma||_1 / ||sigma||_inf`` of its singular values, between 1 (rank one) and its
    width (all directions equally used). From the D x D Gram matrix, so a table of many rows costs O(rows D^2)."""
    m = matrix.detach().double()
    eig = torch.linalg.eigvalsh(m.t() @ m).clamp_min(0.0)
    s = eig.sqrt()
    return float(s.sum() / s.max()) if float(s.max()) > 0 else 0.0


def information_abundance(config, checkpoint: Optional[str] = None) -> Dict[str, Any]:
    """The information abundance of every embedding table of a trained model (row 0, the unknown / padding id
    that data never uses, left out) and, for each feature embedded by several groups (multi-embedding,
    ``configs/hetero_experts.yaml``), of its tables side by side: the multi-embedding paper's claim is that
    several sets keep more directions alive than one set of the same total width.

    Returns ``{"checkpoint", "tables": {table: {"group", "width", "abundance"}}, "features": {feature:
    {"tables": [...], "width", "abundance"}}}`` (``features``: only those read by more than one group).
    """
    from tinrec.config import Config, load_config
    from tinrec.model import build_model

    cfg = config if isinstance(config, Config) else load_config(str(config))
    data = _analysis_data(cfg)
    model = build_model(cfg, data.rows, sparse_device=torch.device("cpu"))
    path = _load_trained(cfg, model, checkpoint)
    weights: Dict[str, torch.Tensor] = {}
    group_of: Dict[str, str] = {}
    sparse = model.sparse_arch
    for kind, collections in (("embeddings", sparse.ecs), ("embedding_bags", sparse.ebcs)):
        for group, coll in collections.items():
            for name, table in getattr(coll, kind).items():
                weights[name], group_of[name] = table.weight[1:], group
    tables = {n: {"group": group_of[n], "width": int(w.shape[1]), "abundance": abundance(w)} for n, w in weights.items()}
    by_feature: Dict[str, List[str]] = {}
    for group, group_tables in cfg.model.embeddings.items():
        for name, t in group_tables.items():
            for f in t.features:
                by_feature.setdefault(f, []).append(name)
    features = {}
    for f, names in by_feature.items():
        if len(names) > 1:
            side = torch.cat([weights[n] for n in names], dim=1)
            features[f] = {"tables": names, "width": int(side.shape[1]), "abundance": abundance(side)}
    return {"checkpoint": path, "tables": tables, "features": features}
