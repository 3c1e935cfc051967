"""Seed 001 Fig 5.2: VMoNF on two circles without labels (the seed split the plane in half)."""

from __future__ import annotations

from pathlib import Path

from .vmonf import run as _run

NAME = "vmonf-circles"
SUMMARY = "Seed 001 Fig 5.2: VMoNF on two circles without labels (the seed split the plane in half)"


def run(out: Path, seeds: int = 1, quick: bool = False) -> dict[str, float]:
    return _run(NAME, out, seeds, quick)
