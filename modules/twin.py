"""TWIN, TWo-stage Interest Network (Chang et al., "TWIN: TWo-stage Interest Network for Lifelong User Behavior
Modeling in CTR Prediction at Kuaishou", KDD 2023, arXiv 2302.02352; ``../shared/MODELS.md`` A5):

    alpha_a = (K_h W^h_a)(q W^q_a)^T / sqrt(d_k) + sum_j beta_aj (K_c,j w^c_aj)      per head a, per behaviour
    CP-GSU: the k behaviours with the best alpha, the heads' rankings walked in turn until k are distinct
    ESU:    head_a = softmax(alpha_a[I])^T (K[I] W^v_a),   K = [K_h, K_c],   TWIN = concat_a(head_a) W^o

K_h [B, L, H] are the behaviours' inherent (user-independent) features, K_c [B, L, J * C] their cross features
(click time, play time, ...: J of width C, 8 in the paper): each cross feature is squeezed to one scalar per
head (a block-diagonal W^c) and enters as a per-behaviour bias, weighted by a learned beta. The GSU and the
ESU score with the same alpha and the same weights (the paper's consistency: what the search keeps is what
the attention would weigh most). Choices (MODELS.md): 4 heads, d_k = 32, k = 100; the output width is D
(W^o: heads * d_v -> D, d_v = d_k); the GSU ranking is taken without gradient (the top-k has none), the ESU
recomputes alpha on the kept rows so that every weight learns through it; float ties follow
``masked_topk`` (most recent first). Without cross features (``cross_features = 0``) alpha is the plain
scaled dot product. A row with no behaviour gives zeros.
"""
# Shape legend: B batch, L sequence length (padded), H inherent width, D target width, J cross features,
# C width of each, A heads, E head width, K kept.
import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .indexed import IndexedSequence, dense, gather
from .masking import masked_softmax, masked_topk, zero_padding
from .target_attention import MultiHeadTargetAttention, tie_at_init


class TWIN(nn.Module):
    """Consistency-preserving two-stage target attention over a long sequence.

    Args:
        dim: width H of the behaviours' inherent features (and of the target, unless ``query_dim``).
        query_dim: width D of the target (default H).
        cross_features: J, cross features per behaviour; ``cross_width`` C each.
        k: behaviours kept by the GSU.
        heads: A; ``head_dim`` E (d_k = d_v).
        product: output ``[u, u * q]`` (needs D = H), MODELS.md's tower input ``[u, q, u * q]`` (our choice).
        tied_init: W^q starts equal to W^h (``target_attention.tie_at_init``; needs D = H): the first relevance
            is an inner product, under which behaviours like the target rank first; and W^o W^v = I on the
            inherent part (orthonormal W^v, W^o its transpose), so that the output starts as the attended
            behaviours themselves and ``u * q`` as their match with the target, as in SIM's ESU (our choice;
            the paper is silent on initialisation).
        esu: ``twin`` (the paper's: the same alpha weighs the kept rows) or ``sim``, a diagnostic: SIM's ESU
            (``target_attention.py``, its own scores, raw values) reads the CP-GSU's kept rows, which splits
            how well the search keeps from how well its reader uses what was kept.

    Attributes:
        output_dim: H, 2H with ``product``.

    The sequence may come as distinct rows + index (``indexed.py``): the GSU reads it densely without
    gradient, and only the k kept behaviours are gathered with gradient (no [B, L, H] gradient).
    """

    INDEXED_INPUTS = ("seq_BLD",)

    def __init__(self, *, dim: int, query_dim: Optional[int] = None, cross_features: int = 0, cross_width: int = 8,
                 k: int = 100, heads: int = 4, head_dim: int = 32, product: bool = True,
                 tied_init: bool = False, esu: str = "twin") -> None:
        super().__init__()
        if esu not in ("twin", "sim"):
            raise ValueError(f"TWIN: esu must be twin or sim, got {esu!r}")
        if tied_init and query_dim not in (None, dim):
            raise ValueError(f"TWIN: tied_init needs the target width {query_dim} = the behaviour width {dim}")
        if product and query_dim not in (None, dim):
            raise ValueError(f"TWIN: product needs the target width {query_dim} = the behaviour width {dim}")
        self.product = product
        if dim <= 0 or k <= 0 or heads <= 0 or head_dim <= 0 or cross_features < 0 or cross_width <= 0:
            raise ValueError(f"TWIN: bad sizes dim={dim}, k={k}, heads={heads}, head_dim={head_dim}, "
                             f"cross_features={cross_features}, cross_width={cross_width}")
        self.dim, self.k, self.heads, self.head_dim = dim, k, heads, head_dim
        self.cross_features, self.cross_width = cross_features, cross_width
        self.key = nn.Linear(dim, heads * head_dim, bias=False)  # W^h_a
        self.query = nn.Linear(dim if query_dim is None else query_dim, heads * head_dim, bias=False)  # W^q_a
        self.value = nn.Linear(dim + cross_features * cross_width, heads * head_dim, bias=False)  # W^v_a
        self.out = nn.Linear(heads * head_dim, dim, bias=False)  # W^o
        if tied_init:
            tie_at_init(self.query, self.key)
            if heads * head_dim >= dim:  # values start as the behaviours themselves: W^o W^v_h = I at init
                with torch.no_grad():
                    q_VH = torch.linalg.qr(torch.randn(heads * head_dim, dim))[0]  # orthonormal columns
                    self.value.weight[:, :dim].copy_(q_VH)
                    self.out.weight.copy_(q_VH.T)
        if cross_features:
            self.cross = nn.Parameter(torch.randn(heads, cross_features, cross_width) / math.sqrt(cross_width))  # w^c
            self.beta = nn.Parameter(torch.ones(heads, cross_features))
        self.output_dim: int = 2 * dim if product else dim
        self.sim_esu = None
        if esu == "sim":  # a diagnostic: SIM's ESU reads what the CP-GSU kept (splits the search from its reader)
            self.sim_esu = MultiHeadTargetAttention(dim=dim + cross_features * cross_width, query_dim=dim,
                                                    heads=heads, head_dim=head_dim, product=product)
            self.output_dim = self.sim_esu.output_dim

    def alpha(self, inherent_BLH: Tensor, cross_BLX: Optional[Tensor], query_BD: Tensor,
              cross_bias: bool = True) -> Tensor:
        """The relevance of every behaviour for every head, [B, A, L] (``cross_bias=False``: without the cross
        features' bias, a diagnostic of what the inherent part alone would rank first).

        <K_h W_a, q W_q> = <K_h, W_a^T W_q q>: one [H] vector per head and row instead of projecting every
        behaviour (the same function; the GSU scores all L behaviours this way)."""
        B, L, H = inherent_BLH.shape
        q_BAE = self.query(query_BD).view(B, self.heads, self.head_dim)
        r_BAH = torch.einsum("bae,aeh->bah", q_BAE, self.key.weight.view(self.heads, self.head_dim, H))
        a_BAL = torch.bmm(r_BAH, inherent_BLH.transpose(1, 2)) / math.sqrt(self.head_dim)
        if self.cross_features and cross_bias:
            c_BLJC = cross_BLX.view(B, L, self.cross_features, self.cross_width)
            squeezed_BLAJ = torch.einsum("bljc,ajc->blaj", c_BLJC, self.cross)  # one scalar per feature and head
            a_BAL = a_BAL + torch.einsum("blaj,aj->bal", squeezed_BLAJ, self.beta)
        return a_BAL

    def search(self, alpha_BAL: Tensor, mask_BL: Tensor):
        """CP-GSU: the heads' top-k rankings walked in turn (head 0's best, head 1's best, ..., head 0's second,
        ...) until k distinct behaviours. Returns (indices [B, K], kept [B, K]), K = min(k, L)."""
        B, A, L = alpha_BAL.shape
        K = min(self.k, L)
        idx_BAK, ok_BAK = masked_topk(alpha_BAL.reshape(B * A, L), mask_BL.repeat_interleave(A, 0), K)
        cand_BN = idx_BAK.view(B, A, K).transpose(1, 2).reshape(B, A * K)  # rank-major: the walk's order
        ok_BN = ok_BAK.view(B, A, K).transpose(1, 2).reshape(B, A * K)
        N = A * K
        pos_BN = torch.arange(N, device=cand_BN.device).expand(B, N)
        first_BL = torch.full((B, L), N, dtype=torch.long, device=cand_BN.device)
        first_BL = first_BL.scatter_reduce(1, cand_BN, torch.where(ok_BN, pos_BN, N), reduce="amin")
        new_BN = ok_BN & (torch.gather(first_BL, 1, cand_BN) == pos_BN)  # a behaviour's first appearance
        order_BN = torch.sort(torch.where(new_BN, pos_BN, N + pos_BN), dim=1).indices[:, :K]  # new ones first
        return torch.gather(cand_BN, 1, order_BN), torch.gather(new_BN, 1, order_BN)

    def kept_behaviours(self, *, seq_BLD: Union[Tensor, IndexedSequence], mask_BL: Tensor, query_BD: Tensor,
                        cross_BLX: Optional[Tensor] = None, cross_bias: bool = True):
        """What the CP-GSU keeps: (indices into L [B, K], valid [B, K]), without gradient; ``cross_bias=False``:
        what it would keep without the cross features' bias (``tinrec analyze long-range``)."""
        with torch.no_grad():
            return self.search(self.alpha(dense(seq_BLD), cross_BLX, query_BD, cross_bias), mask_BL)

    def forward(self, *, seq_BLD: Union[Tensor, IndexedSequence], mask_BL: Tensor, query_BD: Tensor,
                cross_BLX: Optional[Tensor] = None) -> Tensor:
        """TWIN's interest vector.

        Args:
            seq_BLD: the behaviours' inherent features K_h, right-padded, [B, L, H].
            mask_BL: bool [B, L], True = real behaviour.
            query_BD: the target's inherent features q, [B, D].
            cross_BLX: the behaviours' cross features K_c, [B, L, J * C] (``cross_features`` J > 0).

        Returns:
            [B, H] (``[u, u * q]`` [B, 2H] with ``product``); zeros for a row with no behaviour.
        """
        B, L, _ = seq_BLD.shape
        if (cross_BLX is None) != (self.cross_features == 0) or (
                cross_BLX is not None and tuple(cross_BLX.shape) != (B, L, self.cross_features * self.cross_width)):
            raise ValueError(f"TWIN(cross_features={self.cross_features}) needs cross_BLX of shape "
                             f"[B, L, {self.cross_features * self.cross_width}] exactly when cross_features > 0")
        idx_BK, kept_BK = self.kept_behaviours(seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD, cross_BLX=cross_BLX)
        K = idx_BK.shape[1]

        h_BKH = gather(seq_BLD, idx_BK)
        c_BKX = gather(cross_BLX, idx_BK) if cross_BLX is not None else None
        if self.sim_esu is not None:
            z_BKZ = h_BKH if c_BKX is None else torch.cat([h_BKH, c_BKX], dim=-1)
            return self.sim_esu(z_BKZ=z_BKZ, mask_BK=kept_BK, query_BD=query_BD)
        a_BAK = self.alpha(h_BKH, c_BKX, query_BD)  # the same alpha, on the kept rows (with gradients)
        w_BAK = masked_softmax(a_BAK.reshape(B * self.heads, K), kept_BK.repeat_interleave(self.heads, 0))
        full_BKX = h_BKH if c_BKX is None else torch.cat([h_BKH, c_BKX], dim=-1)
        v_BAKE = self.value(zero_padding(full_BKX, kept_BK)).view(B, K, self.heads, self.head_dim).transpose(1, 2)
        heads_BAE = torch.einsum("bak,bake->bae", w_BAK.view(B, self.heads, K), v_BAKE)
        u_BH = self.out(heads_BAE.reshape(B, self.heads * self.head_dim))
        return torch.cat([u_BH, u_BH * query_BD], dim=-1) if self.product else u_BH
