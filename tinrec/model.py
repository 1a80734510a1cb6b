"""Model assembly: the one place where TorchRec meets ``modules/``.

A model is a chain of named stages::

    SparseArch     every lookup, through TorchRec: per embedding group (``model.embeddings``) one
                   EmbeddingCollection (its jagged tables, one width) and one EmbeddingBagCollection (its pooled
                   tables); built on ``meta``, sharded by DMP
    DenseArch      (one FX leaf for the training pipeline)
      InputArch      lookups + the batch's dense values -> the named inputs (``tinrec/inputs.py``), each distinct
                     one computed once per batch: padded ``[B, L, D]`` sequences, masks, ``[B, D]`` / ``[B, F, D]``
                     per-sample embeddings, dense values
      InterestArch   the interest modules from ``modules/`` (``_component_`` in config), each called with the
                     inputs its forward arguments are bound to
      OverArch       the tower, an MLP over [interest outputs, ``model.tower.inputs``] -> one logit per label,
                     and the loss: BCE (weighted: padding batches count 0) + the modules' named losses. A module
                     whose class sets ``LOGIT_OUTPUT = True`` outputs logits [B, T] instead, added to the
                     tower's (Wide&Deep's wide part; DIAN's mixture of its own towers)

``Model.forward(batch)`` returns ``(loss, (logits, labels, user_ids, weights, loss_terms))`` as
``TrainPipelineSparseDist`` expects; ``loss_terms`` names every term of the loss (``bce``, and
``<interest>.<name>`` for the losses a module returns beside its output: ``dien.aux``), detached, for logging.

Legend: B batch, L padded history length (the batch's longest kept history), D behaviour width.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection, KeyedJaggedTensor, KeyedTensor
from torchrec.sparse.jagged_tensor import JaggedTensor

from tinrec import inputs as inputs_mod
from tinrec import state
from tinrec.config import BINDING_KEYS, Config, resolve
from tinrec.data.derived import dense_padding, integer_dense
from tinrec.dedup import distinct_rows, expanded
from tinrec.features import table_configs
from tinrec.guard import finite_or_zero
from tinrec.inputs import Input
from tinrec.modules import indexed
from tinrec.modules.combine import ExpertCombine
from tinrec.modules.mlp import MLP


class SparseArch(nn.Module):
    """Every embedding lookup: per embedding group, an EmbeddingCollection (jagged tables) and an
    EmbeddingBagCollection (pooled tables). Module paths: ``ecs.<group>.embeddings.<table>``,
    ``ebcs.<group>.embedding_bags.<table>`` (a table's checkpoint and plan keys name its group and itself)."""

    def __init__(self, *, groups: Mapping[str, Tuple[list, list]], device: torch.device) -> None:
        super().__init__()
        self.ecs = nn.ModuleDict({g: EmbeddingCollection(tables=seq, device=device)
                                  for g, (seq, _) in groups.items() if seq})
        self.ebcs = nn.ModuleDict({g: EmbeddingBagCollection(tables=bags, device=device)
                                   for g, (_, bags) in groups.items() if bags})

    def forward(self, features: KeyedJaggedTensor) -> Tuple[Dict[str, Dict[str, JaggedTensor]], Dict[str, KeyedTensor]]:
        seqs = {g: ec(features) for g, ec in self.ecs.items()}
        pooled = {g: ebc(features) for g, ebc in self.ebcs.items()}
        return seqs, pooled


def _slots(lengths_B: torch.Tensor, L: int, N: int) -> torch.Tensor:
    """Flat slot ``b * L + j`` in a right-padded [B, L] layout of each of the N jagged values (row b's j-th).

    Built from the lengths alone (``output_size=N`` comes from the values' shape), so it needs no host sync.
    """
    B = lengths_B.numel()
    lengths_B = lengths_B.long()
    row_N = torch.repeat_interleave(torch.arange(B, device=lengths_B.device), lengths_B, output_size=N)
    start_B = torch.cumsum(lengths_B, 0) - lengths_B
    return row_N * L + torch.arange(N, device=lengths_B.device) - start_B[row_N]


def _padded(values_Nd: torch.Tensor, slots_N: torch.Tensor, B: int, L: int) -> torch.Tensor:
    """[N, d] jagged values -> [B, L, d] zero-padded on the right: a row copy into the slots of
    :func:`_slots` (its gradient is a row gather). Pure torch, so it runs wherever torch does (a CUDA torch
    beside the CPU build of fbgemm included)."""
    d = values_Nd.shape[-1]
    if values_Nd.shape[0] == B * L:  # every row is full (N = B * L): the values already are that layout, no copy
        return values_Nd.reshape(B, L, d)
    # in place into the fresh zeros: no second [B * L, d] tensor (the out-of-place op copies the zeros first)
    return values_Nd.new_zeros(B * L, d).index_copy_(0, slots_N, values_Nd).view(B, L, d)


def _sum(tensors: List[torch.Tensor]) -> torch.Tensor:
    """Sum without Python's ``sum`` start value 0 (``0 + t`` would copy the first tensor)."""
    return functools.reduce(operator.add, tensors)


class InputArch(nn.Module):
    """Lookups and dense values -> every distinct named input (no parameters).

    Per sequence, the mask and the padding slots are computed once (from ``Batch.lengths``); per input key,
    the tensor once, however many modules read it."""

    def __init__(self, *, inputs: Sequence[Input]) -> None:
        super().__init__()
        self.inputs = list({i.key: i for i in inputs}.values())
        # (input, the group's keys) -> None (widths differ), "view" (the group's own order) or the field order
        self._stack_index: Dict[tuple, object] = {}

    def _pooled_stack(self, i: Input, kt: KeyedTensor) -> Optional[torch.Tensor]:
        """A field stack of pooled features of one group, as a view of the group's pooled values ([B, F, D];
        an index_select when the input's order is not the group's): no per-feature split and stack. None when
        the group's pooled features are not all of the stack's width."""
        values = kt.values()
        key = (i.key, tuple(kt.keys()))
        if key not in self._stack_index:
            pos = {k: n for n, k in enumerate(kt.keys())}
            order = [pos[f] for f in i.features]
            self._stack_index[key] = (None if any(d != i.width for d in kt.length_per_key()) else
                                      "view" if order == list(range(len(pos))) else
                                      torch.tensor(order, device=values.device))
        index = self._stack_index[key]
        if index is None:
            return None
        values_BFD = values.view(values.shape[0], -1, i.width)
        return values_BFD if isinstance(index, str) else values_BFD.index_select(1, index)

    def forward(self, seqs: Mapping[str, Mapping[str, JaggedTensor]], pooled: Mapping[str, KeyedTensor],
                lengths: Mapping[str, torch.Tensor], dense: Mapping[str, torch.Tensor], labels_BT: torch.Tensor
                ) -> Dict[str, torch.Tensor]:
        B = labels_BT.shape[0]
        layout: Dict[str, Tuple[int, torch.Tensor]] = {}  # sequence -> (L, mask [B, L])
        slots: Dict[str, torch.Tensor] = {}
        pooled_dicts: Dict[str, Dict[str, torch.Tensor]] = {}

        def seq_layout(seq: str) -> Tuple[int, torch.Tensor]:
            if seq not in layout:
                lengths_B = lengths[seq]
                L = max(int(lengths_B.max()) if B else 0, 1)
                layout[seq] = (L, torch.arange(L, device=lengths_B.device)[None, :] < lengths_B[:, None])
            return layout[seq]

        def pad(seq: str, values_Nd: torch.Tensor) -> torch.Tensor:
            L, _ = seq_layout(seq)
            if seq not in slots:
                slots[seq] = _slots(lengths[seq], L, values_Nd.shape[0])
            return _padded(values_Nd, slots[seq], B, L)

        def scalar(group: str, f: str, pooled_f: bool) -> torch.Tensor:
            if pooled_f:
                if group not in pooled_dicts:
                    pooled_dicts[group] = pooled[group].to_dict()
                return pooled_dicts[group][f]
            return expanded([seqs[group][f]]).view(B, -1)

        out: Dict[str, torch.Tensor] = {}
        for i in self.inputs:
            if i.kind == "label":  # for auxiliary losses: withheld outside training, so no output can use it
                out[i.key] = labels_BT[:, i.fields] if self.training else None
            elif i.kind == "mask":
                out[i.key] = seq_layout(i.sequence)[1]
            elif i.kind == "dense":
                cols = [dense[c] for c in i.features]
                if i.sequence is None:
                    out[i.key] = cols[0] if i.squeeze else torch.stack(cols, dim=-1)
                else:
                    flat = cols[0].unsqueeze(-1) if len(cols) == 1 else torch.stack(cols, dim=-1)
                    fill = dense_padding(i.features[0]) if len(cols) == 1 else 0
                    padded = pad(i.sequence, flat - fill) + fill if fill else pad(i.sequence, flat)
                    out[i.key] = padded.squeeze(-1) if i.squeeze else padded
            elif i.sequence is not None:
                jts = [seqs[g][f] for g, f in zip(i.groups, i.features)]
                if i.indexed and len({jt.values().shape[-1] for jt in jts}) == 1:
                    # distinct rows + the index of every behaviour's row per field (modules/indexed.py): no
                    # [B, L, D] tensor; padding points at row 0
                    rows_UD, idx_NF = distinct_rows(jts)
                    L, _ = seq_layout(i.sequence)
                    if i.sequence not in slots:
                        slots[i.sequence] = _slots(lengths[i.sequence], L, idx_NF.shape[0])
                    index_BLF = idx_NF.new_zeros(B * L, idx_NF.shape[1]).index_copy_(0, slots[i.sequence], idx_NF)
                    out[i.key] = indexed.IndexedSequence(rows_UD, index_BLF.view(B, L, -1))
                elif i.combine == "concat":
                    # every occurrence written straight into the joined [N, sum d] tensor (tinrec/dedup.py)
                    flat_Nd = expanded(jts)
                    if i.negatives == "in_batch":
                        # one negative per behaviour: a behaviour drawn uniformly from the whole batch's
                        # sequences (DIEN's auxiliary loss; the global torch RNG is seeded and checkpointed).
                        # index_select: its CPU backward sums duplicate picks in a fixed order (advanced
                        # indexing's does not, which made DIEN runs differ in the 9th digit and then diverge)
                        pick_N = torch.randint(0, max(flat_Nd.shape[0], 1), (flat_Nd.shape[0],), device=flat_Nd.device)
                        flat_Nd = torch.index_select(flat_Nd, 0, pick_N)
                    out[i.key] = pad(i.sequence, flat_Nd)
                elif i.combine == "sum":
                    out[i.key] = pad(i.sequence, _sum([expanded([jt]) for jt in jts]))
                else:  # stack: [N, F, d] padded as [N, F * d] (one width: the joined layout is the stack's)
                    out[i.key] = pad(i.sequence, expanded(jts)).view(B, -1, i.fields, i.width)
            else:
                if i.combine == "stack" and all(i.pooled) and len(set(i.groups)) == 1 and not i.parts:
                    stacked = self._pooled_stack(i, pooled[i.groups[0]])
                    if stacked is not None:
                        out[i.key] = stacked
                        continue
                parts = [scalar(g, f, p) for g, f, p in zip(i.groups, i.features, i.pooled)]
                if i.parts:
                    out[i.key] = parts  # the tower's: concatenated there with the rest, one concatenation
                elif i.combine == "concat":
                    out[i.key] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
                elif i.combine == "sum":
                    out[i.key] = _sum(parts)
                else:
                    out[i.key] = torch.stack(parts, dim=1)
        return out


class InterestArch(nn.Module):
    """The interest modules, each called with the inputs its forward arguments are bound to."""

    def __init__(self, *, interests: Mapping[str, nn.Module], bindings: Mapping[str, Mapping[str, Input]]) -> None:
        super().__init__()
        self.interests = nn.ModuleDict(dict(interests))
        self.bindings = {name: {arg: i.key for arg, i in b.items()} for name, b in bindings.items()}

    def module_inputs(self, values: Mapping[str, torch.Tensor], dense: bool = True
                      ) -> Dict[str, Dict[str, torch.Tensor]]:
        """Each module's forward arguments; ``dense``: sequences handed over as rows + index made tensors."""
        def form(x):
            return indexed.dense(x) if dense and isinstance(x, indexed.IndexedSequence) else x
        return {name: {arg: form(values[key]) for arg, key in b.items()} for name, b in self.bindings.items()}

    def forward(self, values: Mapping[str, torch.Tensor]) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        """Returns the modules' outputs ([B, output_dim] each, config order) and their named losses
        (``<interest>.<name>``)."""
        parts, losses = [], {}
        for name, module in self.interests.items():
            out = module(**{arg: values[key] for arg, key in self.bindings[name].items()})
            if isinstance(out, tuple):  # (output, {loss name: scalar}): the module's own losses, e.g. DIEN's aux
                out, named = out
                if not isinstance(named, dict):
                    raise TypeError(f"model.interests.{name}: forward returned a tuple whose second item is not a "
                                    f"dict of named losses (got {type(named).__name__})")
                losses.update({f"{name}.{k}": v for k, v in named.items()})
            parts.append(out)
        return parts, losses


class OverArch(nn.Module):
    """The tower over [interest outputs, tower inputs] -> logits [B, T], and the loss."""

    def __init__(self, *, tower: nn.Module, inputs: Sequence[Input], labels: Sequence[str] = ("label",),
                 combine: Optional[nn.Module] = None, logit_parts: Sequence[int] = ()) -> None:
        super().__init__()
        self.tower = tower
        self.inputs = [i.key for i in inputs]
        self.labels = list(labels)  # one tower output per label (data.labels)
        self.combine = combine  # model.tower.combine other than concat (modules/combine.py)
        self.logit_parts = set(logit_parts)  # interest outputs that are logits, added to the tower's (LOGIT_OUTPUT)

    def forward(self, parts: List[torch.Tensor], values: Mapping[str, torch.Tensor], extra: Mapping[str, torch.Tensor],
                labels: torch.Tensor, weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        context = [t for k in self.inputs for t in values[k]]
        added = [p for n, p in enumerate(parts) if n in self.logit_parts]
        parts = [p for n, p in enumerate(parts) if n not in self.logit_parts]
        tower_in = (list(parts) if self.combine is None or not parts else [self.combine(list(parts), context)]) + context
        x = torch.cat(tower_in, dim=-1) if tower_in else labels.new_zeros(labels.shape[0], 0)
        logits = self.tower(x)  # [B, T]
        for logit_BT in added:
            logits = logits + logit_BT
        per_sample = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        bce_T = (per_sample * weights.unsqueeze(-1)).sum(0) / weights.sum().clamp(min=1.0)
        names = ["bce"] if len(self.labels) == 1 else [f"bce.{name}" for name in self.labels]
        terms = {**{n: bce_T[t] for t, n in enumerate(names)}, **extra}
        loss = _sum(list(terms.values()))
        return loss, logits, {k: v.detach() for k, v in terms.items()}


class DenseArch(nn.Module):
    """InputArch -> InterestArch -> OverArch. One FX leaf of the training pipeline."""

    def __init__(self, *, input_arch: InputArch, interest_arch: InterestArch, over_arch: OverArch) -> None:
        super().__init__()
        self.input_arch = input_arch
        self.interest_arch = interest_arch
        self.over_arch = over_arch
        # train.on_nonfinite=skip: a non-finite gradient of the lookups is zeroed before the fused embedding
        # update (tinrec/guard.py), so no NaN ever enters a table
        self.zero_nonfinite_lookup_grads = False

    def forward(self, seqs: Dict[str, Dict[str, JaggedTensor]], pooled: Dict[str, KeyedTensor], labels: torch.Tensor,
                weights: torch.Tensor, lengths: Dict[str, torch.Tensor], dense: Dict[str, torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Returns ``(loss, logits [B, T], terms)`` for ``labels [B, T]``: ``terms`` maps each loss term's name
        (``bce``, or ``bce.<label>`` per label with several labels, and ``<interest>.<name>`` for the named
        losses an interest module returns) to its value; ``loss`` is their sum."""
        if self.zero_nonfinite_lookup_grads and self.training:
            looked_up = [jt.values() for d in seqs.values() for jt in d.values()] + [kt.values() for kt in pooled.values()]
            for t in {id(t): t for t in looked_up}.values():  # deduplicated features share one tensor of rows
                if t.requires_grad:
                    t.register_hook(finite_or_zero)
        values = self.input_arch(seqs, pooled, lengths, dense, labels)
        parts, extra = self.interest_arch(values)
        return self.over_arch(parts, values, extra, labels, weights)


class Model(nn.Module):
    """SparseArch -> DenseArch; forward returns ``(loss, (logits, labels, user_ids, weights, loss_terms))``."""

    def __init__(self, *, sparse_arch: SparseArch, dense_arch: DenseArch) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = dense_arch
        self.cross_batch_buffers()  # checks the modules' declarations now, before anything trains

    def interest_modules(self) -> Dict[str, nn.Module]:
        """The interest modules by config name (``model.interests``)."""
        return dict(self.dense_arch.interest_arch.interests.items())

    def module_inputs(self, batch, dense: bool = True) -> Dict[str, Dict[str, torch.Tensor]]:
        """Each interest module's forward arguments for ``batch``, as training feeds them (for analyses and
        benchmarks of a module alone; on an unsharded model); ``dense``: a sequence handed over as rows + index
        (``modules/indexed.py``) as its [B, L, D] tensor."""
        seqs, pooled = self.sparse_arch(batch.sparse)
        values = self.dense_arch.input_arch(seqs, pooled, batch.lengths, batch.dense, batch.labels)
        return self.dense_arch.interest_arch.module_inputs(values, dense)

    def cross_batch_buffers(self) -> List[state.StateBuffer]:
        """The interest modules' cross-batch state buffers as they are now (``tinrec/state.py``)."""
        return state.collect(self.interest_modules())

    def forward(self, batch):
        seqs, pooled = self.sparse_arch(batch.sparse)
        loss, logits, terms = self.dense_arch(seqs, pooled, batch.labels, batch.weights, batch.lengths, batch.dense)
        return loss, (logits.detach(), batch.labels, batch.user_ids, batch.weights, terms)


def build_interest(spec: Mapping, dim: int, where: str, fields: int = 1) -> nn.Module:
    """Build one interest module; the builder supplies ``dim`` and, to constructors that take it, ``fields``:
    the width and the field count of the input bound to the module's first forward argument."""
    cls = resolve(str(spec["_component_"]), where, "config")
    kwargs = {k: v for k, v in spec.items() if k not in BINDING_KEYS}
    if "fields" in inspect.signature(cls.__init__).parameters:
        kwargs["fields"] = fields
    module = cls(dim=dim, **kwargs)
    if not isinstance(getattr(module, "output_dim", None), int):
        raise ValueError(f"{where}: {spec['_component_']} has no integer attribute 'output_dim'")
    return module


def _example(i: Input) -> Optional[torch.Tensor]:
    """A zero tensor of ``i``'s shape for a batch of 2 and sequences of 3 (rows of 2 and 1 behaviours)."""
    if i.indexed:
        return indexed.example(2, 3, i.fields, i.width)
    lead = [2, 3] if i.sequence else [2]
    if i.kind == "label":
        return None  # withheld outside training (InputArch)
    if i.kind == "mask":
        return torch.tensor([[True, True, False], [True, False, False]])
    if i.kind == "dense":
        integer = all(integer_dense(c) for c in i.features)
        return torch.zeros(lead + ([] if i.squeeze else [i.fields]), dtype=torch.int64 if integer else torch.float32)
    return torch.zeros(lead + ([i.fields, i.width] if i.combine == "stack" else [i.width]))


def dry_run(module: nn.Module, bound: Mapping[str, Input], where: str) -> None:
    """Call ``module`` once on zero inputs of the bound shapes, so that inputs that do not fit it (a temporal
    encoding narrower than the behaviours) are a config error naming the key, before anything trains. In
    eval mode, without gradients, on a forked RNG: nothing about the module or the run changes."""
    was_training = module.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            module.eval()(**{arg: _example(i) for arg, i in bound.items()})
    except (ValueError, RuntimeError, TypeError, IndexError) as e:
        shapes = ", ".join(f"{arg} {i.shape()}" for arg, i in bound.items())
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{where}.inputs: the bound inputs ({shapes}) do not fit the module: {first}") from None
    finally:
        module.train(was_training)


class Bias(nn.Module):
    """The tower when nothing is left to concatenate (every interest output is a logit): one bias per label."""

    def __init__(self, labels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(labels))

    def forward(self, x_B0: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x_B0.shape[0], -1)


def build_model(cfg: Config, rows: Mapping[str, int], *, sparse_device: torch.device = torch.device("meta")) -> Model:
    """Build the model from config; embedding tables on ``sparse_device`` (``meta`` until DMP shards them)."""
    sparse = SparseArch(groups=table_configs(cfg, rows), device=sparse_device)
    bindings, tower_inputs = inputs_mod.bindings(cfg)
    if cfg.model.indexed_sequences:  # the arguments a module takes as rows + index get them so
        for name, bound in bindings.items():
            cls = resolve(str(cfg.model.interests[name]["_component_"]), name, "config")
            takes = getattr(cls, "INDEXED_INPUTS", ())
            for arg in takes:
                if arg in bound and bound[arg].can_index():
                    bound[arg] = dataclasses.replace(bound[arg], key=f"rows:{bound[arg].key}", indexed=True)
    interests, width, logit_parts = {}, 0, []
    for n, (name, bound) in enumerate(bindings.items()):
        first = bound[inputs_mod.first_argument(resolve(str(cfg.model.interests[name]["_component_"]), name, "config"))]
        interests[name] = build_interest(cfg.model.interests[name], first.width, f"model.interests.{name}",
                                         fields=first.fields)
        dry_run(interests[name], bound, f"model.interests.{name}")
        if getattr(interests[name], "needs_label", False) and "label_B" not in bound:
            raise ValueError(f"model.interests.{name}: {cfg.model.interests[name]['_component_']} learns part of "
                             f"itself from the click label (SIM's soft search: its auxiliary loss); bind it: "
                             f"model.inputs.label: {{label: label}}, model.interests.{name}.inputs.label_B: label")
        if getattr(interests[name], "LOGIT_OUTPUT", False):  # its output is a logit per label, added to the tower's
            if interests[name].output_dim != len(cfg.data.labels):
                raise ValueError(f"model.interests.{name}: {cfg.model.interests[name]['_component_']} outputs logits "
                                 f"({interests[name].output_dim}), one per label of data.labels "
                                 f"({len(cfg.data.labels)})")
            logit_parts.append(n)
            continue
        width += interests[name].output_dim
        if cfg.model.compile:  # in place: the parameter names (and so checkpoints) do not change
            interests[name].compile(dynamic=True)
    context_width = sum(i.width for i in tower_inputs)
    combine = None
    if cfg.model.tower.combine != "concat":
        try:
            combine = ExpertCombine(how=cfg.model.tower.combine, context_dim=context_width,
                                    widths=[m.output_dim for n, m in enumerate(interests.values())
                                            if n not in logit_parts])
        except ValueError as e:
            raise ValueError(f"model.tower.combine: {e} (model.interests: "
                             f"{', '.join(f'{n} {m.output_dim}' for n, m in interests.items())})") from None
        width = combine.output_dim
    width += context_width
    if width == 0 and cfg.model.tower.hidden:
        raise ValueError("model.tower.hidden: the tower has no input (every interest output is a logit and "
                         "model.tower.inputs is empty): set model.tower.hidden=[]")
    tower = Bias(len(cfg.data.labels)) if width == 0 else MLP(
        in_dim=width, hidden_dims=list(cfg.model.tower.hidden), activation=cfg.model.tower.activation,
        dropout=cfg.model.tower.dropout, out_dim=len(cfg.data.labels))
    # The tower reads its inputs as the per-feature lookups, concatenated once with the interest outputs: its
    # gradient then reaches each looked-up tensor directly, not through a target tensor a module also reads
    # (the same sums in the same order as before inputs had names, so results stay bitwise the same).
    tower_parts = [dataclasses.replace(i, key=f"tower:{i.key}", parts=True) for i in tower_inputs]
    every = [i for b in bindings.values() for i in b.values()] + tower_parts
    dense = DenseArch(input_arch=InputArch(inputs=every),
                      interest_arch=InterestArch(interests=interests, bindings=bindings),
                      over_arch=OverArch(tower=tower, inputs=tower_parts, labels=list(cfg.data.labels),
                                        combine=combine, logit_parts=logit_parts))
    return Model(sparse_arch=sparse, dense_arch=dense)
