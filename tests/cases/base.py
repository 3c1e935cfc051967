"""Compose and Inverse cases are built over other transforms: see elementwise.py."""

from . import Case

CASES: list[Case] = []
