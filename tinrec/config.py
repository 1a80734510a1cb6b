"""Experiment configuration: YAML files + ``key.sub=value`` overrides, validated before anything is built.

A config is one complete YAML file (no inheritance). :func:`load_config` reads it, applies command-line
overrides, and converts the result into the typed dataclasses below. Every error is a ``ValueError`` that
names the key path and the file, e.g. ``configs/x.yaml: train.epoch: unknown key (did you mean 'epochs'?)``.

Interest modules are declared explicitly as ``{_component_: dotted.path.Class, arg: value, ...}``; the
arguments are checked against the constructor's signature and type annotations (:func:`check_component`)
without building it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib
import inspect
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import yaml
from iopath.common.file_io import g_pathmgr

# ----------------------------------------------------------------------------------------------------------
# The schema
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TableConfig:
    """One embedding table. ``rows: auto`` takes the size from the dataset's meta.json (``position`` and
    ``time_bin`` from ``data.max_len`` and ``data.time_bins``)."""

    dim: int
    features: List[str]
    rows: Union[int, str] = "auto"
    pooled: bool = False  # True: EmbeddingBagCollection (one vector per sample); False: EmbeddingCollection (jagged)
    pooling: str = "sum"  # a pooled table's pooling of a sample's ids (a sequence's behaviours): sum or mean
    sharding_types: Optional[List[str]] = None  # planner constraint, e.g. [row_wise]
    pooling_factor: Optional[float] = None  # mean ids per sample, for the planner (default: from data)
    init_max: Optional[float] = None  # initial weights uniform in [-init_max, init_max] (TorchRec's: sqrt(1 / rows))


@dataclass
class InputSpec:
    """One named input of the interest modules and the tower (``model.inputs``; ``tinrec/inputs.py``).

    Exactly one of ``features`` (embedded ids), ``mask`` (a sequence's validity), ``dense`` (values the loader
    passes without embedding) or ``label`` (a label, for an auxiliary loss such as SIM's soft search) is set. Shapes: ids of a sequence ``[B, L, D]`` (concat: D the sum of the tables'
    widths; sum: one width; stack: ``[B, L, F, D]``), ids of a sample ``[B, D]`` (stack: ``[B, F, D]``); a mask
    ``[B, L]`` bool; dense values ``[B, L]`` / ``[B]`` for one column, ``[B, L, F]`` / ``[B, F]`` for a list.
    """

    features: Optional[List[str]] = None
    group: Optional[str] = None  # the embedding group to read, needed when a feature is in several
    combine: Literal["concat", "sum", "stack"] = "concat"
    negatives: Optional[Literal["in_batch"]] = None  # each behaviour replaced by one drawn from the batch (DIEN)
    mask: Optional[str] = None  # a sequence's name: [B, L], True at kept behaviours
    dense: Optional[Union[str, List[str]]] = None  # dense columns (timestamps, sessions, watch time, ...)
    label: Optional[str] = None  # a label column of data.labels: [B] float, for a module's auxiliary loss


@dataclass
class TowerConfig:
    hidden: List[int] = field(default_factory=lambda: [200, 80])
    activation: Literal["relu", "prelu", "sigmoid", "dice"] = "relu"  # modules/mlp.py ACTIVATIONS
    dropout: float = 0.0
    inputs: List[str] = field(default_factory=list)  # named inputs concatenated after the interest outputs
    combine: Literal["concat", "sum", "gate"] = "concat"  # how the interest outputs meet (modules/combine.py)


@dataclass
class ModelConfig:
    """The model: embedding groups, named inputs, interest modules bound to them, the tower."""

    embeddings: Dict[str, Dict[str, TableConfig]]  # group -> table name -> table (table names unique overall)
    interests: Dict[str, Dict[str, Any]]  # name -> {_component_, constructor args, inputs: {forward arg: input}}
    inputs: Dict[str, InputSpec] = field(default_factory=dict)
    tower: TowerConfig = field(default_factory=TowerConfig)
    compile: bool = False  # torch.compile each interest module in place (dynamic shapes; same state dict)
    # hand a sequence to the module arguments that take it so (a class's INDEXED_INPUTS: ETA, SDIM, TWIN, SIM, LAP)
    # as the batch's distinct rows + an index, not a [B, L, D] tensor (modules/indexed.py); the same model either way
    indexed_sequences: bool = True

    @property
    def tables(self) -> Dict[str, TableConfig]:
        """Every table by name, over all groups (names are unique across groups: the planner keys by them)."""
        return {name: t for group in self.embeddings.values() for name, t in group.items()}

    def group_of(self, table: str) -> str:
        return next(g for g, tables in self.embeddings.items() if table in tables)

    def table_key(self, table: str) -> str:
        """The config key of a table, for messages: ``model.embeddings.<group>.<table>``."""
        return f"model.embeddings.{self.group_of(table)}.{table}"


@dataclass
class SequenceConfig:
    """One behaviour sequence of the data (its list columns are ``<name>_*``, docs/data.md)."""

    max_len: Optional[int] = None  # keep its most recent max_len behaviours (default: data.max_len)
    # leave out the skip_recent most recent behaviours first (a lifelong sequence beside a short-term one)
    skip_recent: int = 0
    # {from: SEQUENCE, key: FIELD, target: COLUMN} or {from, key, equals: ID}: selected by the loader (data/search.py)
    search: Optional[Dict[str, Any]] = None


@dataclass
class DataConfig:
    path: str
    generate: Optional[Dict[str, Any]] = None  # keyword arguments of tinrec.data.generate.generate_dataset
    max_len: int = 200  # every sequence's, unless data.sequences.<name>.max_len says otherwise
    sequences: Dict[str, SequenceConfig] = field(default_factory=dict)
    time_bins: int = 10
    interval_seconds: int = 60  # DEI2N's T_f: <sequence>_interval = floor((t - t_i) / T_f) (tinrec/data/derived.py)
    interval_buckets: int = 1440  # rows: auto of an interval table is this + 1 (longer intervals share the last)
    num_workers: int = 1
    shuffle: bool = True
    labels: List[str] = field(default_factory=lambda: ["label"])  # label columns; several: one head each
    check: bool = True  # scan the dataset on first use (tinrec check-data; cached in <path>/.tinrec/check.json)

    def max_len_of(self, sequence: str) -> int:
        s = self.sequences.get(sequence)
        return s.max_len if s is not None and s.max_len is not None else self.max_len

    def skip_recent_of(self, sequence: str) -> int:
        s = self.sequences.get(sequence)
        return s.skip_recent if s is not None else 0


@dataclass
class OptimizerGroup:
    """Dense parameters whose names match ``match`` (a glob over the model's parameter names, e.g.
    ``*.cain.tcns.*``) with their own learning rate / weight decay (the optimizer's when not given)."""

    match: str
    lr: Optional[float] = None
    weight_decay: Optional[float] = None


@dataclass
class OptimizerConfig:
    name: str
    lr: float
    weight_decay: float = 0.0
    eps: float = 1e-8
    groups: List[OptimizerGroup] = field(default_factory=list)  # dense only: the first matching group wins


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 256
    eval_batch_size: int = 1024
    dense_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="adam", lr=1e-3))
    sparse_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="rowwise_adagrad", lr=0.05))
    grad_clip: float = 1.0  # max L2 norm of the dense gradients; 0 disables
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of each epoch only
    keep_checkpoints: int = 2
    log_every: int = 50
    log_grad_norms: bool = False  # every log_every steps: each dense module's gradient norm -> grad_norms.jsonl, TensorBoard
    max_steps: Optional[int] = None  # stop after this many steps in total (smoke tests)
    host_memory: str = "cached"  # cached: glibc keeps freed host memory for reuse (tinrec/hostmem.py) | system
    index_dedup: bool = True  # sequence lookups: each distinct row once per batch (tinrec/dedup.py)
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a non-finite loss or gradient: stop, or skip the batch
    collective_timeout_s: float = 600.0  # a rank waiting longer than this in a collective ends the job (hung rank)


@dataclass
class Config:
    run_dir: str
    data: DataConfig
    model: ModelConfig
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: Optional[str] = None  # a checkpoint folder to evaluate (``tinrec eval``) or to start from
    plan: Optional[str] = None  # a sharding-plan file written by ``tinrec plan --out``
    description: str = ""


# ----------------------------------------------------------------------------------------------------------
# Loading and overrides
# ----------------------------------------------------------------------------------------------------------


DELETE = object()  # the value of a ``~key.sub`` override: remove the key


def _key_path(key: str) -> List[str]:
    """``a.b.c`` -> ``[a, b, c]``; a dot inside braces belongs to a family's name (``e1_user_f{00..19}``)."""
    return re.split(r"\.(?![^{]*\})", key.strip())


def parse_overrides(overrides: Sequence[str], source: str = "command line") -> List[tuple]:
    """``["train.epochs=3", "model.tower.hidden=[64,32]"]`` -> ``[(["train", "epochs"], 3), ...]``;
    ``~model.interests.gwpfm`` (Hydra's spelling) removes that key: ``(["model", "interests", "gwpfm"], DELETE)``."""
    parsed = []
    for item in overrides:
        if item.startswith("~") and "=" not in item:
            path = _key_path(item[1:])
            if not all(path):
                raise ValueError(f"{source}: override {item!r} has an empty key part")
            parsed.append((path, DELETE))
            continue
        if "=" not in item:
            raise ValueError(f"{source}: override {item!r} is not of the form key.sub=value (or ~key.sub to remove it)")
        key, raw = item.split("=", 1)
        path = _key_path(key)
        if not all(path):
            raise ValueError(f"{source}: override {item!r} has an empty key part")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ValueError(f"{source}: override {item!r}: cannot parse the value: {e}") from None
        parsed.append((path, value))
    return parsed


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[str], source: str = "command line") -> Dict[str, Any]:
    for path, value in parse_overrides(overrides, source):
        node = raw
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ValueError(f"{source}: cannot set {'.'.join(path)}: {'.'.join(path[:i + 1])} is not a mapping")
            node = nxt
        if value is DELETE:
            if path[-1] not in node:
                raise ValueError(f"{source}: cannot remove {'.'.join(path)}: there is no such key")
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return raw


def read_yaml(path: str) -> Dict[str, Any]:
    if not g_pathmgr.exists(path):
        raise ValueError(f"{path}: config file not found")
    with g_pathmgr.open(path, "r") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a mapping of keys")
    return raw


# Keys of the model contract before inputs by name, and where their content went (docs/config.md, "Migrating").
MOVED = {
    "tables": "model.embeddings.<group>.<table> (tables in named embedding groups)",
    "sequence": "model.inputs (named inputs) and model.interests.<name>.inputs (forward argument -> input)",
    "user_features": "model.inputs (e.g. user: {features: [user_id, ...]}) listed in model.tower.inputs",
    "target_in_tower": "model.tower.inputs (list the target input there, or leave it out)",
}


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand(pattern: str, where: str, src: str, columns=None) -> List[str]:
    """A feature family: ``user_f{00..39}`` -> user_f00 ... user_f39 (zero-padded like the first bound);
    ``ctx_*`` -> the dataset's columns that match, sorted (``columns``: the dataset's, or None if unknown)."""
    m = _RANGE.search(pattern)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise ValueError(f"{src}: {where}: empty range in {pattern!r}")
        width = len(m.group(1))
        return [x for i in range(lo, hi + 1)
                for x in expand(pattern[:m.start()] + str(i).zfill(width) + pattern[m.end():], where, src, columns)]
    if "*" in pattern:
        if columns is None:
            raise ValueError(f"{src}: {where}: the pattern {pattern!r} needs the dataset's columns, and there is no "
                             f"dataset at data.path yet (generate it, or name the features: user_f{{00..39}})")
        rx = re.compile("^" + ".*".join(map(re.escape, pattern.split("*"))) + "$")
        found = sorted(c for c in columns if rx.match(c))
        if not found:
            raise ValueError(f"{src}: {where}: no column of the dataset matches {pattern!r}")
        return found
    return [pattern]


def _is_pattern(name: str) -> bool:
    return "*" in name or bool(_RANGE.search(name))


def expand_families(raw: Dict[str, Any], src: str) -> None:
    """Expand feature families in place: table names and features of ``model.embeddings`` (a table whose name
    is a pattern is one table per match, reading the feature of its name unless ``features`` says otherwise,
    with the same pattern expanded in step) and the features of ``model.inputs`` and of inline bindings."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    columns = None
    if any(_is_pattern(str(x)) for x in _family_names(model)):
        from tinrec.data import schema  # local: only configs with families pay for it

        columns = schema.columns(str(data.get("path", "")), data.get("generate"))

    def features(values, where):
        if not isinstance(values, list):
            return values
        return [f for i, v in enumerate(values) for f in (expand(v, f"{where}[{i}]", src, columns)
                                                           if isinstance(v, str) else [v])]

    for g, tables in (model.get("embeddings") or {}).items():
        if not isinstance(tables, dict):
            continue
        out = {}
        for name, spec in tables.items():
            where = f"model.embeddings.{g}.{name}"
            if not _is_pattern(str(name)) or not isinstance(spec, dict):
                if isinstance(spec, dict) and "features" in spec:
                    spec = dict(spec, features=features(spec["features"], f"{where}.features"))
                out[name] = spec
                continue
            names = expand(str(name), where, src, columns)
            given = spec.get("features")
            per = [expand(str(f), f"{where}.features", src, columns) for f in given] if isinstance(given, list) else None
            for k, n in enumerate(names):
                if per is not None and any(len(p) not in (1, len(names)) for p in per):
                    raise ValueError(f"{src}: {where}.features: a pattern there must expand to as many names as the "
                                     f"table's ({len(names)})")
                feats = [p[k] if len(p) == len(names) else p[0] for p in per] if per is not None else [n]
                out[n] = dict(spec, features=feats)
        tables.clear()
        tables.update(out)
    for name, spec in (model.get("inputs") or {}).items():
        if isinstance(spec, dict) and "features" in spec:
            spec["features"] = features(spec["features"], f"model.inputs.{name}.features")
    for name, spec in (model.get("interests") or {}).items():
        bound = spec.get("inputs") if isinstance(spec, dict) else None
        for arg, value in (bound or {}).items() if isinstance(bound, dict) else ():
            if isinstance(value, dict) and "features" in value:
                value["features"] = features(value["features"], f"model.interests.{name}.inputs.{arg}.features")


def _family_names(model: Dict[str, Any]):
    for tables in (model.get("embeddings") or {}).values():
        for name, spec in (tables or {}).items() if isinstance(tables, dict) else ():
            yield name
            if isinstance(spec, dict) and isinstance(spec.get("features"), list):
                yield from spec["features"]
    for spec in (model.get("inputs") or {}).values():
        if isinstance(spec, dict) and isinstance(spec.get("features"), list):
            yield from spec["features"]


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """Read ``path``, apply ``overrides`` and validate everything, components included."""
    raw = apply_overrides(read_yaml(path), overrides)
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    for key, where in MOVED.items():
        if key in model:
            raise ValueError(f"{path}: model.{key}: replaced by {where}; see docs/config.md, 'Migrating'")
    expand_families(raw, path)
    cfg = from_dict(Config, raw, path)
    validate(cfg, path)
    return cfg


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


# ----------------------------------------------------------------------------------------------------------
# Typed conversion
# ----------------------------------------------------------------------------------------------------------


# A number in scientific notation without a decimal point (``1e30``, ``-2E-5``), which PyYAML reads as a string.
_YAML11_FLOAT = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str, src: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where, src)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{src}: {where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{src}: {where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, collections.abc.Sequence):  # List[...] in the schema, Sequence[...] in modules
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{src}: {where}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]", src) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ValueError(f"{src}: {where}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}", src) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, src, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{src}: {where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{src}: {where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # 1e30: YAML 1.1 (PyYAML) reads an exponent without a '.' as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{src}: {where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{src}: {where}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported schema type {tp}")


def from_dict(cls: type, raw: Any, src: str, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys and bad types by key path."""
    prefix = f"{where}." if where else ""
    if not isinstance(raw, dict):
        raise ValueError(f"{src}: {where or 'top level'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
            raise ValueError(f"{src}: {prefix}{key}: unknown key{hint}")
        kwargs[key] = _convert(hints[key], value, f"{prefix}{key}", src)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{src}: {prefix}{name}: required key is missing")
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Components and cross-field checks
# ----------------------------------------------------------------------------------------------------------


def resolve(dotted: str, where: str, src: str) -> Any:
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"{src}: {where}._component_: cannot import {dotted!r}: {e}") from None


# Arguments the model builder supplies (input widths known only at run time): never in YAML.
BUILDER_ARGS = ("dim", "fields")
# Keys of an interest entry that bind it to features rather than go to its constructor.
BINDING_KEYS = ("_component_", "inputs")


def check_component(spec: Dict[str, Any], where: str, src: str) -> type:
    """Check ``spec`` ({_component_, **kwargs}) against the constructor's signature; return the class.

    Each argument must be a parameter and of its annotated type (:func:`_convert`; the values in ``spec``
    are left as given). A constructor with an unannotated parameter is refused: its values could not be
    checked."""
    if "_component_" not in spec:
        raise ValueError(f"{src}: {where}: missing '_component_' (the dotted path of the module class)")
    cls = resolve(str(spec["_component_"]), where, src)
    params = inspect.signature(cls.__init__).parameters
    hints = typing.get_type_hints(cls.__init__)
    for name, p in params.items():
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in hints:
            raise ValueError(f"{src}: {where}._component_: {spec['_component_']} does not annotate its "
                             f"argument '{name}' (annotate every constructor argument so configs can be checked)")
    accepted = {n for n, p in params.items() if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    for key in spec:
        if key in BINDING_KEYS:
            continue
        if key in BUILDER_ARGS:
            raise ValueError(f"{src}: {where}.{key}: set by the model builder from the tables; remove it")
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (accepted: {', '.join(sorted(accepted))})"
            raise ValueError(f"{src}: {where}.{key}: not an argument of {spec['_component_']}{hint}")
        _convert(hints[key], spec[key], f"{where}.{key}", src)
    for name, p in params.items():
        if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty and name not in spec and name not in BUILDER_ARGS:
            raise ValueError(f"{src}: {where}.{name}: required argument of {spec['_component_']} is missing")
    return cls


def validate(cfg: Config, src: str) -> None:
    """Cross-field checks: components, feature bindings, table dims, sizes."""
    if not cfg.model.interests:
        raise ValueError(f"{src}: model.interests: at least one interest module is required")
    for name, spec in cfg.model.interests.items():
        check_component(spec, f"model.interests.{name}", src)
    for key, value in (("train.epochs", cfg.train.epochs), ("train.batch_size", cfg.train.batch_size),
                       ("train.eval_batch_size", cfg.train.eval_batch_size), ("data.max_len", cfg.data.max_len),
                       ("data.time_bins", cfg.data.time_bins), ("data.interval_seconds", cfg.data.interval_seconds),
                       ("data.interval_buckets", cfg.data.interval_buckets)):
        if value < 1:
            raise ValueError(f"{src}: {key}: must be >= 1, got {value}")
    from tinrec.data.format import SAMPLE_PREFIXES  # local: keeps config import light (pyarrow)

    for name, seq in cfg.data.sequences.items():
        if "_" in name or not name or name in SAMPLE_PREFIXES:
            raise ValueError(f"{src}: data.sequences.{name}: a sequence's name is the prefix of its columns "
                             f"(<name>_item, ...): no underscore, not one of {', '.join(SAMPLE_PREFIXES)}")
        if seq.max_len is not None and seq.max_len < 1:
            raise ValueError(f"{src}: data.sequences.{name}.max_len: must be >= 1, got {seq.max_len}")
        if isinstance(seq.skip_recent, bool) or not isinstance(seq.skip_recent, int) or seq.skip_recent < 0:
            raise ValueError(f"{src}: data.sequences.{name}.skip_recent: must be an integer >= 0, got "
                             f"{seq.skip_recent!r}")
        if seq.skip_recent and seq.search is not None:
            raise ValueError(f"{src}: data.sequences.{name}: skip_recent applies to a stored sequence, not a searched "
                             f"one (set it on the sequence searched from)")
    from tinrec.data import search  # local: keeps config import light

    search.check(cfg, src)
    from tinrec.hostmem import CHOICES as HOST_MEMORY  # local: keeps config import light

    if cfg.train.host_memory not in HOST_MEMORY:
        raise ValueError(f"{src}: train.host_memory: expected one of {', '.join(HOST_MEMORY)}, "
                         f"got {cfg.train.host_memory!r}")
    if cfg.data.num_workers < 0:
        raise ValueError(f"{src}: data.num_workers: must be >= 0")
    labels = cfg.data.labels
    if not labels or len(set(labels)) != len(labels) or \
            any(c != "label" and not (c.startswith("label_") and len(c) > 6) for c in labels):
        raise ValueError(f"{src}: data.labels: expected distinct label columns ('label', 'label_<task>', ...), "
                         f"got {labels}")
    for key, oc in (("train.dense_optimizer", cfg.train.dense_optimizer),
                    ("train.sparse_optimizer", cfg.train.sparse_optimizer)):
        def check_rate(where: str, name: str, value: Any) -> None:
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value < 0 or (name == "lr" and value == 0)):
                raise ValueError(f"{src}: {where}.{name}: must be a finite number {'> 0' if name == 'lr' else '>= 0'}, "
                                 f"got {value}")

        for name in ("lr", "weight_decay", "eps"):
            check_rate(key, name, getattr(oc, name))
        if oc.groups and key == "train.sparse_optimizer":
            raise ValueError(f"{src}: {key}.groups: only the dense optimizer has parameter groups (the sparse one "
                             f"is fused into each table's backward)")
        for g, group in enumerate(oc.groups):
            for name in ("lr", "weight_decay"):
                if getattr(group, name) is not None:
                    check_rate(f"{key}.groups[{g}]", name, getattr(group, name))
    if not cfg.train.collective_timeout_s > 0 or not math.isfinite(cfg.train.collective_timeout_s):
        raise ValueError(f"{src}: train.collective_timeout_s: must be a finite number of seconds > 0, "
                         f"got {cfg.train.collective_timeout_s}")
    if not math.isfinite(cfg.train.grad_clip) or cfg.train.grad_clip < 0:
        raise ValueError(f"{src}: train.grad_clip: must be a finite number >= 0 (0 disables), got {cfg.train.grad_clip}")
    if not cfg.model.tables:
        raise ValueError(f"{src}: model.embeddings: no embedding tables declared")
    for tname, t in cfg.model.tables.items():
        key = cfg.model.table_key(tname)
        if isinstance(t.rows, str) and t.rows != "auto":
            raise ValueError(f"{src}: {key}.rows: expected an integer or 'auto', got {t.rows!r}")
        if isinstance(t.rows, int) and t.rows < 1:
            raise ValueError(f"{src}: {key}.rows: must be >= 1")
        if t.dim < 1 or t.dim % 4:
            raise ValueError(f"{src}: {key}.dim: must be a positive multiple of 4 (fbgemm's fused "
                             f"embedding kernels), got {t.dim}")
        if t.pooling not in ("sum", "mean"):
            raise ValueError(f"{src}: {key}.pooling: expected 'sum' or 'mean', got {t.pooling!r}")
        if t.pooling != "sum" and not t.pooled:
            raise ValueError(f"{src}: {key}.pooling: {t.pooling} pools a pooled table's ids; this table has "
                             f"pooled: false (jagged: one vector per behaviour)")
        if t.init_max is not None and (isinstance(t.init_max, bool) or not isinstance(t.init_max, (int, float))
                                       or not 0 < t.init_max < float("inf")):
            raise ValueError(f"{src}: {key}.init_max: must be a finite number > 0, got {t.init_max!r}")
    from tinrec import inputs  # local: keeps config import light
    from tinrec.features import check_tables

    check_tables(cfg, src)
    inputs.bindings(cfg, src)
