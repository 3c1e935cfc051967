"""Seed 001 Fig 5.3: VMoNF on two circles with 16 labels per circle (semi-supervised)."""

from __future__ import annotations

from pathlib import Path

from .vmonf import run as _run

NAME = "vmonf-circles-semi"
SUMMARY = "Seed 001 Fig 5.3: VMoNF on two circles with 16 labels per circle (semi-supervised)"


def run(out: Path, seeds: int = 1, quick: bool = False) -> dict[str, float]:
    return _run(NAME, out, seeds, quick)
