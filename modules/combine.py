"""How the tower reads several experts (interest modules, or the heterogeneous backbone's GwPFM, IPNN, DCN V2,
FlatDNN): ``model.tower.combine`` (``../shared/MODELS.md`` D; the TIN paper's Sec. 4.6 says only that TIN
joined the others as one more expert).

    concat   [o_1, ..., o_E]                                   (default; our choice, MODELS.md D)
    sum      sum_e o_e                                          (every o_e of one width h)
    gate     sum_e softmax(W_g [o_1, ..., o_E, c] + b_g)_e o_e  (a softmax gate, one weight per expert and sample)

``c`` is what the tower reads besides the experts (``model.tower.inputs``, e.g. the user and target features),
concatenated after the combined experts in every case. Choice (ours; a public port of the heterogeneous mixture
gates on its input features): the gate reads the experts' outputs and ``c``, everything the tower sees, so
that a sample's mix of experts can depend on what each expert says about it. The gate starts uniform (zero
weights and bias): the start is the experts' mean.
"""
# Shape legend: B batch, E experts, H an expert's width, C the tower's other inputs.
from typing import List, Literal, Sequence, get_args

import torch
from torch import Tensor, nn

Combine = Literal["concat", "sum", "gate"]
COMBINES = get_args(Combine)


class ExpertCombine(nn.Module):
    """Args: how (``concat``, ``sum``, ``gate``), the experts' output widths, the width of the tower's other inputs.
    Attributes: output_dim (the combined experts' width, without the other inputs)."""

    def __init__(self, *, how: Combine, widths: Sequence[int], context_dim: int = 0) -> None:
        super().__init__()
        if how not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {how!r}")
        widths = [int(w) for w in widths]
        if how != "concat" and len(set(widths)) > 1:
            raise ValueError(f"combine {how!r} needs every expert of one width, got widths {widths}")
        self.how = how
        self.gate = None
        if how == "gate":
            self.gate = nn.Linear(sum(widths) + context_dim, len(widths))
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        self.output_dim: int = sum(widths) if how == "concat" else (widths[0] if widths else 0)

    def weights(self, experts: List[Tensor], context: List[Tensor]) -> Tensor:
        """The gate's [B, E] softmax weights."""
        assert self.gate is not None, "weights() is the gate's"
        return torch.softmax(self.gate(torch.cat(list(experts) + list(context), dim=-1)), dim=-1)

    def forward(self, experts: List[Tensor], context: List[Tensor]) -> Tensor:
        if self.how == "concat":
            return torch.cat(list(experts), dim=-1)
        stacked_BEH = torch.stack(list(experts), dim=1)
        if self.how == "sum":
            return stacked_BEH.sum(1)
        return torch.einsum("be,beh->bh", self.weights(experts, context), stacked_BEH)
