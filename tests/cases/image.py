"""Cases for flowscope.transforms.image and .dequantization, and the image-flow constructors.

Dequantization is stochastic, which the harness (one forward call, then a second forward per
example for the Jacobian, then a freshly built copy) must not be fooled by.  What is checked, and
why it is honest:

* ``UniformDequantization``: for any fixed noise ``u``, ``x -> (x + u) / L`` has Jacobian
  ``I / L``, and since the noise never depends on ``x`` the Jacobian of every call is that same
  matrix; the layer's log-det ``-D log L`` is therefore exactly checkable.  ``seed=0`` fixes one
  noise image shared by every example and call, so that the state-dict round trip (two calls)
  and, for the full models, the per-example Jacobian (a batch of one, whose log-det depends on
  ``u`` through the logit and the flow) see the same ``u`` as the batched call.  Inputs are
  integer-valued (the layer's domain).
* ``VariationalDequantization``: its "log-det" ``-D log L - log q(u|x)`` is a density ratio, not
  a Jacobian (the layer is a stochastic surjection), so the harness checks its bijective part,
  ``noise_flow``, on the joint ``(x features, v)`` image; the normalization of ``q`` and the
  forward/inverse agreement are tested in tests/test_image_flows.py.
* The constructors' transforms (dequantization + logit + multi-scale flow) use a seeded uniform
  dequantization for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowscope.models import glow, realnvp_image
from flowscope.transforms import (
    AffineTransformer,
    Compose,
    Coupling,
    InvertibleConv1x1,
    MultiScale,
    Squeeze,
    UniformDequantization,
    VariationalDequantization,
    channel_mask,
    checkerboard_mask,
    glow_step,
    image_coupling,
)

from . import Case


def integers(levels: int) -> Callable[[int, tuple[int, ...]], Tensor]:
    """Integer pixel values ``0 .. levels - 1`` as float64 (the dequantizers' domain)."""
    return lambda n, shape: torch.randint(0, levels, (n, *shape)).double()


def joint_noise_input(n: int, shape: tuple[int, ...]) -> Tensor:
    """``[features(x), v]`` as the noise flow sees it: x features on a grid in [-1, 1], v real."""
    c = shape[0] // 2
    x = torch.randint(0, 4, (n, c, *shape[1:])).double() * (2.0 / 3.0) - 1.0
    return torch.cat([x, 1.5 * torch.randn(n, c, *shape[1:], dtype=torch.float64)], dim=1)


def glow_levels(shape: tuple[int, int, int], levels: int, steps: int = 1) -> list[Compose]:
    """Squeeze + ``steps`` tiny Glow steps per level (hidden 4)."""
    out, current = [], shape
    for _ in range(levels):
        squeeze = Squeeze(shape=current)
        s = squeeze.output_shape(current)
        out.append(Compose(squeeze, *[glow_step(s, 4, flip=k % 2 == 1) for k in range(steps)]))
        current = (s[0] - s[0] // 2, s[1], s[2])
    return out


def realnvp_levels(shape: tuple[int, int, int]) -> list[Compose]:
    """RealNVP-style: checkerboard coupling, squeeze, channel coupling | checkerboard coupling."""
    affine = AffineTransformer(scale="tanh")
    squeeze = Squeeze(shape=shape)
    s = squeeze.output_shape(shape)
    first = Compose(
        image_coupling(checkerboard_mask(shape), affine, 4),
        squeeze,
        image_coupling(channel_mask(s, flip=True), affine, 4),
    )
    kept = (s[0] - s[0] // 2, s[1], s[2])
    return [first, Compose(image_coupling(checkerboard_mask(kept, flip=True), affine, 4))]


def seeded(levels: int) -> UniformDequantization:
    return UniformDequantization(levels, seed=0)


CASES: list[Case] = [
    Case("squeeze-1x4x4", lambda: Squeeze(shape=(1, 4, 4)), (1, 4, 4), (Squeeze,)),
    Case("squeeze-3x4x6-shapeless", lambda: Squeeze(), (3, 4, 6), (Squeeze,)),
    Case("squeeze-factor4-2x4x4", lambda: Squeeze(4, (2, 4, 4)), (2, 4, 4), (Squeeze,)),
    Case(
        "invconv-lu-permutation-3x4x4",
        lambda: InvertibleConv1x1(3, init="permutation", seed=1),
        (3, 4, 4),
        (InvertibleConv1x1,),
    ),
    Case(
        "invconv-lu-rotation-4x2x3",
        lambda: InvertibleConv1x1(4, init="rotation", seed=2),
        (4, 2, 3),
        (InvertibleConv1x1,),
    ),
    Case(
        "invconv-plain-rotation-2x4x4",
        lambda: InvertibleConv1x1(2, lu=False, init="rotation", seed=3),
        (2, 4, 4),
        (InvertibleConv1x1,),
    ),
    Case("glow-step-2x4x4", lambda: glow_step((2, 4, 4), 4), (2, 4, 4), (InvertibleConv1x1,)),
    Case(
        "glow-step-3x2x2-flip-context",
        lambda: glow_step((3, 2, 2), 4, flip=True, context_features=2),
        (3, 2, 2),
        (InvertibleConv1x1, Coupling),
        context=2,
    ),
    Case(
        "multiscale-glow-1x4x4",
        lambda: MultiScale(glow_levels((1, 4, 4), 2), (1, 4, 4)),
        (1, 4, 4),
        (MultiScale,),
    ),
    Case(
        "multiscale-glow-2x4x4-2steps",
        lambda: MultiScale(glow_levels((2, 4, 4), 2, steps=2), (2, 4, 4)),
        (2, 4, 4),
        (MultiScale,),
    ),
    Case(
        "multiscale-glow-3x4x4-split-prior",
        lambda: MultiScale(glow_levels((3, 4, 4), 2), (3, 4, 4), split_prior=True),
        (3, 4, 4),
        (MultiScale,),
    ),
    Case(
        "multiscale-realnvp-1x4x4-split-prior",
        lambda: MultiScale(realnvp_levels((1, 4, 4)), (1, 4, 4), split_prior=True),
        (1, 4, 4),
        (MultiScale,),
    ),
    Case(
        "uniform-dequantization-2x4x4-17",
        lambda: seeded(17),
        (2, 4, 4),
        (UniformDequantization,),
        sample=integers(17),
    ),
    Case(
        "uniform-dequantization-vector-2",
        lambda: seeded(2),
        (5,),
        (UniformDequantization,),
        sample=integers(2),
    ),
    Case(
        "variational-dequantization-noise-flow-1x2x2",
        lambda: VariationalDequantization((1, 2, 2), levels=4, steps=2, hidden=4).noise_flow,
        (2, 2, 2),
        (VariationalDequantization,),
        sample=joint_noise_input,
    ),
    Case(
        "variational-dequantization-noise-flow-2x2x3",
        lambda: VariationalDequantization((2, 2, 3), levels=4, steps=3, hidden=4).noise_flow,
        (4, 2, 3),
        (VariationalDequantization,),
        sample=joint_noise_input,
    ),
    Case(
        "variational-dequantization-squeezed-noise-flow-1x2x4",
        lambda: VariationalDequantization((1, 2, 4), 4, steps=2, hidden=4, squeeze=True).noise_flow,
        (8, 1, 2),
        (VariationalDequantization,),
        sample=joint_noise_input,
    ),
    Case(
        "variational-dequantization-squeezed-noise-flow-2x4x2",
        lambda: VariationalDequantization((2, 4, 2), 4, steps=3, hidden=4, squeeze=True).noise_flow,
        (16, 2, 1),
        (VariationalDequantization,),
        sample=joint_noise_input,
    ),
    Case(
        "glow-model-1x4x4-17",
        lambda: (
            glow(
                (1, 4, 4), levels=2, steps=1, hidden=4, quanta=17, dequantization=seeded(17)
            ).transform
        ),
        (1, 4, 4),
        (MultiScale, UniformDequantization, glow),
        sample=integers(17),
    ),
    Case(
        "glow-model-3x4x4-split-prior-rotation",
        lambda: (
            glow(
                (3, 4, 4),
                levels=2,
                steps=2,
                hidden=4,
                dequantization=seeded(256),
                split_prior=True,
                conv_init="rotation",
            ).transform
        ),
        (3, 4, 4),
        (MultiScale, UniformDequantization),
        sample=integers(256),
        atol=1e-7,
    ),
    Case(
        "realnvp-image-model-1x4x4",
        lambda: (
            realnvp_image(
                (1, 4, 4), levels=2, hidden=4, quanta=17, dequantization=seeded(17)
            ).transform
        ),
        (1, 4, 4),
        (MultiScale, UniformDequantization, realnvp_image),
        sample=integers(17),
    ),
]
