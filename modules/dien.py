"""Deep Interest Evolution Network (Zhou et al., "Deep Interest Evolution Network for Click-Through
Rate Prediction", AAAI 2019, arXiv 1809.03672), Section 4:

- Interest extractor (Sec. 4.2, Eq. 1-4): a GRU over the behaviours e_1..e_L -> h_1..h_L.
- Auxiliary loss (Eq. 5-6): for consecutive valid behaviours, h_t must tell the next clicked
  behaviour e_{t+1} from a sampled non-clicked one e~_{t+1}:
  L_aux = -mean over valid pairs [log sigma(h_t, e_{t+1}) + log(1 - sigma(h_t, e~_{t+1}))],
  added to the main loss as alpha * L_aux (Eq. 7; alpha = ``aux_weight``, 1.0 in the paper).
- Attention (Eq. 8): a_t = softmax_t(h_t^T W v) over the valid steps (v = target embedding).
- Interest evolving (Eq. 9-10, AUGRU): a GRU whose update gate is scaled by a_t,
  u'_t = a_t * u_t,  h'_t = (1 - u'_t) ⊙ h'_{t-1} + u'_t ⊙ h~_t; the interest is h'_T at the last
  valid step.

Forward contract for the auxiliary loss: ``forward`` takes an extra optional ``neg_seq_BLD`` (the
negatives e~, aligned with the behaviours). When it is given **and** the module is in training mode,
forward returns ``(out_BO, {"aux": aux_loss})`` with ``aux_loss`` a scalar already multiplied by
``aux_weight``: a named loss, which the framework adds to the main loss and logs by name. Otherwise (eval mode, or no negatives) it
returns ``out_BO`` alone, so evaluation needs no negatives and pays nothing for them.

Choices the paper leaves open (our choice unless a source is named):

- Output [h'_T, h'_T ⊙ v_h], v_h = v projected to the hidden width by a bias-free Linear when
  ``hidden != dim`` (v itself otherwise); the model concatenates v itself. Empty histories give 0.
- Extractor: ``torch.nn.GRU`` (PyTorch's gate convention), one layer, over the right-padded batch.
- Auxiliary net: MLP over [h_t, e_{t+1}] with hidden widths ``aux_hidden`` (100, 50) and sigmoid
  activations, as the released code; one logit, sigmoid output (the released code has a 2-way
  softmax, equivalent) and no batch norm. Its loss sums the positive and the negative term of a pair
  (as the released code) and averages over all valid pairs of the batch (t and t+1 both real);
  a batch without a valid pair gives 0. Negatives under padding never enter.
- Attention: W is a bias-free Linear(D -> H) applied to v, no scaling; the paper's Eq. 8 form (the
  released code uses a DIN-style MLP instead).
- AUGRU gates: r_t = sigmoid(W_r i_t + U_r h'_{t-1} + b_r), u_t likewise, and
  h~_t = tanh(W_h i_t + r_t ⊙ (U_h h'_{t-1}) + b_h) (PyTorch's placement of the reset gate; the
  paper's Eq. 3 is the same up to where U's bias sits); input i_t = h_t, state width H.
- ``trigger=True`` is DEI2N's DIEN+TRA (``../shared/MODELS.md`` B, from the DEI2N authors' code): a second
  attention distribution over the same extractor states with the trigger ``e_tr`` as query (its own W) drives
  a second AUGRU of its own; the output gains its final state, ``[h'_T, h'_T ⊙ v_h, h'^tr_T]`` (``e_tr``
  itself joins the tower as an input, as ``v`` does).
- Cost: the AUGRU is a Python loop of O(T) sequential steps on [B, H] tensors, T = the longest
  history in the batch (padded steps keep the state via ``torch.where``); the input projections of all
  steps are one matmul before the loop. The extractor runs over the right-padded batch (``run_gru``,
  linear in L; see gru4rec.py for why not packed sequences); the lengths go to the host once.
"""
# Shape legend: B batch, L history length (padded), T steps kept (max(1, longest history)),
# D embedding width, H hidden width (extractor and AUGRU), O output width (2H).
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .gru4rec import run_gru, trim_padding
from .masking import check_inputs, masked_softmax
from .mlp import MLP


class AUGRU(nn.Module):
    """GRU with attentional update gate (DIEN, Eq. 9-10), looped over time steps.

    Args:
        input_dim: width of the inputs i_t.
        hidden: state width H.
    """

    def __init__(self, *, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_proj = nn.Linear(input_dim, 3 * hidden)  # [reset, update, candidate]
        self.hidden_proj = nn.Linear(hidden, 3 * hidden)

    def forward(self, x_BTI: Tensor, att_BT: Tensor, mask_BT: Tensor) -> Tensor:
        """Run the recurrence from h'_0 = 0.

        Args:
            x_BTI: inputs i_t, shape [B, T, input_dim].
            att_BT: attention weights a_t, shape [B, T].
            mask_BT: bool, shape [B, T]; padded steps keep the previous state.

        Returns:
            The state after the last valid step, shape [B, H] (0 for empty rows).
        """
        B, T, _ = x_BTI.shape
        H = self.hidden
        xproj_BT3H = self.input_proj(x_BTI)  # all steps at once
        h_BH = x_BTI.new_zeros(B, H)
        # A padded step gets a_t = 0, so u'_t = 0 and h'_t = h'_{t-1} exactly (the candidate is a finite tanh):
        # the state is kept without a per-step select.
        att_BT = att_BT.masked_fill(~mask_BT, 0.0)
        # per-step views by one unbind: its backward is one stack, where indexing [:, t] in the loop
        # would give each step a full [B, T, .] gradient to add up (cost quadratic in T)
        for xproj_B3H, att_B1 in zip(xproj_BT3H.unbind(1), att_BT.unsqueeze(-1).unbind(1)):  # O(T) sequential
            hproj_B3H = self.hidden_proj(h_BH)
            r_BH, u_BH = torch.sigmoid(xproj_B3H[:, : 2 * H] + hproj_B3H[:, : 2 * H]).split(H, dim=-1)
            cand_BH = torch.tanh(xproj_B3H[:, 2 * H :] + r_BH * hproj_B3H[:, 2 * H :])
            h_BH = h_BH + (att_B1 * u_BH) * (cand_BH - h_BH)  # (1 - u') h + u' cand
        return h_BH


def next_behaviour_loss(aux_net: nn.Module, h_BTH: Tensor, seq_BTD: Tensor, neg_BTD: Tensor, mask_BT: Tensor) -> Tensor:
    """DIEN's L_aux (Eq. 5-6), also DMIN's: mean over the valid consecutive pairs (t, t+1) of
    ``-log sigma(aux_net([h_t, e_{t+1}])) - log(1 - sigma(aux_net([h_t, e~_{t+1}])))``; 0 without a valid pair."""
    pair_BP = mask_BT[:, :-1] & mask_BT[:, 1:]  # P = T - 1 pairs (t, t+1)
    h_BPH = h_BTH[:, :-1]
    pos_BP = aux_net(torch.cat([h_BPH, seq_BTD[:, 1:]], dim=-1)).squeeze(-1)
    neg_BP = aux_net(torch.cat([h_BPH, neg_BTD[:, 1:]], dim=-1)).squeeze(-1)
    bce = nn.functional.binary_cross_entropy_with_logits
    loss_BP = bce(pos_BP, torch.ones_like(pos_BP), reduction="none") + bce(
        neg_BP, torch.zeros_like(neg_BP), reduction="none"
    )
    loss_BP = torch.where(pair_BP, loss_BP, torch.zeros_like(loss_BP))
    return loss_BP.sum() / pair_BP.sum().clamp_min(1).to(loss_BP.dtype)


class DIEN(nn.Module):
    """DIEN interest extractor + AUGRU interest evolving, with the auxiliary loss.

    Args:
        dim: embedding width D of behaviours, negatives and target.
        hidden: hidden width H of the extractor GRU and the AUGRU (default D).
        aux_hidden: hidden widths of the auxiliary net.
        aux_weight: alpha, the weight of the auxiliary loss (already applied to the returned loss).
        trigger: DIEN+TRA: a second attention and AUGRU with the trigger as query (``trigger_BD`` in forward).

    Attributes:
        output_dim: 2H, 3H with ``trigger``.
    """

    def __init__(
        self,
        *,
        dim: int,
        hidden: Optional[int] = None,
        aux_hidden: Sequence[int] = (100, 50),
        aux_weight: float = 1.0,
        trigger: bool = False,
    ) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        if dim <= 0 or hidden <= 0:
            raise ValueError(f"DIEN dim and hidden must be positive, got dim={dim}, hidden={hidden}")
        if aux_weight < 0:
            raise ValueError(f"DIEN aux_weight must be >= 0, got {aux_weight}")
        self.dim = dim
        self.hidden = hidden
        self.aux_weight = float(aux_weight)
        self.extractor = nn.GRU(input_size=dim, hidden_size=hidden, batch_first=True)
        self.aux_net = MLP(
            in_dim=hidden + dim, hidden_dims=tuple(aux_hidden), activation="sigmoid", out_dim=1
        )
        self.att_proj = nn.Linear(dim, hidden, bias=False)  # W in h_t^T W v
        self.augru = AUGRU(input_dim=hidden, hidden=hidden)
        self.query_proj = nn.Linear(dim, hidden, bias=False) if hidden != dim else nn.Identity()
        self.trigger = trigger
        if trigger:
            self.trigger_att_proj = nn.Linear(dim, hidden, bias=False)
            self.trigger_augru = AUGRU(input_dim=hidden, hidden=hidden)
        self.output_dim: int = (3 if trigger else 2) * hidden

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        neg_seq_BLD: Optional[Tensor] = None,
        trigger_BD: Optional[Tensor] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Extract, attend and evolve the interest; add the auxiliary loss in training.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            query_BD: target embedding v, shape [B, D].
            neg_seq_BLD: optional negatives e~_i aligned with the behaviours, shape [B, L, D]
                (values under padding are ignored).
            trigger_BD: the trigger's embedding e_tr [B, D], exactly when ``trigger`` (DIEN+TRA).

        Returns:
            ``(out_BO, {"aux": aux_loss})`` when ``neg_seq_BLD`` is given and the module is training, else
            ``out_BO``. out_BO = [h'_T, h'_T ⊙ v_h], shape [B, 2H] (0 for empty histories);
            aux_loss = aux_weight * L_aux, a scalar.

        Raises:
            ValueError: on bad shapes or a mask that is not right-padded.
        """
        check_inputs(
            dim=self.dim,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
        )
        if neg_seq_BLD is not None and neg_seq_BLD.shape != seq_BLD.shape:
            raise ValueError(
                f"neg_seq_BLD must have the shape of seq_BLD {tuple(seq_BLD.shape)}, "
                f"got {tuple(neg_seq_BLD.shape)}"
            )
        if (trigger_BD is None) == self.trigger:
            raise ValueError(f"DIEN(trigger={self.trigger}): bind trigger_BD exactly when trigger is true")
        with_aux = neg_seq_BLD is not None and self.training
        seqs = (seq_BLD, neg_seq_BLD) if with_aux else (seq_BLD,)
        mask_BT, _, trimmed = trim_padding(mask_BL, *seqs)
        seq_BTD = trimmed[0]
        h_BTH, _ = run_gru(self.extractor, seq_BTD, mask_BT)
        att_BT = masked_softmax((h_BTH * self.att_proj(query_BD).unsqueeze(1)).sum(-1), mask_BT)
        interest_BH = self.augru(h_BTH, att_BT, mask_BT)
        out_BO = torch.cat([interest_BH, interest_BH * self.query_proj(query_BD)], dim=-1)
        if self.trigger:
            att_tr_BT = masked_softmax((h_BTH * self.trigger_att_proj(trigger_BD).unsqueeze(1)).sum(-1), mask_BT)
            out_BO = torch.cat([out_BO, self.trigger_augru(h_BTH, att_tr_BT, mask_BT)], dim=-1)
        if not with_aux:
            return out_BO
        return out_BO, {"aux": self.aux_weight * self.auxiliary_loss(h_BTH, seq_BTD, trimmed[1], mask_BT)}

    def auxiliary_loss(self, h_BTH: Tensor, seq_BTD: Tensor, neg_BTD: Tensor, mask_BT: Tensor) -> Tensor:
        """Unweighted L_aux over the valid consecutive pairs (t, t+1) (DIEN, Eq. 5-6).

        Args:
            h_BTH: extractor states h_t, shape [B, T, H].
            seq_BTD: clicked behaviours e_t, shape [B, T, D].
            neg_BTD: sampled negatives e~_t, shape [B, T, D].
            mask_BT: bool, shape [B, T].

        Returns:
            Scalar: mean over valid pairs of -log sigma(h_t, e_{t+1}) - log(1 - sigma(h_t, e~_{t+1}));
            0 when the batch has no valid pair.
        """
        return next_behaviour_loss(self.aux_net, h_BTH, seq_BTD, neg_BTD, mask_BT)
