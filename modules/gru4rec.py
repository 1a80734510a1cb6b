"""GRU4Rec as a CTR baseline (Hidasi et al., "Session-based Recommendations with Recurrent Neural
Networks", ICLR 2016, arXiv 1511.06939), Section 3.1 (the GRU, Eq. 1-4):

    z_t = sigmoid(W_z x_t + U_z h_{t-1}),  r_t = sigmoid(W_r x_t + U_r h_{t-1})
    h^_t = tanh(W x_t + U (r_t ⊙ h_{t-1})),  h_t = (1 - z_t) h_{t-1} + z_t h^_t

run over the valid behaviours of the history, oldest first; the user interest h is the hidden state
at the last valid behaviour. Used as the TIN paper's baseline (arXiv 2308.08487, Table 1 and 5).
Choices the paper leaves open or that the CTR setting changes:

- The GRU is ``torch.nn.GRU`` (PyTorch's gate convention, biases on both projections) fed with the
  behaviour embeddings e_i instead of the paper's one-hot items; the paper's session-parallel
  mini-batches and ranking losses (BPR, TOP1) are not used: the framework trains with its BCE
  (our choice, as MODELS.md).
- Packed sequences (``pack_padded_sequence``): padded steps never enter the GRU, and h is the state
  after the last valid step, never the padded end. Empty histories give h = 0 (our choice).
- Output [h, h ⊙ v_h] with v_h = v projected to the hidden width by a bias-free Linear when
  ``hidden != dim``, v itself otherwise (our choice; MODELS.md's tower input is [h, v, h ⊙ v], and the
  model concatenates v itself).
- ``dropout`` acts between stacked GRU layers (``nn.GRU``'s own) and on the final h (our choice, so
  that it also regularises a single layer; the paper applies dropout to the hidden layers).
- Cost: packing needs the lengths on the host (one device-to-host copy per call); the GRU runs
  O(longest history) sequential steps inside cuDNN / the CPU kernel.

``trim_padding`` and ``packed_gru`` are shared with ``dien.py``.
"""
# Shape legend: B batch, L history length (padded), T steps kept (max(1, longest history)),
# D embedding width, H GRU hidden width.
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .masking import check_inputs, zero_padding


def trim_padding(mask_BL: Tensor, *seqs_BLX: Tensor) -> Tuple[Tensor, Tensor, List[Tensor]]:
    """Cut padded sequences to T = max(1, longest history) steps and zero the values under padding.

    Also checks that the mask is right-padded (a prefix of True per row), which packing relies on.
    The lengths are copied to the host once (``pack_padded_sequence`` needs them there).

    Args:
        mask_BL: bool, shape [B, L], True = real behaviour.
        *seqs_BLX: padded sequences of shape [B, L, X] (X may differ between them).

    Returns:
        (mask_BT, lengths_B, seqs_BTX): the mask cut to T steps, the true lengths as a CPU int64
        tensor (0 for empty rows), and the sequences cut (or, when L = 0, zero-padded) to T steps
        with zeros under padding.

    Raises:
        ValueError: if a row of ``mask_BL`` has a False before a True (not right-padded).
    """
    B, L = mask_BL.shape
    lengths_B = mask_BL.sum(dim=1)
    prefix_B = torch.arange(L, device=mask_BL.device).unsqueeze(0) < lengths_B.unsqueeze(1)
    right_padded_B = (prefix_B == mask_BL).all(dim=1).to(lengths_B.dtype)
    host_2B = torch.stack([lengths_B, right_padded_B]).cpu()  # one host sync for both
    if not bool(host_2B[1].all()):
        rows = torch.nonzero(host_2B[1] == 0).flatten().tolist()[:5]
        raise ValueError(
            f"mask_BL must be right-padded (oldest first, padding at the end); rows {rows} are not"
        )
    lengths_B = host_2B[0]
    T = max(1, int(lengths_B.max())) if B else 1
    if L < T:  # only when L == 0: give the GRU one (padded) step
        mask_BL = torch.nn.functional.pad(mask_BL, (0, T - L), value=False)
        seqs_BLX = tuple(torch.nn.functional.pad(s, (0, 0, 0, T - L)) for s in seqs_BLX)
    mask_BT = mask_BL[:, :T]
    return mask_BT, lengths_B, [zero_padding(s[:, :T], mask_BT) for s in seqs_BLX]


def packed_gru(gru: nn.GRU, seq_BTD: Tensor, mask_BT: Tensor, lengths_B: Tensor) -> Tuple[Tensor, Tensor]:
    """Run a batch-first ``nn.GRU`` over the valid steps only.

    Args:
        gru: a ``batch_first=True`` GRU with input width D and hidden width H.
        seq_BTD: inputs from ``trim_padding`` (zeros under padding), shape [B, T, D].
        mask_BT: bool, shape [B, T], True = real behaviour.
        lengths_B: true lengths, CPU int64, shape [B].

    Returns:
        (out_BTH, last_BH): the last layer's output at every step (0 under padding and for empty
        rows) and the last layer's state after the last valid step (0 for empty rows).
    """
    # Empty rows run one step on the zeroed input; their results are replaced by zeros below.
    packed = pack_padded_sequence(seq_BTD, lengths_B.clamp_min(1), batch_first=True, enforce_sorted=False)
    out_packed, h_n_NBH = gru(packed)  # h_n is unsorted back to the input order by nn.GRU
    out_BTH, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=seq_BTD.shape[1])
    nonempty_B1 = mask_BT.any(dim=1, keepdim=True)
    last_BH = torch.where(nonempty_B1, h_n_NBH[-1], torch.zeros_like(h_n_NBH[-1]))
    return zero_padding(out_BTH, mask_BT), last_BH


class GRU4Rec(nn.Module):
    """GRU over the behaviour sequence; the last valid hidden state is the user interest.

    Args:
        dim: embedding width D of behaviours and target.
        hidden: GRU hidden width H (default D).
        num_layers: stacked GRU layers.
        dropout: dropout probability between GRU layers and on the final state, in [0, 1).

    Attributes:
        output_dim: 2H.
    """

    def __init__(
        self,
        *,
        dim: int,
        hidden: Optional[int] = None,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        for name, value in (("dim", dim), ("hidden", hidden), ("num_layers", num_layers)):
            if value <= 0:
                raise ValueError(f"GRU4Rec {name} must be positive, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GRU4Rec dropout must be in [0, 1), got {dropout}")
        self.dim = dim
        self.hidden = hidden
        self.gru = nn.GRU(
            input_size=dim,
            hidden_size=hidden,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.query_proj = nn.Linear(dim, hidden, bias=False) if hidden != dim else nn.Identity()
        self.output_dim: int = 2 * hidden

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        query_time_BD: Optional[Tensor] = None,
    ) -> Tensor:
        """Encode the history with the GRU.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            query_BD: target embedding v, shape [B, D].
            seq_time_BLD: accepted for a uniform interface and ignored, shape [B, L, D].
            query_time_BD: accepted and ignored, shape [B, D].

        Returns:
            [h, h ⊙ v_h] of shape [B, 2H]; zeros for empty histories.

        Raises:
            ValueError: on bad shapes or a mask that is not right-padded.
        """
        check_inputs(
            dim=self.dim,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=seq_time_BLD,
            query_time_BD=query_time_BD,
        )
        mask_BT, lengths_B, (seq_BTD,) = trim_padding(mask_BL, seq_BLD)
        _, last_BH = packed_gru(self.gru, seq_BTD, mask_BT, lengths_B)
        h_BH = self.dropout(last_BH)
        return torch.cat([h_BH, h_BH * self.query_proj(query_BD)], dim=-1)
