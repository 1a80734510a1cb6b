"""Named inputs: what the input stage hands the interest modules and the tower, and how they bind to it.

A config declares inputs by name (``model.inputs``); each interest module binds its forward arguments to
them (``model.interests.<name>.inputs: {forward argument: input name or inline spec}``), and the tower lists
the ones it concatenates after the interest outputs (``model.tower.inputs``). :func:`resolve` turns a spec
(``tinrec.config.InputSpec``) into an :class:`Input`: what to compute, from which embedding group, and its
shape. Inputs with the same :attr:`Input.key` are one input: the input stage (``tinrec/model.py``
``InputArch``) computes each key once per batch, however many modules read it.

Kinds and shapes (B batch, L the batch's longest kept sequence, D width, F fields):

==========================================  ==================  ====================================
spec                                        of a sequence       of a sample
==========================================  ==================  ====================================
``{features: [...]}`` (concat, default)     ``[B, L, sum d]``   ``[B, sum d]``
``{features: [...], combine: sum}``         ``[B, L, D]``       ``[B, D]``
``{features: [...], combine: stack}``       ``[B, L, F, D]``    ``[B, F, D]``
``{features: [...], negatives: in_batch}``  ``[B, L, sum d]``   (sequences only)
``{mask: SEQUENCE}``                        ``[B, L]`` bool
``{dense: COLUMN}`` / ``{dense: [...]}``    ``[B, L]`` / ``[B, L, F]``  ``[B]`` / ``[B, F]``
``{label: LABEL}``                                              ``[B]`` float 0/1 in training, None else
==========================================  ==================  ====================================

Rules checked here, each error naming the key: exactly one of ``features`` / ``mask`` / ``dense``; every
feature read by a table (``group`` says which group to read when a feature is in several); the features of
one input all of one sequence, or all per sample (a sequence feature read by a pooled table is per sample: its
behaviours summed or averaged, the table's ``pooling``); ``sum`` and ``stack`` need one width. Binding (:func:`bindings`): every argument of a module's ``forward`` without a
default is bound, every binding is an argument of ``forward``; a binding set to ``null`` leaves an optional
argument unbound (the module's default, e.g. TIN without temporal encodings). A label input is for a module's
auxiliary loss (SIM's soft search): it is None outside training, so no prediction can depend on it.

The model builder supplies the constructor arguments ``dim`` and ``fields``: the width D and the number of
fields F of the input bound to the first argument of the module's ``forward``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

from tinrec.data import derived, search
from tinrec.features import known_columns, sequence_of, used_features

if TYPE_CHECKING:  # pragma: no cover
    from tinrec.config import Config, InputSpec


@dataclass(frozen=True)
class Input:
    """One distinct input of the input stage.

    Attributes:
        key: identity: two bindings with the same key read the same tensor.
        kind: ``ids`` (embedded features), ``mask``, ``dense`` or ``label`` (``fields``: the label's column).
        sequence: the data sequence it spans (``[B, L, ...]``), or None for per-sample inputs (``[B, ...]``).
        groups: per feature, the embedding group it is read from (``ids``).
        features: the features (``ids``) or columns (``dense``), in order.
        pooled: per feature, whether its table is pooled (read from the group's EmbeddingBagCollection).
        combine: ``concat``, ``sum`` or ``stack``.
        negatives: ``in_batch`` or None.
        squeeze: a ``dense`` input of one column given as a string (no trailing field axis).
        width: D, the last axis (the sum of the widths for ``concat``); 1 for dense columns.
        fields: F, the number of features or columns.
        parts: hand over the per-feature tensors (a list) instead of combining them (the tower's inputs).
        indexed: hand over the sequence as distinct rows + index (``modules/indexed.py``), for a module argument
            listed in its class's ``INDEXED_INPUTS`` (``model.indexed_sequences``).
    """

    key: str
    kind: str
    sequence: Optional[str]
    groups: Tuple[str, ...] = ()
    features: Tuple[str, ...] = ()
    pooled: Tuple[bool, ...] = ()
    combine: str = "concat"
    negatives: Optional[str] = None
    squeeze: bool = False
    width: int = 0
    fields: int = 1
    parts: bool = False
    indexed: bool = False

    def shape(self) -> str:
        """The tensor's shape, for messages and docs."""
        lead = ["B", "L"] if self.sequence else ["B"]
        if self.kind == "label":
            return "[B]"
        if self.kind == "mask":
            return "[B, L]"
        if self.kind == "dense":
            return "[" + ", ".join(lead + ([] if self.squeeze else [str(self.fields)])) + "]"
        tail = [str(self.fields), str(self.width)] if self.combine == "stack" else [str(self.width)]
        return "[" + ", ".join(lead + tail) + "]" + (" as rows + index" if self.indexed else "")

    def can_index(self) -> bool:
        """Whether this input can be handed over as distinct rows + index: a sequence of embedded features joined
        side by side (concat), of one width, no negatives drawn."""
        return (self.kind == "ids" and self.sequence is not None and self.combine == "concat"
                and self.negatives is None and not self.parts and self.width % self.fields == 0)


def owners(cfg: "Config") -> Dict[str, Dict[str, str]]:
    """Group -> feature -> the table of that group that reads it."""
    return {g: {f: name for name, t in tables.items() for f in t.features} for g, tables in cfg.model.embeddings.items()}


def resolve(spec: "InputSpec", where: str, cfg: "Config", src: str) -> Input:
    """Check ``spec`` (found at config key ``where``) and describe the input it makes."""
    given = [k for k in ("features", "mask", "dense", "label") if getattr(spec, k) is not None]
    if len(given) != 1:
        raise ValueError(f"{src}: {where}: set exactly one of features, mask, dense, label "
                         f"(got {', '.join(given) or 'none'})")
    if spec.label is not None:
        if spec.label not in cfg.data.labels:
            raise ValueError(f"{src}: {where}.label: {spec.label!r} is not one of data.labels ({', '.join(cfg.data.labels)})")
        return Input(key=f"label:{spec.label}", kind="label", sequence=None, features=(spec.label,), width=1,
                     squeeze=True, fields=cfg.data.labels.index(spec.label))
    if spec.mask is not None:
        seqs = ({sequence_of(f) for f in used_features(cfg)} | set(cfg.data.sequences)) - {None}
        if spec.mask not in seqs:
            raise ValueError(f"{src}: {where}.mask: {spec.mask!r} is not a sequence any table reads "
                             f"(sequences: {', '.join(sorted(seqs)) or 'none'})")
        return Input(key=f"mask:{spec.mask}", kind="mask", sequence=spec.mask)
    if spec.dense is not None:
        cols = [spec.dense] if isinstance(spec.dense, str) else list(spec.dense)
        stored, searches = known_columns(cfg), search.of_config(cfg)
        for c in cols:
            if derived.lookup_dense(c) is None and stored is not None and search.stored_column(c, searches) not in stored:
                raise ValueError(f"{src}: {where}.dense: {c!r} is not a column of the dataset {cfg.data.path} "
                                 f"nor a derived value (<sequence>_session)")
        seqs = {sequence_of(c) for c in cols}
        if len(seqs) != 1 or not cols:
            raise ValueError(f"{src}: {where}.dense: the columns must all belong to one sequence, or all be "
                             f"per sample (got {cols})")
        squeeze = isinstance(spec.dense, str)
        return Input(key=_key("dense", seqs.pop() or "", cols, squeeze), kind="dense", sequence=sequence_of(cols[0]),
                     features=tuple(cols), squeeze=squeeze, width=1, fields=len(cols))
    features = list(spec.features)
    if not features:
        raise ValueError(f"{src}: {where}.features: empty")
    own = owners(cfg)
    if spec.group is not None and spec.group not in own:
        raise ValueError(f"{src}: {where}.group: no embedding group {spec.group!r} (groups: {', '.join(own)})")
    groups = []
    for f in features:
        homes = [spec.group] if spec.group is not None else [g for g in own if f in own[g]]
        if spec.group is not None and f not in own[spec.group]:
            raise ValueError(f"{src}: {where}.features: {f!r} is not read by any table of group {spec.group!r}")
        if not homes:
            raise ValueError(f"{src}: {where}.features: {f!r} is not read by any table of model.embeddings")
        if len(homes) > 1:
            raise ValueError(f"{src}: {where}.group: {f!r} is read in groups {', '.join(homes)}: say which one")
        groups.append(homes[0])
    if len(set(features)) != len(features):
        raise ValueError(f"{src}: {where}.features: a feature is listed twice")
    tables = [cfg.model.embeddings[g][own[g][f]] for f, g in zip(features, groups)]
    dims = [t.dim for t in tables]
    pooled = tuple(t.pooled for t in tables)
    # a pooled table turns a sequence's ids into one vector per sample: a per-sample feature here
    seqs = {None if p else sequence_of(f) for f, p in zip(features, pooled)}
    if len(seqs) != 1:
        raise ValueError(f"{src}: {where}.features: {features} mix sequences and per-sample features (or two "
                         f"sequences); an input spans one")
    seq = seqs.pop()
    if spec.combine in ("sum", "stack") and len(set(dims)) != 1:
        raise ValueError(f"{src}: {where}.combine: {spec.combine} needs features of one width, got "
                         + ", ".join(f"{f} {d}" for f, d in zip(features, dims)))
    if spec.negatives is not None and (seq is None or spec.combine != "concat"):
        raise ValueError(f"{src}: {where}.negatives: needs sequence features combined by concat")
    width = sum(dims) if spec.combine == "concat" else dims[0]
    key = _key("ids", groups, features, spec.combine, spec.negatives)
    return Input(key=key, kind="ids", sequence=seq, groups=tuple(groups), features=tuple(features), pooled=pooled,
                 combine=spec.combine, negatives=spec.negatives, width=width, fields=len(features))


def _key(*parts) -> str:
    return json.dumps(parts, separators=(",", ":"))


def named(cfg: "Config", src: str = "config") -> Dict[str, Input]:
    """``model.inputs``, resolved."""
    return {name: resolve(spec, f"model.inputs.{name}", cfg, src) for name, spec in cfg.model.inputs.items()}


def _ref(value, where: str, cfg: "Config", by_name: Mapping[str, Input], src: str) -> Input:
    from tinrec.config import InputSpec, _convert

    if isinstance(value, str):
        if value not in by_name:
            raise ValueError(f"{src}: {where}: no input named {value!r} in model.inputs "
                             f"(inputs: {', '.join(by_name) or 'none'})")
        return by_name[value]
    return resolve(_convert(InputSpec, value, where, src), where, cfg, src)


def forward_arguments(cls: type) -> Dict[str, inspect.Parameter]:
    """The arguments of ``cls.forward`` that a binding can name, in order."""
    return {n: p for n, p in inspect.signature(cls.forward).parameters.items()
            if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def first_argument(cls: type) -> Optional[str]:
    """The forward argument whose input sizes the module (``dim``, ``fields``)."""
    return next(iter(forward_arguments(cls)), None)


def interest_bindings(cfg: "Config", name: str, by_name: Mapping[str, Input], src: str = "config"
                      ) -> Dict[str, Input]:
    """The forward arguments of interest module ``name`` -> their inputs, checked against ``forward``."""
    from tinrec.config import resolve as resolve_component

    spec = cfg.model.interests[name]
    where = f"model.interests.{name}.inputs"
    raw = spec.get("inputs")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{src}: {where}: missing (a mapping of forward arguments to named inputs)")
    cls = resolve_component(str(spec["_component_"]), f"model.interests.{name}", src)
    params = forward_arguments(cls)
    out: Dict[str, Input] = {}
    for arg, value in raw.items():
        if arg not in params:
            raise ValueError(f"{src}: {where}.{arg}: not an argument of {spec['_component_']}.forward "
                             f"(its arguments: {', '.join(params)})")
        if value is not None:
            out[arg] = _ref(value, f"{where}.{arg}", cfg, by_name, src)
    for arg, p in params.items():
        if p.default is inspect.Parameter.empty and arg not in out:
            raise ValueError(f"{src}: {where}.{arg}: argument of {spec['_component_']}.forward has no binding")
    first = first_argument(cls)
    if first is None or first not in out:
        raise ValueError(f"{src}: {where}.{first}: the first argument of {spec['_component_']}.forward must be "
                         f"bound (the builder sizes the module from it)")
    return out


def bindings(cfg: "Config", src: str = "config") -> Tuple[Dict[str, Dict[str, Input]], List[Input]]:
    """Every interest module's bindings and the tower's inputs, resolved and checked."""
    by_name = named(cfg, src)
    interests = {name: interest_bindings(cfg, name, by_name, src) for name in cfg.model.interests}
    tower = [_ref(v, f"model.tower.inputs[{i}]", cfg, by_name, src) for i, v in enumerate(cfg.model.tower.inputs)]
    for i, inp in enumerate(tower):
        if inp.kind != "ids" or inp.sequence is not None or inp.combine == "stack":
            raise ValueError(f"{src}: model.tower.inputs[{i}]: the tower concatenates [B, D] inputs; this one is "
                             f"{inp.shape()}")
    return interests, tower


def dense_used(cfg: "Config") -> List[str]:
    """Dense columns some module reads (``model.inputs.X.dense``, inline bindings included): what the loader
    passes in ``Batch.dense``."""
    interests, _ = bindings(cfg)
    return sorted({c for b in interests.values() for i in b.values() if i.kind == "dense" for c in i.features})
