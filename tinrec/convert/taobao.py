"""Taobao UserBehavior (Alibaba, https://tianchi.aliyun.com/dataset/649; CAIN's public dataset) as published:
``UserBehavior.csv``, no header, one behaviour per line ``user_id,item_id,category_id,behavior_type,timestamp``
(``pv``, ``buy``, ``cart``, ``fav``; Unix seconds), about 100 million lines over 9 days (2017-11-25 to 12-03,
China time). CAIN's setting (its Sec. 5.1: the first 8 days for training, the 9th for test, positives and
sampled negatives, mean history about 100), with our choices where the paper is silent:

- a behaviour outside the 9 days (``--start``, default 2017-11-25 00:00 UTC+8, and ``--days``) is dropped
  (counted); ids are the published integers (tables sized by the largest id + 1);
- samples: per user and day, the day's last behaviour is a positive target (label 1) when the user has an
  earlier behaviour, with one negative (label 0): an item drawn uniformly from the dataset's items that is
  neither the target nor in the history (a hash of seed, user, day and attempt: the same whatever the
  partitions), with that item's category; both have the user's earlier behaviours as history (the latest ``max_history``,
  1000; every behaviour type), oldest first, with ``hist_behavior`` (1 pv, 2 buy, 3 cart, 4 fav; table
  ``behavior``);
- a short-term sequence beside the history (``short_item``, ``short_category``, ``short_timestamp``): its latest
  ``--short-len`` (50) behaviours, for the lifelong models that read both (CAIN's setting);
- split by the target's day: days 1-7 -> train, day 8 -> valid, day 9 -> test (CAIN trains on days 1-8; ours
  holds day 8 out for validation);
- bounded memory: a first pass streams the file into ``--partitions`` Parquet files by user (under the output's
  ``.tinrec/tmp``, removed at the end), a second converts one partition at a time.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import time
from array import array
from typing import Any, Dict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tinrec.convert import common
from tinrec.data import format as fmt

BEHAVIORS = {"pv": 1, "buy": 2, "cart": 3, "fav": 4}
START = 1511539200  # 2017-11-25 00:00 China time (UTC+8)
DAY = 86400
FLUSH_ROWS = 1 << 20


def add_arguments(p) -> None:
    p.add_argument("--max-history", type=int, default=1000, help="the latest behaviours kept as history (1000)")
    p.add_argument("--seed", type=int, default=0, help="the negatives' seed (0)")
    p.add_argument("--start", type=int, default=START, help="the first day's start, Unix seconds (2017-11-25 UTC+8)")
    p.add_argument("--days", type=int, default=9, help="days kept (9): the last is test, the one before valid")
    p.add_argument("--partitions", type=int, default=64, help="temporary partitions by user (64: memory / 64)")
    p.add_argument("--short-len", type=int, default=50, help="the short-term sequence short_*: the latest 50 (0: none)")


_PART_SCHEMA = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("category", pa.int64()),
                          ("behavior", pa.int8()), ("ts", pa.int64()), ("order", pa.int64())])


def convert(input_dir: str, output_dir: str, *, max_history: int = 1000, seed: int = 0, start: int = START,
            days: int = 9, partitions: int = 64, short_len: int = 50, show_progress: bool = True) -> Dict[str, Any]:
    if max_history < 1 or days < 3 or partitions < 1:
        raise ValueError(f"--max-history >= 1, --days >= 3 and --partitions >= 1, got {max_history}, {days}, "
                         f"{partitions}")
    t0 = time.monotonic()
    (path,) = common.require_files("Taobao UserBehavior", input_dir, [["UserBehavior.csv"]])
    report = common.Report()
    common.claim(output_dir)
    tmp = posixpath.join(output_dir, ".tinrec", "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    end = start + days * DAY

    # Pass 1: stream into partitions by user; the items' categories on the way.
    writers = [pq.ParquetWriter(os.path.join(tmp, f"p{k:04d}.parquet"), _PART_SCHEMA) for k in range(partitions)]
    bufs = [tuple(array("q") for _ in range(6)) for _ in range(partitions)]
    item_cat = np.zeros(1, np.int64)
    max_user = max_cat = max_item = 0
    n_lines = 0

    def flush(k: int) -> None:
        b = bufs[k]
        if len(b[0]):
            cols = [np.frombuffer(a, np.int64) for a in b]
            writers[k].write_table(pa.Table.from_arrays(
                [pa.array(c.astype(np.int8) if i == 3 else c) for i, c in enumerate(cols)], schema=_PART_SCHEMA))
            bufs[k] = tuple(array("q") for _ in range(6))

    for n, text in common.lines(path, show_progress=show_progress):
        if not text:
            continue
        n_lines += 1
        parts = text.split(",")
        if len(parts) != 5:
            raise common.InputError(path, n, "line", f"expected 5 comma-separated fields, got {len(parts)}: {text[:80]!r}")
        user = common.integer(path, n, "user_id", parts[0])
        item = common.integer(path, n, "item_id", parts[1])
        cat = common.integer(path, n, "category_id", parts[2])
        kind = BEHAVIORS.get(parts[3])
        if kind is None:
            raise common.InputError(path, n, "behavior_type", f"expected pv, buy, cart or fav, got {parts[3]!r}")
        ts = common.integer(path, n, "timestamp", parts[4])
        if min(user, item, cat) < 1:
            raise common.InputError(path, n, "user_id, item_id, category_id", "ids must be positive integers")
        if not start <= ts < end:
            report.drop(f"behaviour outside the {days} days")
            continue
        if item >= item_cat.size:
            item_cat = np.concatenate([item_cat, np.zeros(max(item + 1 - item_cat.size, item_cat.size), np.int64)])
        item_cat[item] = cat  # an item's category: the last one seen (the published data has one per item)
        max_user, max_cat, max_item = max(max_user, user), max(max_cat, cat), max(max_item, item)
        k = user % partitions
        for a, v in zip(bufs[k], (user, item, cat, kind, ts, n)):
            a.append(v)
        if len(bufs[k][0]) >= FLUSH_ROWS // partitions + 1024:
            flush(k)
    for k in range(partitions):
        flush(k)
        writers[k].close()
    item_cat = item_cat[:max_item + 1]
    items = np.flatnonzero(item_cat)  # every item seen

    # Pass 2: one partition at a time.
    schema = pa.schema(list(fmt.arrow_schema(with_feedback=False, with_watch_time=False, with_trigger=False))
                       + [pa.field("hist_behavior", pa.list_(pa.int64()))]
                       + [pa.field(f"short_{f}", pa.list_(pa.int64())) for f in ("item", "category", "timestamp")
                          if short_len])
    writer = common.SampleWriter(output_dir, schema)
    users = 0
    with common.writing(writer, tmp):
        for k in range(partitions):
            t = pq.read_table(os.path.join(tmp, f"p{k:04d}.parquet"))
            if t.num_rows == 0:
                continue
            c = {name: t.column(name).to_numpy() for name in _PART_SCHEMA.names}
            order = np.lexsort((c["order"], c["ts"], c["user"]))
            c = {name: v[order] for name, v in c.items()}
            ustart, ucount = common.user_runs(c["user"])
            users += ustart.size
            day = (c["ts"] - start) // DAY
            # targets: the last behaviour of each (user, day) that has an earlier behaviour of the user
            last_of_day = np.ones(day.size, bool)
            last_of_day[:-1] = (c["user"][1:] != c["user"][:-1]) | (day[1:] != day[:-1])
            first = np.zeros(day.size, bool)
            first[ustart] = True
            target = np.flatnonzero(last_of_day & ~first)
            own_start = np.repeat(ustart, ucount)[target]
            off, idx = common.latest(target, own_start, max_history)
            negatives = common.negatives(c["user"], c["item"], day, target, items, seed)
            split = np.where(day[target] == days - 1, 2, np.where(day[target] == days - 2, 1, 0))
            for s_i, s in enumerate(fmt.SPLITS):
                m = split == s_i
                r, neg = target[m], negatives[m]
                two_off, h = common.paired(off, idx, m)
                tgt = np.stack([c["item"][r], neg], 1).reshape(-1)
                zeros = np.zeros(2 * r.size, np.int64)
                writer.add(s, {
                    fmt.LABEL: np.tile(np.array([1, 0], np.int8), r.size), "user_id": np.repeat(c["user"][r], 2),
                    "user_age": zeros, "user_gender": zeros, "target_item": tgt, "target_category": item_cat[tgt],
                    "target_brand": zeros, "target_author": zeros, fmt.TARGET_TIMESTAMP: np.repeat(c["ts"][r], 2),
                    "hist_item": (two_off, c["item"][h]), "hist_category": (two_off, c["category"][h]),
                    "hist_brand": (two_off, np.zeros(h.size, np.int64)),
                    "hist_author": (two_off, np.zeros(h.size, np.int64)),
                    fmt.HIST_TIMESTAMP: (two_off, c["ts"][h]),
                    "hist_behavior": (two_off, c["behavior"][h].astype(np.int64)),
                    **_short(two_off, h, c, short_len)})
    splits = writer.splits
    report.counts.update(input_lines=n_lines, users=users, items=int(items.size),
                         categories=int(np.unique(item_cat[items]).size), samples=sum(writer.rows.values()),
                         positives=sum(writer.positives.values()))
    tables = {"user": max_user + 1, "item": int(item_cat.size), "category": max_cat + 1, "brand": 1, "author": 1,
              "age": 1, "gender": 1, "behavior": len(BEHAVIORS) + 1}
    meta = common.write_meta(output_dir, converter="taobao", tables=tables, writer=writer, splits=splits,
                             options={"max_history": max_history, "seed": seed, "start": start, "days": days,
                                      "short_len": short_len},
                             max_seq_len=max_history, report=report)
    if show_progress:
        common.print_report("taobao", report, splits, time.monotonic() - t0)
    return meta


def _short(offsets: np.ndarray, h: np.ndarray, c: Dict[str, np.ndarray], k: int) -> Dict[str, Any]:
    """The short-term sequence: the latest ``k`` behaviours of each history (CAIN's models read both)."""
    if not k:
        return {}
    off, idx = common.tail(offsets, h, k)
    return {"short_item": (off, c["item"][idx]), "short_category": (off, c["category"][idx]),
            "short_timestamp": (off, c["ts"][idx])}
