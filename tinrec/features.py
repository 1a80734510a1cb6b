"""The feature schema: which features exist, where they come from, and how tables become TorchRec configs.

Features are the keys of the ``KeyedJaggedTensor`` the loader builds. Each is either a *scalar* (one id
per sample: user profile, target attributes, trigger) or a *sequence* (one id per kept behaviour). Most
come straight from a Parquet column of the same name (``docs/data.md``); the others (target-relative
position, time-interval bin, COE, calendar, negatives) are computed by the loader from the registry in
``tinrec/data/derived.py``, which also gives their tables' sizes.

Tables are declared in config in embedding groups (``model.embeddings``); the features a table lists share
its rows, so ``target_item`` and ``hist_item`` read one item table; a feature read by tables of two groups is
embedded twice (multi-embedding).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Set, Tuple

from tinrec.data import derived, search
from tinrec.data import format as fmt

if TYPE_CHECKING:  # pragma: no cover
    from tinrec.config import Config

def is_sequence(feature: str) -> bool:
    return fmt.sequence_of(feature) is not None


def sequence_of(feature: str) -> Optional[str]:
    """The sequence a feature's values span (one per kept behaviour), or None for a per-sample feature
    (``tinrec/data/format.py``: the name says which)."""
    return fmt.sequence_of(feature)


def is_derived(feature: str) -> bool:
    return derived.lookup(feature) is not None


def known_columns(cfg: "Config") -> Optional[Set[str]]:
    """The dataset's stored columns, without reading data: its meta.json ``columns``, else the footer of its
    first train file, else the generator's columns for ``data.generate``; None when none of these exists yet
    (the features are then checked when the files are opened)."""
    from tinrec.data import schema

    return schema.columns(cfg.data.path, cfg.data.generate)


def check_tables(cfg: "Config", src: str) -> None:
    """Every feature a table reads exists (a derived id, or a column of the dataset when its columns are
    known); a group's sequence tables share one width (one
    EmbeddingCollection per group); a feature is read once per group."""
    stored = known_columns(cfg)
    searches = search.of_config(cfg)
    for name, s in searches.items():
        for column in s.columns:
            if stored is not None and column not in stored:
                raise ValueError(f"{src}: data.sequences.{name}.search: the search reads {column!r}, which is not a "
                                 f"column of the dataset {cfg.data.path}")
    seen: Dict[str, str] = {}
    for group, tables in cfg.model.embeddings.items():
        widths: Dict[int, str] = {}
        in_group: Dict[str, str] = {}
        for tname, t in tables.items():
            key = f"model.embeddings.{group}.{tname}"
            if tname in seen:
                raise ValueError(f"{src}: {key}: table name {tname!r} is already used in group {seen[tname]!r} "
                                 f"(names are global: the planner and the optimizer key tables by name)")
            seen[tname] = group
            for f in t.features:
                if stored is not None and not is_derived(f) and search.stored_column(f, searches) not in stored:
                    close = difflib.get_close_matches(f, sorted(stored), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"{src}: {key}.features: unknown feature {f!r}: not a column of the dataset "
                                     f"{cfg.data.path} nor a derived feature{hint}")
                if f in in_group:
                    raise ValueError(f"{src}: {key}.features: {f!r} is already read by table {in_group[f]!r} of "
                                     f"group {group!r} (a feature is read once per group; use another group to "
                                     f"embed it twice)")
                in_group[f] = tname
            if not t.pooled:
                widths.setdefault(t.dim, tname)
        if len(widths) > 1:
            (d1, t1), (d2, t2) = list(widths.items())[:2]
            raise ValueError(f"{src}: model.embeddings.{group}: tables {t1!r} (dim {d1}) and {t2!r} (dim {d2}) "
                             f"differ in width; a group's tables with pooled: false share one width (one "
                             f"TorchRec EmbeddingCollection per group): put them in separate groups")


# The KeyedJaggedTensor's key order for the format's own features (per-sample first); others follow in the
# order the tables list them.
KEY_ORDER = (fmt.USER_COLUMNS + fmt.TARGET_COLUMNS + fmt.TRIGGER_COLUMNS + (fmt.PAGE,)
             + tuple(derived.TARGET_IDS) + fmt.HIST_ID_COLUMNS + (fmt.HIST_FEEDBACK,)
             + tuple(f"{fmt.HISTORY}_{suffix}" for suffix in derived.SEQUENCE_IDS))


def used_features(cfg: "Config") -> List[str]:
    """KJT keys, in a fixed order: every feature some table reads (once, however many groups read it)."""
    feats = list(dict.fromkeys(f for t in cfg.model.tables.values() for f in t.features))
    rank = {f: i for i, f in enumerate(KEY_ORDER)}
    return sorted(feats, key=lambda f: (is_sequence(f), rank.get(f, len(rank)), feats.index(f)))


def resolve_rows(cfg: "Config", meta: Mapping) -> Dict[str, int]:
    """Table name -> rows, resolving ``rows: auto`` from the dataset's meta.json and the data config.

    An ``auto`` table of derived features takes their size (``tinrec/data/derived.py``); any other takes the
    meta.json table of its name, else the one its features' column indexes (``hist_item`` -> ``item``; an extra
    id column such as ``user_f00`` has a table of its own name: a second embedding set's ``e2_user_f00``)."""
    out = {}
    meta_tables = meta.get("tables", {}) if meta else {}
    for name, t in cfg.model.tables.items():
        auto = derived.table_rows(t.features, cfg.data.max_len_of,
                                  derived.Sizes(cfg.data.time_bins, cfg.data.interval_buckets))
        by_column = {fmt.column_table(f) or (f if f in meta_tables else None) for f in t.features} - {None}
        if t.rows != "auto":
            out[name] = int(t.rows)
        elif auto is not None:
            out[name] = auto
        elif name in meta_tables:
            out[name] = int(meta_tables[name])
        elif len(by_column) == 1 and next(iter(by_column)) in meta_tables:
            out[name] = int(meta_tables[next(iter(by_column))])
        else:
            raise ValueError(f"{cfg.model.table_key(name)}.rows: 'auto', but the dataset's meta.json has no table "
                             f"{name!r} (it has: {', '.join(meta_tables) or 'none'}); set rows explicitly")
    return out


def feature_rows(cfg: "Config", rows: Mapping[str, int]) -> Dict[str, Tuple[str, int]]:
    """Feature -> (table name, rows): the id range the loader checks (the smallest table reading it)."""
    out: Dict[str, Tuple[str, int]] = {}
    for name, t in cfg.model.tables.items():
        for f in t.features:
            if f not in out or rows[name] < out[f][1]:
                out[f] = (name, rows[name])
    return out


def table_configs(cfg: "Config", rows: Mapping[str, int]):
    """TorchRec configs per embedding group: ``{group: ([EmbeddingConfig], [EmbeddingBagConfig])}``."""
    from torchrec import EmbeddingBagConfig, EmbeddingConfig
    from torchrec.modules.embedding_configs import PoolingType

    out = {}
    for group, tables in cfg.model.embeddings.items():
        seq, bags = [], []
        for name, t in tables.items():
            init = {} if t.init_max is None else {"weight_init_max": float(t.init_max),
                                                  "weight_init_min": -float(t.init_max)}
            if t.pooled:
                bags.append(EmbeddingBagConfig(name=name, embedding_dim=t.dim, num_embeddings=rows[name],
                                               feature_names=list(t.features), pooling=PoolingType[t.pooling.upper()],
                                               **init))
            else:
                seq.append(EmbeddingConfig(name=name, embedding_dim=t.dim, num_embeddings=rows[name],
                                           feature_names=list(t.features), **init))
        out[group] = (seq, bags)
    return out
