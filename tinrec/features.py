"""The feature schema: which features exist, where they come from, and how tables become TorchRec configs.

Features are the keys of the ``KeyedJaggedTensor`` the loader builds. Each is either a *scalar* (one id
per sample: user profile, target attributes, trigger) or a *sequence* (one id per kept behaviour). Most
come straight from a Parquet column of the same name (``docs/data.md``); the others (target-relative
position, time-interval bin, COE, calendar, negatives) are computed by the loader from the registry in
``tinrec/data/derived.py``, which also gives their tables' sizes.

Tables are declared in config (``model.tables``); the features a table lists share its rows, so
``target_item`` and ``hist_item`` read one item table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Tuple

from tinrec.data import derived
from tinrec.data import format as fmt

if TYPE_CHECKING:  # pragma: no cover
    from tinrec.config import Config, SequenceInputs

SCALAR_COLUMNS = fmt.USER_COLUMNS + fmt.TARGET_COLUMNS + fmt.TRIGGER_COLUMNS + (fmt.PAGE,)
SEQUENCE_COLUMNS = fmt.HIST_ID_COLUMNS + (fmt.HIST_FEEDBACK,)
DERIVED_SEQUENCE = tuple(f for f, d in derived.IDS.items() if d.sequence)  # computed by the loader
DERIVED_SCALAR = tuple(f for f, d in derived.IDS.items() if not d.sequence)
DENSE_SEQUENCE = tuple(derived.DENSE)  # dense (not embedded) per-behaviour values the loader can pass along

SCALAR_FEATURES = SCALAR_COLUMNS + DERIVED_SCALAR
SEQUENCE_FEATURES = SEQUENCE_COLUMNS + DERIVED_SEQUENCE
ALL_FEATURES = SCALAR_FEATURES + SEQUENCE_FEATURES

# temporal encoding -> (history features, target features); several features are summed (TE).
TEMPORAL_FEATURES = {
    "position": (("hist_position",), ("target_position",)),
    "time_bin": (("hist_time_bin",), ("target_time_bin",)),
    "coe": (("hist_coe",), ("target_coe",)),
    "timestamp": (("hist_hour", "hist_weekday", "hist_month"), ("target_hour", "target_weekday", "target_month")),
}


def is_sequence(feature: str) -> bool:
    return feature in SEQUENCE_FEATURES


def check_bindings(cfg: "Config", bindings: Mapping[str, "SequenceInputs"], owner: Mapping[str, str],
                   src: str) -> None:
    """Every feature a module or the tower reads exists, is read by a table, and widths line up."""
    tables = cfg.model.tables
    for tname, t in tables.items():
        for f in t.features:
            if f not in ALL_FEATURES:
                raise ValueError(f"{src}: model.tables.{tname}.features: unknown feature {f!r} "
                                 f"(known: {', '.join(ALL_FEATURES)})")
            if t.pooled and is_sequence(f):
                raise ValueError(f"{src}: model.tables.{tname}: sequence feature {f!r} needs pooled: false")

    def table_of(feature: str, where: str) -> str:
        if feature not in owner:
            raise ValueError(f"{src}: {where}: feature {feature!r} is not read by any table in model.tables")
        return owner[feature]

    for f in cfg.model.user_features:
        table_of(f, "model.user_features")
        if is_sequence(f):
            raise ValueError(f"{src}: model.user_features: {f!r} is a sequence feature")
    for name, inputs in bindings.items():
        where = f"model.interests.{name}.inputs" if "inputs" in cfg.model.interests[name] else "model.sequence"
        if len(inputs.history) != len(inputs.target) or not inputs.history:
            raise ValueError(f"{src}: {where}: history and target must list the same number (>0) of features")
        for h, t in zip(inputs.history, inputs.target):
            if not is_sequence(h):
                raise ValueError(f"{src}: {where}.history: {h!r} is not a sequence feature")
            if is_sequence(t):
                raise ValueError(f"{src}: {where}.target: {t!r} is not a scalar feature")
            th, tt = tables[table_of(h, where)], tables[table_of(t, where)]
            if th.pooled or tt.pooled:
                raise ValueError(f"{src}: {where}: {h!r} and {t!r} must be read by tables with pooled: false")
            if th.dim != tt.dim:
                raise ValueError(f"{src}: {where}: {h!r} (dim {th.dim}) and {t!r} (dim {tt.dim}) differ in width")
        if inputs.temporal != "none":
            width = sum(tables[owner[h]].dim for h in inputs.history)
            hist_t, target_t = TEMPORAL_FEATURES[inputs.temporal]
            for f in hist_t + target_t:
                tt = tables[table_of(f, f"{where}.temporal")]
                if tt.pooled or tt.dim != width:
                    raise ValueError(
                        f"{src}: {where}.temporal: the table of {f!r} must have pooled: false and dim {width} "
                        f"(the behaviour width, sum of the history tables' dims), got dim {tt.dim}")


def behaviour_width(cfg: "Config", inputs: "SequenceInputs") -> int:
    owner = {f: n for n, t in cfg.model.tables.items() for f in t.features}
    return sum(cfg.model.tables[owner[h]].dim for h in inputs.history)


def dense_sequence(bindings: Mapping[str, "SequenceInputs"]) -> List[str]:
    """Dense per-behaviour values some interest module is bound to (``inputs.timestamps``/``sessions``)."""
    out = set()
    for inputs in bindings.values():
        if inputs.timestamps:
            out.add("hist_timestamp")
        if inputs.sessions:
            out.add("hist_session")
    return sorted(out)


def used_features(cfg: "Config") -> List[str]:
    """KJT keys, in a fixed order: every feature some table reads."""
    feats = [f for t in cfg.model.tables.values() for f in t.features]
    return sorted(feats, key=ALL_FEATURES.index)


def resolve_rows(cfg: "Config", meta: Mapping) -> Dict[str, int]:
    """Table name -> rows, resolving ``rows: auto`` from the dataset's meta.json and the data config."""
    out = {}
    meta_tables = meta.get("tables", {}) if meta else {}
    for name, t in cfg.model.tables.items():
        auto = derived.table_rows(t.features, cfg.data.max_len, cfg.data.time_bins)
        if t.rows != "auto":
            out[name] = int(t.rows)
        elif auto is not None:
            out[name] = auto
        elif name in meta_tables:
            out[name] = int(meta_tables[name])
        else:
            raise ValueError(f"model.tables.{name}.rows: 'auto', but the dataset's meta.json has no table "
                             f"{name!r} (it has: {', '.join(meta_tables) or 'none'}); set rows explicitly")
    return out


def feature_rows(cfg: "Config", rows: Mapping[str, int]) -> Dict[str, Tuple[str, int]]:
    """Feature -> (table name, rows): the id range the loader checks."""
    return {f: (name, rows[name]) for name, t in cfg.model.tables.items() for f in t.features}


def table_configs(cfg: "Config", rows: Mapping[str, int]):
    """TorchRec configs: ``({dim: [EmbeddingConfig]}, [EmbeddingBagConfig])``.

    Sequence tables are grouped by ``embedding_dim`` (one EmbeddingCollection must share it).
    """
    from torchrec import EmbeddingBagConfig, EmbeddingConfig
    from torchrec.modules.embedding_configs import PoolingType

    by_dim: Dict[int, list] = {}
    bags = []
    for name, t in cfg.model.tables.items():
        if t.pooled:
            bags.append(EmbeddingBagConfig(name=name, embedding_dim=t.dim, num_embeddings=rows[name],
                                           feature_names=list(t.features), pooling=PoolingType.SUM))
        else:
            by_dim.setdefault(t.dim, []).append(
                EmbeddingConfig(name=name, embedding_dim=t.dim, num_embeddings=rows[name],
                                feature_names=list(t.features)))
    return dict(sorted(by_dim.items())), bags
