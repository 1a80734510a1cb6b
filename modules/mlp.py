"""Multi-layer perceptron with the activations used by the DIN family, including Dice.

Dice is the data-adaptive activation of the DIN paper (Zhou et al., "Deep Interest Network for
Click-Through Rate Prediction", KDD 2018, arXiv 1706.06978, Section 4.3, Eq. 9):

    p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)),   f(s) = p(s) * s + (1 - p(s)) * alpha * s

with E[s], Var[s] the statistics of the mini-batch in training and running estimates in eval,
and alpha learned per unit. Choices the paper leaves open (our choice): alpha initialised to 0 (as
in the authors' released code), eps = 1e-8, running-average momentum 0.1 (PyTorch's BatchNorm
default), and, when a mask is given, the batch statistics are taken over the valid rows only so
that padded behaviours cannot change the output. PReLU has one learned slope per unit (init 0.25).
"""
# Shape legend: N rows (all leading dims flattened), H units, "..." any leading dims.
from typing import List, Literal, Optional, Sequence, get_args

import torch
from torch import Tensor, nn

Activation = Literal["relu", "prelu", "sigmoid", "dice"]
ACTIVATIONS = get_args(Activation)


class Dice(nn.Module):
    """Dice activation (DIN paper, Eq. 9) over inputs of shape [N, H].

    Normalisation equals ``nn.BatchNorm1d(H, affine=False)`` (biased batch variance to normalise,
    unbiased variance in the running estimate), computed by hand so that a row mask can exclude
    padding from the batch statistics. Running statistics are only updated from batches with at
    least 2 valid rows (our choice; BatchNorm1d would raise on 1).

    Args:
        dim: number of units H.
        eps: added to the variance.
        momentum: weight of the new batch in the running statistics.
    """

    def __init__(self, *, dim: int, eps: float = 1e-8, momentum: float = 0.1) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"Dice dim must be positive, got {dim}")
        self.eps = eps
        self.momentum = momentum
        self.alpha_H = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean_H", torch.zeros(dim))
        self.register_buffer("running_var_H", torch.ones(dim))

    def forward(self, x_NH: Tensor, mask_N: Optional[Tensor] = None) -> Tensor:
        """Apply Dice.

        Args:
            x_NH: pre-activations, shape [N, H].
            mask_N: optional bool, shape [N]; True rows enter the batch statistics.

        Returns:
            Activations of shape [N, H].
        """
        if self.training:
            if mask_N is None:
                mask_N = torch.ones(x_NH.shape[0], dtype=torch.bool, device=x_NH.device)
            mask_N1 = mask_N.unsqueeze(-1)
            count = mask_N.sum().to(x_NH.dtype)
            valid_NH = torch.where(mask_N1, x_NH, torch.zeros_like(x_NH))
            mean_H = valid_NH.sum(0) / count.clamp_min(1)
            centred_NH = torch.where(mask_N1, x_NH - mean_H, torch.zeros_like(x_NH))
            var_H = centred_NH.pow(2).sum(0) / count.clamp_min(1)
            with torch.no_grad():
                update = count >= 2
                unbiased_H = var_H * count / (count - 1).clamp_min(1)
                m = self.momentum
                new_mean_H = (1 - m) * self.running_mean_H + m * mean_H.to(self.running_mean_H)
                new_var_H = (1 - m) * self.running_var_H + m * unbiased_H.to(self.running_var_H)
                self.running_mean_H.copy_(torch.where(update, new_mean_H, self.running_mean_H))
                self.running_var_H.copy_(torch.where(update, new_var_H, self.running_var_H))
        else:
            mean_H = self.running_mean_H.to(x_NH.dtype)
            var_H = self.running_var_H.to(x_NH.dtype)
        p_NH = torch.sigmoid((x_NH - mean_H) / torch.sqrt(var_H + self.eps))
        return p_NH * x_NH + (1 - p_NH) * self.alpha_H * x_NH


class MLP(nn.Module):
    """Stack of Linear -> activation -> Dropout blocks, with an optional linear output layer.

    Works on inputs of shape [..., in_dim]: leading dims are flattened into rows so that per-unit
    activations (PReLU, Dice) always act on the last dim.

    Args:
        in_dim: input width.
        hidden_dims: widths of the hidden layers (may be empty).
        activation: one of "relu", "prelu", "sigmoid", "dice".
        dropout: dropout probability after each hidden activation, in [0, 1).
        out_dim: if given, a final Linear to this width with no activation.

    Attributes:
        output_dim: width of the output (out_dim, else the last hidden width, else in_dim).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        hidden_dims: Sequence[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        out_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        widths = [in_dim, *hidden_dims] + ([] if out_dim is None else [out_dim])
        if any(w <= 0 for w in widths):
            raise ValueError(
                f"MLP widths must be positive: in_dim={in_dim}, hidden_dims={list(hidden_dims)}, "
                f"out_dim={out_dim}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        layers: List[nn.Module] = []
        width = in_dim
        for hidden in hidden_dims:
            layers.append(nn.Linear(width, hidden))
            layers.append(_make_activation(activation, hidden))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.layers = nn.ModuleList(layers)
        self.output_dim: int = width

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, *, after_first_linear: bool = False) -> Tensor:
        """Apply the MLP.

        Args:
            x: input of shape [..., in_dim], or with ``after_first_linear`` the output of the first
                Linear, shape [..., hidden_dims[0]], computed by the caller (DIN's factorised unit).
            mask: optional bool of shape [...] (the leading dims of x); only Dice uses it, to keep
                padded rows out of its batch statistics.

        Returns:
            Tensor of shape [..., output_dim].
        """
        layers = list(self.layers)
        if after_first_linear:
            if not layers or not isinstance(layers[0], nn.Linear):
                raise ValueError("after_first_linear needs an MLP whose first layer is a Linear")
            first, layers = layers[0], layers[1:]
            width = first.out_features
        else:
            width = self.in_dim
        if x.shape[-1] != width:
            raise ValueError(f"MLP expects last dim {width}, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        if mask is not None and tuple(mask.shape) != tuple(lead):
            raise ValueError(f"MLP mask must have shape {tuple(lead)}, got {tuple(mask.shape)}")
        x_NH = x.reshape(-1, width)
        mask_N = None if mask is None else mask.reshape(-1)
        for layer in layers:
            x_NH = layer(x_NH, mask_N) if isinstance(layer, Dice) else layer(x_NH)
        return x_NH.reshape(*lead, self.output_dim)


def _make_activation(name: str, dim: int) -> nn.Module:
    """Build one activation module of width ``dim`` (name already validated)."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(num_parameters=dim)
    if name == "sigmoid":
        return nn.Sigmoid()
    assert name == "dice", name
    return Dice(dim=dim)
