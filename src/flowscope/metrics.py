"""Evaluation metrics shared by the trainer, the CLI and the reports."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["bits_per_dim"]


def bits_per_dim(log_px: Tensor | float, dims: int) -> Tensor:
    """Bits per dimension ``-log p(x) / (D ln 2)`` of discrete data.

    ``log_px`` must be the natural-log probability of the DISCRETE data, i.e. already including
    the dequantization term ``-D log(levels)`` -- which is what ``Flow.log_prob`` returns for the
    image flows of ``flowscope.models`` (``glow``, ``realnvp_image``), whose transform starts with
    a dequantization layer.  With uniform dequantization it is a lower bound on ``log P(x)``
    ("A note on the evaluation of generative models", Theis et al. 2016, arXiv:1511.01844,
    section 3.1), so the result is an upper bound on the true bits/dim; a uniform model over
    ``L`` levels scores ``log2 L`` (8 for 8-bit images).

    Args:
        log_px: ``(batch,)`` (or any shape, or a number) of log-probabilities in nats.
        dims: ``D``, the number of dimensions of one example (``C * H * W``).

    Returns:
        Tensor of the shape of ``log_px``.
    """
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ValueError(f"dims: expected a positive int (C * H * W), got {dims!r}")
    if not isinstance(log_px, Tensor):
        log_px = torch.as_tensor(log_px, dtype=torch.float64)
    return -log_px / (dims * math.log(2.0))
