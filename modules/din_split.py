"""DIN with separate attention and representation embedding spaces: the expressiveness study of the
TIN paper (Zhou et al., arXiv 2308.08487, Appendix A.2, Eq. 6, Figure 5):

    y_hat  = sigmoid(g_MLP([u_int, v^TR, u_int ⊙ v^TR]))
    u_int  = sum_{i in H} alpha(e_i^TA, v^TA) * e_i^TR
    alpha  = softmax_i(<v^TA, e_i^TA> / sqrt(d_TA))

{e^TA, v^TA} live in R^{d_TA} and {e^TR, v^TR} in R^{d_TR}: the attention decides *which* behaviours
count, the representation *what* they contribute. The paper sweeps one size from 0 to 256 while the
other stays at 128; d_TA = 0 is "attention disabled" (the red star of Figure 5).

How the two spaces are laid out (our choice, the paper only says the spaces are separate): every
feature of the behaviour (item, category, ...) is looked up in one table of width w = (d_TA + d_TR) / F,
F the number of features; the first d_TA / F columns of each feature's embedding form its part of the
attention space, the remaining d_TR / F columns its part of the representation space. Columns of an
embedding row are independent parameters, so this is the same model as two tables per feature, with
one lookup instead of two. ``fields`` (F) and ``dim`` (F * w) are supplied by the model builder.

Other choices: d_TA = 0 gives every valid behaviour the weight 1/|H| (the mean; softmax over equal
logits); an empty history gives u_int = 0; the output is the whole of Eq. 6's MLP input
[u_int, v^TR, u_int ⊙ v^TR] (width 3 d_TR), so configs set ``model.target_in_tower: false`` and the
tower sees v^TR once, never v^TA. ``learned_correlation`` follows Eq. 4: exp(z_i) * ||e_i^TR ⊙ v^TR||_2.
"""
# Shape legend: B batch, L history length (padded), D = F * w behaviour width, F fields (features),
# A = d_TA attention width, R = d_TR representation width.
import math
from typing import Tuple

import torch
from torch import Tensor, nn

from . import seqdot
from .masking import check_inputs, masked_softmax, zero_padding


class SplitDIN(nn.Module):
    """DIN whose attention and representation read disjoint embedding columns (Eq. 6).

    Args:
        dim: behaviour width D = F * w (builder).
        fields: number of features F concatenated into a behaviour (builder).
        attention_dim: d_TA, the attention space's total width over the F features; a multiple of F,
            0 <= d_TA < D. The representation space gets d_TR = D - d_TA.

    Attributes:
        output_dim: 3 * d_TR.
    """

    def __init__(self, *, dim: int, fields: int = 1, attention_dim: int) -> None:
        super().__init__()
        if fields < 1 or dim % fields:
            raise ValueError(f"SplitDIN: dim {dim} is not a multiple of fields {fields}")
        if attention_dim < 0 or attention_dim >= dim or attention_dim % fields:
            raise ValueError(
                f"SplitDIN attention_dim must be a multiple of the {fields} field(s) in [0, {dim}) so that "
                f"the representation keeps at least one column per field, got {attention_dim}")
        self.dim, self.fields = dim, fields
        self.attention_dim = attention_dim
        self.representation_dim = dim - attention_dim
        self.output_dim: int = 3 * self.representation_dim

    def split(self, x_XD: Tensor) -> Tuple[Tensor, Tensor]:
        """[..., D] -> (attention part [..., A], representation part [..., R]), column-split per field."""
        per_field = x_XD.unflatten(-1, (self.fields, self.dim // self.fields))
        a = self.attention_dim // self.fields
        return per_field[..., :a].flatten(-2), per_field[..., a:].flatten(-2)

    def attention_weights(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        """alpha_i of Eq. 6, shape [B, L]: softmax over valid behaviours, uniform when d_TA = 0."""
        return masked_softmax(self._logits(seq_BLD, query_BD), mask_BL)

    def forward(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
    ) -> Tensor:
        """Eq. 6's tower input.

        Args:
            seq_BLD: behaviour embeddings, right-padded, shape [B, L, D].
            mask_BL: bool, shape [B, L], True = real behaviour.
            query_BD: target embedding, shape [B, D].

        Returns:
            [u_int, v^TR, u_int ⊙ v^TR] of shape [B, 3R]; u_int = 0 for empty histories.
        """
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        seq_BLD = zero_padding(seq_BLD, mask_BL)
        weight_BL = self.attention_weights(seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        _, seq_tr_BLR = self.split(seq_BLD)
        _, query_tr_BR = self.split(query_BD)
        u_BR = seqdot.weighted_sum(weight_BL, seq_tr_BLR)
        return torch.cat([u_BR, query_tr_BR, u_BR * query_tr_BR], dim=-1)

    def learned_correlation(
        self,
        *,
        seq_BLD: Tensor,
        mask_BL: Tensor,
        query_BD: Tensor,
    ) -> Tensor:
        """exp(z_i) * ||e_i^TR ⊙ v^TR||_2 (TIN paper Eq. 4), shape [B, L], 0 at padding."""
        check_inputs(dim=self.dim, seq_BLD=seq_BLD, mask_BL=mask_BL, query_BD=query_BD)
        seq_BLD = zero_padding(seq_BLD, mask_BL)
        _, seq_tr_BLR = self.split(seq_BLD)
        _, query_tr_BR = self.split(query_BD)
        norm_BL = torch.linalg.vector_norm(seq_tr_BLR * query_tr_BR.unsqueeze(1), dim=-1)
        cor_BL = torch.exp(self._logits(seq_BLD, query_BD)) * norm_BL
        return torch.where(mask_BL, cor_BL, torch.zeros_like(cor_BL))

    def _logits(self, seq_BLD: Tensor, query_BD: Tensor) -> Tensor:
        """z_i = <v^TA, e_i^TA> / sqrt(d_TA), shape [B, L]; all 0 when d_TA = 0."""
        if self.attention_dim == 0:
            return seq_BLD.new_zeros(seq_BLD.shape[:2])
        seq_ta_BLA, _ = self.split(seq_BLD)
        query_ta_BA, _ = self.split(query_BD)
        return seqdot.scores(seq_ta_BLA, query_ta_BA) / math.sqrt(self.attention_dim)
