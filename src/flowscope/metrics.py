"""Evaluation metrics shared by the trainer, the CLI and the reports."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_int

__all__ = ["bits_per_dim", "importance_weighted_log_prob"]


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


def importance_weighted_log_prob(flow: torch.nn.Module, x: Tensor, samples: int) -> Tensor:
    """Importance-weighted estimate ``log (1/K) sum_k p(x, u_k) / q(u_k | x)``: ``(batch,)``.

    An image flow's ``log_prob(x)`` draws ONE dequantization noise ``u ~ q(u | x)`` and returns
    the log importance weight ``log p(x + u) - log q(u | x)`` (``q`` uniform or Flow++'s
    variational noise flow), whose expectation is a lower bound on ``log P(x)`` (Ho et al.
    2019, "Flow++", arXiv:1902.00275, eq. 12).  Averaging K weights inside the log tightens it:
    the bound never decreases with K and tends to ``log P(x)`` as K grows (Burda et al. 2016,
    "Importance Weighted Autoencoders", arXiv:1509.00519, theorem 1).  ``samples = 1`` is the
    one-draw bound itself.  For a flow without noise every draw is the same and so is the
    result.

    Args:
        flow: a model with ``log_prob(x) -> (batch,)`` that draws fresh noise per call.
        x: ``(batch, *shape)`` data.
        samples: K, the number of draws (an int >= 1); the cost is K calls of ``log_prob``.

    Returns:
        ``(batch,)`` log-probabilities in nats (pass to :func:`bits_per_dim`).
    """
    check_int("samples", samples, 1)
    draws = torch.stack([flow.log_prob(x) for _ in range(samples)])
    return torch.logsumexp(draws.double(), dim=0).to(draws.dtype) - math.log(samples)
