"""Cases for flowscope.transforms.elementwise (every layer on flat and image event shapes)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowscope.transforms import Affine, Inverse, LeakyReLU, Logit, PReLU, Sigmoid, Tanh

from . import Case, unit_interval


def open_pm1(n: int, shape: tuple[int, ...]) -> Tensor:
    """Inputs in (-0.9, 0.9): inside the domain of tanh's inverse."""
    return torch.rand(n, *shape, dtype=torch.float64) * 1.8 - 0.9


def wide_unit(n: int, shape: tuple[int, ...]) -> Tensor:
    """Inputs in [0, 1] including the end points: inside Logit(alpha > 0)'s domain."""
    x = torch.rand(n, *shape, dtype=torch.float64)
    x.view(-1)[:2] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return x


SHAPES = [(2,), (5,), (2, 3, 3)]

CASES: list[Case] = []
for shape in SHAPES:
    tag = "x".join(map(str, shape))
    CASES += [
        Case(f"Affine-{tag}", lambda s=shape: Affine(s), shape, (Affine,)),
        Case(
            f"Affine-scalar-{tag}",
            lambda s=shape: Affine(s, per_dimension=False),
            shape,
            (Affine,),
            perturb=0.3,
        ),
        Case(f"PReLU-{tag}", lambda s=shape: PReLU(s), shape, (PReLU,), perturb=0.5),
        Case(f"PReLU-init0.2-{tag}", lambda s=shape: PReLU(s, init=0.2), shape, (PReLU,)),
        Case(f"LeakyReLU-{tag}", lambda: LeakyReLU(), shape, (LeakyReLU,)),
        Case(f"LeakyReLU-0.3-{tag}", lambda: LeakyReLU(0.3), shape, (LeakyReLU,)),
        Case(f"Sigmoid-{tag}", lambda: Sigmoid(), shape, (Sigmoid,)),
        Case(
            f"Sigmoid-inverse-{tag}",
            lambda: Inverse(Sigmoid()),
            shape,
            (Sigmoid, Inverse),
            sample=unit_interval,
        ),
        Case(f"Logit-{tag}", lambda: Logit(), shape, (Logit,), sample=unit_interval),
        Case(f"Logit-0.05-{tag}", lambda: Logit(alpha=0.05), shape, (Logit,), sample=wide_unit),
        Case(f"Logit-inverse-{tag}", lambda: Inverse(Logit(1e-5)), shape, (Logit, Inverse)),
        Case(f"Tanh-{tag}", lambda: Tanh(), shape, (Tanh,)),
        Case(
            f"Tanh-inverse-{tag}", lambda: Inverse(Tanh()), shape, (Tanh, Inverse), sample=open_pm1
        ),
    ]
