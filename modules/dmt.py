"""DMT, Deep Multifaceted Transformers (Gu et al., CIKM 2020; ``../shared/MODELS.md`` C), a baseline of DUMN's
Table 1: one Transformer per behaviour sequence, whose decoder reads the encoder's outputs with the target as
query, then a multi-gate mixture of experts (MMoE).

    per sequence k:  x_j = W_k [e_j ; p_j]                        (p_j: its position embedding)
                     z   = Encoder_k(x)                            (self-attention + FFN, post-LN)
                     i_k = Decoder_k(t, z)                         (t = W_k [e_t ; 0]; multi-head attention of
                                                                    t over z, residual + LN, FFN, residual + LN)
    MMoE:            h = [i_1, ..., i_K, e_t];  g = softmax(W_g h);  out = sum_x g_x Expert_x(h)

The output is the task's MMoE mixture (``expert_hidden[-1]`` wide); the config's tower is the task tower u_k
(one task, CTR). On DUMN's data (MODELS.md C, our choice): one Transformer per feedback sequence (click,
unclick, like, dislike; the sequences named in ``sequences``), one task, 4 experts, no bias DNN (the data has
no position or page features for it), time-gap bins as the positions. A sequence with no behaviour gives
i_k = 0 (its decoder attends to nothing).
"""
# Shape legend: B batch, L behaviours, E behaviour width, P position width, D model width, X experts.
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masking import zero_padding
from .mlp import MLP
from .transformer import TransformerBlock, attention_mask

SEQUENCES = ("click", "unclick", "like", "dislike")


class TargetDecoder(nn.Module):
    """One decoder layer with a single query (the target): multi-head attention over the encoder's outputs,
    residual and layer norm, FFN, residual and layer norm."""

    def __init__(self, *, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.o = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, t_BD: Tensor, z_BLD: Tensor, mask_BL: Tensor) -> Tensor:
        B, L, D = z_BLD.shape
        H = self.heads
        q = self.q(t_BD).view(B, H, 1, D // H)
        k, v = (u.view(B, L, H, D // H).transpose(1, 2) for u in self.kv(z_BLD).chunk(2, -1))
        att_BH1d = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(mask_BL)[:, :, :1])
        h = self.norm1(t_BD + self.o(att_BH1d.reshape(B, D)))
        out = self.norm2(h + self.ffn(h))
        return out * mask_BL.any(1, keepdim=True).to(out.dtype)  # an empty sequence gives zeros


class DMT(nn.Module):
    """DMT's per-sequence Transformers and MMoE (one task).

    Args:
        dim: E, width of the behaviours and the target (supplied by the builder from ``target_BE``).
        model_dim: D of the Transformers; heads; ffn_dim (default 4 D); dropout of the encoders.
        position_dim: P of the ``*_position_BLP`` inputs (0: none).
        sequences: the sequences read, names of ``SEQUENCES``.
        experts, expert_hidden: the MMoE's experts (MLPs of these widths).
    """

    def __init__(self, *, dim: int, model_dim: int = 32, heads: int = 4, ffn_dim: Optional[int] = None,
                 dropout: float = 0.0, position_dim: int = 0, sequences: Sequence[str] = SEQUENCES,
                 experts: int = 4, expert_hidden: Sequence[int] = (128, 64)) -> None:
        super().__init__()
        sequences = list(sequences)
        if not sequences or set(sequences) - set(SEQUENCES) or len(set(sequences)) != len(sequences):
            raise ValueError(f"DMT: sequences must be distinct names of {SEQUENCES}, got {sequences}")
        if dim <= 0 or model_dim <= 0 or model_dim % heads or experts < 1 or not expert_hidden:
            raise ValueError(f"DMT: need dim > 0, heads dividing model_dim, experts >= 1, expert_hidden; got "
                             f"{dim}, {model_dim}, {heads}, {experts}, {list(expert_hidden)}")
        self.sequences, self.dim, self.position_dim = sequences, dim, position_dim
        ffn = ffn_dim or 4 * model_dim
        self.inp = nn.ModuleDict({k: nn.Linear(dim + position_dim, model_dim) for k in sequences})
        self.encoders = nn.ModuleDict({k: TransformerBlock(dim=model_dim, num_heads=heads, ffn_dim=ffn,
                                                           dropout=dropout) for k in sequences})
        self.decoders = nn.ModuleDict({k: TargetDecoder(dim=model_dim, heads=heads, ffn_dim=ffn) for k in sequences})
        h = len(sequences) * model_dim + dim
        self.experts = nn.ModuleList(MLP(in_dim=h, hidden_dims=tuple(expert_hidden), activation="relu")
                                     for _ in range(experts))
        self.gate = nn.Linear(h, experts)
        self.output_dim: int = int(expert_hidden[-1])

    def forward(self, *, target_BE: Tensor, click_BLE: Optional[Tensor] = None, click_mask_BL: Optional[Tensor] = None,
                unclick_BLE: Optional[Tensor] = None, unclick_mask_BL: Optional[Tensor] = None,
                like_BLE: Optional[Tensor] = None, like_mask_BL: Optional[Tensor] = None,
                dislike_BLE: Optional[Tensor] = None, dislike_mask_BL: Optional[Tensor] = None,
                click_position_BLP: Optional[Tensor] = None, unclick_position_BLP: Optional[Tensor] = None,
                like_position_BLP: Optional[Tensor] = None, dislike_position_BLP: Optional[Tensor] = None) -> Tensor:
        """The MMoE mixture [B, output_dim]."""
        given: Dict[str, tuple] = {
            "click": (click_BLE, click_mask_BL, click_position_BLP),
            "unclick": (unclick_BLE, unclick_mask_BL, unclick_position_BLP),
            "like": (like_BLE, like_mask_BL, like_position_BLP),
            "dislike": (dislike_BLE, dislike_mask_BL, dislike_position_BLP)}
        B = target_BE.shape[0]
        interests = []
        for k, (seq, mask, pos) in given.items():
            if (seq is None or mask is None) == (k in self.sequences):
                raise ValueError(f"DMT(sequences={self.sequences}): bind {k}_BLE and {k}_mask_BL exactly when {k!r} "
                                 f"is read")
            if k not in self.sequences:
                continue
            if (pos is None) != (self.position_dim == 0):
                raise ValueError(f"DMT(position_dim={self.position_dim}): bind {k}_position_BLP exactly when "
                                 f"position_dim > 0")
            x = self.inp[k](seq if pos is None else torch.cat([seq, pos], -1))
            z = self.encoders[k](x_BLD=zero_padding(x, mask), mask_BL=mask)
            t = self.inp[k](torch.cat([target_BE, target_BE.new_zeros(B, self.position_dim)], -1))
            interests.append(self.decoders[k](t, z, mask))
        h_BH = torch.cat(interests + [target_BE], -1)
        g_BX = torch.softmax(self.gate(h_BH), -1)
        out_BXO = torch.stack([e(h_BH) for e in self.experts], 1)
        return (g_BX.unsqueeze(-1) * out_BXO).sum(1)
