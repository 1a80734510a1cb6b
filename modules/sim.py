"""SIM, Search-based Interest Model (Pi et al., "Search-based User Interest Modeling with Lifelong Sequential
Behavior Data for Click-Through Rate Prediction", CIKM 2020, arXiv 2006.05639; ``../shared/MODELS.md`` A2).

General Search Unit (GSU), one of:

    hard:  r_i = 1[c_i = c_target]                           (category match on ids; no parameters)
    soft:  r_i = <W_b e_i, W_a e_a>                          (e: the soft-search model's own embeddings)
           U_r = sum_i r_i e_i / n,   p_aux = sigmoid(MLP([U_r, e_a])),   L_GSU = BCE(p_aux, y)

then the Exact Search Unit on the k kept behaviours, z_j = [e_j ; t_j] (t_j: the embedding of the target
time - behaviour time bucket, when bound), SIM's multi-head target attention
(``modules/target_attention.py``): U = concat_h sum_j softmax_j <W_k^h z_j, W_q^h e_a> z_j.
Loss alpha L_GSU + beta L_ESU with alpha = beta = 1 for soft search (L_ESU is the model's CTR loss) and alpha
= 0 for hard search.

Choices (MODELS.md): the soft-search embeddings are an input of their own (``soft_seq_BLD`` /
``soft_query_BD``, from an embedding group of their own; they default to the ESU's when not bound); U_r is
divided by the number of valid behaviours n (the paper's raw sum grows with L = 2000); the auxiliary MLP has
``aux_hidden`` ReLU layers and reads the label only in training (the framework withholds it otherwise);
hard search keeps the k most recent matching behaviours (``masked_topk`` on the 0/1 match, recency breaking
ties) and never a non-matching one; k = 100, 4 heads. A row with nothing kept gives zeros.

Hard search runs in one of two places: here (``search: hard``, on category ids bound as inputs, after the
whole sequence was looked up), or in the loader before any lookup (``search: loader``): the data's searched
sequence (``data.sequences.<name>.search``, ``tinrec/data/search.py``) already holds the k most recent
behaviours of the target's category, as SIM's online user -> category -> behaviours index does, and only they
are looked up; the ESU then attends to all of them. Both keep the same behaviours (a test checks it).

The sequence may come as distinct rows + index (``indexed.py``): the ESU's k kept behaviours are then gathered
straight from the rows (their gradient goes to the rows, not into a zero [B, L, D] gradient), and hard search
builds no [B, L, D] tensor at all; soft search, which scores and pools every behaviour with gradient, reads the
dense sequence for that.
"""
# Shape legend: B batch, L sequence length (padded), D width, T time-encoding width, K kept, S soft width.
from typing import Dict, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import seqdot
from .indexed import IndexedSequence, dense
from .masking import check_inputs, gather_kept, masked_topk
from .mlp import MLP
from .target_attention import MultiHeadTargetAttention, tie_at_init

Search = Literal["hard", "soft", "loader"]


class SIM(nn.Module):
    """A search over the whole sequence, then a multi-head target attention over the kept behaviours.

    Args:
        dim: width D of behaviours and target (the ESU's).
        search: ``hard`` (category ids), ``soft`` (inner product of projected soft-search embeddings) or
            ``loader`` (the sequence given is the hard search's result, made by the loader on ids).
        k: behaviours kept.
        heads, head_dim: the ESU's heads and their key / query width.
        time_dim: width T of the time-gap embeddings appended to the kept behaviours (0: none bound).
        soft_dim: width of the soft search's projections W_a, W_b; ``soft_input_dim`` the width of its
            embeddings (default D).
        aux_hidden: hidden widths of the auxiliary CTR MLP (soft search).
        product: also output each head's behaviour part times the target (``target_attention.py``).
        tied_init: the soft search's W_a starts equal to W_b (``target_attention.tie_at_init``; our choice).

    Attributes:
        output_dim: heads * (D + T), plus heads * D with ``product``.
    """

    INDEXED_INPUTS = ("seq_BLD",)

    def __init__(self, *, dim: int, search: Search = "soft", k: int = 100, heads: int = 4, head_dim: int = 32,
                 time_dim: int = 0, soft_dim: int = 32, soft_input_dim: Optional[int] = None,
                 aux_hidden: Sequence[int] = (64, 32), product: bool = True,
                 tied_init: bool = False) -> None:
        super().__init__()
        if dim <= 0 or k <= 0 or time_dim < 0:
            raise ValueError(f"SIM: need dim, k > 0 and time_dim >= 0, got {dim}, {k}, {time_dim}")
        if search not in ("hard", "soft", "loader"):
            raise ValueError(f"SIM: search must be hard, soft or loader, got {search!r}")
        self.dim, self.search, self.k, self.time_dim = dim, search, k, time_dim
        self.esu = MultiHeadTargetAttention(dim=dim + time_dim, query_dim=dim, heads=heads, head_dim=head_dim,
                                            product=product)
        if search == "soft":
            s = dim if soft_input_dim is None else soft_input_dim
            self.soft_b = nn.Linear(s, soft_dim, bias=False)  # W_b, on the behaviours
            self.soft_a = nn.Linear(s, soft_dim, bias=False)  # W_a, on the target
            if tied_init:
                tie_at_init(self.soft_a, self.soft_b)
            self.aux = MLP(in_dim=2 * s, hidden_dims=tuple(aux_hidden), activation="relu", out_dim=1)
        self.output_dim: int = self.esu.output_dim
        # soft search learns only through its auxiliary loss (the top-k passes no gradient): model building
        # refuses a config that does not bind label_B (tinrec/model.py)
        self.needs_label: bool = search == "soft"

    def relevance(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor,
                  seq_category_BL: Optional[Tensor] = None, query_category_B: Optional[Tensor] = None,
                  soft_seq_BLD: Optional[Tensor] = None, soft_query_BD: Optional[Tensor] = None) -> Tensor:
        """r [B, L]: the GSU's score of each behaviour (hard: 0/1 long, soft: float)."""
        if self.search == "hard":
            if seq_category_BL is None or query_category_B is None:
                raise ValueError("SIM(search='hard') needs seq_category_BL and query_category_B (category ids)")
            return (seq_category_BL == query_category_B.unsqueeze(1)).long()
        e_BLS = seq_BLD if soft_seq_BLD is None else soft_seq_BLD
        e_a_BS = query_BD if soft_query_BD is None else soft_query_BD
        # <W_b e_i, W_a e_a> = <e_i, W_b^T W_a e_a>: one vector per row, no projection of the L behaviours
        r_BS = self.soft_a(e_a_BS) @ self.soft_b.weight
        return seqdot.scores(e_BLS, r_BS)

    def _select(self, seq_BLD, mask_BL, query_BD, seq_category_BL, query_category_B, soft_seq_BLD, soft_query_BD):
        if self.search == "loader":  # a searched sequence: its most recent k
            r_BL = torch.ones_like(mask_BL, dtype=torch.long)
        else:
            r_BL = self.relevance(seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD, seq_category_BL=seq_category_BL,
                                  query_category_B=query_category_B, soft_seq_BLD=soft_seq_BLD,
                                  soft_query_BD=soft_query_BD)
        keep_BL = mask_BL & (r_BL > 0) if self.search == "hard" else mask_BL
        idx_BK, kept_BK = masked_topk(r_BL, keep_BL, self.k)
        return idx_BK, kept_BK, r_BL

    def kept_behaviours(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor,
                        seq_category_BL: Optional[Tensor] = None, query_category_B: Optional[Tensor] = None,
                        soft_seq_BLD: Optional[Tensor] = None, soft_query_BD: Optional[Tensor] = None,
                        **_: Tensor) -> Tuple[Tensor, Tensor]:
        """What the GSU keeps: (indices into L [B, K], valid [B, K]); the forward arguments are accepted."""
        idx_BK, kept_BK, _ = self._select(seq_BLD, mask_BL, query_BD, seq_category_BL, query_category_B,
                                          soft_seq_BLD, soft_query_BD)
        return idx_BK, kept_BK

    def aux_loss(self, r_BL: Tensor, mask_BL: Tensor, e_BLS: Tensor, e_a_BS: Tensor, label_B: Tensor) -> Tensor:
        """The soft search's auxiliary CTR loss: BCE of sigmoid(MLP([U_r, e_a])) against the label."""
        w_BL = r_BL.masked_fill(~mask_BL, 0.0)
        n_B1 = mask_BL.sum(1, keepdim=True).clamp_min(1).to(e_BLS.dtype)
        # padding enters with weight exactly 0 (its values are finite: zeros from InputArch), so no masked copy
        # of the [B, L, S] embeddings (as SDIM's bucket sums)
        u_r_BS = seqdot.weighted_sum(w_BL, e_BLS) / n_B1
        logit_B = self.aux(torch.cat([u_r_BS, e_a_BS], dim=-1)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logit_B, label_B.to(logit_B.dtype))

    def forward(self, *, seq_BLD: Union[Tensor, IndexedSequence], mask_BL: Tensor, query_BD: Tensor, seq_time_BLD: Optional[Tensor] = None,
                seq_category_BL: Optional[Tensor] = None, query_category_B: Optional[Tensor] = None,
                soft_seq_BLD: Optional[Tensor] = None, soft_query_BD: Optional[Tensor] = None,
                label_B: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """Search, then attend over the kept behaviours.

        Args:
            seq_BLD: behaviour embeddings e_i, oldest first, right-padded, [B, L, D].
            mask_BL: bool [B, L], True = real behaviour.
            query_BD: target embedding e_a, [B, D].
            seq_time_BLD: time-gap embeddings t_i, [B, L, T] (``time_dim`` T > 0).
            seq_category_BL, query_category_B: category ids (hard search).
            soft_seq_BLD, soft_query_BD: the soft search's embeddings (soft search; default the ESU's).
            label_B: the click label, in training only (soft search's auxiliary loss).

        Returns:
            U [B, heads * (D + T)]; in training with soft search and a label, ``(U, {"gsu": L_GSU})``.
        """
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        if (seq_time_BLD is None) != (self.time_dim == 0) or (
                seq_time_BLD is not None and tuple(seq_time_BLD.shape) != (*mask_BL.shape, self.time_dim)):
            raise ValueError(f"SIM(time_dim={self.time_dim}) needs seq_time_BLD of shape [B, L, {self.time_dim}] "
                             f"exactly when time_dim > 0")
        if self.search == "loader" and mask_BL.shape[1] <= self.k:  # searched already: attend to all of it
            z_BLZ = dense(seq_BLD) if seq_time_BLD is None else torch.cat([dense(seq_BLD), seq_time_BLD], dim=-1)
            return self.esu(z_BKZ=z_BLZ, mask_BK=mask_BL, query_BD=query_BD)
        # soft search scores and pools every behaviour with gradient: the dense sequence; hard search reads ids
        full_BLD = dense(seq_BLD) if self.search == "soft" else seq_BLD
        idx_BK, kept_BK, r_BL = self._select(full_BLD, mask_BL, query_BD, seq_category_BL, query_category_B,
                                             soft_seq_BLD, soft_query_BD)
        # the kept rows first, then z_j = [e_j ; t_j] of those K only (not a joined copy of all L behaviours)
        z_BKZ = gather_kept(seq_BLD, idx_BK) if seq_time_BLD is None else torch.cat(
            [gather_kept(seq_BLD, idx_BK), gather_kept(seq_time_BLD, idx_BK)], dim=-1)
        out_BO = self.esu(z_BKZ=z_BKZ, mask_BK=kept_BK, query_BD=query_BD)
        if self.search == "soft" and self.training and label_B is not None:
            e_BLS = full_BLD if soft_seq_BLD is None else soft_seq_BLD
            e_a_BS = query_BD if soft_query_BD is None else soft_query_BD
            return out_BO, {"gsu": self.aux_loss(r_BL, mask_BL, e_BLS, e_a_BS, label_B)}
        return out_BO
