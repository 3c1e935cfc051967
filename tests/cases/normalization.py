"""Cases for flowscope.transforms.normalization (run after a train-mode warm-up batch)."""

from __future__ import annotations

from flowscope.transforms import ActNorm, BatchNorm

from . import Case

CASES: list[Case] = []
for d in (2, 5):
    CASES += [
        Case(f"BatchNorm-{d}", lambda d=d: BatchNorm(d), (d,), (BatchNorm,)),
        Case(
            f"BatchNorm-momentum1-{d}", lambda d=d: BatchNorm(d, momentum=1.0), (d,), (BatchNorm,)
        ),
        Case(f"BatchNorm-nowarmup-{d}", lambda d=d: BatchNorm(d), (d,), (BatchNorm,), warmup=False),
    ]
for shape in [(2,), (5,), (2, 3, 3), (3, 4)]:
    tag = "x".join(map(str, shape))
    CASES += [
        Case(f"ActNorm-{tag}", lambda s=shape: ActNorm(s), shape, (ActNorm,)),
        # Never initialized: the perturbed parameters are used as they are.
        Case(
            f"ActNorm-uninitialized-{tag}",
            lambda s=shape: ActNorm(s),
            shape,
            (ActNorm,),
            warmup=False,
        ),
    ]
