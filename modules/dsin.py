"""Deep Session Interest Network (Feng et al., "Deep Session Interest Network for Click-Through Rate
Prediction", IJCAI 2019, arXiv 1905.06482), Section 3, its four layers:

- Session Division Layer: a new session starts where the gap to the previous behaviour exceeds
  30 minutes; keep the K most recent sessions of at most T behaviours each (paper: K=5, T=10).
- Session Interest Extractor Layer: bias encoding BE_{k,t,c} = w^K_k + w^T_t + w^C_c
  added to the session's behaviours, Q_k = Q_k + BE_k; multi-head self-attention (a Transformer
  layer) within each session; I_k = Avg(Q^I_k), one interest vector per session.
- Session Interest Interacting Layer: a Bi-LSTM over I_1..I_K -> H_k (forward and
  backward states concatenated).
- Session Interest Activating Layer: a^I_k = softmax_k(I_k W^I v), U^I = sum a^I_k I_k;
  a^H_k = softmax_k(H_k W^H v), U^H = sum a^H_k H_k. Output [U^I, U^H]; the model concatenates v.

Forward contract: ``session_BL`` (int64, [B, L]) gives each behaviour's session index counted from
the most recent session (= 0); it is ignored at padding. The rule is ``DSIN.sessions_from_timestamps``
with ``SESSION_GAP_S``; tinrec's loader computes the same on the jagged histories (``tinrec/data/reader.py``
``sessions``, with this constant; a test holds the two equal). Ranks within a session are counted per session id, so
the layout does not assume contiguous sessions. ``seq_time_BLD`` (COE position embeddings,
oldest = 1) is added to e when given.

Choices the paper leaves open (our choice unless a source is named):

- Layout [B, K, T, D] built by one vectorised scatter: slot k = sessions oldest first (the most recent
  kept session last, rows right-padded to K), slot t = the kept behaviours of the session oldest
  first; a session with more than T behaviours keeps its T most recent. Sessions beyond K and
  behaviours beyond T are dropped. The session-missing slots (absent ids) stay empty.
- Bias encoding: w^K indexed by the session's recency (0 = most recent), w^T by the slot t, w^C per
  unit; each initialised N(0, 0.02).
- Extractor: one post-LN Transformer block shared by all sessions (FFN width 4D, ReLU), padding
  masked as keys; average pooling over the valid slots; an empty session gives I_k = 0.
- Bi-LSTM hidden width H = D (output 2D), one layer, packed by the number of sessions present
  (the lengths are copied to the host once); absent sessions give H_k = 0.
- Activation: the paper's bilinear form I_k W^I v (W^H likewise, bias-free Linear maps of v) scaled
  by 1/sqrt(width), softmax over the present sessions (masked_softmax); no session gives U = 0.
- ``dropout`` acts inside the extractor block.
- Cost: the extractor is quadratic in T (SDPA on [B*K, T, D] with a [B*K, 1, 1, T] boolean mask),
  so O(B * K * T^2 * D) for the self-attention, linear in L for the scatter.
"""
# Shape legend: B batch, L history length (padded), K sessions kept, T behaviours per session,
# D embedding width, H Bi-LSTM hidden width (= D), N = B * K.
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .masking import check_inputs, masked_mean, masked_softmax, zero_padding
from .transformer import TransformerBlock



SESSION_GAP_S = 1800  # the DSIN paper: a new session where a behaviour follows the previous one by > 30 minutes


class DSIN(nn.Module):
    """Session-split self-attention, Bi-LSTM across sessions, and target attention over both.

    Cost: quadratic in the session length T within each of the K sessions.

    Args:
        dim: embedding width D of behaviours and target.
        max_sessions: K, the most recent sessions kept.
        session_len: T, the most recent behaviours kept per session.
        num_heads: attention heads of the extractor; must divide D.
        dropout: dropout probability of the extractor block, in [0, 1).

    Attributes:
        output_dim: D + 2H = 3D.
    """

    def __init__(
        self,
        *,
        dim: int,
        max_sessions: int = 5,
        session_len: int = 10,
        num_heads: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        sizes = (("dim", dim), ("max_sessions", max_sessions), ("session_len", session_len))
        for name, value in sizes:
            if value <= 0:
                raise ValueError(f"DSIN {name} must be positive, got {value}")
        self.dim = dim
        self.max_sessions = max_sessions
        self.session_len = session_len
        self.bias_K = nn.Parameter(torch.randn(max_sessions) * 0.02)  # w^K, by recency
        self.bias_T = nn.Parameter(torch.randn(session_len) * 0.02)  # w^T, by slot
        self.bias_C = nn.Parameter(torch.randn(dim) * 0.02)  # w^C, by unit
        self.extractor = TransformerBlock(
            dim=dim, num_heads=num_heads, ffn_dim=4 * dim, dropout=dropout, norm_first=False
        )
        self.hidden = dim
        self.lstm = nn.LSTM(dim, self.hidden, batch_first=True, bidirectional=True)
        self.att_extracted = nn.Linear(dim, dim, bias=False)  # W^I
        self.att_interacted = nn.Linear(dim, 2 * self.hidden, bias=False)  # W^H
        self.output_dim: int = dim + 2 * self.hidden

    @staticmethod
    def sessions_from_timestamps(
        ts_BL: Tensor, mask_BL: Tensor, gap_seconds: float = SESSION_GAP_S
    ) -> Tensor:
        """Session index of each behaviour, counted from the most recent session (= 0).

        A new session starts at a behaviour whose gap to the previous behaviour exceeds
        ``gap_seconds`` (strictly). Vectorised, no loops.

        Args:
            ts_BL: timestamps in seconds, oldest first, right-padded, shape [B, L].
            mask_BL: bool, shape [B, L], True = real behaviour (a prefix of each row).
            gap_seconds: the session gap threshold (the DSIN paper: 30 minutes).

        Returns:
            int64 [B, L]: session index (0 = most recent session) at real behaviours, -1 at padding.
        """
        B, L = ts_BL.shape
        new_BL = torch.zeros(B, L, dtype=torch.long, device=ts_BL.device)
        if L > 1:
            gap_B = (ts_BL[:, 1:] - ts_BL[:, :-1]) > gap_seconds
            new_BL[:, 1:] = (gap_B & mask_BL[:, 1:] & mask_BL[:, :-1]).long()
        chron_BL = new_BL.cumsum(dim=1)  # 0 = oldest session
        valid_BL = torch.where(mask_BL, chron_BL, torch.zeros_like(chron_BL))
        newest_B1 = torch.cat([chron_BL.new_zeros(B, 1), valid_BL], dim=1)
        newest_B1 = newest_B1.amax(dim=1, keepdim=True)
        return torch.where(mask_BL, newest_B1 - chron_BL, torch.full_like(chron_BL, -1))

    def build_sessions(
        self, *, seq_BLD: Tensor, mask_BL: Tensor, session_BL: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Scatter the behaviours into [B, K, T, D] (one index_copy, no loops over B or L).

        Args:
            seq_BLD: behaviour inputs, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            session_BL: int64 [B, L], session index from the most recent (= 0); ignored at padding.

        Returns:
            (slots_BKTD, slot_mask_BKT, num_sessions_B): sessions oldest first along K (row b's
            n_b = min(K, newest-to-oldest session count) sessions in slots 0..n_b-1), each session's
            kept behaviours oldest first along T; zeros and False at empty slots.
        """
        K, T = self.max_sessions, self.session_len
        B, L, D = seq_BLD.shape
        valid_BL = mask_BL & (session_BL >= 0)
        in_k_BL = valid_BL & (session_BL < K)
        sid_BL = torch.where(in_k_BL, session_BL, torch.zeros_like(session_BL))
        k_K = torch.arange(K, device=sid_BL.device)
        onehot_BLK = (in_k_BL.unsqueeze(-1) & (sid_BL.unsqueeze(-1) == k_K)).long()
        rank_BL = onehot_BLK.cumsum(dim=1).gather(2, sid_BL.unsqueeze(-1)).squeeze(-1)  # 1 = oldest
        total_BL = onehot_BLK.sum(dim=1).gather(1, sid_BL)  # behaviours in the session
        from_newest_BL = total_BL - rank_BL  # 0 = the session's most recent behaviour
        keep_BL = in_k_BL & (from_newest_BL < T)
        t_BL = total_BL.clamp(max=T) - 1 - from_newest_BL
        sid1_BL = torch.where(valid_BL, session_BL + 1, torch.zeros_like(session_BL))
        num_sessions_B = torch.cat([sid1_BL.new_zeros(B, 1), sid1_BL], dim=1).amax(dim=1)
        num_sessions_B = num_sessions_B.clamp(max=K)
        k_BL = num_sessions_B.unsqueeze(1) - 1 - sid_BL
        row_B1 = torch.arange(B, device=seq_BLD.device).unsqueeze(1)
        dump = B * K * T  # dropped behaviours go to one extra row, cut off below
        flat_BL = torch.where(keep_BL, (row_B1 * K + k_BL) * T + t_BL, torch.full_like(t_BL, dump))
        flat_N = flat_BL.reshape(-1)
        slots_ND = seq_BLD.new_zeros(dump + 1, D).index_copy(0, flat_N, seq_BLD.reshape(-1, D))
        slot_mask_N = mask_BL.new_zeros(dump + 1).index_copy(0, flat_N, keep_BL.reshape(-1))
        return slots_ND[:dump].view(B, K, T, D), slot_mask_N[:dump].view(B, K, T), num_sessions_B

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
        seq_time_BLD: Optional[Tensor] = None,
        session_BL: Tensor,
    ) -> Tensor:
        """Extract, interact and activate session interests; cost quadratic in T per session.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            query_BD: target embedding v, shape [B, D].
            seq_time_BLD: COE position embeddings, shape [B, L, D], added to e_i; None = none.
            session_BL: int64 [B, L], session index from the most recent (= 0), ignored at padding.

        Returns:
            [U^I, U^H] of shape [B, D + 2H]; zeros for empty histories.
        """
        check_inputs(
            dim=self.dim,
            seq_BLD=seq_BLD,
            mask_BL=mask_BL,
            query_BD=query_BD,
            seq_time_BLD=seq_time_BLD,
        )
        if tuple(session_BL.shape) != tuple(mask_BL.shape) or session_BL.is_floating_point():
            raise ValueError(
                f"session_BL must be an integer tensor of shape {tuple(mask_BL.shape)}, "
                f"got {session_BL.dtype} {tuple(session_BL.shape)}"
            )
        x_BLD = seq_BLD if seq_time_BLD is None else seq_BLD + seq_time_BLD
        interest_BKD, num_sessions_B = self.extract(
            seq_BLD=x_BLD, mask_BL=mask_BL, session_BL=session_BL.long()
        )
        inter_BK2H = self.interact(interest_BKD, num_sessions_B)
        present_BK = self._present(num_sessions_B)
        u_i_BD = self._activate(interest_BKD, present_BK, self.att_extracted(query_BD))
        u_h_B2H = self._activate(inter_BK2H, present_BK, self.att_interacted(query_BD))
        return torch.cat([u_i_BD, u_h_B2H], dim=-1)

    def extract(
        self, *, seq_BLD: Tensor, mask_BL: Tensor, session_BL: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Session interest extractor: layout, bias encoding, self-attention, average pooling.

        Args:
            seq_BLD: behaviour inputs (e_i, or e_i + p_i), right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            session_BL: int64 [B, L], session index from the most recent (= 0).

        Returns:
            (interest_BKD, num_sessions_B): I_k per slot (sessions oldest first, 0 at absent
            slots) and the number of sessions present per row.
        """
        K, T, D = self.max_sessions, self.session_len, self.dim
        B = seq_BLD.shape[0]
        slots_BKTD, slot_mask_BKT, num_sessions_B = self.build_sessions(
            seq_BLD=zero_padding(seq_BLD, mask_BL), mask_BL=mask_BL, session_BL=session_BL
        )
        k_K = torch.arange(K, device=seq_BLD.device)
        recency_BK = (num_sessions_B.unsqueeze(1) - 1 - k_K).clamp_min(0)
        bias_BKTD = (
            self.bias_K[recency_BK].view(B, K, 1, 1)
            + self.bias_T.view(1, 1, T, 1)
            + self.bias_C.view(1, 1, 1, D)
        )
        mask_NT = slot_mask_BKT.view(B * K, T)
        out_NTD = self.extractor(x_BLD=(slots_BKTD + bias_BKTD).view(B * K, T, D), mask_BL=mask_NT)
        interest_BKD = masked_mean(out_NTD, mask_NT).view(B, K, D)
        return zero_padding(interest_BKD, self._present(num_sessions_B)), num_sessions_B

    def interact(self, interest_BKD: Tensor, num_sessions_B: Tensor) -> Tensor:
        """Session interest interacting: Bi-LSTM over the present sessions only (packed).

        Args:
            interest_BKD: I_k, sessions oldest first, right-padded along K, shape [B, K, D].
            num_sessions_B: sessions present per row, shape [B].

        Returns:
            H_k = [forward state, backward state], shape [B, K, 2H], 0 at absent slots.
        """
        present_BK = self._present(num_sessions_B)
        lengths_B = num_sessions_B.clamp_min(1).cpu()  # empty rows run one zero step, zeroed below
        packed = pack_padded_sequence(
            zero_padding(interest_BKD, present_BK), lengths_B, batch_first=True, enforce_sorted=False
        )
        out_packed, _ = self.lstm(packed)
        out_BK2H, _ = pad_packed_sequence(
            out_packed, batch_first=True, total_length=self.max_sessions
        )
        return zero_padding(out_BK2H, present_BK)

    def _present(self, num_sessions_B: Tensor) -> Tensor:
        """Bool [B, K]: slot k holds a session."""
        k_K = torch.arange(self.max_sessions, device=num_sessions_B.device)
        return k_K.unsqueeze(0) < num_sessions_B.unsqueeze(1)

    @staticmethod
    def _activate(seq_BKX: Tensor, present_BK: Tensor, key_BX: Tensor) -> Tensor:
        """sum_k softmax_k(<seq_k, key> / sqrt(X)) seq_k over the present sessions (0 if none)."""
        score_BK = (seq_BKX * key_BX.unsqueeze(1)).sum(dim=-1) / math.sqrt(seq_BKX.shape[-1])
        weight_BK = masked_softmax(score_BK, present_BK)
        return (weight_BK.unsqueeze(-1) * seq_BKX).sum(dim=1)
