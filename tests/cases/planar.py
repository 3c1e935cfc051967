"""Planar (generative closed form only: inverse must raise) and radial (analytic inverse) flows."""

from __future__ import annotations

import math

import torch

from flowscope.transforms import Planar, Radial

from . import Case


def _radial(features: int, beta_over_alpha: float) -> Radial:
    """A radial layer away from its identity init: alpha = 0.7, beta = beta_over_alpha * alpha."""
    t = Radial(features)
    alpha = 0.7
    with torch.no_grad():
        t.alpha_raw.fill_(math.log(math.expm1(alpha)))
        t.beta_raw.fill_(math.log(math.expm1(alpha * (1 + beta_over_alpha))))
    return t


def _planar(features: int) -> Planar:
    """A planar layer whose tanh bends noticeably on N(0, I) inputs."""
    t = Planar(features)
    with torch.no_grad():
        t.w.mul_(3.0)
        t.u.mul_(2.0)
        t.b.fill_(0.3)
    return t


CASES: list[Case] = [
    Case(
        name=f"Planar-{d}",
        build=lambda d=d: _planar(d),
        shape=(d,),
        covers=(Planar,),
        inverse=False,
    )
    for d in (2, 5)
] + [
    Case(
        name=f"Radial-{d}-{name}",
        build=lambda d=d, k=k: _radial(d, k),
        shape=(d,),
        covers=(Radial,),
    )
    # Contracting towards z0 (beta near its bound -alpha) and expanding away from it.
    for d in (2, 5)
    for name, k in (("contract", -0.8), ("expand", 2.0))
]
