"""Cases for MAF / IAF (MADE is a module, not a transform: see tests/test_autoregressive.py)."""

from __future__ import annotations

from flowscope.transforms.autoregressive import InverseAutoregressive, MaskedAutoregressive
from flowscope.transforms.splines import RationalQuadraticSpline
from flowscope.transforms.transformers import (
    AdditiveTransformer,
    AffineTransformer,
    Transformer,
)

from . import Case


def _transformer(kind: str) -> Transformer:
    if kind == "affine":
        return AffineTransformer()
    if kind == "additive":
        return AdditiveTransformer()
    # A small bound so that the gaussian inputs hit the bins and the identity tails alike.
    return RationalQuadraticSpline(bins=4, bound=1.5)


def _maf(
    features: int,
    kind: str,
    order: str,
    layers: int,
    context: int = 0,
    hidden: int = 8,
    perturb: float = 0.3,
) -> Case:
    def build() -> MaskedAutoregressive:
        return MaskedAutoregressive(
            features,
            _transformer(kind),
            hidden=hidden,
            layers=layers,
            order=order,
            context_features=context or None,
            seed=3,
        )

    ctx = f"-ctx{context}" if context else ""
    wide = f"-h{hidden}" if hidden != 8 else ""
    return Case(
        name=f"MAF-{kind}-d{features}-{order}-l{layers}{ctx}{wide}",
        build=build,
        shape=(features,),
        covers=(MaskedAutoregressive,),
        context=context,
        perturb=perturb,
    )


def _iaf(features: int, kind: str, order: str, context: int = 0) -> Case:
    def build() -> InverseAutoregressive:
        return InverseAutoregressive(
            features,
            _transformer(kind),
            hidden=8,
            layers=2,
            order=order,
            context_features=context or None,
            seed=5,
        )

    ctx = f"-ctx{context}" if context else ""
    return Case(
        name=f"IAF-{kind}-d{features}-{order}{ctx}",
        build=build,
        shape=(features,),
        covers=(InverseAutoregressive,),
        context=context,
        perturb=0.3,
    )


CASES: list[Case] = [
    _maf(features, kind, order, layers)
    for kind in ("affine", "additive", "spline")
    for features in (2, 5)
    for order in ("natural", "random")
    for layers in (1, 2)
]
CASES += [
    _maf(5, "affine", "random", 2, context=3),
    _maf(2, "affine", "natural", 1, context=3),
    _maf(5, "spline", "random", 1, context=3),
    _maf(5, "additive", "natural", 0),
    # Large enough for the staircase kernel (transforms/staircase.py) in all three layers: its
    # blockwise forward and hand-written backward (the Jacobian), the cached eval path.  A small
    # perturbation: 300 coordinates inverted one after the other amplify rounding errors by the
    # scales of all earlier ones (at 0.3, even the reference D-pass inverse is off by 2e-3).
    _maf(300, "affine", "natural", 2, hidden=256, perturb=0.02),
    _iaf(5, "affine", "random"),
    _iaf(2, "affine", "natural", context=3),
    _iaf(5, "spline", "natural"),
]
