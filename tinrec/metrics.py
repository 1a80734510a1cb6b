"""Evaluation metrics: AUC, GAUC (DIN paper definition) and logloss, exact across ranks.

Each rank keeps its ``(score, label, user, weight)`` arrays; :func:`gather` collects them on every rank
(``all_gather_object``), so metrics are computed over the whole split, not averaged per rank. Samples with
weight 0 (the padding batches that keep ranks in step) are dropped before computing.

GAUC follows the DIN paper: ``sum_u n_u AUC_u / sum_u n_u`` over users with both a positive and a negative
impression, ``n_u`` the user's impressions in the split. AUC counts ties as one half. ``gauc_pairs`` is the
other definition in use, the DIN / TIN repositories' Amazon "GAUC": per user, the fraction of its (positive,
negative) pairs whose positive scores strictly higher (a tie counts 0), averaged over users unweighted; on
leave-one-out data (one pair per user) it is the share of users ranked correctly. Both are reported.

A metric that cannot be computed (AUC of a split with one class; GAUC when no user has both a positive
and a negative impression, e.g. a leave-one-out split) is reported as ``None`` with a reason under
``<metric>_unavailable``, never as a bare NaN.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist


def _tied_ranks(keys: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` (already sorted by (keys, scores)) within each key, ties averaged."""
    n = scores.size
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = keys[1:] != keys[:-1]
    new_run = new_group.copy()
    new_run[1:] |= scores[1:] != scores[:-1]
    run_id = np.cumsum(new_run) - 1
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    pos = np.arange(n) - group_start + 1  # 1-based position within group
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n) - 1  # runs never cross a group boundary
    return ((pos[starts] + pos[ends]) / 2.0)[run_id]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN if only one class is present."""
    if scores.size == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = _tied_ranks(np.zeros(scores.size, dtype=np.int64), scores[order])
    y = labels[order] > 0.5
    p = int(y.sum())
    n = y.size - p
    if p == 0 or n == 0:
        return float("nan")
    return float((ranks[y].sum() - p * (p + 1) / 2.0) / (p * n))


def gauc(scores: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users with both labels (DIN paper)."""
    if scores.size == 0:
        return float("nan")
    order = np.lexsort((scores, users))
    s, y, u = scores[order], labels[order] > 0.5, users[order]
    ranks = _tied_ranks(u, s)
    _, uid = np.unique(u, return_inverse=True)
    n_u = np.bincount(uid).astype(np.float64)
    p_u = np.bincount(uid, weights=y.astype(np.float64))
    r_u = np.bincount(uid, weights=ranks * y)
    neg_u = n_u - p_u
    ok = (p_u > 0) & (neg_u > 0)
    if not ok.any():
        return float("nan")
    auc_u = (r_u[ok] - p_u[ok] * (p_u[ok] + 1) / 2.0) / (p_u[ok] * neg_u[ok])
    return float((n_u[ok] * auc_u).sum() / n_u[ok].sum())


def gauc_pairs(scores: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """Unweighted mean over users with both labels of the share of their (positive, negative) pairs ordered
    strictly correctly (ties count 0): the DIN / TIN repositories' per-user pair accuracy."""
    if scores.size == 0:
        return float("nan")
    order = np.lexsort((scores, users))
    s, y, u = scores[order], labels[order] > 0.5, users[order]
    n = s.size
    new_user = np.ones(n, bool)
    new_user[1:] = u[1:] != u[:-1]
    new_run = new_user.copy()
    new_run[1:] |= s[1:] != s[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    neg_cum = np.concatenate([[0], np.cumsum(~y)])  # negatives before index i (over all users)
    below = neg_cum[run_start] - neg_cum[user_start]  # the user's negatives scoring strictly lower
    _, uid = np.unique(u, return_inverse=True)
    p_u = np.bincount(uid, weights=y.astype(np.float64))
    neg_u = np.bincount(uid) - p_u
    good_u = np.bincount(uid, weights=np.where(y, below, 0).astype(np.float64))
    ok = (p_u > 0) & (neg_u > 0)
    if not ok.any():
        return float("nan")
    return float((good_u[ok] / (p_u[ok] * neg_u[ok])).mean())


def logloss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(probs, eps, 1 - eps)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


class EvalAccumulator:
    """Collects one split's outputs on this rank: ``[B, T]`` logits and labels, one column per label."""

    def __init__(self, labels: List[str] = ("label",)) -> None:
        self.labels = list(labels)
        self.parts: List[Dict[str, np.ndarray]] = []

    def add(self, logits: torch.Tensor, labels: torch.Tensor, users: torch.Tensor, weights: torch.Tensor) -> None:
        keep = (weights > 0).cpu().numpy()
        T = len(self.labels)
        self.parts.append({
            "prob": torch.sigmoid(logits.float()).detach().cpu().numpy().reshape(-1, T)[keep].astype(np.float64),
            "label": labels.detach().cpu().numpy().reshape(-1, T)[keep].astype(np.float64),
            "user": users.detach().cpu().numpy()[keep],
        })

    def local(self) -> Dict[str, np.ndarray]:
        if not self.parts:
            T = len(self.labels)
            return {"prob": np.zeros((0, T)), "label": np.zeros((0, T)), "user": np.zeros(0, dtype=np.int64)}
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}

    def gather(self) -> Dict[str, np.ndarray]:
        mine = self.local()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return mine
        everyone: List[Dict[str, np.ndarray]] = [None] * dist.get_world_size()  # type: ignore[list-item]
        dist.all_gather_object(everyone, mine)
        return {k: np.concatenate([e[k] for e in everyone]) for k in mine}

    def compute(self) -> Dict[str, Any]:
        """The first label's metrics; with several labels also ``labels``: every label's, by column name."""
        d = self.gather()
        per_label = {name: _metrics(d["prob"][:, t], d["label"][:, t], d["user"]) for t, name in enumerate(self.labels)}
        out = dict(per_label[self.labels[0]])
        if len(self.labels) > 1:
            out["labels"] = per_label
        return out


def _metrics(prob: np.ndarray, label: np.ndarray, user: np.ndarray) -> Dict[str, Any]:
    out: Dict[str, Any] = {"auc": auc(prob, label), "gauc": gauc(prob, label, user),
                           "gauc_pairs": gauc_pairs(prob, label, user),
                           "logloss": logloss(prob, label) if label.size else None, "samples": int(label.size),
                           "ctr": float(label.mean()) if label.size else None}
    for key, why in unavailable(prob, label, user).items():
        out[key], out[f"{key}_unavailable"] = None, why
    return out


def unavailable(probs: np.ndarray, labels: np.ndarray, users: np.ndarray) -> Dict[str, str]:
    """Metric -> why it cannot be computed on these samples (empty when every metric can)."""
    out = {}
    if labels.size == 0:
        return {"auc": "no samples", "gauc": "no samples", "gauc_pairs": "no samples", "logloss": "no samples"}
    if not np.isfinite(probs).all():
        why = f"{int((~np.isfinite(probs)).sum())} prediction(s) are not finite (NaN weights?)"
        return {"auc": why, "gauc": why, "gauc_pairs": why, "logloss": why}
    y = labels > 0.5
    if y.all() or (~y).all():
        out["auc"] = f"every sample has label {int(y[0])}"
    _, uid = np.unique(users, return_inverse=True)
    pos = np.bincount(uid, weights=y.astype(np.float64))
    if not ((pos > 0) & (pos < np.bincount(uid))).any():
        out["gauc"] = out["gauc_pairs"] = "no user has both a positive and a negative impression"
    return out
