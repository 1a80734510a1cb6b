"""The on-disk sample format (the contract; prose in ``docs/data.md``).

A dataset is a folder (any iopath path) holding::

    meta.json                      # format version, table cardinalities, split row counts, generator params
    train/part-00000.parquet ...   # one row per impression
    valid/part-00000.parquet ...
    test/part-00000.parquet ...
    .tinrec/                       # made by tinrec, the only place it writes in a dataset it did not generate:
                                   # time_bins.json (equal-frequency time-interval edges from train/) and
                                   # check.json (the result of ``tinrec check-data``, keyed by the files)
    .tinrec-generated              # only in a folder tinrec generated (it may regenerate into it)
    ground_truth.npz               # only for generated data: the planted semantic-temporal weights

Sequences are list columns ordered oldest behaviour first. A sample may carry several sequences (a lifelong
and a short-term one; clicks, non-clicks, likes and dislikes): a list column ``<sequence>_<field>`` belongs to
the sequence before its first underscore (``hist_item`` and ``hist_timestamp`` to ``hist``, ``long_item`` to
``long``); the list columns of one sequence have one element per behaviour, and its timestamps, when it has
them, are ``<sequence>_timestamp``. Columns whose name starts with one of :data:`SAMPLE_PREFIXES` are per
sample (one value per row), whatever else follows (``user_f07``, ``ctx_f12``, ``item_f03``). Every id is an int64 in ``[0, rows)`` of the
table that reads it; 0 is "unknown" by convention (the generator never emits it for real entities).
Timestamps are int64 seconds (Unix epoch).
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = 1

LABEL = "label"
TASK_LABEL_PREFIX = "label_"  # optional further labels for multi-task models: label_like, label_dislike, ... (0/1)
USER_ID = "user_id"

# Scalar id columns: user profile, target item and its attributes.
USER_COLUMNS = ("user_id", "user_age", "user_gender")
TARGET_COLUMNS = ("target_item", "target_category", "target_brand", "target_author")
TARGET_TIMESTAMP = "target_timestamp"

# History list columns (same length within a row, oldest first).
HIST_ID_COLUMNS = ("hist_item", "hist_category", "hist_brand", "hist_author")
HIST_TIMESTAMP = "hist_timestamp"
HIST_FEEDBACK = "hist_feedback"  # optional: 0 click, 1 like, 2 dislike, 3 non-click (impressed, not clicked)
HIST_WATCH_TIME = "hist_watch_time"  # optional: seconds watched (float32)

# Optional trigger / scrolling context (DEI2N).
TRIGGER_COLUMNS = ("trigger_item", "trigger_category")
PAGE = "page"  # 1 = first page

# Name prefixes of per-sample columns (user profile, target, trigger, context, item side, page, labels).
SAMPLE_PREFIXES = ("user", "target", "trigger", "ctx", "item", "page", "label")
HISTORY = "hist"  # the sequence every dataset has


def sequence_of(column: str) -> "str | None":
    """The sequence a column's values span (one per behaviour), or None for a per-sample column."""
    prefix = column.split("_", 1)[0]
    return None if prefix in SAMPLE_PREFIXES or "_" not in column else prefix


def split_column(column: str) -> "tuple[str | None, str]":
    """(sequence, field) of a sequence column (``long_watch_time`` -> ("long", "watch_time")), (None, column)
    for a per-sample one."""
    seq = sequence_of(column)
    return (seq, column[len(seq) + 1:]) if seq else (None, column)


def timestamp_column(sequence: str) -> str:
    return f"{sequence}_timestamp"


FEEDBACK_CLICK, FEEDBACK_LIKE, FEEDBACK_DISLIKE, FEEDBACK_NON_CLICK = 0, 1, 2, 3

REQUIRED_COLUMNS = (LABEL,) + USER_COLUMNS + TARGET_COLUMNS + (TARGET_TIMESTAMP,) + HIST_ID_COLUMNS + (
    HIST_TIMESTAMP,
)
OPTIONAL_COLUMNS = (HIST_FEEDBACK, HIST_WATCH_TIME) + TRIGGER_COLUMNS + (PAGE,)
LIST_COLUMNS = HIST_ID_COLUMNS + (HIST_TIMESTAMP, HIST_FEEDBACK, HIST_WATCH_TIME)

SPLITS = ("train", "valid", "test")

# The id table (meta.json ``tables``) each id column indexes, for ``tinrec check-data`` and ``make-meta``.
COLUMN_TABLES = {"user_id": "user", "user_age": "age", "user_gender": "gender", "user_activity": "activity",
                 "user_top_author": "author",
                 "target_item": "item", "hist_item": "item", "trigger_item": "item",
                 "target_category": "category", "hist_category": "category", "trigger_category": "category",
                 "target_brand": "brand", "hist_brand": "brand", "target_author": "author", "hist_author": "author",
                 "page": "page"}


ENTITY_FIELDS = ("item", "category", "brand", "author")  # a sequence's <seq>_<field> ids index these tables


def column_table(column: str) -> "str | None":
    """The id table a column of the format indexes: ``COLUMN_TABLES``, and for any sequence's
    ``<sequence>_item`` / ``_category`` / ``_brand`` / ``_author`` the table of that name."""
    if column in COLUMN_TABLES:
        return COLUMN_TABLES[column]
    seq, field = split_column(column)
    return field if seq and field in ENTITY_FIELDS else None


def arrow_schema(*, with_feedback: bool = True, with_watch_time: bool = True, with_trigger: bool = True) -> pa.Schema:
    """The Arrow schema writers use (readers accept any integer widths for ids)."""
    fields = [pa.field(LABEL, pa.int8())]
    fields += [pa.field(c, pa.int64()) for c in USER_COLUMNS + TARGET_COLUMNS + (TARGET_TIMESTAMP,)]
    fields += [pa.field(c, pa.list_(pa.int64())) for c in HIST_ID_COLUMNS + (HIST_TIMESTAMP,)]
    if with_feedback:
        fields.append(pa.field(HIST_FEEDBACK, pa.list_(pa.int8())))
    if with_watch_time:
        fields.append(pa.field(HIST_WATCH_TIME, pa.list_(pa.float32())))
    if with_trigger:
        fields += [pa.field(c, pa.int64()) for c in TRIGGER_COLUMNS]
        fields.append(pa.field(PAGE, pa.int32()))
    return pa.schema(fields)
