"""Cases for flowscope.transforms.linear."""

from __future__ import annotations

import torch

from flowscope.transforms import LULinear, Permutation, RandomPermutation, ReversePermutation

from . import Case

CASES: list[Case] = []
for d in (2, 5):
    CASES += [
        Case(f"LULinear-identity-{d}", lambda d=d: LULinear(d), (d,), (LULinear,), perturb=0.3),
        Case(
            f"LULinear-rotation-{d}",
            lambda d=d: LULinear(d, identity_init=False, seed=3),
            (d,),
            (LULinear,),
        ),
        Case(
            f"ReversePermutation-{d}",
            lambda d=d: ReversePermutation(d),
            (d,),
            (ReversePermutation, Permutation),
        ),
        # seed=None: the fresh instance of the state-dict check draws another permutation, so
        # only the saved buffer can make the outputs agree.
        Case(
            f"RandomPermutation-{d}",
            lambda d=d: RandomPermutation(d),
            (d,),
            (RandomPermutation, Permutation),
        ),
    ]
CASES += [
    Case(
        "RandomPermutation-seeded-5",
        lambda: RandomPermutation(5, seed=7),
        (5,),
        (RandomPermutation,),
    ),
    Case("Permutation-5", lambda: Permutation(torch.tensor([2, 0, 1, 4, 3])), (5,), (Permutation,)),
    # Axis 1 of an image is its channel axis.
    Case(
        "Permutation-channels-3x2x2",
        lambda: Permutation(torch.tensor([1, 2, 0])),
        (3, 2, 2),
        (Permutation,),
    ),
]
