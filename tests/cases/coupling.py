"""Coupling cases: NICE additive, RealNVP affine (tanh and sigmoid scales), NSF spline couplings on
vectors (with and without context) and on images (checkerboard and channel masks, tiny conv net).

Spline cases use ``bound=1.5`` and inputs with heavy tails so that some transformed entries fall
outside ``[-bound, bound]`` (identity tails) and some inside (the spline proper); the harness's
0.1-noise on every parameter makes the zero-initialized conditioners produce non-trivial splines
(tests/test_coupling_splines.py checks that this perturbation moves the output).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowscope.transforms import (
    AdditiveTransformer,
    AffineTransformer,
    Coupling,
    RationalQuadraticSpline,
    Transformer,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    half_mask,
)

from . import Case

BOUND = 1.5
IMAGE = (2, 4, 4)


def with_tails(n: int, shape: tuple[int, ...]) -> Tensor:
    """Gaussian inputs (spread 1.5): example 0 lies entirely outside ``[-BOUND, BOUND]``, example 1
    entirely inside, the others anywhere (so both the tails and the spline get exercised)."""
    x = 1.5 * torch.randn(n, *shape, dtype=torch.float64)
    x[0] = torch.where(x[0] >= 0, 1.0, -1.0) * (BOUND + 0.25 + x[0].abs())
    x[1] = 0.95 * BOUND * torch.tanh(x[1])
    return x


class TinyConv(nn.Module):
    """Image conditioner following Coupling's contract: ``(B, C + c, H, W) -> (B, C * P, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)  # start the coupling at the identity
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


TRANSFORMERS: dict[str, Callable[[], Transformer]] = {
    "additive": AdditiveTransformer,
    "affine-tanh": lambda: AffineTransformer(scale="tanh"),
    "affine-sigmoid": lambda: AffineTransformer(scale="sigmoid"),
    "spline": lambda: RationalQuadraticSpline(bins=4, bound=BOUND),
}


def _vector(kind: str, mask: Callable[[], Tensor], context: int) -> Callable[[], Coupling]:
    return lambda: Coupling(
        mask(), TRANSFORMERS[kind](), hidden=16, layers=2, context_features=context or None
    )


def _image(kind: str, mask: Callable[[], Tensor], context: int) -> Callable[[], Coupling]:
    def build() -> Coupling:
        transformer = TRANSFORMERS[kind]()
        net = TinyConv(IMAGE[0] + context, IMAGE[0] * transformer.params_per_dim)
        return Coupling(mask(), transformer, net=net, context_features=context or None)

    return build


def _sample(kind: str) -> Callable[[int, tuple[int, ...]], Tensor]:
    return (
        with_tails if kind == "spline" else (lambda n, s: torch.randn(n, *s, dtype=torch.float64))
    )


CASES: list[Case] = []
for _kind in TRANSFORMERS:
    CASES += [
        Case(
            f"coupling-{_kind}-2",
            _vector(_kind, lambda: half_mask(2), 0),
            (2,),
            (Coupling,),
            sample=_sample(_kind),
        ),
        Case(
            f"coupling-{_kind}-5",
            _vector(_kind, lambda: alternating_mask(5, flip=True), 0),
            (5,),
            (Coupling,),
            sample=_sample(_kind),
        ),
        Case(
            f"coupling-{_kind}-5-context",
            _vector(_kind, lambda: half_mask(5), 3),
            (5,),
            (Coupling,),
            context=3,
            sample=_sample(_kind),
        ),
    ]

CASES += [
    Case(
        "coupling-image-affine-checkerboard",
        _image("affine-tanh", lambda: checkerboard_mask(IMAGE), 0),
        IMAGE,
        (Coupling,),
    ),
    Case(
        "coupling-image-spline-channel",
        _image("spline", lambda: channel_mask(IMAGE, flip=True), 0),
        IMAGE,
        (Coupling,),
        sample=with_tails,
    ),
    Case(
        "coupling-image-spline-checkerboard-context",
        _image("spline", lambda: checkerboard_mask(IMAGE, flip=True), 3),
        IMAGE,
        (Coupling,),
        context=3,
        sample=with_tails,
    ),
    Case(
        "coupling-image-additive-channel-context",
        _image("additive", lambda: channel_mask(IMAGE), 3),
        IMAGE,
        (Coupling,),
        context=3,
    ),
]
