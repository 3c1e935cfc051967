"""Seed 001 Fig 5.4: 5 MAFs cluster MNIST 0-4; samples per component, contingency table."""

from __future__ import annotations

from pathlib import Path

from .vmonf import run as _run

NAME = "vmonf-mnist"
SUMMARY = "Seed 001 Fig 5.4: 5 MAFs cluster MNIST 0-4; samples per component, contingency table"


def run(out: Path, seeds: int = 1, quick: bool = False) -> dict[str, float]:
    return _run(NAME, out, seeds, quick)
