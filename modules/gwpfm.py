"""GwPFM, the group-weighted part-aware factorisation machine of Tencent's ads backbone (Pan et al., "Ads
Recommendation in a Collapsed and Entangled World", KDD 2024, arXiv 2403.00793; ``../shared/MODELS.md`` D),
a variant of FFM (field-aware sub-embeddings) and FwFM (learned pair weights), as an expert of the
heterogeneous backbone.

The F fields are split into G groups (user, ad, context, ...; ``groups``). Each field i holds G
sub-embeddings ``v_{i,g}`` (its table is G d wide: ``dim = G d``), one per group it may meet, as FFM holds
one per field. The interaction of a pair reads, from each side, the sub-embedding meant for the other
side's group, weighted by a learned G x G matrix r (FwFM's pair weights at group level):

    h = sum_{i<j} r_{g(i), g(j)} (v_{i, g(j)} (.) v_{j, g(i)})          a d-vector         (MODELS.md D)
    out = MLP(h)

Choices (the paper's exact equation is not verified; MODELS.md D follows a public port): the pair term keeps
the d-vector (the port's form, fed to an MLP) rather than its sum (the scalar FM form; ``hidden = []`` with
the tower reading h gives that form's information); a pair is unordered, so only r's upper triangle
(diagonal included) is learned, read as ``r_{min(g(i), g(j)), max(...)}``; r starts at 1 (a plain field-aware FM).

Cost: the sum over pairs never builds the F x F pair tensor. Per pair of groups a < b the pairs it holds sum
to ``r_ab (sum_{i in a} v_{i,b}) (.) (sum_{j in b} v_{j,a})``; within a group a, to
``r_aa / 2 ((sum_{i in a} v_{i,a})^2 - sum_{i in a} v_{i,a}^2)`` (FM's identity). Both are batched products
over all groups at once: O(F G d) per sample, not O(F^2 d).
"""
# Shape legend: B batch, F fields, G groups, E = G d a field's stacked width, d sub-embedding width, H output.
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP, Activation


class GwPFM(nn.Module):
    """Group-weighted part-aware FM over a field stack, then an MLP.

    Args:
        dim: a field's width E = G d (its G sub-embeddings side by side, group order).
        fields: F.
        groups: the group of each field (F integers in 0..G-1); G = max + 1, and every group must hold a field.
        group_sizes: instead of ``groups``, the sizes of G runs of consecutive fields (the input's feature order:
            ``[21, 22, 10]`` = 21 user fields, then 22 item fields, then 10 context fields).
        hidden: widths of the MLP after the interaction (its last is the output width; empty: output h).
        activation: the MLP's activation.

    Attributes:
        output_dim: ``hidden[-1]``, or d without hidden layers.
    """

    def __init__(self, *, dim: int, fields: int, groups: Optional[Sequence[int]] = None,
                 group_sizes: Optional[Sequence[int]] = None, hidden: Sequence[int] = (256,),
                 activation: Activation = "relu") -> None:
        super().__init__()
        if (groups is None) == (group_sizes is None):
            raise ValueError("GwPFM: give the fields' groups either as groups (one id per field) or as group_sizes "
                             "(runs of consecutive fields), not both or neither")
        if group_sizes is not None:
            if any(int(n) < 1 for n in group_sizes) or sum(int(n) for n in group_sizes) != fields:
                raise ValueError(f"GwPFM: group_sizes {list(group_sizes)} must be positive and add up to the "
                                 f"{fields} fields")
            groups = [g for g, n in enumerate(group_sizes) for _ in range(int(n))]
        groups = [int(g) for g in groups]
        if len(groups) != fields:
            raise ValueError(f"GwPFM: groups names the group of each of the {fields} fields, got {len(groups)}")
        n_groups = max(groups) + 1 if groups else 0
        if min(groups, default=0) < 0 or sorted(set(groups)) != list(range(n_groups)):
            raise ValueError(f"GwPFM: groups must use every id 0..G-1 at least once, got {groups}")
        if dim % n_groups:
            raise ValueError(f"GwPFM: a field's width {dim} is not G = {n_groups} sub-embeddings of one width")
        self.fields, self.n_groups, self.sub = fields, n_groups, dim // n_groups
        onehot_GF = torch.zeros(n_groups, fields)
        onehot_GF[torch.tensor(groups), torch.arange(fields)] = 1.0
        self.register_buffer("onehot_GF", onehot_GF, persistent=False)
        rows, cols = torch.triu_indices(n_groups, n_groups)  # a pair of groups is unordered: a <= b
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        self.r_P = nn.Parameter(torch.ones(rows.numel()))
        self.mlp = MLP(in_dim=self.sub, hidden_dims=list(hidden), activation=activation)
        self.output_dim: int = self.mlp.output_dim

    def pair_weights(self) -> Tensor:
        """r [G, G]: the learned weight of each pair of groups on and above the diagonal, zero below."""
        r_GG = self.r_P.new_zeros(self.n_groups, self.n_groups)
        return r_GG.index_put((self.pair_rows, self.pair_cols), self.r_P)

    def interaction(self, fields_BFE: Tensor) -> Tensor:
        """h [B, d]: the weighted sum over field pairs, computed group by group."""
        B = fields_BFE.shape[0]
        if tuple(fields_BFE.shape[1:]) != (self.fields, self.n_groups * self.sub):
            raise ValueError(f"GwPFM: fields_BFE has shape {tuple(fields_BFE.shape)}, "
                             f"want [B, {self.fields}, {self.n_groups * self.sub}]")
        v_BFGd = fields_BFE.view(B, self.fields, self.n_groups, self.sub)
        # S[b, a, g] = sum of the sub-embeddings v_{i,g} over the fields i of group a
        s_BGGd = torch.einsum("af,nfgd->nagd", self.onehot_GF, v_BFGd)
        # across groups a < b: (sum_{i in a} v_{i,b}) (.) (sum_{j in b} v_{j,a}), weighted by r_ab
        r_GG = self.pair_weights()
        cross_BGGd = s_BGGd * s_BGGd.transpose(1, 2)
        across_Bd = torch.einsum("ag,nagd->nd", r_GG.triu(1), cross_BGGd)
        # within a group a: FM's identity on the sub-embeddings meant for a itself
        own_BGd = torch.diagonal(s_BGGd, dim1=1, dim2=2).transpose(1, 2)  # [B, G, d]: sum_{i in a} v_{i,a}
        own_sq_BGd = torch.einsum("af,nfad->nad", self.onehot_GF, v_BFGd.pow(2))  # sum_{i in a} v_{i,a}^2
        within_Bd = 0.5 * torch.einsum("a,nad->nd", torch.diagonal(r_GG), own_BGd.pow(2) - own_sq_BGd)
        return across_Bd + within_Bd

    def forward(self, *, fields_BFE: Tensor) -> Tensor:
        """Args: fields_BFE [B, F, G d] (a ``combine: stack`` input). Returns [B, output_dim]."""
        return self.mlp(self.interaction(fields_BFE))
