"""CAIN, Context-Aware Interest Network (Li et al., "Introducing Context Information in Lifelong Sequential Modeling
using Temporal Convolutional Networks", ``../shared/papers/CAIN.md``, Sec. 4; ``../shared/MODELS.md`` A6): a
lifelong backbone reading context-aware representations instead of the behaviours themselves.

    cr^1 = TCN_1(S)                     stride 1, context length cl (kernel 2 cl + 1)          (Eq. 5-6)
    cr^n = TCN_n(ReLU(cr^{n-1}))         n = 2..N, stride s > 1                                  (MSIA, Eq. 7)
    IR_1 = backbone(cr^1, q)             the major attention: LAP, SIM, ETA, SDIM or TWIN, unchanged
    sa^n_t = <W^Q_n q, W^K_n cr^n_t> / sqrt(d),   IR_n = sum_t softmax(sa^n)_t W^V_n cr^n_t      (Eq. 8-9)
    output [IR_1, IR_2, ..., IR_N]
    PEG: every TCN's filter generated per user from the profile I (Eq. 10-12, ``modules/tcn.py``)

CAIN's Table 7 chain is this module with ``layers = 1`` (+TCN), ``layers = 4`` (+MSIA), ``peg = replace``
(+PEG), on ``backbone = lap``; Tables 2-3 swap the backbone. Choices (paper silent; MODELS.md's where it
has one): later layers have context length 2 (kernel 5) and stride 4; the auxiliary attention normalises its
scores with a masked softmax (Eq. 9 writes none) and d = 32; a layer's output is valid where its centre is a
real behaviour (``modules/tcn.py``), so strided layers carry their masks; ``concat`` PEG doubles the width of
what the next layer reads. The backbone is built here from its name and ``backbone_args`` and called with
the TCN's output as ``seq_BLD``, the item representations the paper replaces (Sec. 5.2.1, Backbone Substitution: "the item
representations used by these methods were replaced with the context-aware representations"). What is not an
item representation reaches the backbone unchanged: SIM's time-gap embeddings t_j (``seq_time_BLD``, appended
to the kept cr_j) and TWIN's cross features (``cross_BLX``), when bound, so that a backbone's row and its TCN
row differ by the TCN alone. SIM's soft search runs on the TCN's output (its separate soft-search embeddings
are item representations too; our reading), and hard search's category ids are not taken. SIM's soft search keeps its auxiliary CTR loss (``label_B``, returned as ``gsu``): it is what trains the search's
projections W_a, W_b (the top-k passes no gradient), here on the TCN's output, so it also reaches the first
layer. Unbound, W_a and W_b would stay at their initial values while the TCN moves the behaviours away from the
target's space, a search that degrades as the TCN trains; CAIN refuses to train SIM's soft search without it.

``identity_init`` starts every TCN layer as the identity on its centre behaviour (``modules/tcn.py``; our
choice): the backbone then starts as it would alone (with its own ``tied_init``, a target meets behaviours in
its own space), and the context taps, side information and PEG's profile are learned in from zero. With the
default random filters a behaviour's representation starts as a random mix of its 2 cl + 1 neighbours and
their watch times, and the backbone's content search loses what it was looking for (docs/results/lifelong.md).

Side information (``side_dim`` F > 0, ``side_BLF``): per-behaviour numbers the first layer reads beside the
behaviour's embedding, such as its watch time, the context CAIN is about (a sharp drop of watch time after a
behaviour says the interest was lost; the embeddings alone cannot say it). They enter as log(1 + x) (our
choice: non-negative, heavy-tailed values such as seconds watched) and only the first layer reads them: it
maps D + F to D, so the backbone and the later layers keep the target's width. ``side_relative`` (our choice)
centres each row's values on that row's mean over its behaviours: a watch-time drop then reads as a large
negative number whatever the user's usual level, and a filter tap learns from the deviations rather than from
the common offset (uncentred, log(1 + 30 s) = 3.4 is the same for every tap, and the taps of a trained
filter came out alike: docs/results/lifelong.md). ``content_context=False`` (our variant) holds the first
layer's content neighbour taps at zero: a behaviour keeps its own embedding (centre tap) and reads only its
neighbours' side information, the part of the context the data's drops live in; on our data the trained
content neighbour taps looked like optimiser noise (docs/results/lifelong.md). ``side_scale`` (our choice)
multiplies the side information after centring: under Adam a tap's step is about the learning rate whatever
its input's scale, so scaling the input by s is the side taps' own learning rate times s (the embedding taps
keep theirs) while the identity start is unchanged (the side taps start at zero).

``query_as_behaviour`` (our variant; the paper's Eq. 6 hands the backbone the target itself) passes the target
through the first layer too, as a sequence of one behaviour: no neighbours and zero side information (with
``side_relative``, the row's usual level), so the centre tap, the bias and PEG's per-user filter map it as they
map each behaviour. A backbone that compares target and behaviours through learned projections can follow the
TCN's drift from the looked-up embeddings; SDIM's frozen hyperplanes (and ETA's SimHash) cannot: a far-back
behaviour equal to the target collides less once the TCN has moved it (docs/results/lifelong.md, "The planted
behaviours lose their collisions"). With the same map on both sides, what the hash compares differs only by the
context the TCN reads.

CAIN's Table 1 replaces the (first) TCN layer by other context extractors (``extractor``): ``rnn``, a
bidirectional GRU (hidden D / 2 each way, outputs of both directions side by side, so a behaviour's
representation reads its whole past and future; packed, so padding never enters) and ``attention``, one
pre-LN self-attention block over the whole sequence (``modules/transformer.py``, key-padding mask; O(L^2):
the cost the paper warns of). Both are ours where the paper names only the method; neither takes PEG's
per-user filters (``peg`` must be ``none``), and later MSIA layers stay TCNs.
"""
# Shape legend: B batch, L sequence length (padded), D width, P profile width, M outputs of a layer.
import inspect
import math
from typing import Any, Dict, Literal, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import seqdot
from .eta import ETA
from .lap import LAP
from .masking import masked_softmax
from .sdim import SDIM
from .sim import SIM
from .tcn import TCN
from .transformer import TransformerBlock

BACKBONES = {"lap": LAP, "sim": SIM, "eta": ETA, "sdim": SDIM}
Backbone = Literal["lap", "sim", "eta", "sdim", "twin"]
Peg = Literal["none", "replace", "sum", "concat"]
Extractor = Literal["tcn", "rnn", "attention"]


class _RNNExtractor(nn.Module):
    """Table 1's RNN: a bidirectional GRU, D / 2 per direction, zero at padding."""

    def __init__(self, dim: int, in_dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"CAIN(extractor='rnn') needs an even width (D / 2 per direction), got {dim}")
        self.gru = nn.GRU(in_dim, dim // 2, batch_first=True, bidirectional=True)
        self.output_dim = dim

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, profile_BP: Optional[Tensor] = None):
        B, L, D = seq_BLD.shape[0], seq_BLD.shape[1], self.output_dim
        lengths_B = mask_BL.sum(1)
        out_BLD = seq_BLD.new_zeros(B, L, D)
        rows = lengths_B > 0
        if bool(rows.any()):
            packed = nn.utils.rnn.pack_padded_sequence(seq_BLD[rows], lengths_B[rows].cpu(), batch_first=True,
                                                       enforce_sorted=False)
            y, _ = self.gru(packed)
            y_BLD, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=L)
            out_BLD = out_BLD.index_put((rows.nonzero().squeeze(1),), y_BLD)
        return out_BLD, mask_BL


class _AttentionExtractor(nn.Module):
    """Table 1's self-attention: one pre-LN Transformer block over the whole sequence, zero at padding."""

    def __init__(self, dim: int, in_dim: int, heads: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim) if in_dim != dim else None  # side information: D + F -> D
        self.block = TransformerBlock(dim=dim, num_heads=heads, ffn_dim=4 * dim, norm_first=True)
        self.output_dim = dim

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, profile_BP: Optional[Tensor] = None):
        x_BLD = seq_BLD if self.proj is None else self.proj(seq_BLD)
        return self.block(x_BLD=x_BLD, mask_BL=mask_BL), mask_BL


def _backbone(name: str, dim: int, args: Dict[str, Any]) -> nn.Module:
    if name == "twin":
        from .twin import TWIN

        return TWIN(dim=dim, **args)
    return BACKBONES[name](dim=dim, **args)


class _AuxiliaryAttention(nn.Module):
    """MSIA's target attention on a later layer (Eq. 8-9), with its own projections."""

    def __init__(self, dim: int, query_dim: int, inner: int) -> None:
        super().__init__()
        self.q = nn.Linear(query_dim, inner, bias=False)
        self.k = nn.Linear(dim, inner, bias=False)
        self.v = nn.Linear(dim, query_dim, bias=False)
        self.scale = 1.0 / math.sqrt(inner)

    def forward(self, cr_BMD: Tensor, mask_BM: Tensor, query_BD: Tensor) -> Tensor:
        sa_BM = seqdot.scores(self.k(cr_BMD), self.q(query_BD)) * self.scale
        return seqdot.weighted_sum(masked_softmax(sa_BM, mask_BM), self.v(cr_BMD))


class CAIN(nn.Module):
    """TCN layers (MSIA when more than one, PEG when ``peg`` is set) feeding a lifelong backbone.

    Args:
        dim: width D of behaviours and target.
        backbone: the major attention on the first layer's output; ``backbone_args`` its constructor's.
        layers: N TCN layers (1: CAIN's TCN framework alone; 4: the paper's MSIA).
        context_length: cl of the first layer; ``later_context_length`` and ``stride`` those of the others.
        aux_dim: d of the auxiliary attentions.
        peg: ``none`` (shared filters), or how PEG's per-user filters combine with them in every layer.
        profile_dim: P, width of the profile input (PEG).
        peg_hidden: PEG's hidden width.
        extractor: the first layer: ``tcn`` (CAIN), ``rnn`` or ``attention`` (Table 1's alternatives).
        extractor_heads: heads of the ``attention`` extractor.
        side_dim: F, per-behaviour side information the first layer reads (0: none; ``side_BLF`` in forward).
        content_context: False: the first layer reads its neighbours' side information only, each behaviour's
            own embedding through the centre tap (``modules/tcn.py`` ``centre_only``; our variant).
        side_scale: the side information's factor after log and centring (our choice: the side taps' learning
            rate relative to the rest under Adam; see above).
        query_as_behaviour: the backbone's target is the first layer's output for the target alone (a one-behaviour
            sequence, zero side information) instead of the target (our variant; see above).

    Attributes:
        output_dim: the backbone's + (N - 1) * D.
    """

    def __init__(self, *, dim: int, backbone: Backbone = "lap", backbone_args: Optional[Dict[str, Any]] = None,
                 layers: int = 4, context_length: int = 7, later_context_length: int = 2, stride: int = 4,
                 aux_dim: int = 32, peg: Peg = "none", profile_dim: int = 0, peg_hidden: int = 64,
                 extractor: Extractor = "tcn", extractor_heads: int = 4, side_dim: int = 0,
                 side_relative: bool = False, identity_init: bool = False, content_context: bool = True,
                 side_scale: float = 1.0, query_as_behaviour: bool = False) -> None:
        super().__init__()
        if extractor not in ("tcn", "rnn", "attention"):
            raise ValueError(f"CAIN: extractor must be tcn, rnn or attention, got {extractor!r}")
        if extractor != "tcn" and peg != "none":
            raise ValueError(f"CAIN(extractor={extractor!r}): PEG generates convolution filters; set peg: none")
        if layers < 1:
            raise ValueError(f"CAIN: layers must be >= 1 (the backbone alone is its own config), got {layers}")
        if peg != "none" and profile_dim <= 0:
            raise ValueError("CAIN(peg=...) generates filters from the profile: profile_dim must be > 0")
        if side_dim < 0:
            raise ValueError(f"CAIN: side_dim must be >= 0, got {side_dim}")
        if not (math.isfinite(side_scale) and side_scale > 0):
            raise ValueError(f"CAIN: side_scale must be finite and > 0, got {side_scale}")
        self.side_scale = float(side_scale)
        self.query_as_behaviour = query_as_behaviour
        self.dim, self.peg, self.side_dim, self.side_relative = dim, peg, side_dim, side_relative
        aggregation = "global" if peg == "none" else peg
        tcns, width = [], dim + side_dim
        for n in range(layers):
            if n == 0 and extractor != "tcn":
                tcns.append(_RNNExtractor(dim, width) if extractor == "rnn"
                            else _AttentionExtractor(dim, width, extractor_heads))
                width = tcns[-1].output_dim
                continue
            tcns.append(TCN(dim=width, out_dim=dim, context_length=context_length if n == 0 else later_context_length,
                            stride=1 if n == 0 else stride, aggregation=aggregation, profile_dim=profile_dim,
                            peg_hidden=peg_hidden, identity_init=identity_init,
                            centre_only=dim if n == 0 and not content_context else 0))
            width = tcns[-1].output_dim
        self.tcns = nn.ModuleList(tcns)
        first = self.tcns[0].output_dim
        self.backbone = _backbone(backbone, first, dict(backbone_args or {}))
        self.needs_label: bool = getattr(self.backbone, "needs_label", False)  # SIM's soft search: its GSU loss
        # the target at the first TCN's output width, when ``concat`` PEG doubles it (unless the layer maps it)
        self.query_proj = nn.Linear(dim, first, bias=False) if first != dim and not query_as_behaviour else None
        self.aux = nn.ModuleList(_AuxiliaryAttention(t.output_dim, dim, aux_dim) for t in self.tcns[1:])
        self.output_dim: int = self.backbone.output_dim + (layers - 1) * dim

    def side_information(self, side_BLF: Tensor, mask_BL: Tensor) -> Tensor:
        """The side information as the first layer reads it: log(1 + x), centred on each row's mean with
        ``side_relative``, times ``side_scale``; zero under padding. [B, L, F] ([B, L] accepted when F = 1)."""
        side_BLF = side_BLF.unsqueeze(-1) if side_BLF.dim() == 2 else side_BLF
        if tuple(side_BLF.shape) != (*mask_BL.shape, self.side_dim):
            raise ValueError(f"CAIN(side_dim={self.side_dim}): side_BLF has shape {tuple(side_BLF.shape)}, "
                             f"want [B, L, {self.side_dim}]")
        valid_BL1 = mask_BL.unsqueeze(-1)
        side_BLF = torch.log1p(side_BLF.clamp_min(0.0)).masked_fill(~valid_BL1, 0.0)
        if self.side_relative:  # each value against the row's own mean (a drop stands out from any user's level)
            mean_B1F = side_BLF.sum(1, keepdim=True) / valid_BL1.sum(1, keepdim=True).clamp_min(1)
            side_BLF = (side_BLF - mean_B1F).masked_fill(~valid_BL1, 0.0)
        if self.side_scale != 1.0:
            side_BLF = side_BLF * self.side_scale
        return side_BLF

    def backbone_query(self, query_BD: Tensor, profile_BP: Optional[Tensor] = None) -> Tensor:
        """The target as the major attention reads it: itself, projected to a ``concat`` PEG's width, or with
        ``query_as_behaviour`` the first layer's output for it alone (no neighbours, zero side information)."""
        if self.query_as_behaviour:
            alone_B1D = F.pad(query_BD.unsqueeze(1), (0, self.side_dim))  # zero side information
            real_B1 = torch.ones(query_BD.shape[0], 1, dtype=torch.bool, device=query_BD.device)
            out_B1O, _ = self.tcns[0](seq_BLD=alone_B1D, mask_BL=real_B1, profile_BP=profile_BP)
            return out_B1O.squeeze(1)
        return query_BD if self.query_proj is None else self.query_proj(query_BD)

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor,
                profile_BP: Optional[Tensor] = None, side_BLF: Optional[Tensor] = None,
                label_B: Optional[Tensor] = None, seq_time_BLD: Optional[Tensor] = None,
                cross_BLX: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """[IR_1, ..., IR_N] for right-padded behaviours ``seq_BLD`` [B, L, D] (mask ``mask_BL``), target
        ``query_BD`` [B, D], with PEG the profile ``profile_BP`` [B, P], with ``side_dim`` F the side
        information ``side_BLF`` [B, L, F] ([B, L] when F = 1). ``label_B``, the click label in training, is
        the backbone's where it has a loss of its own (SIM's soft search): ``(output, {name: loss})`` then.
        ``seq_time_BLD`` (SIM's time-gap embeddings) and ``cross_BLX`` (TWIN's cross features) go to the
        backbone as they are."""
        passed = {k: v for k, v in (("seq_time_BLD", seq_time_BLD), ("cross_BLX", cross_BLX)) if v is not None}
        takes = inspect.signature(self.backbone.forward).parameters
        if set(passed) - set(takes):
            raise ValueError(f"CAIN: {sorted(set(passed) - set(takes))} given, but the backbone "
                             f"{type(self.backbone).__name__} takes no such input")
        if self.peg != "none" and profile_BP is None:
            raise ValueError(f"CAIN(peg={self.peg!r}) needs profile_BP")
        if self.needs_label and self.training and label_B is None:
            raise ValueError("CAIN(backbone=sim, search=soft): the soft search is trained by its auxiliary CTR loss; "
                             "bind label_B to a label input (model.inputs.label: {label: label}, "
                             "model.interests.<name>.inputs.label_B: label)")
        if (side_BLF is None) != (self.side_dim == 0):
            raise ValueError(f"CAIN(side_dim={self.side_dim}) needs side_BLF exactly when side_dim > 0")
        x, m = seq_BLD, mask_BL
        if side_BLF is not None:
            x = torch.cat([seq_BLD, self.side_information(side_BLF.to(seq_BLD.dtype), mask_BL)], dim=-1)
        parts, losses = [], {}
        for n, tcn in enumerate(self.tcns):
            x, m = tcn(seq_BLD=x if n == 0 else F.relu(x), mask_BL=m, profile_BP=profile_BP)
            if n == 0:
                q = self.backbone_query(query_BD, profile_BP)
                if self.needs_label:
                    passed["label_B"] = label_B
                major = self.backbone(seq_BLD=x, mask_BL=m, query_BD=q, **passed)
                if isinstance(major, tuple):
                    major, losses = major
                parts.append(major)
            else:
                parts.append(self.aux[n - 1](x, m, query_BD))
        out_BO = torch.cat(parts, dim=-1)
        return (out_BO, losses) if losses else out_BO
