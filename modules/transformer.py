"""Multi-head self-attention block shared by SASRec, BERT4Rec, BST and DSIN.

One Transformer layer (Vaswani et al., "Attention Is All You Need", NeurIPS 2017, arXiv 1706.03762,
Sec. 3.2-3.3): multi-head scaled dot-product self-attention and a point-wise feed-forward network,
each wrapped in dropout, a residual connection and layer normalisation, either

- post-LN (``norm_first=False``): x = LN(x + Dropout(Sublayer(x))), as in Vaswani et al., BERT4Rec
  (arXiv 1904.06690, "Transformer Layer"), BST (arXiv 1905.06874, "Transformer layer") and DSIN
  (arXiv 1905.06482); or
- pre-LN (``norm_first=True``): x = x + Dropout(Sublayer(LN(x))), as in SASRec (arXiv 1808.09781,
  "Stacking Self-Attention Blocks": g(x) = x + Dropout(g(LayerNorm(x)))).

Attention is ``torch.nn.functional.scaled_dot_product_attention`` (scale 1/sqrt(D/heads)) with a
boolean mask (True = may attend): padded positions are masked as keys, and ``causal=True`` adds the
causal mask (query t sees keys <= t). Cost: time quadratic in L (O(B * L^2 * D)); memory is what
SDPA needs plus the boolean mask, [B, 1, 1, L] without the causal mask. With it, right-padded
histories (every row a prefix of real positions, as SequenceArch builds them) need no mask tensor:
SDPA's own ``is_causal`` is exact for every real query; other layouts get a [B, 1, L, L] mask.
SDPA's fused kernels keep memory linear in L (measured on CPU at B=4, L=2000, 8 heads, training: +66 MiB
key-padding, +132 MiB causal); but in training with ``dropout > 0`` PyTorch's CPU SDPA falls back to its
math kernel, which materialises the [B, H, L, L] weights and their dropout mask (+2 GiB at the same size, so
about 128 GiB at B = 256): at long L on CPU, train these models with ``dropout: 0`` (the configs' default).

Padding never leaks: real queries never attend to padded keys, and the block's output is zero at
padded positions. So that no query row is fully masked (NaN in softmax), a padded query attends to
itself in the causal mask, and in the key-padding mask a row with no valid key at all may attend to
its position 0; the outputs of those rows are zeroed. Choices (our choice): fused Q/K/V input
projection and an output projection W^O, both with biases (as ``nn.MultiheadAttention``); dropout on
the attention weights, on both residual branches and after the FFN's hidden activation.
"""
# Shape legend: B batch, L sequence length (padded), D width, H heads, F feed-forward hidden width.
from typing import Literal, Optional, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masking import zero_padding

Activation = Literal["relu", "gelu", "leaky_relu"]
ACTIVATIONS = get_args(Activation)


def attention_mask(mask_BL: Tensor, *, causal: bool = False) -> Tensor:
    """Boolean SDPA mask (True = may attend) with padded keys masked, optionally causal.

    Args:
        mask_BL: bool, shape [B, L], True = real position.
        causal: also mask keys after the query.

    Returns:
        [B, 1, L, L] if ``causal`` (key j allowed for query i iff j <= i and j is real, or j == i),
        else [B, 1, 1, L] (key j allowed iff real, or j == 0 in a row without any real position).
        Every query row has at least one allowed key.
    """
    B, L = mask_BL.shape
    idx_L = torch.arange(L, device=mask_BL.device)
    if causal:
        eye_LL = idx_L.unsqueeze(1) == idx_L.unsqueeze(0)
        lower_LL = idx_L.unsqueeze(1) >= idx_L.unsqueeze(0)
        return (lower_LL & (mask_BL.unsqueeze(1) | eye_LL)).unsqueeze(1)
    empty_B1 = ~mask_BL.any(dim=1, keepdim=True)
    return (mask_BL | (empty_B1 & (idx_L == 0))).view(B, 1, 1, L)


def is_right_padded(mask_BL: Tensor) -> bool:
    """True when every row's real positions are a prefix (how SequenceArch pads). One host sync."""
    L = mask_BL.shape[1]
    prefix_BL = torch.arange(L, device=mask_BL.device)[None, :] < mask_BL.sum(dim=1, keepdim=True)
    return bool(torch.equal(prefix_BL, mask_BL))


class TransformerBlock(nn.Module):
    """Self-attention + point-wise FFN with residuals, dropout and LayerNorm (pre- or post-LN).

    Args:
        dim: model width D.
        num_heads: attention heads H; must divide D.
        ffn_dim: hidden width F of the feed-forward network.
        dropout: dropout probability in [0, 1).
        norm_first: True = pre-LN (SASRec), False = post-LN (Vaswani, BERT4Rec, BST, DSIN).
        activation: FFN activation, "relu", "gelu" or "leaky_relu" (slope 0.01).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_heads", num_heads), ("ffn_dim", ffn_dim)):
            if value <= 0:
                raise ValueError(f"TransformerBlock {name} must be positive, got {value}")
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.dim = dim
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.norm_first = norm_first
        self.in_proj = nn.Linear(dim, 3 * dim)  # [W^Q; W^K; W^V]
        self.out_proj = nn.Linear(dim, dim)  # W^O
        act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "leaky_relu": nn.LeakyReLU(0.01)}[activation]
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), act, nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def attention(self, x_BLD: Tensor, attn_mask: Optional[Tensor], is_causal: bool = False) -> Tensor:
        """Multi-head self-attention (SDPA) of ``x_BLD`` under the boolean ``attn_mask`` (None: under SDPA's
        own causal mask when ``is_causal``)."""
        B, L, D = x_BLD.shape
        H = self.num_heads
        q_BHLd, k_BHLd, v_BHLd = (
            t.view(B, L, H, D // H).transpose(1, 2) for t in self.in_proj(x_BLD).chunk(3, dim=-1)
        )
        out_BHLd = F.scaled_dot_product_attention(
            q_BHLd,
            k_BHLd,
            v_BHLd,
            attn_mask=attn_mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.out_proj(out_BHLd.transpose(1, 2).reshape(B, L, D))

    def forward(self, *, x_BLD: Tensor, mask_BL: Tensor, causal: bool = False) -> Tensor:
        """Apply the block; cost quadratic in L.

        Args:
            x_BLD: inputs, shape [B, L, D] (values under padding never reach real positions).
            mask_BL: bool, shape [B, L], True = real position.
            causal: mask keys after each query (SASRec).

        Returns:
            Shape [B, L, D], zero at padded positions.
        """
        if causal and is_right_padded(mask_BL):
            # every key at or before a real query is real: SDPA's built-in causal mask is the whole mask,
            # and no [B, 1, L, L] tensor is built (padded queries see padded keys; their outputs are zeroed)
            attn_mask, is_causal = None, True
        else:
            attn_mask, is_causal = attention_mask(mask_BL, causal=causal), False
        x_BLD = zero_padding(x_BLD, mask_BL)
        if self.norm_first:
            x_BLD = x_BLD + self.dropout(self.attention(self.norm_attn(x_BLD), attn_mask, is_causal))
            x_BLD = x_BLD + self.dropout(self.ffn(self.norm_ffn(x_BLD)))
        else:
            x_BLD = self.norm_attn(x_BLD + self.dropout(self.attention(x_BLD, attn_mask, is_causal)))
            x_BLD = self.norm_ffn(x_BLD + self.dropout(self.ffn(x_BLD)))
        return zero_padding(x_BLD, mask_BL)
