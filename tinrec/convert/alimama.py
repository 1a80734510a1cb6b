"""Alibaba's display-advertising data ("Ad Display/Click Data on Taobao.com", https://tianchi.aliyun.com/dataset/56;
TIN's, DEI2N's and DUMN's Alibaba dataset) as published: four CSV files with headers,

- ``raw_sample.csv``: ``user,time_stamp,adgroup_id,pid,nonclk,clk`` (the impressions, 8 days from 2017-05-06);
- ``ad_feature.csv``: ``adgroup_id,cate_id,campaign_id,customer,brand,price`` (``brand`` may be ``NULL``);
- ``user_profile.csv``: ``userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,
  occupation,new_user_class_level `` (the last name ends with a space, as published);
- ``behavior_log.csv``: ``user,time_stamp,btag,cate,brand`` (``pv``, ``cart``, ``fav``, ``buy``; no item id).

Every protocol: a sample per impression (label ``clk``), the target the ad group with its category and brand;
the history the user's behaviours strictly before the impression, the latest ``max_history`` (default 100),
oldest first: ``hist_category`` / ``hist_brand`` the behaviour's, ``hist_item`` 0 (the log has no item; an
unclicked impression in DUMN's history has its ad group), ``hist_behavior`` (1 pv, 2 buy, 3 cart, 4 fav, 5 an
impression not clicked; table ``behavior``); profile ``user_gender`` (``final_gender_code``) and ``user_age``
(``age_level`` + 1). Split by date (TIN's; China time days from ``--start``, 2017-05-06): days 1-6 train,
day 7 valid, day 8 test (TIN trains on days 1-7; ours holds day 7 out). Ids are the published integers
(tables sized by the largest + 1). ``--protocol``:

- ``tin``: as above;
- ``dei2n``: the trigger is the user's latest clicked impression within ``--trigger-hours`` (4) before the sample
  (its ad group and category); a sample without one is dropped (counted); ``page`` is 1 (the data has no pages);
- ``dumn``: the history is the four feedback kinds in time order, told by ``hist_feedback``: a ``pv`` is a click
  (0), ``buy`` / ``cart`` / ``fav`` a like (1), an earlier impression not clicked an unclick (3); the data has no
  dislike (DUMN's configs search them out of ``hist`` by ``hist_feedback``).

Bounded memory: the impressions and the behaviour log are streamed into ``--partitions`` Parquet files by user
(under the output's ``.tinrec/tmp``, removed at the end), then converted one partition at a time; the ad and
user tables are kept as arrays indexed by id.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import time
from typing import Any, Dict

import numpy as np
import pyarrow as pa

from tinrec.convert import common
from tinrec.data import format as fmt

FILES = ["raw_sample.csv", "ad_feature.csv", "user_profile.csv", "behavior_log.csv"]
HEADERS = {
    "raw_sample.csv": "user,time_stamp,adgroup_id,pid,nonclk,clk",
    "ad_feature.csv": "adgroup_id,cate_id,campaign_id,customer,brand,price",
    "user_profile.csv": "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,"
                        "occupation,new_user_class_level",
    "behavior_log.csv": "user,time_stamp,btag,cate,brand",
}
BTAGS = {"pv": 1, "buy": 2, "cart": 3, "fav": 4}
UNCLICK = 5
START = 1494000000  # 2017-05-06 00:00 China time (UTC+8)
DAY = 86400
PROTOCOLS = ("tin", "dei2n", "dumn")
_SAMPLES = pa.schema([("user", pa.int64()), ("ts", pa.int64()), ("ad", pa.int64()), ("clk", pa.int64()),
                      ("order", pa.int64())])
_LOG = pa.schema([("user", pa.int64()), ("ts", pa.int64()), ("kind", pa.int64()), ("cate", pa.int64()),
                  ("brand", pa.int64()), ("order", pa.int64())])


def add_arguments(p) -> None:
    p.add_argument("--protocol", choices=PROTOCOLS, default="tin", help="tin (default), dei2n or dumn")
    p.add_argument("--max-history", type=int, default=100, help="the latest behaviours kept as history (100)")
    p.add_argument("--trigger-hours", type=float, default=4.0, help="dei2n: the trigger's window (4 hours)")
    p.add_argument("--start", type=int, default=START, help="the first day's start, Unix seconds (2017-05-06 UTC+8)")
    p.add_argument("--partitions", type=int, default=64, help="temporary partitions by user (64)")


def _rows(path: str, show_progress: bool):
    """(line number, fields) of a published CSV after its header (checked)."""
    it = common.lines(path, show_progress=show_progress)
    want = HEADERS[os.path.basename(path)]
    first = next(it, None)
    if first is None or first[1].strip() != want:
        raise common.InputError(path, 1, "header", f"expected {want!r}, got {first[1] if first else ''!r}")
    width = want.count(",") + 1
    for n, text in it:
        if not text.strip():
            continue
        parts = text.split(",")
        if len(parts) != width:
            raise common.InputError(path, n, "line", f"expected {width} comma-separated fields, got {len(parts)}")
        yield n, parts


def _grow(a: np.ndarray, i: int) -> np.ndarray:
    return a if i < a.size else np.concatenate([a, np.zeros(max(i + 1 - a.size, a.size), a.dtype)])


def convert(input_dir: str, output_dir: str, *, protocol: str = "tin", max_history: int = 100,
            trigger_hours: float = 4.0, start: int = START, partitions: int = 64,
            show_progress: bool = True) -> Dict[str, Any]:
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if max_history < 1 or partitions < 1 or not trigger_hours > 0:
        raise ValueError("--max-history and --partitions must be >= 1, --trigger-hours > 0")
    t0 = time.monotonic()
    sample_path, ad_path, user_path, log_path = common.require_files("Alibaba display-advertising", input_dir, [FILES])
    report = common.Report()

    ad_cate, ad_brand = np.zeros(1, np.int64), np.zeros(1, np.int64)
    for n, f in _rows(ad_path, show_progress):
        ad = common.integer(ad_path, n, "adgroup_id", f[0])
        ad_cate, ad_brand = _grow(ad_cate, ad), _grow(ad_brand, ad)
        ad_cate[ad] = common.integer(ad_path, n, "cate_id", f[1])
        ad_brand[ad] = 0 if f[4] == "NULL" else common.integer(ad_path, n, "brand", f[4])
    gender, age = np.zeros(1, np.int64), np.zeros(1, np.int64)
    for n, f in _rows(user_path, show_progress):
        u = common.integer(user_path, n, "userid", f[0])
        gender, age = _grow(gender, u), _grow(age, u)
        gender[u] = common.integer(user_path, n, "final_gender_code", f[3])
        age[u] = common.integer(user_path, n, "age_level", f[4]) + 1
        if gender[u] not in (1, 2) or not 1 <= age[u] <= 7:
            raise common.InputError(user_path, n, "final_gender_code, age_level",
                                    f"expected 1-2 and 0-6, got {f[3]!r}, {f[4]!r}")

    common.claim(output_dir)
    tmp = posixpath.join(output_dir, ".tinrec", "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    end = start + 8 * DAY
    samples = common.Partitions(tmp, "sample", _SAMPLES, partitions)
    n_samples = 0
    for n, f in _rows(sample_path, show_progress):
        u, ts, ad = (common.integer(sample_path, n, k, v) for k, v in (("user", f[0]), ("time_stamp", f[1]),
                                                                        ("adgroup_id", f[2])))
        nonclk, clk = common.integer(sample_path, n, "nonclk", f[4]), common.integer(sample_path, n, "clk", f[5])
        if (nonclk, clk) not in ((0, 1), (1, 0)):
            raise common.InputError(sample_path, n, "nonclk, clk", f"expected 1,0 or 0,1, got {f[4]},{f[5]}")
        n_samples += 1
        if not start <= ts < end:
            report.drop("impression outside the 8 days")
            continue
        if ad >= ad_cate.size or ad_cate[ad] == 0:
            report.drop("impression of an ad group not in ad_feature.csv")
            continue
        samples.add((u, ts, ad, clk, n))
    samples.close()
    log = common.Partitions(tmp, "log", _LOG, partitions)
    n_log = max_cate = max_brand = 0
    for n, f in _rows(log_path, show_progress):
        u, ts = common.integer(log_path, n, "user", f[0]), common.integer(log_path, n, "time_stamp", f[1])
        kind = BTAGS.get(f[2])
        if kind is None:
            raise common.InputError(log_path, n, "btag", f"expected pv, buy, cart or fav, got {f[2]!r}")
        cate = common.integer(log_path, n, "cate", f[3])
        brand = 0 if f[4] == "NULL" else common.integer(log_path, n, "brand", f[4])
        n_log += 1
        if ts >= end:
            report.drop("behaviour after the last day")
            continue
        max_cate, max_brand = max(max_cate, cate), max(max_brand, brand)
        log.add((u, ts, kind, cate, brand, n))
    log.close()

    schema = fmt.arrow_schema(with_feedback=protocol == "dumn", with_watch_time=False, with_trigger=protocol == "dei2n")
    schema = pa.schema(list(schema) + [pa.field("hist_behavior", pa.list_(pa.int64()))])
    writer = common.SampleWriter(output_dir, schema)
    users: set = set()
    max_user = 0
    with common.writing(writer, tmp):
        for i in range(partitions):
            s, b = samples.read(i), log.read(i)
            if s["user"].size == 0:
                continue
            s = {k: v[np.lexsort((s["order"], s["ts"], s["user"]))] for k, v in s.items()}
            max_user = max(max_user, int(s["user"].max()))
            users.update(np.unique(s["user"]).tolist())
            hist = _history(protocol, s, b)
            cols = _samples(protocol, s, hist, ad_cate, ad_brand, gender, age, max_history, trigger_hours, report)
            if cols is None:
                continue
            day = (cols.pop("_ts") - start) // DAY
            split = np.where(day == 7, 2, np.where(day == 6, 1, 0))
            for s_i, name in enumerate(fmt.SPLITS):
                writer.add(name, _take(cols, split == s_i))
    splits = writer.splits
    max_cate = max(max_cate, int(ad_cate.max()))
    report.counts.update(input_impressions=n_samples, input_behaviours=n_log, users=len(users),
                         items=int((ad_cate > 0).sum()), categories=int(np.unique(ad_cate[ad_cate > 0]).size),
                         samples=sum(writer.rows.values()), positives=sum(writer.positives.values()))
    max_brand = max(max_brand, int(ad_brand.max()))
    tables = {"user": max(max_user, gender.size - 1) + 1, "item": int(ad_cate.size), "category": max_cate + 1,
              "brand": max_brand + 1, "author": 1, "age": 8, "gender": 3, "behavior": UNCLICK + 1,
              **({"page": 2} if protocol == "dei2n" else {})}
    meta = common.write_meta(output_dir, converter=f"alimama-{protocol}", tables=tables, writer=writer, splits=splits,
                             options={"protocol": protocol, "max_history": max_history, "start": start,
                                      **({"trigger_hours": trigger_hours} if protocol == "dei2n" else {})},
                             max_seq_len=max_history, report=report)
    if show_progress:
        common.print_report(meta["converter"]["name"], report, splits, time.monotonic() - t0)
    return meta


def _history(protocol: str, s: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The partition's behaviours sorted by (user, time, input order): the log's, and with ``dumn`` the
    unclicked impressions too (after the log's at equal times)."""
    h = {"user": b["user"], "ts": b["ts"], "kind": b["kind"], "cate": b["cate"], "brand": b["brand"],
         "item": np.zeros(b["user"].size, np.int64), "src": np.zeros(b["user"].size, np.int64), "order": b["order"]}
    if protocol == "dumn":
        un = s["clk"] == 0
        h = {k: np.concatenate([v, {"user": s["user"][un], "ts": s["ts"][un], "kind": np.full(int(un.sum()), UNCLICK),
                                    "cate": np.zeros(int(un.sum()), np.int64), "brand": np.zeros(int(un.sum()), np.int64),
                                    "item": s["ad"][un], "src": np.ones(int(un.sum()), np.int64),
                                    "order": s["order"][un]}[k]]) for k, v in h.items()}
    order = np.lexsort((h["order"], h["src"], h["ts"], h["user"]))
    return {k: v[order] for k, v in h.items()}


def _samples(protocol, s, h, ad_cate, ad_brand, gender, age, max_history, trigger_hours, report):
    """The sample columns of one partition (``_ts`` the target times, for the split), or None if none remain."""
    span = np.int64(1) << 32
    h_key, s_key = h["user"] * span + h["ts"], s["user"] * span + s["ts"]
    keep = np.ones(s["user"].size, bool)
    trig = None
    if protocol == "dei2n":  # the latest clicked impression of the user within the window before the sample
        clicked = np.flatnonzero(s["clk"] == 1)
        pos = np.searchsorted(s_key[clicked], s_key, side="left") - 1  # the last click strictly before
        ok = pos >= 0
        j = clicked[np.maximum(pos, 0)] if clicked.size else np.zeros(s_key.size, np.int64)
        ok &= (s["user"][j] == s["user"]) & (s["ts"] - s["ts"][j] <= trigger_hours * 3600) & (s["ts"][j] < s["ts"])
        report.drop(f"impression without a click in the {trigger_hours:g} hours before it", int((~ok).sum()))
        keep, trig = ok, s["ad"][j]
    if protocol == "dumn":  # the unclicked impressions' category and brand
        un = h["kind"] == UNCLICK
        h["cate"][un], h["brand"][un] = ad_cate[h["item"][un]], ad_brand[h["item"][un]]
    idx_s = np.flatnonzero(keep)
    if idx_s.size == 0:
        return None
    end_ = np.searchsorted(h_key, s_key[idx_s], side="left")  # behaviours strictly before the sample
    first = np.searchsorted(h_key, s["user"][idx_s] * span, side="left")
    off, idx = common.latest(end_, first, max_history)
    ad = s["ad"][idx_s]
    n = idx_s.size
    zeros = np.zeros(n, np.int64)
    cols: Dict[str, Any] = {
        fmt.LABEL: s["clk"][idx_s].astype(np.int8), "user_id": s["user"][idx_s],
        "user_age": age[np.minimum(s["user"][idx_s], age.size - 1)] * (s["user"][idx_s] < age.size),
        "user_gender": gender[np.minimum(s["user"][idx_s], gender.size - 1)] * (s["user"][idx_s] < gender.size),
        "target_item": ad, "target_category": ad_cate[ad], "target_brand": ad_brand[ad], "target_author": zeros,
        fmt.TARGET_TIMESTAMP: s["ts"][idx_s],
        "hist_item": (off, h["item"][idx]), "hist_category": (off, h["cate"][idx]), "hist_brand": (off, h["brand"][idx]),
        "hist_author": (off, np.zeros(idx.size, np.int64)), fmt.HIST_TIMESTAMP: (off, h["ts"][idx]),
        "hist_behavior": (off, h["kind"][idx]), "_ts": s["ts"][idx_s]}
    if protocol == "dei2n":
        t = trig[idx_s]
        cols.update(trigger_item=t, trigger_category=ad_cate[t], page=np.ones(n, np.int64))
    if protocol == "dumn":
        k = h["kind"][idx]
        cols[fmt.HIST_FEEDBACK] = (off, np.where(k == 1, fmt.FEEDBACK_CLICK,
                                                 np.where(k == UNCLICK, fmt.FEEDBACK_NON_CLICK, fmt.FEEDBACK_LIKE)))
    return cols


def _take(cols: Dict[str, Any], m: np.ndarray) -> Dict[str, Any]:
    return {k: common.take(*v, m) if isinstance(v, tuple) else v[m] for k, v in cols.items()}
