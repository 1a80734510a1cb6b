"""CAIN's Temporal Convolutional Network layer and its Personalized Extractor Generation (Li et al.,
"Introducing Context Information in Lifelong Sequential Modeling using Temporal Convolutional Networks",
``../shared/papers/CAIN.md``, Sec. 4.1 and 4.3):

    cr_t = (ctxe_t ∪ lhe_t) x W^C + b_c                         (Eq. 5)
    ctx_t = {lh_{t-cl}, ..., lh_{t-1}, lh_{t+1}, ..., lh_{t+cl}}, the filter spans 2 cl + 1 behaviours
    O = ReLU(W^P1 I + b^P1),  W^PC = Reshape(W^P2 O + b^P2)      (Eq. 10-11, per user, from profile I)
    cr_t = (ctxe_t ∪ lhe_t) x W^PC + b_c                         (Eq. 12, PEG replaces the global filter)

A centred convolution along the behaviour axis: a linear map of each behaviour with its ``cl`` neighbours on
each side, zero-padded at both ends of every user's own sequence (Sec. 4.1.1). With a stride s > 1 (MSIA's
later layers, Sec. 4.2.1) output t is centred on input ``s t``, so a row of n behaviours has ``ceil(n / s)``
outputs. Choices the paper leaves open, ours:

- Sequences are right-padded; the positions after a row's last behaviour are zeroed before the convolution,
  so a behaviour's right context ends at the row's own end exactly as zero padding would.
- An output is valid when its centre is a real behaviour (the returned mask; the others are zero). So a
  stride-1 layer has exactly one output per behaviour, as Sec. 4.2.1 wants of the first layer. MODELS.md A6
  suggests instead "valid if any input in its window is" (max-pooling the mask), which would add up to cl
  outputs centred past a row's end; their windows' behaviours are all inside valid outputs' windows already
  (for stride <= cl + 1), so we leave them out.
- ``aggregation`` (issue's reading of the paper's "replace" and of the alternative it mentions, Sec. 4.3.2):
  ``global`` (Eq. 5 only), ``replace`` (Eq. 12 only, the paper's CAIN), ``sum`` (global + personalized
  outputs), ``concat`` (both, side by side: output width ``2 out_dim``). The bias b_c is shared by the global
  and personalized filters (``replace`` keeps it, as Eq. 12 writes it, and has no global filter at all).
- The personalized filters of all users run at once, no loop over the batch: where the windows overlap little
  (K <= 2 s, MSIA's later layers) as one batched product of each output's window [D K] with its user's filter
  [D K, O] (``bmm``; 1.4x faster forward and backward than a grouped convolution at B = 256, L = 2000,
  D = O = 128, K = 5, s = 4: ``benchmarks/hotpaths.py`` ``peg_strided``); otherwise (the first layer, K = 15,
  s = 1: the windows would be 15 times the sequence) as one grouped convolution (``groups = B``). The generator's hidden width is
  ``peg_hidden`` (the paper: "two fully connected layers").
- Eq. 5 is linear; a stack of layers (MSIA) puts its non-linearity between layers (``modules/cain.py``).
"""
# Shape legend: B batch, L sequence length (padded), D input width, O output width, K = 2 cl + 1 taps,
# P profile width, M outputs after the stride.
import math
from typing import Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masking import zero_padding

Aggregation = Literal["global", "replace", "sum", "concat"]


class TCN(nn.Module):
    """One centred temporal convolution over a padded behaviour sequence (CAIN Eq. 5, 12).

    Args:
        dim: input width D.
        out_dim: output width O (default D).
        context_length: cl, the behaviours on each side of the centre (filter of 2 cl + 1); 0 = a linear
            map of each behaviour alone (CAIN's "context length 0").
        stride: s >= 1, distance between output centres.
        aggregation: ``global`` (shared filter), ``replace`` / ``sum`` / ``concat`` (with PEG's per-user
            filters, see the module docstring).
        profile_dim: P, width of the profile representation I (needed unless ``global``).
        peg_hidden: width of PEG's hidden layer (Eq. 10).
        identity_init: start every filter as the identity on the centre behaviour (our choice; the paper is
            silent on initialisation): the layer first passes each behaviour through unchanged, so a backbone
            behind it starts as it would without the TCN, and side information (CAIN's watch time, whose
            log is ~20 times an embedding entry) does not drown the behaviours at the start.
        centre_only: the first ``centre_only`` input channels reach the output through the centre tap only
            (their neighbour taps are zero in the global and the generated filters, and never computed: those
            channels go through a pointwise map, 2 cl + 1 times cheaper than the convolution):
            a behaviour's context then comes only from the remaining channels, its neighbours' side
            information (our variant, a probe of what the context taps learn: docs/results/lifelong.md).

    Attributes:
        output_dim: O, or 2 O for ``concat``.
    """

    def __init__(
        self,
        *,
        dim: int,
        out_dim: Optional[int] = None,
        context_length: int = 7,
        stride: int = 1,
        aggregation: Aggregation = "global",
        profile_dim: int = 0,
        peg_hidden: int = 64,
        identity_init: bool = False,
        centre_only: int = 0,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        if dim <= 0 or out_dim <= 0 or context_length < 0 or stride < 1:
            raise ValueError(f"TCN: need dim, out_dim > 0, context_length >= 0, stride >= 1; got {dim}, {out_dim}, "
                             f"{context_length}, {stride}")
        if not 0 <= centre_only <= dim:
            raise ValueError(f"TCN: centre_only must be in [0, dim={dim}], got {centre_only}")
        if aggregation != "global" and profile_dim <= 0:
            raise ValueError(f"TCN(aggregation={aggregation!r}) generates per-user filters from the profile: "
                             f"profile_dim must be > 0")
        self.dim, self.out_dim, self.cl, self.stride = dim, out_dim, context_length, stride
        self.kernel = 2 * context_length + 1
        self.aggregation = aggregation
        # the global filter W^C ([O, D, K], as conv1d takes it; none with ``replace``) and the bias b_c
        bound = 1.0 / math.sqrt(dim * self.kernel)
        if aggregation == "replace":
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(torch.empty(out_dim, dim, self.kernel))
            nn.init.uniform_(self.weight, -bound, bound)
        self.bias = nn.Parameter(torch.empty(out_dim))
        nn.init.uniform_(self.bias, -bound, bound)
        if aggregation == "global":
            self.peg = None
        else:  # Eq. 10-11: profile -> hidden -> the K * D * O entries of W^PC
            self.peg = nn.Sequential(nn.Linear(profile_dim, peg_hidden), nn.ReLU(),
                                     nn.Linear(peg_hidden, out_dim * dim * self.kernel))
            with torch.no_grad():  # start the generated filters at the scale of the global one
                self.peg[2].weight.mul_(bound * math.sqrt(peg_hidden))
                self.peg[2].bias.uniform_(-bound, bound)
        self.output_dim: int = 2 * out_dim if aggregation == "concat" else out_dim
        self.centre_only = centre_only
        if centre_only:  # 1 where a tap may be non-zero: every tap of the other channels, the centre of these
            taps = torch.ones(1, dim, self.kernel)
            taps[:, :centre_only] = 0.0
            taps[:, :centre_only, context_length] = 1.0
            self.register_buffer("taps", taps, persistent=False)
            # the generator's outputs (filters() layout [O, D, K], flattened) that may be non-zero: the centre
            # tap of the first channels, [O, centre_only]; every tap of the others, [O, D - centre_only, K]
            flat = torch.arange(out_dim * dim * self.kernel).view(out_dim, dim, self.kernel)
            self.register_buffer("kept_centre", flat[:, :centre_only, context_length].reshape(-1), persistent=False)
            self.register_buffer("kept_rest", flat[:, centre_only:, :].reshape(-1), persistent=False)
        else:
            self.taps = None
        if identity_init:
            self._start_as_identity()

    def _start_as_identity(self) -> None:
        """``identity_init``: every filter the layer applies starts as the identity on the centre tap (input
        channel i -> output channel i, i < min(D, O)) and zero on the neighbours and the remaining inputs, the
        bias at zero: cr_t = lhe_t at the start, and the context is learned in from there."""
        eye = torch.zeros(self.out_dim, self.dim, self.kernel)
        n = min(self.dim, self.out_dim)
        eye[torch.arange(n), torch.arange(n), self.cl] = 1.0
        with torch.no_grad():
            self.bias.zero_()
            if self.weight is not None:
                self.weight.copy_(eye)
            if self.peg is not None:  # generated filters: the identity (replace, concat) or nothing yet (sum)
                self.peg[2].weight.zero_()
                self.peg[2].bias.copy_(torch.zeros_like(eye).reshape(-1) if self.aggregation == "sum"
                                       else eye.reshape(-1))

    def filters(self, profile_BP: Tensor) -> Tensor:
        """PEG's per-user filters W^PC, shape [B, O, D, K] (Eq. 10-11)."""
        if self.peg is None:
            raise ValueError("TCN(aggregation='global') has no personalized filters")
        w = self.peg(profile_BP).view(-1, self.out_dim, self.dim, self.kernel)
        return w if self.taps is None else w * self.taps.unsqueeze(0)

    def output_mask(self, mask_BL: Tensor) -> Tensor:
        """[B, M] with M = ceil(L / s): True where the output's centre is a real behaviour."""
        return mask_BL[:, :: self.stride]

    def _global(self, x_BLD: Tensor) -> Tensor:
        """Eq. 5 with the shared filter and the bias, [B, M, O]."""
        if not self.centre_only:
            return F.conv1d(x_BLD.transpose(1, 2), self.weight, self.bias, stride=self.stride,
                            padding=self.cl).transpose(1, 2)
        # the centre-only channels as the pointwise map they are (their other taps are zero: 2 cl fewer
        # products per behaviour), the others over their windows
        C = self.centre_only
        out_BMO = F.linear(x_BLD[:, :: self.stride, :C], self.weight[:, :C, self.cl], self.bias)
        if C < self.dim:
            out_BMO = out_BMO + torch.einsum("brmk,ork->bmo", self._windows(x_BLD[:, :, C:]), self.weight[:, C:])
        return out_BMO

    def _personal(self, x_BLD: Tensor, profile_BP: Tensor) -> Tensor:
        """Eq. 12 with each user's generated filter, no bias, [B, M, O]: all users at once (no loop over the
        batch); with ``centre_only``, only the filter entries that may be non-zero are generated."""
        B = x_BLD.shape[0]
        if not self.centre_only:
            w_BODK = self.filters(profile_BP)
            if self.kernel <= 2 * self.stride:  # windows at most twice the input: one bmm, [B, M, D K] x [B, D K, O]
                win_BMDK = F.pad(x_BLD, (0, 0, self.cl, self.cl)).unfold(1, self.kernel, self.stride)
                return torch.bmm(win_BMDK.reshape(B, win_BMDK.shape[1], -1), w_BODK.flatten(2).transpose(1, 2))
            # one grouped convolution, [1, B * D, L] with B groups of [O, D, K]
            w = w_BODK.reshape(B * self.out_dim, self.dim, self.kernel)
            return F.conv1d(x_BLD.transpose(1, 2).reshape(1, B * self.dim, -1), w, stride=self.stride,
                            padding=self.cl, groups=B).view(B, self.out_dim, -1).transpose(1, 2)
        C, R = self.centre_only, self.dim - self.centre_only
        hidden_BH = self.peg[1](self.peg[0](profile_BP))
        last = self.peg[2]
        centre_BOC = F.linear(hidden_BH, last.weight[self.kept_centre], last.bias[self.kept_centre])
        out_BMO = torch.bmm(x_BLD[:, :: self.stride, :C], centre_BOC.view(B, self.out_dim, C).transpose(1, 2))
        if R:
            rest_BORK = F.linear(hidden_BH, last.weight[self.kept_rest], last.bias[self.kept_rest])
            out_BMO = out_BMO + torch.einsum("brmk,bork->bmo", self._windows(x_BLD[:, :, C:]),
                                             rest_BORK.view(B, self.out_dim, R, self.kernel))
        return out_BMO

    def _windows(self, x_BLR: Tensor) -> Tensor:
        """[B, R, M, K]: each output's 2 cl + 1 inputs of the (few) channels R, zero beyond both ends."""
        return F.pad(x_BLR.transpose(1, 2), (self.cl, self.cl)).unfold(2, self.kernel, self.stride)

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, profile_BP: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor]:
        """Context-aware representations cr_t of the behaviours.

        Args:
            seq_BLD: behaviour representations, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            profile_BP: the user profile representation I, shape [B, P] (PEG; unless ``global``).

        Returns:
            (cr of shape [B, M, output_dim], zero where the mask is False; the output mask [B, M]),
            M = ceil(L / stride).
        """
        if seq_BLD.dim() != 3 or seq_BLD.shape[-1] != self.dim or tuple(mask_BL.shape) != tuple(seq_BLD.shape[:2]):
            raise ValueError(f"TCN: seq_BLD must be [B, L, {self.dim}] with mask_BL [B, L], got "
                             f"{tuple(seq_BLD.shape)} and {tuple(mask_BL.shape)}")
        B = seq_BLD.shape[0]
        x_BLD = zero_padding(seq_BLD, mask_BL)
        out_mask_BM = self.output_mask(mask_BL)
        if self.aggregation != "global" and (profile_BP is None or profile_BP.shape[0] != B):
            raise ValueError(f"TCN(aggregation={self.aggregation!r}) needs profile_BP of shape [{B}, P]")
        parts = []
        if self.aggregation in ("global", "sum", "concat"):
            parts.append(self._global(x_BLD))
        if self.aggregation != "global":
            personal = self._personal(x_BLD, profile_BP)
            if self.aggregation == "sum":
                parts[0] = parts[0] + personal
            else:
                parts.append(personal + self.bias)
        out_BMO = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return zero_padding(out_BMO, out_mask_BM), out_mask_BM
