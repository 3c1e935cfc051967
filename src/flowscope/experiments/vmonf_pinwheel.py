"""Seed 001 Fig 5.1: 5 RealNVPs cluster the 5-wing pinwheel; accuracy/ARI/NMI, NLL vs 1 flow."""

from __future__ import annotations

from pathlib import Path

from .vmonf import run as _run

NAME = "vmonf-pinwheel"
SUMMARY = (
    "Seed 001 Fig 5.1: 5 RealNVPs cluster the 5-wing pinwheel; accuracy/ARI/NMI, NLL vs 1 flow"
)


def run(out: Path, seeds: int = 1, quick: bool = False) -> dict[str, float]:
    return _run(NAME, out, seeds, quick)
