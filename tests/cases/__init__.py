"""Property-test cases: one ``Case`` per transform configuration.

Each module ``tests/cases/<name>.py`` defines ``CASES: list[Case]``; ``all_cases()`` gathers them.
The ONE property test (tests/test_transform_properties.py) runs every case, and a second test fails
when a ``Transform`` subclass exported by ``flowscope.transforms`` is covered by no case.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


def gaussian(n: int, shape: tuple[int, ...]) -> Tensor:
    return torch.randn(n, *shape, dtype=torch.float64)


def unit_interval(n: int, shape: tuple[int, ...]) -> Tensor:
    return torch.rand(n, *shape, dtype=torch.float64) * 0.9 + 0.05


@dataclass
class Case:
    """A transform configuration to check.

    Attributes:
        name: test id.
        build: returns a fresh transform (float32 by default; the harness converts to float64).
        shape: event shape of one example.
        covers: the exported classes this case exercises (for the coverage test).
        context: context size (0: unconditional).
        sample: draws ``n`` inputs inside the transform's domain.
        inverse: False when ``inverse`` has no closed form and must raise NotImplementedError.
        perturb: scale of the random noise added to every parameter before checking, so that
            zero-initialized layers are not trivially the identity.
        warmup: run one forward pass in train mode first (data-dependent init, running stats).
        atol: tolerance of the log-det and round-trip comparisons.
    """

    name: str
    build: Callable[[], torch.nn.Module]
    shape: tuple[int, ...]
    covers: tuple[type, ...]
    context: int = 0
    sample: Callable[[int, tuple[int, ...]], Tensor] = gaussian
    inverse: bool = True
    perturb: float = 0.1
    warmup: bool = True
    atol: float = 1e-8
    extra: dict = field(default_factory=dict)


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cases.extend(getattr(module, "CASES", []))
    return cases
