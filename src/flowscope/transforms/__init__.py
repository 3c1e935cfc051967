"""Bijections with exact log-determinants (see ``base`` for the direction convention).

Each module defines ``__all__``; this package re-exports all of them, and the property test
(tests/test_transform_properties.py) checks that every exported ``Transform`` has a case.
"""

from . import (
    autoregressive,
    base,
    coupling,
    dequantization,
    elementwise,
    image,
    linear,
    normalization,
    planar,
    splines,
    transformers,
)
from .autoregressive import *  # noqa: F403
from .base import *  # noqa: F403
from .coupling import *  # noqa: F403
from .dequantization import *  # noqa: F403
from .elementwise import *  # noqa: F403
from .image import *  # noqa: F403
from .linear import *  # noqa: F403
from .normalization import *  # noqa: F403
from .planar import *  # noqa: F403
from .splines import *  # noqa: F403
from .transformers import *  # noqa: F403

__all__ = [
    name
    for module in (
        base,
        transformers,
        elementwise,
        linear,
        normalization,
        splines,
        coupling,
        autoregressive,
        planar,
        image,
        dequantization,
    )
    for name in module.__all__
]
