"""Small hand-made datasets in the documented format (independent of the generator)."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tinrec.data import format as fmt


def rows_table(rows, schema=None):
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    return pa.table(cols, schema=schema)


def random_rows(n, seed=0, max_len=12, n_items=50, n_cat=6):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        L = int(rng.integers(0, max_len + 1))
        t = 1_600_000_000 + int(rng.integers(0, 10**6))
        gaps = np.cumsum(rng.integers(1, 5000, L))[::-1]
        items = rng.integers(1, n_items, L)
        out.append({
            "label": int(rng.integers(0, 2)), "user_id": int(rng.integers(1, 20)), "user_age": 1, "user_gender": 1,
            "target_item": int(rng.integers(1, n_items)), "target_category": int(rng.integers(1, n_cat)),
            "target_brand": 1, "target_author": 1, "target_timestamp": t,
            "hist_item": items.tolist(), "hist_category": (items % (n_cat - 1) + 1).tolist(),
            "hist_brand": [1] * L, "hist_author": [1] * L, "hist_timestamp": (t - gaps).tolist(),
        })
    return out


def write_dataset(root, splits, row_group_size=16, tables=None):
    """splits: {name: list of row dicts}; writes one file per split and meta.json."""
    schema = fmt.arrow_schema(with_feedback=False, with_watch_time=False, with_trigger=False)
    meta = {"format_version": fmt.FORMAT_VERSION, "splits": {},
            "tables": tables or {"user": 20, "item": 50, "category": 6, "brand": 2, "author": 2, "age": 2,
                                  "gender": 2}}
    for split, rows in splits.items():
        os.makedirs(os.path.join(root, split), exist_ok=True)
        rel = f"{split}/part-00000.parquet"
        pq.write_table(rows_table(rows, schema), os.path.join(root, rel), row_group_size=row_group_size)
        meta["splits"][split] = {"rows": len(rows), "files": [rel]}
    with open(os.path.join(root, "meta.json"), "w") as f:
        json.dump(meta, f)
    return root
