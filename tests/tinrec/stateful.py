"""A small interest module with cross-batch state, for the framework's tests (tinrec/state.py).

Output: ``W (masked mean of the behaviours) ⊙ m`` with ``m`` an exponential moving average of the batches'
mean target embedding, updated in training forwards: ``m <- decay m + (1 - decay) mean_b v_b``.
"""

import torch
from torch import Tensor, nn


class EmaMemory(nn.Module):
    cross_batch_state = {"memory_D": "mean"}

    def __init__(self, *, dim: int, decay: float = 0.9) -> None:
        super().__init__()
        self.decay = decay
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("memory_D", torch.ones(dim))
        self.output_dim: int = dim

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.memory_D.mul_(self.decay).add_(query_BD.mean(0), alpha=1 - self.decay)
        m_BL1 = mask_BL.unsqueeze(-1).to(seq_BLD.dtype)
        pooled_BD = (seq_BLD * m_BL1).sum(1) / m_BL1.sum(1).clamp(min=1.0)
        return self.proj(pooled_BD) * self.memory_D
