"""Amazon product reviews (McAuley et al.; the 2014 per-category files, https://jmcauley.ucsd.edu/data/amazon/)
as DIN and TIN prepare them (DIN's scripts on Electronics and Books), to the documented format:

- files: the 5-core reviews ``reviews_<Category>_5.json`` (or ``.json.gz`` as published; one JSON object per line: ``reviewerID``, ``asin``,
  ``unixReviewTime``, ...) and the metadata ``meta_<Category>.json`` (one object per line, as published: a
  Python literal with single quotes, or JSON; ``asin``, ``categories`` (a list of category paths), ``brand``);
  ``--category`` picks the pair when the folder holds several (default: the only one);
- a behaviour is a review; per user, reviews in time order (ties in file order); the item's category is the
  last leaf of its last category path, its brand the ``brand`` field (0 when absent);
- samples: for each review after a user's first, a positive (the reviewed item, label 1) and one negative
  (label 0): an item drawn uniformly from the items of the reviews that are not in the user's reviewed items,
  with its own generator per user (``default_rng([seed, user])``), both with the user's earlier reviews as
  history (the latest ``max_history``, 100);
- split, leave one out: the pair of a user's last review -> test, of the one before -> valid, the rest ->
  train; users with fewer than 3 reviews, and reviews of items without metadata, are dropped (counted);
- ids: users, items, categories and brands numbered 1.. in ascending raw id (``reviewerID``, ``asin``, name);
  ``target_timestamp`` the review's ``unixReviewTime``; no profile (``user_age`` / ``user_gender`` 0).
"""

from __future__ import annotations

import ast
import glob
import json
import os
import time
from array import array
from typing import Any, Dict, Optional

import numpy as np

from tinrec.convert import common
from tinrec.data import format as fmt


def add_arguments(p) -> None:
    p.add_argument("--category", default=None, help="the file pair's category, e.g. Electronics (default: the only one)")
    p.add_argument("--max-history", type=int, default=100, help="the latest reviews kept as history (100)")
    p.add_argument("--seed", type=int, default=0, help="the negatives' seed (0)")


def _files(input_dir: str, category: Optional[str]):
    found = sorted({os.path.basename(p)[len("reviews_"):].split("_5.json")[0]
                    for p in glob.glob(os.path.join(input_dir, "reviews_*_5.json*"))})
    if category is None:
        if len(found) != 1:
            raise ValueError(f"--input {input_dir}: expected one reviews_<Category>_5.json, found "
                             f"{', '.join(found) or 'none'}" + ("; choose one with --category" if found else ""))
        category = found[0]
    out = []
    for name in (f"reviews_{category}_5.json", f"meta_{category}.json"):
        here = [p for p in (os.path.join(input_dir, name), os.path.join(input_dir, name + ".gz")) if os.path.exists(p)]
        if not here:
            raise ValueError(f"--input {input_dir}: not an Amazon folder for {category}: {name} (or {name}.gz) is "
                             f"missing")
        out.append(here[0])
    return category, out[0], out[1]


def _record(path: str, n: int, text: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError:
        try:
            obj = ast.literal_eval(text)  # the 2014 metadata: Python literals (single quotes)
        except (ValueError, SyntaxError):
            raise common.InputError(path, n, "record", f"neither JSON nor a Python literal: {text[:80]!r}") from None
    if not isinstance(obj, dict):
        raise common.InputError(path, n, "record", f"expected an object, got {type(obj).__name__}")
    return obj


def _field(path: str, n: int, obj: dict, key: str, kind):
    if key not in obj:
        raise common.InputError(path, n, key, "missing")
    v = obj[key]
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise common.InputError(path, n, key, f"expected an integer, got {v!r}")
    elif not isinstance(v, str) or not v:
        raise common.InputError(path, n, key, f"expected a non-empty string, got {v!r}")
    return v


def _dense(raw_ids) -> Dict[str, int]:
    return {r: i for i, r in enumerate(sorted(raw_ids), 1)}


def convert(input_dir: str, output_dir: str, *, category: Optional[str] = None, max_history: int = 100,
            seed: int = 0, show_progress: bool = True) -> Dict[str, Any]:
    if max_history < 1:
        raise ValueError(f"--max-history: expected >= 1, got {max_history}")
    t0 = time.monotonic()
    category, reviews_path, meta_path = _files(input_dir, category)
    report = common.Report()

    # Metadata: each asin's category (last leaf of the last path) and brand.
    item_meta: Dict[str, tuple] = {}
    for n, text in common.lines(meta_path, show_progress=show_progress):
        if not text.strip():
            continue
        obj = _record(meta_path, n, text)
        asin = _field(meta_path, n, obj, "asin", str)
        paths = obj.get("categories") or []
        if not isinstance(paths, list) or not all(isinstance(p, list) for p in paths):
            raise common.InputError(meta_path, n, "categories", f"expected a list of category paths, got {paths!r}")
        leaf = paths[-1][-1] if paths and paths[-1] else ""
        brand = obj.get("brand") if isinstance(obj.get("brand"), str) else ""
        item_meta[asin] = (leaf, brand)

    # Reviews, streamed into compact arrays (raw ids interned once).
    users_raw: Dict[str, int] = {}
    items_raw: Dict[str, int] = {}
    u_tmp, i_tmp, ts = array("q"), array("q"), array("q")
    for n, text in common.lines(reviews_path, show_progress=show_progress):
        if not text.strip():
            continue
        obj = _record(reviews_path, n, text)
        user = _field(reviews_path, n, obj, "reviewerID", str)
        asin = _field(reviews_path, n, obj, "asin", str)
        t = _field(reviews_path, n, obj, "unixReviewTime", int)
        if asin not in item_meta or not item_meta[asin][0]:
            report.drop("review of an item without metadata or category")
            continue
        u_tmp.append(users_raw.setdefault(user, len(users_raw)))
        i_tmp.append(items_raw.setdefault(asin, len(items_raw)))
        ts.append(t)
    user_ids, item_ids = _dense(users_raw), _dense(items_raw)
    cat_ids = _dense({item_meta[a][0] for a in items_raw})
    brand_ids = _dense({item_meta[a][1] for a in items_raw} - {""})
    u_map = np.array([user_ids[r] for r in users_raw], np.int64)  # first-seen index -> dense id
    i_map = np.array([item_ids[r] for r in items_raw], np.int64)
    item_cat = np.zeros(len(item_ids) + 1, np.int64)
    item_brand = np.zeros(len(item_ids) + 1, np.int64)
    for raw, i in item_ids.items():
        leaf, brand = item_meta[raw]
        item_cat[i], item_brand[i] = cat_ids[leaf], brand_ids.get(brand, 0)
    user = u_map[np.frombuffer(u_tmp, np.int64)] if len(u_tmp) else np.zeros(0, np.int64)
    item = i_map[np.frombuffer(i_tmp, np.int64)] if len(i_tmp) else np.zeros(0, np.int64)
    ts_a = np.frombuffer(ts, np.int64) if len(ts) else np.zeros(0, np.int64)
    order = common.by_user_time(user, ts_a)
    user, item, ts_a = user[order], item[order], ts_a[order]
    start, count = common.user_runs(user)
    few = count < 3
    report.drop("review of a user with fewer than 3 reviews", int(count[few].sum()))
    N = len(item_ids)

    schema = fmt.arrow_schema(with_feedback=False, with_watch_time=False, with_trigger=False)
    writer = common.SampleWriter(output_dir, schema)
    common.claim(output_dir)
    with common.writing(writer):
        keep_start, keep_n = start[~few], count[~few]
        for a, b in common.chunks_of_users(keep_start, keep_n, 50_000):
            # targets: every review but each user's first; two samples each (positive, then negative)
            rows = np.concatenate([np.arange(s + 1, s + k) for s, k in zip(keep_start[a:b], keep_n[a:b])])
            per_user = keep_n[a:b] - 1
            negatives = np.concatenate([_negatives(item[s:s + k], k - 1, N, seed, int(user[s]))
                                        for s, k in zip(keep_start[a:b], keep_n[a:b])])
            split = common.leave_last_out(np.concatenate([[0], np.cumsum(per_user)[:-1]]), per_user)
            off, idx = common.latest(rows, np.repeat(keep_start[a:b], per_user), max_history)
            for s_i, s in enumerate(fmt.SPLITS):
                m = split == s_i
                r, neg = rows[m], negatives[m]
                two_off, h2 = common.paired(off, idx, m)
                target = np.stack([item[r], neg], 1).reshape(-1)
                hist_item = item[h2]
                writer.add(s, {
                    fmt.LABEL: np.tile(np.array([1, 0], np.int8), r.size), "user_id": np.repeat(user[r], 2),
                    "user_age": np.zeros(2 * r.size, np.int64), "user_gender": np.zeros(2 * r.size, np.int64),
                    "target_item": target, "target_category": item_cat[target], "target_brand": item_brand[target],
                    "target_author": np.zeros(2 * r.size, np.int64), fmt.TARGET_TIMESTAMP: np.repeat(ts_a[r], 2),
                    "hist_item": (two_off, hist_item), "hist_category": (two_off, item_cat[hist_item]),
                    "hist_brand": (two_off, item_brand[hist_item]),
                    "hist_author": (two_off, np.zeros(h2.size, np.int64)), fmt.HIST_TIMESTAMP: (two_off, ts_a[h2])})
    splits = writer.splits
    report.counts.update(users=int((~few).sum()), items=N, categories=len(cat_ids), brands=len(brand_ids),
                         samples=sum(writer.rows.values()), positives=sum(writer.positives.values()),
                         input_reviews=int(len(ts)) + report.dropped["review of an item without metadata or category"])
    tables = {"user": len(user_ids) + 1, "item": N + 1, "category": len(cat_ids) + 1, "brand": len(brand_ids) + 1,
              "author": 1, "age": 1, "gender": 1}
    meta = common.write_meta(output_dir, converter="amazon", tables=tables, writer=writer, splits=splits,
                             options={"category": category, "max_history": max_history, "seed": seed},
                             max_seq_len=max_history, report=report)
    if show_progress:
        common.print_report("amazon", report, splits, time.monotonic() - t0)
    return meta


def _negatives(history: np.ndarray, count: int, num_items: int, seed: int, user: int) -> np.ndarray:
    """``count`` items drawn uniformly from 1..num_items outside ``history`` (redrawn until outside), from the
    user's own generator."""
    rng = np.random.default_rng([seed, user])
    seen = set(history.tolist())
    if len(seen) >= num_items:
        raise ValueError(f"user {user}: has reviewed every item; no negative can be drawn")
    out = np.empty(count, np.int64)
    for j in range(count):
        x = int(rng.integers(1, num_items + 1))
        while x in seen:
            x = int(rng.integers(1, num_items + 1))
        out[j] = x
    return out
