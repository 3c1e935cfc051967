"""Small neural networks used as conditioners (coupling, autoregressive, posterior networks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """Fully connected network ``in_features -> hidden x layers -> out_features``.

    Args:
        in_features: input size.
        out_features: output size.
        hidden: width of each hidden layer.
        layers: number of hidden layers (0 gives a single linear map).
        activation: module class used between layers.
        zero_init: zero the last layer so that a conditioner starts as the identity transform
            (Kingma & Dhariwal 2018, section 3.3).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 64,
        layers: int = 2,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        sizes = [in_features] + [hidden] * layers + [out_features]
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            modules.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                modules.append(activation())
        super().__init__(*modules)
        if zero_init:
            nn.init.zeros_(modules[-1].weight)
            nn.init.zeros_(modules[-1].bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - shape: (batch, in) -> (batch, out)
        # Small conditioners are dominated by per-call overhead, not arithmetic: call the layers'
        # functions directly (no module-call machinery) and apply ReLU in place on the fresh
        # output of the linear layer (its backward needs only the result, which it keeps).
        # Other activations go through their modules unchanged.
        fresh = False  # whether x is a linear layer's output (never the caller's tensor)
        for m in self:
            if type(m) is nn.Linear:
                x, fresh = F.linear(x, m.weight, m.bias), True
            elif type(m) is nn.ReLU and fresh:
                x = torch.relu_(x)
            else:
                x, fresh = m(x), False
        return x
