"""Model assembly: the one place where TorchRec meets ``modules/``.

A model is a chain of named stages::

    SparseArch    TorchRec EmbeddingCollections (one per embedding dim, jagged lookups) + an
                  EmbeddingBagCollection (pooled lookups); built on ``meta``, sharded by DMP
    DenseArch     (one FX leaf for the training pipeline)
      SequenceArch   jagged lookups -> padded ``[B, L, D]`` behaviours, ``[B, L]`` mask, ``[B, D]`` target,
                     and the temporal encodings (position / time-bin embeddings) each module is bound to
      InterestArch   the interest modules from ``modules/`` (``_component_`` in config)
      tower          MLP over [interest outputs, target embedding, user features] -> logit
      loss           BCE (weighted: padding batches count 0) + the modules' auxiliary losses

``Model.forward(batch)`` returns ``(loss, (logits, labels, user_ids, weights, loss_terms))`` as
``TrainPipelineSparseDist`` expects; ``loss_terms`` names every term of the loss (``bce``, and
``<interest>.<name>`` for the losses a module returns beside its output: ``dien.aux``), detached, for logging.

Legend: B batch, L padded history length (the batch's longest kept history), D behaviour width.
"""

from __future__ import annotations

import functools
import inspect
import operator
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection, KeyedJaggedTensor, KeyedTensor
from torchrec.sparse.jagged_tensor import JaggedTensor

from tinrec import state
from tinrec.config import BINDING_KEYS, Config, SequenceInputs, interest_inputs, resolve
from tinrec.features import TEMPORAL_FEATURES, behaviour_width, table_configs
from tinrec.guard import finite_or_zero
from tinrec.modules.mlp import MLP


class SparseArch(nn.Module):
    """Every embedding lookup: one EmbeddingCollection per dim, plus one EmbeddingBagCollection."""

    def __init__(self, *, ec_tables: Mapping[int, list], ebc_tables: list, device: torch.device) -> None:
        super().__init__()
        self.ecs = nn.ModuleDict({f"dim{d}": EmbeddingCollection(tables=t, device=device)
                                  for d, t in ec_tables.items()})
        self.ebc = EmbeddingBagCollection(tables=ebc_tables, device=device) if ebc_tables else None

    def forward(self, features: KeyedJaggedTensor) -> Tuple[List[Dict[str, JaggedTensor]], Optional[KeyedTensor]]:
        seqs = [ec(features) for ec in self.ecs.values()]
        pooled = self.ebc(features) if self.ebc is not None else None
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
    return values_Nd.new_zeros(B * L, d).index_copy(0, slots_N, values_Nd).view(B, L, d)


def _sum(tensors: List[torch.Tensor]) -> torch.Tensor:
    """Sum without Python's ``sum`` start value 0 (``0 + t`` would copy the first tensor)."""
    return functools.reduce(operator.add, tensors)


class SequenceArch(nn.Module):
    """Jagged lookups -> the dense tensors one interest module reads (no parameters)."""

    def __init__(self, *, inputs: SequenceInputs) -> None:
        super().__init__()
        self.history = list(inputs.history)
        self.target = list(inputs.target)
        self.temporal = None if inputs.temporal == "none" else TEMPORAL_FEATURES[inputs.temporal]
        self.negatives = inputs.negatives
        self.timestamps = inputs.timestamps
        self.sessions = inputs.sessions

    def extra_inputs(self) -> List[str]:
        """Forward arguments beyond the common five that this binding supplies."""
        return ([] if self.negatives is None else ["neg_seq_BLD"]) + (["seq_timestamp_BL"] if self.timestamps else []) \
            + (["session_BL"] if self.sessions else [])

    def forward(self, emb: Mapping[str, JaggedTensor],
                dense: Optional[Mapping[str, torch.Tensor]] = None) -> Dict[str, Optional[torch.Tensor]]:
        first = emb[self.history[0]]
        lengths_B = first.lengths()
        B = lengths_B.numel()
        L = max(int(lengths_B.max()) if B else 0, 1)
        mask_BL = torch.arange(L, device=lengths_B.device)[None, :] < lengths_B[:, None]
        slots_N = _slots(lengths_B, L, first.values().shape[0])

        def pad(values_Nd: torch.Tensor) -> torch.Tensor:
            return _padded(values_Nd, slots_N, B, L)

        # the history fields are concatenated while jagged ([N, D]), then padded once
        hist = [emb[f].values() for f in self.history]
        seq_BLD = pad(hist[0] if len(hist) == 1 else torch.cat(hist, dim=-1))
        query_BD = torch.cat([emb[f].values().view(B, -1) for f in self.target], dim=-1)
        out = {"seq_BLD": seq_BLD, "mask_BL": mask_BL, "query_BD": query_BD,
               "seq_time_BLD": None, "query_time_BD": None}
        if self.temporal is not None:
            hist_t, target_t = self.temporal  # several features (timestamp encoding) are summed
            out["seq_time_BLD"] = pad(_sum([emb[f].values() for f in hist_t]))
            out["query_time_BD"] = _sum([emb[f].values() for f in target_t]).view(B, -1)
        if self.negatives == "in_batch":
            # one negative per behaviour: a behaviour drawn uniformly from the whole batch's histories
            # (DIEN's auxiliary loss; the global torch RNG is seeded and checkpointed)
            flat_ND = hist[0] if len(hist) == 1 else torch.cat(hist, dim=-1)
            pick_N = torch.randint(0, max(flat_ND.shape[0], 1), (flat_ND.shape[0],), device=flat_ND.device)
            out["neg_seq_BLD"] = pad(flat_ND[pick_N])
        if self.timestamps:
            out["seq_timestamp_BL"] = pad(dense["hist_timestamp"].unsqueeze(-1)).squeeze(-1)
        if self.sessions:
            sess = pad(dense["hist_session"].unsqueeze(-1) + 1).squeeze(-1) - 1  # -1 at padding
            out["session_BL"] = sess
        return out


class DenseArch(nn.Module):
    """Sequences -> interest modules -> tower -> loss. One FX leaf of the training pipeline."""

    def __init__(self, *, sequences: Dict[str, SequenceArch], interests: Dict[str, nn.Module],
                 target_features: List[str], user_features: List[str], pooled_features: List[str],
                 tower: nn.Module, labels: List[str] = ("label",)) -> None:
        super().__init__()
        self.sequences = nn.ModuleDict(sequences)
        self.interests = nn.ModuleDict(interests)
        self.target_features = list(target_features)
        self.user_features = list(user_features)
        self.pooled_features = set(pooled_features)
        self.tower = tower
        self.labels = list(labels)  # one tower output per label (data.labels)
        # train.on_nonfinite=skip: a non-finite gradient of the lookups is zeroed before the fused embedding
        # update (tinrec/guard.py), so no NaN ever enters a table
        self.zero_nonfinite_lookup_grads = False

    def merge(self, seqs: List[Dict[str, JaggedTensor]]) -> Dict[str, JaggedTensor]:
        emb: Dict[str, JaggedTensor] = {}
        for d in seqs:
            emb.update(d)
        return emb

    def forward(self, seqs: List[Dict[str, JaggedTensor]], pooled: Optional[KeyedTensor], labels: torch.Tensor,
                weights: torch.Tensor, dense: Optional[Dict[str, torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Returns ``(loss, logits [B, T], terms)`` for ``labels [B, T]``: ``terms`` maps each loss term's name
        (``bce``, or ``bce.<label>`` per label with several labels, and ``<interest>.<name>`` for the named
        losses an interest module returns) to its value; ``loss`` is their sum."""
        emb = self.merge(seqs)
        B = labels.shape[0]
        if self.zero_nonfinite_lookup_grads and self.training:
            looked_up = [jt.values() for jt in emb.values()] + ([pooled.values()] if pooled is not None else [])
            for t in looked_up:
                if t.requires_grad:
                    t.register_hook(finite_or_zero)
        parts, extra = [], {}
        for name, module in self.interests.items():
            out = module(**self.sequences[name](emb, dense))
            if isinstance(out, tuple):  # (output, {loss name: scalar}): the module's own losses, e.g. DIEN's aux
                out, losses = out
                if not isinstance(losses, dict):
                    raise TypeError(f"model.interests.{name}: forward returned a tuple whose second item is not a "
                                    f"dict of named losses (got {type(losses).__name__})")
                extra.update({f"{name}.{k}": v for k, v in losses.items()})
            parts.append(out)
        parts += [emb[f].values().view(B, -1) for f in self.target_features]
        pooled_dict = pooled.to_dict() if pooled is not None else {}
        for f in self.user_features:
            parts.append(pooled_dict[f] if f in self.pooled_features else emb[f].values().view(B, -1))
        logits = self.tower(torch.cat(parts, dim=-1))  # [B, T]
        per_sample = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        bce_T = (per_sample * weights.unsqueeze(-1)).sum(0) / weights.sum().clamp(min=1.0)
        names = ["bce"] if len(self.labels) == 1 else [f"bce.{name}" for name in self.labels]
        terms = {**{n: bce_T[t] for t, n in enumerate(names)}, **extra}
        loss = _sum(list(terms.values()))
        return loss, logits, {k: v.detach() for k, v in terms.items()}


class Model(nn.Module):
    """SparseArch -> DenseArch; forward returns ``(loss, (logits, labels, user_ids, weights, loss_terms))``."""

    def __init__(self, *, sparse_arch: SparseArch, dense_arch: DenseArch) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = dense_arch
        self.cross_batch_buffers()  # checks the modules' declarations now, before anything trains

    def interest_modules(self) -> Dict[str, nn.Module]:
        """The interest modules by config name (``model.interests``)."""
        return dict(self.dense_arch.interests.items())

    def module_inputs(self, batch) -> Dict[str, Dict[str, Optional[torch.Tensor]]]:
        """Each interest module's forward arguments for ``batch``, exactly as training feeds them (for analyses
        and benchmarks of a module alone; on an unsharded model)."""
        seqs, _ = self.sparse_arch(batch.sparse)
        emb = self.dense_arch.merge(seqs)
        return {name: arch(emb, batch.dense) for name, arch in self.dense_arch.sequences.items()}

    def cross_batch_buffers(self) -> List[state.StateBuffer]:
        """The interest modules' cross-batch state buffers as they are now (``tinrec/state.py``)."""
        return state.collect(self.interest_modules())

    def forward(self, batch):
        seqs, pooled = self.sparse_arch(batch.sparse)
        loss, logits, terms = self.dense_arch(seqs, pooled, batch.labels, batch.weights, batch.dense)
        return loss, (logits.detach(), batch.labels, batch.user_ids, batch.weights, terms)


def build_interest(spec: Mapping, dim: int, where: str, fields: int = 1) -> nn.Module:
    """Build one interest module; the builder supplies ``dim`` (behaviour width) and, to constructors that
    take it, ``fields`` (how many features are concatenated into a behaviour)."""
    cls = resolve(str(spec["_component_"]), where, "config")
    kwargs = {k: v for k, v in spec.items() if k not in BINDING_KEYS}
    if "fields" in inspect.signature(cls.__init__).parameters:
        kwargs["fields"] = fields
    module = cls(dim=dim, **kwargs)
    if not isinstance(getattr(module, "output_dim", None), int):
        raise ValueError(f"{where}: {spec['_component_']} has no integer attribute 'output_dim'")
    return module


def build_model(cfg: Config, rows: Mapping[str, int], *, sparse_device: torch.device = torch.device("meta")) -> Model:
    """Build the model from config; embedding tables on ``sparse_device`` (``meta`` until DMP shards them)."""
    ec_tables, ebc_tables = table_configs(cfg, rows)
    sparse = SparseArch(ec_tables=ec_tables, ebc_tables=ebc_tables, device=sparse_device)
    dims = {f: t.dim for t in cfg.model.tables.values() for f in t.features}
    pooled = [f for t in cfg.model.tables.values() if t.pooled for f in t.features]
    sequences, interests, width = {}, {}, 0
    for name, inputs in interest_inputs(cfg).items():
        sequences[name] = SequenceArch(inputs=inputs)
        interests[name] = build_interest(cfg.model.interests[name], behaviour_width(cfg, inputs),
                                         f"model.interests.{name}", fields=len(inputs.history))
        accepted = inspect.signature(interests[name].forward).parameters
        for extra in sequences[name].extra_inputs():
            if extra not in accepted:
                raise ValueError(f"model.interests.{name}.inputs: supplies {extra}, which "
                                 f"{cfg.model.interests[name]['_component_']}.forward does not take")
        width += interests[name].output_dim
        if cfg.model.compile:  # in place: the parameter names (and so checkpoints) do not change
            interests[name].compile(dynamic=True)
    target = list(cfg.model.sequence.target) if cfg.model.target_in_tower else []
    width += sum(dims[f] for f in target) + sum(dims[f] for f in cfg.model.user_features)
    tower = MLP(in_dim=width, hidden_dims=list(cfg.model.tower.hidden), activation=cfg.model.tower.activation,
                dropout=cfg.model.tower.dropout, out_dim=len(cfg.data.labels))
    dense = DenseArch(sequences=sequences, interests=interests, target_features=target,
                      user_features=list(cfg.model.user_features), pooled_features=pooled, tower=tower,
                      labels=list(cfg.data.labels))
    return Model(sparse_arch=sparse, dense_arch=dense)
