"""Small interest modules for the framework's tests of the inputs-by-name contract (tinrec/inputs.py)."""

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn


class TwoSequences(nn.Module):
    """Reads a long and a short sequence (each with its own mask and length), a float per behaviour of the
    long one (watch time), the user profile and the trigger; attends over both sequences with the trigger as
    the query. Records the shapes it was called with (``seen``), so tests can look at what the input stage
    handed it."""

    def __init__(self, *, dim: int, profile_dim: int = 32) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim + 1 + profile_dim, dim)
        self.output_dim: int = dim
        self.seen: List[Dict[str, tuple]] = []

    def forward(self, *, long_BLD: Tensor, long_mask_BL: Tensor, watch_BL: Tensor, short_BSD: Tensor,
                short_mask_BS: Tensor, profile_BP: Tensor, trigger_BD: Tensor) -> Tensor:
        self.seen.append({k: (tuple(v.shape), v.dtype) for k, v in locals().items() if isinstance(v, Tensor)})

        def pool(seq, mask):
            logits = (seq * trigger_BD.unsqueeze(1)).sum(-1).masked_fill(~mask, -1e9)
            w = torch.softmax(logits, dim=1) * mask
            return torch.bmm(w.unsqueeze(1), seq).squeeze(1)

        watch_B1 = (watch_BL * long_mask_BL).sum(1, keepdim=True) / long_mask_BL.sum(1, keepdim=True).clamp(min=1)
        x = torch.cat([pool(long_BLD, long_mask_BL), pool(short_BSD, short_mask_BS), torch.log1p(watch_B1),
                       profile_BP], dim=-1)
        return self.proj(x)


class Pool(nn.Module):
    """Masked mean of a sequence, projected: a second module reading the same group as another."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.output_dim: int = dim

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor) -> Tensor:
        m = mask_BL.unsqueeze(-1).to(seq_BLD.dtype)
        return self.proj((seq_BLD * m).sum(1) / m.sum(1).clamp(min=1.0))


class LabelProbe(nn.Module):
    """Masked mean of a sequence; records the label it was handed (tests of the label input)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.output_dim: int = dim
        self.labels: List = []

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, label_B: Optional[Tensor] = None) -> Tensor:
        self.labels.append(label_B)
        m = mask_BL.unsqueeze(-1).to(seq_BLD.dtype)
        return self.proj((seq_BLD * m).sum(1) / m.sum(1).clamp(min=1.0))
