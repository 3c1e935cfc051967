"""Experiments: thin modules over the library, each writing a run directory with a report.

Each experiment module defines ``NAME``, ``SUMMARY`` (one line) and ``run(out: Path, seeds: int,
quick: bool) -> dict[str, float]`` (the flat metrics written to ``metrics.json``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXPERIMENTS", "get"]

# name -> module path; modules are imported lazily so `flowscope experiment --list` stays fast.
EXPERIMENTS: dict[str, str] = {
    "layers": "flowscope.experiments.layers",
    "toy-gap": "flowscope.experiments.toy_gap",
    "vmonf-pinwheel": "flowscope.experiments.vmonf_pinwheel",
    "vmonf-circles": "flowscope.experiments.vmonf_circles",
    "vmonf-circles-semi": "flowscope.experiments.vmonf_circles_semi",
    "vmonf-mnist": "flowscope.experiments.vmonf_mnist",
    "energies": "flowscope.experiments.energies",
    "coherence": "flowscope.experiments.coherence",
}


def get(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: expected one of {sorted(EXPERIMENTS)}, got {name!r}")
    return importlib.import_module(EXPERIMENTS[name])
