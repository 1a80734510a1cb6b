"""ContentWise Impressions (Pérez Maurera et al., CIKM 2020, https://github.com/ContentWise/contentwise-impressions;
DEI2N's media dataset) as published: the ``interactions`` folder of Parquet files (``CW10M/interactions/``), one row
per interaction with ``utc_ts_milliseconds``, ``user_id``, ``item_id``, ``item_type`` (0-3), ``series_id``,
``episode_number``, ``series_length``, ``recommendation_id``, ``interaction_type`` (0 view, 1 access, 2 rate,
3 purchase), ``explicit_rating``, ``vision_factor``. DEI2N's protocol (its Sec. 4.1), our choices where marked:

- every interaction is a positive (label 1: "views, purchases, rates or accesses"); the trigger is the user's
  latest interaction within ``--trigger-hours`` (8) strictly before it (its item and series); an interaction
  without one is dropped (counted);
- each positive has one negative (label 0; DEI2N follows [14]: random items): an item uniform over the data's
  items that the user has not interacted with up to the positive (a hash of seed, user, time and attempt), with
  the same trigger and history;
- the history: the user's interactions strictly before the positive, the latest ``max_history`` (100), oldest
  first; ``hist_behavior`` the interaction type + 1 (table ``behavior``);
- ids (ours): ``item_id`` + 1 as item, ``series_id`` + 1 as category (an episode's series, a movie its own),
  ``item_type`` + 1 as brand, ``user_id`` + 1 as user (the published ids start at 0, ours at 1); times in
  seconds; ``page`` 1 (no pages in the data);
- split per user, leave one out over the kept positives: the last -> test, the one before -> valid, the rest
  -> train (each with its negative).
"""

from __future__ import annotations

import glob
import os
import posixpath
import shutil
import time
from typing import Any, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tinrec.convert import common
from tinrec.data import format as fmt

COLUMNS = ("utc_ts_milliseconds", "user_id", "item_id", "item_type", "series_id", "interaction_type")
_ROWS = pa.schema([("user", pa.int64()), ("ts", pa.int64()), ("item", pa.int64()), ("series", pa.int64()),
                   ("item_type", pa.int64()), ("kind", pa.int64()), ("order", pa.int64())])


def add_arguments(p) -> None:
    p.add_argument("--max-history", type=int, default=100, help="the latest interactions kept as history (100)")
    p.add_argument("--trigger-hours", type=float, default=8.0, help="the trigger's window (8 hours)")
    p.add_argument("--seed", type=int, default=0, help="the negatives' seed (0)")
    p.add_argument("--partitions", type=int, default=16, help="temporary partitions by user (16)")


def _interaction_files(input_dir: str) -> List[str]:
    for pattern in ("interactions", "*/interactions", "*/*/interactions", "*/*/*/interactions"):
        for folder in sorted(glob.glob(os.path.join(input_dir, pattern))):
            files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
            if files:
                return files
    raise ValueError(f"--input {input_dir}: not a ContentWise Impressions folder: expected the published "
                     f"interactions/ folder of Parquet files (CW10M/interactions/*.parquet)")


def convert(input_dir: str, output_dir: str, *, max_history: int = 100, trigger_hours: float = 8.0, seed: int = 0,
            partitions: int = 16, show_progress: bool = True) -> Dict[str, Any]:
    if max_history < 1 or partitions < 1 or not trigger_hours > 0:
        raise ValueError("--max-history and --partitions must be >= 1, --trigger-hours > 0")
    t0 = time.monotonic()
    files = _interaction_files(input_dir)
    report = common.Report()
    common.claim(output_dir)
    tmp = posixpath.join(output_dir, ".tinrec", "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    parts = common.Partitions(tmp, "rows", _ROWS, partitions)
    n_rows = max_item = max_series = max_user = 0
    order = 0
    from tqdm import tqdm
    bar = tqdm(total=sum(pq.ParquetFile(f).metadata.num_rows for f in files), unit="row", unit_scale=True,
               desc="interactions", disable=not show_progress, mininterval=1.0)
    for path in files:
        pf = pq.ParquetFile(path)
        missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise common.InputError(path, 0, ", ".join(missing), "missing (the published interactions columns: "
                                    + ", ".join(COLUMNS) + ")")
        first_row = 0
        for batch in pf.iter_batches(columns=list(COLUMNS), batch_size=65536):
            cols = {}
            for c in COLUMNS:
                v = batch.column(c)
                if not pa.types.is_integer(v.type) or v.null_count:
                    bad = int(np.flatnonzero(v.is_null().to_numpy(zero_copy_only=False))[0]) if v.null_count else 0
                    raise common.InputError(path, first_row + bad + 1, c,
                                            f"expected integers without nulls, got {v.type}"
                                            + (" with a null" if v.null_count else ""))
                cols[c] = v.to_numpy().astype(np.int64)
            neg = next((c for c in COLUMNS if (cols[c] < 0).any()), None)
            if neg is not None:
                raise common.InputError(path, first_row + int(np.flatnonzero(cols[neg] < 0)[0]) + 1, neg,
                                        "negative value")
            bad_kind = np.flatnonzero(cols["interaction_type"] > 3)
            if bad_kind.size:
                raise common.InputError(path, first_row + int(bad_kind[0]) + 1, "interaction_type",
                                        f"expected 0-3, got {cols['interaction_type'][bad_kind[0]]}")
            n = batch.num_rows
            parts.add_arrays([cols["user_id"] + 1, cols["utc_ts_milliseconds"] // 1000, cols["item_id"] + 1,
                              cols["series_id"] + 1, cols["item_type"] + 1, cols["interaction_type"] + 1,
                              np.arange(order, order + n)])
            max_item = max(max_item, int(cols["item_id"].max()) + 1)
            max_series = max(max_series, int(cols["series_id"].max()) + 1)
            max_user = max(max_user, int(cols["user_id"].max()) + 1)
            order += n
            first_row += n
            n_rows += n
            bar.update(n)
    bar.close()
    parts.close()

    # items (for the negatives) and each item's series and type
    item_series = np.zeros(max_item + 1, np.int64)
    item_type = np.zeros(max_item + 1, np.int64)
    for k in range(partitions):
        c = parts.read(k)
        item_series[c["item"]], item_type[c["item"]] = c["series"], c["item_type"]
    items = np.flatnonzero(item_series)

    schema = pa.schema(list(fmt.arrow_schema(with_feedback=False, with_watch_time=False, with_trigger=True))
                       + [pa.field("hist_behavior", pa.list_(pa.int64()))])
    writer = common.SampleWriter(output_dir, schema)
    users = 0
    with common.writing(writer, tmp):
        for k in range(partitions):
            c = parts.read(k)
            if c["user"].size == 0:
                continue
            c = {name: v[np.lexsort((c["order"], c["ts"], c["user"]))] for name, v in c.items()}
            ustart, ucount = common.user_runs(c["user"])
            users += ustart.size
            own_start = np.repeat(ustart, ucount)
            # the trigger: the latest interaction strictly earlier (and within the window) than each row
            key = c["user"] * (np.int64(1) << 32) + c["ts"]
            prev = np.searchsorted(key, key, side="left") - 1
            ok = (prev >= own_start) & (c["ts"] - c["ts"][np.maximum(prev, 0)] <= trigger_hours * 3600)
            report.drop(f"interaction without an interaction in the {trigger_hours:g} hours before it", int((~ok).sum()))
            target = np.flatnonzero(ok)
            if target.size == 0:
                continue
            trig = c["item"][prev[target]]
            end_ = np.searchsorted(key, key[target], side="left")  # strictly before
            off, idx = common.latest(end_, own_start[target], max_history)
            neg = common.negatives(c["user"], c["item"], c["ts"], target, items, seed)
            t_users = c["user"][target]
            t_start, t_count = common.user_runs(t_users)
            split = common.leave_last_out(t_start, t_count)
            for s_i, s in enumerate(fmt.SPLITS):
                m = split == s_i
                r = target[m]
                two_off, h = common.paired(off, idx, m)
                tgt = np.stack([c["item"][r], neg[m]], 1).reshape(-1)
                tr = np.repeat(trig[m], 2)
                zeros = np.zeros(2 * r.size, np.int64)
                writer.add(s, {
                    fmt.LABEL: np.tile(np.array([1, 0], np.int8), r.size), "user_id": np.repeat(c["user"][r], 2),
                    "user_age": zeros, "user_gender": zeros, "target_item": tgt, "target_category": item_series[tgt],
                    "target_brand": item_type[tgt], "target_author": zeros,
                    fmt.TARGET_TIMESTAMP: np.repeat(c["ts"][r], 2),
                    "hist_item": (two_off, c["item"][h]), "hist_category": (two_off, c["series"][h]),
                    "hist_brand": (two_off, c["item_type"][h]), "hist_author": (two_off, np.zeros(h.size, np.int64)),
                    fmt.HIST_TIMESTAMP: (two_off, c["ts"][h]), "hist_behavior": (two_off, c["kind"][h]),
                    "trigger_item": tr, "trigger_category": item_series[tr], "page": np.ones(2 * r.size, np.int64)})
    splits = writer.splits
    report.counts.update(input_interactions=n_rows, users=users, items=int(items.size),
                         categories=int(np.unique(item_series[items]).size), samples=sum(writer.rows.values()),
                         positives=sum(writer.positives.values()))
    tables = {"user": max_user + 1, "item": max_item + 1, "category": max_series + 1, "brand": 5, "author": 1,
              "age": 1, "gender": 1, "page": 2, "behavior": 5}
    meta = common.write_meta(output_dir, converter="contentwise", tables=tables, writer=writer, splits=splits,
                             options={"max_history": max_history, "trigger_hours": trigger_hours, "seed": seed},
                             max_seq_len=max_history, report=report)
    if show_progress:
        common.print_report("contentwise", report, splits, time.monotonic() - t0)
    return meta
