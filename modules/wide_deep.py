"""Wide & Deep (Cheng et al., DLRS 2016, arXiv 1606.07792) as DEI2N's Table 2 runs it (``../shared/MODELS.md``
B, from the DEI2N authors' code), with the trigger (+TR) as one more deep input:

    deep  = MLP_{200-80, PReLU}(BN([e_u, e_ta, sum_j e_j (, e_tr)])) -> 1      (e_tr with +TR)
    wide  = w^T [e_u, e_ta, e_ta (.) sum_j e_j]
    logit = deep + wide

The module outputs the logit itself (``LOGIT_OUTPUT``: the framework adds it to the tower's, so the config's
tower is ``hidden: []`` with no inputs, a bias). Our choices: the batch norm over the deep input is
``nn.BatchNorm1d`` (its running statistics in evaluation); the wide part has no bias of its own (the tower's
bias is the model's); ``sum_j e_j`` over the valid behaviours (0 for a user without any).
"""
# Shape legend: B batch, L behaviours, D item width, U user width.
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .masking import masked_sum
from .mlp import Activation, MLP


class WideDeep(nn.Module):
    """Wide & Deep (+TR with ``trigger``), one logit.

    Args:
        dim: D, width of behaviours, target and trigger.
        user_dim: U.
        hidden: the deep MLP (200, 80); activation its activation (PReLU).
        trigger: +TR: ``trigger_BD`` is a deep input.
    """

    LOGIT_OUTPUT = True
    # the batch norm's running statistics, averaged over the ranks after every step (tinrec/state.py)
    cross_batch_state = {"norm.running_mean": "mean", "norm.running_var": "mean", "norm.num_batches_tracked": "max"}

    def __init__(self, *, dim: int, user_dim: int, hidden: Sequence[int] = (200, 80), activation: Activation = "prelu",
                 trigger: bool = False) -> None:
        super().__init__()
        if dim <= 0 or user_dim <= 0:
            raise ValueError(f"WideDeep: need dim, user_dim > 0, got {dim}, {user_dim}")
        self.trigger = trigger
        deep_in = user_dim + (3 if trigger else 2) * dim
        self.norm = nn.BatchNorm1d(deep_in)
        self.deep = MLP(in_dim=deep_in, hidden_dims=tuple(hidden), activation=activation, out_dim=1)
        self.wide = nn.Linear(user_dim + 2 * dim, 1, bias=False)
        self.output_dim: int = 1

    def forward(self, *, seq_BLD: Tensor, mask_BL: Tensor, query_BD: Tensor, user_BU: Tensor,
                trigger_BD: Optional[Tensor] = None) -> Tensor:
        """The logit [B, 1]."""
        if (trigger_BD is None) == self.trigger:
            raise ValueError(f"WideDeep(trigger={self.trigger}): bind trigger_BD exactly when trigger is true")
        pooled_BD = masked_sum(seq_BLD, mask_BL)
        deep_in = [user_BU, query_BD, pooled_BD] + ([trigger_BD] if self.trigger else [])
        deep_B1 = self.deep(self.norm(torch.cat(deep_in, dim=-1)))
        return deep_B1 + self.wide(torch.cat([user_BU, query_BD, query_BD * pooled_BD], dim=-1))
