"""SDIM, Sampling-based Deep Interest Modeling (Cao et al., "Sampling Is All You Need on Modeling Long-Term User
Behaviors for CTR Prediction", CIKM 2022, arXiv 2205.10249; ``../shared/MODELS.md`` A4):

    sig_g(x) = sum_b 2^b 1[<R_{g,b}, x> > 0]          tau random hyperplanes per group, G = m / tau groups
    c_gi = m_i 1[sig_g(q) = sig_g(S_i)]               behaviour i collides with the target in group g
    s_g = sum_i c_gi S_i,   v_g = s_g / max(||s_g||, 1e-6),   u = mean_g v_g

No top-k and no softmax: each behaviour is drawn into the target's buckets with a probability that falls with
its angle to the target, ``(1 - angle / pi)^tau`` in expectation (tau is an inverse temperature), and the
cost is linear in L. The hyperplanes ``R`` [m, D] are drawn once from N(0, 1) with ``seed`` and frozen (a
buffer, saved in checkpoints): no gradient reaches them, the behaviours that collide get theirs. Choices
(MODELS.md): l2 normalisation of each bucket sum as written above (an empty bucket gives 0); defaults m = 48,
tau = 3 (16 groups); the output is ``[u, u * q]`` (``product``) so the tower sees the interaction, as DIN's.

The sequence may come as distinct rows + index (``indexed.py``). Where a random behaviour collides with the
target in fewer than half a group on average (G / 2^tau < 1/2; tau = 6, m = 48: 1/8), each distinct row is
hashed once and the bucket sums add up only the colliding behaviours' rows (no [B, L, D] tensor, forward or
backward; the dense product again for a batch with more collisions than behaviours). With more collisions
(tau = 3: 2 per behaviour) the sums need most behaviours anyway: the sequence is made dense first and
everything runs as on a tensor. The same sums either way, up to float summation order.
"""
# Shape legend: B batch, L sequence length (padded), D width, G groups, T = tau bits per group, M = m hashes.
from typing import Union

import torch
from torch import Tensor, nn

from .indexed import IndexedSequence, dense, project
from .masking import check_inputs


class SDIM(nn.Module):
    """Hash-bucket sampling of a long sequence by its collisions with the target.

    Args:
        dim: width D of behaviours and target.
        hashes: m, random hyperplanes in all (a multiple of ``tau``).
        tau: hyperplanes per group (bits of a bucket signature).
        seed: seed of the hyperplanes (the same on every rank and in every run).
        product: output ``[u, u * q]`` (2D) instead of ``u`` (D).

    Attributes:
        output_dim: 2D if ``product`` else D.
    """

    INDEXED_INPUTS = ("seq_BLD",)

    def __init__(self, *, dim: int, hashes: int = 48, tau: int = 3, seed: int = 0, product: bool = True) -> None:
        super().__init__()
        if dim <= 0 or tau < 1 or hashes < tau or hashes % tau:
            raise ValueError(f"SDIM: need dim > 0 and hashes a positive multiple of tau, got dim={dim}, "
                             f"hashes={hashes}, tau={tau}")
        self.dim, self.tau, self.groups, self.product = dim, tau, hashes // tau, product
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("planes_MD", torch.randn(hashes, dim, generator=g))
        self.register_buffer("powers_T", 2 ** torch.arange(tau))
        self.output_dim: int = 2 * dim if product else dim

    def signatures(self, x_ND: Tensor) -> Tensor:
        """Bucket signature of each vector in each group: int64 [..., G] in [0, 2^tau)."""
        bits = (x_ND @ self.planes_MD.T > 0).long()  # [..., M]
        return (bits.view(*bits.shape[:-1], self.groups, self.tau) * self.powers_T).sum(-1)

    def collisions(self, seq_BLD: Union[Tensor, IndexedSequence], mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """c [B, L, G]: behaviour i shares the target's bucket in group g (False at padding).

        Equal signatures = no differing sign bit in the group: computed on one-byte booleans (the bits of
        every behaviour XOR the target's), never as [B, L, M] integers."""
        B, L, _ = seq_BLD.shape
        bits_BLM = project(seq_BLD, self.planes_MD.T) > 0
        bits_BM = query_BD.detach() @ self.planes_MD.T > 0
        differ_BLGT = (bits_BLM ^ bits_BM.unsqueeze(1)).view(B, L, self.groups, self.tau)
        return ~differ_BLGT.any(-1) & mask_BL.unsqueeze(-1)

    def bucket_sums(self, seq_BLD: Union[Tensor, IndexedSequence], c_BLG: Tensor) -> Tensor:
        """s [B, G, D]: the sum of the behaviours colliding in each group (``c_BLG`` bool, False at padding)."""
        B, L, D = seq_BLD.shape
        if isinstance(seq_BLD, IndexedSequence) and int(c_BLG.sum()) <= B * L:
            b_N, l_N, g_N = c_BLG.nonzero(as_tuple=True)
            rows_ND = seq_BLD.rows_UD.index_select(0, seq_BLD.index_BLF[b_N, l_N].reshape(-1)).view(-1, D)
            s_XD = rows_ND.new_zeros(B * self.groups, D).index_add(0, b_N * self.groups + g_N, rows_ND)
            return s_XD.view(B, self.groups, D)
        # padding enters with weight exactly 0 (its values are finite: zeros or rows), so no masked copy
        return torch.bmm(c_BLG.transpose(1, 2).to(seq_BLD.dtype), dense(seq_BLD))

    def forward(self, *, seq_BLD: Union[Tensor, IndexedSequence], mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """The sampled interest of each row.

        Args:
            seq_BLD: behaviour representations, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            query_BD: target representation, shape [B, D].

        Returns:
            ``[u, u * q]`` of shape [B, 2D] (``u`` [B, D] without ``product``); zeros for a row with no
            behaviour or no collision.
        """
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        if self.groups / 2 ** self.tau >= 0.5:  # many collisions: the dense product over (nearly) all rows
            seq_BLD = dense(seq_BLD)
        s_BGD = self.bucket_sums(seq_BLD, self.collisions(seq_BLD, mask_BL, query_BD))
        v_BGD = s_BGD / torch.linalg.vector_norm(s_BGD, dim=-1, keepdim=True).clamp_min(1e-6)
        u_BD = v_BGD.mean(1)
        return torch.cat([u_BD, u_BD * query_BD], dim=-1) if self.product else u_BD
