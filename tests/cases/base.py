"""Cases for Compose and Inverse, built over the elementwise, linear and normalization layers."""

from __future__ import annotations

from flowscope.transforms import (
    ActNorm,
    Affine,
    BatchNorm,
    Compose,
    Inverse,
    LULinear,
    PReLU,
    RandomPermutation,
    Tanh,
)

from . import Case

CASES: list[Case] = [
    Case(
        "Compose-affine-prelu-lu-actnorm-5",
        lambda: Compose(Affine(5), PReLU(5), LULinear(5), ActNorm(5)),
        (5,),
        (Compose,),
    ),
    Case(
        "Compose-list-batchnorm-perm-2",
        lambda: Compose([BatchNorm(2), RandomPermutation(2, seed=0), LULinear(2), PReLU(2)]),
        (2,),
        (Compose,),
    ),
    Case(
        "Compose-image-2x3x3",
        lambda: Compose(ActNorm((2, 3, 3)), Affine((2, 3, 3)), PReLU((2, 3, 3)), Tanh()),
        (2, 3, 3),
        (Compose,),
    ),
    Case(
        "Inverse-compose-lu-prelu-5",
        lambda: Inverse(Compose(LULinear(5, identity_init=False, seed=1), PReLU(5))),
        (5,),
        (Inverse, Compose),
    ),
    Case(
        "Inverse-of-inverse-actnorm-2",
        lambda: Inverse(Inverse(ActNorm(2))),
        (2,),
        (Inverse,),
    ),
]
