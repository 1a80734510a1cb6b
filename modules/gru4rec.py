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
- The GRU runs over the right-padded batch (``run_gru``) and h is the state after each row's last
  valid step, read from the output there, never the padded end: since the recurrence is causal and the
  padding comes after the valid steps, the padded steps cannot change it. Empty histories give h = 0
  (our choice). Not packed sequences: PyTorch's CPU GRU backward over a ``PackedSequence`` slices the
  packed input once per step and each slice's gradient is a full-size tensor, so its cost grows with
  L^2 (measured at B = 64, D = H = 64: 1.3 s at L = 250, 80 s at L = 1000, against 0.26 s and 1.9 s
  unpacked); the padded steps this computes instead cost at most the batch's longest history.
- Output [h, h ⊙ v_h] with v_h = v projected to the hidden width by a bias-free Linear when
  ``hidden != dim``, v itself otherwise (our choice; MODELS.md's tower input is [h, v, h ⊙ v], and the
  model concatenates v itself).
- ``dropout`` acts between stacked GRU layers (``nn.GRU``'s own) and on the final h (our choice, so
  that it also regularises a single layer; the paper applies dropout to the hidden layers).
- Cost: linear in L: the GRU runs O(longest history) sequential steps inside cuDNN / the CPU kernel;
  one device-to-host copy of the lengths per call (to cut the batch to its longest history).

``trim_padding`` and ``run_gru`` are shared with ``dien.py``.
"""
# Shape legend: B batch, L history length (padded), T steps kept (max(1, longest history)),
# D embedding width, H GRU hidden width.
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .masking import check_inputs, zero_padding


def trim_padding(mask_BL: Tensor, *seqs_BLX: Tensor) -> Tuple[Tensor, Tensor, List[Tensor]]:
    """Cut padded sequences to T = max(1, longest history) steps and zero the values under padding.

    Also checks that the mask is right-padded (a prefix of True per row), which ``run_gru`` relies on.
    The lengths are copied to the host once (to find T).

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


def run_gru(gru: nn.GRU, seq_BTD: Tensor, mask_BT: Tensor) -> Tuple[Tensor, Tensor]:
    """Run a batch-first ``nn.GRU`` over a right-padded batch; results only from the valid steps.

    Args:
        gru: a ``batch_first=True`` GRU with input width D and hidden width H.
        seq_BTD: inputs from ``trim_padding`` (zeros under padding), shape [B, T, D].
        mask_BT: bool, shape [B, T], True = real behaviour, right-padded.

    Returns:
        (out_BTH, last_BH): the last layer's output at every step (0 under padding and for empty
        rows) and the last layer's state after the last valid step (0 for empty rows).
    """
    out_BTH, _ = gru(seq_BTD)
    B = seq_BTD.shape[0]
    last_B = (mask_BT.sum(dim=1) - 1).clamp_min(0)  # the last layer's output at a step is its state there
    last_BH = out_BTH[torch.arange(B, device=seq_BTD.device), last_B]
    nonempty_B1 = mask_BT.any(dim=1, keepdim=True)
    return zero_padding(out_BTH, mask_BT), torch.where(nonempty_B1, last_BH, torch.zeros_like(last_BH))


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
    ) -> Tensor:
        """Encode the history with the GRU.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            query_BD: target embedding v, shape [B, D].

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
        )
        mask_BT, _, (seq_BTD,) = trim_padding(mask_BL, seq_BLD)
        _, last_BH = run_gru(self.gru, seq_BTD, mask_BT)
        h_BH = self.dropout(last_BH)
        return torch.cat([h_BH, h_BH * self.query_proj(query_BD)], dim=-1)
