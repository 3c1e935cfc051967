"""Base distributions of flows, as ``nn.Module``s over a flat or shaped event.

Every distribution has ``log_prob(u) -> (batch,)``, ``sample(n, temperature=1.0) -> (n, *shape)``
and ``mean`` (the ``shape``-shaped mode/mean that seed 000 decodes into its "mean image",
Figures 3.7-3.8).  Tempered sampling (Kingma & Dhariwal 2018, section 5; seed 000 uses
tau = 0.7) scales the spread of the distribution by ``temperature``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._checks import check_event_shape, check_finite, check_positive

__all__ = ["Distribution", "StandardNormal", "DiagonalNormal"]

_LOG_2PI = math.log(2 * math.pi)


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or any((not isinstance(s, int)) or s < 1 for s in shape):
        raise ValueError(f"shape: expected a positive int or a tuple of positive ints, got {shape!r}")
    return shape


class Distribution(nn.Module):
    """Base class. ``shape`` is the event shape (e.g. ``(D,)``)."""

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__()
        self.shape = _shape(shape)

    @property
    def features(self) -> int:
        return math.prod(self.shape)

    def log_prob(self, u: Tensor) -> Tensor:
        """Log-density of ``u``, shape ``(batch, *shape) -> (batch,)``."""
        check_event_shape("u", u, self.shape)
        check_finite("u", u)
        return self._log_prob(u)

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples of shape ``(n, *shape)``, spread scaled by ``temperature``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        check_positive("temperature", temperature)
        return self._sample(n, float(temperature))

    @property
    def mean(self) -> Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _device_dtype(self) -> dict:
        for t in list(self.parameters()) + list(self.buffers()):
            return {"device": t.device, "dtype": t.dtype}
        return {}

    def _log_prob(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample(self, n: int, temperature: float) -> Tensor:
        raise NotImplementedError


class StandardNormal(Distribution):
    """Fixed N(0, I): the M_std base of seed 000 (section 3.2)."""

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__(shape)
        # A buffer so that .to(device/dtype) moves the distribution with the flow.
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def _log_prob(self, u: Tensor) -> Tensor:
        u = u.reshape(u.shape[0], -1)
        return -0.5 * (u.pow(2).sum(1) + u.shape[1] * _LOG_2PI)

    def _sample(self, n: int, temperature: float) -> Tensor:
        z = self._zero
        return torch.randn(n, *self.shape, device=z.device, dtype=z.dtype) * temperature

    @property
    def mean(self) -> Tensor:
        return self._zero.new_zeros(self.shape)


class DiagonalNormal(Distribution):
    """N(mu, diag(sigma^2)) with learned ``loc`` and ``log_scale`` (both initialized at 0).

    The M_diag base of seed 000 (section 3.2): it starts as N(0, I) and learns to fit the embedded
    data.
    """

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__(shape)
        self.loc = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))

    def _log_prob(self, u: Tensor) -> Tensor:
        z = (u - self.loc) * torch.exp(-self.log_scale)
        z = z.reshape(u.shape[0], -1)
        return -0.5 * (z.pow(2).sum(1) + z.shape[1] * _LOG_2PI) - self.log_scale.sum()

    def _sample(self, n: int, temperature: float) -> Tensor:
        eps = torch.randn(n, *self.shape, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + temperature * torch.exp(self.log_scale) * eps

    @property
    def mean(self) -> Tensor:
        return self.loc.detach().clone()
