"""Elementwise bijections: affine scaling, PReLU / leaky ReLU, sigmoid, logit and tanh.

Each transform acts on every coordinate independently, so its Jacobian is diagonal and
``log|det J|`` is the sum of the log-derivatives over all non-batch dimensions.  They accept any
event shape: ``x`` of shape ``(batch, *event_shape)`` gives ``logabsdet`` of shape ``(batch,)``.
``Affine`` and ``PReLU`` hold one parameter per coordinate and therefore know their event shape
(checked at the door); the parameter-free ones work on whatever shape they are given.

Direction (DESIGN.md): ``forward`` maps data to latent and applies the formula written in each
docstring; ``inverse`` applies its analytic inverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_event_shape, check_interval, check_positive
from .base import Transform, sum_except_batch

__all__ = ["Affine", "PReLU", "LeakyReLU", "Sigmoid", "Logit", "Tanh"]


def event_shape(name: str, shape: int | Sequence[int]) -> tuple[int, ...]:
    """Normalize an event shape given as ``int`` or sequence to a tuple of positive ints.

    Shared by the layers of this package that take a ``shape`` argument.
    """
    try:
        out = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an int or a tuple of ints, got {shape!r}") from None
    if isinstance(shape, bool) or not out or any(s < 1 for s in out):
        raise ValueError(f"{name}: expected positive sizes such as 5 or (3, 8, 8), got {shape!r}")
    return out


def _batch_constant(value: Tensor, x: Tensor) -> Tensor:
    """A scalar log-det that does not depend on ``x``, repeated over the batch: ``(batch,)``.

    Materialized (not an ``expand`` view) so that callers may update it in place.
    """
    return value.reshape(1).repeat(x.shape[0])


class Affine(Transform):
    """Learnable elementwise affine map ``u = x * exp(log_scale) + shift``.

    The diagonal special case of the affine transformation ``x = A z + b`` of seed 001 section
    3.4.1 (eqs. 3.10-3.11) and NICE's final diagonal scaling layer ("NICE: Non-linear Independent
    Components Estimation", Dinh et al., 2015, arXiv:1410.8516, section 3.3).  The scale is kept
    positive by its log parameterization, so the map is always invertible.

    ``log|det J| = sum(log_scale)`` over the event (times the event size when the scale is one
    shared scalar).  Zero-initialized: the layer starts as the identity.

    Args:
        shape: event shape, ``D`` or ``(C, H, W)``.
        per_dimension: one ``(log_scale, shift)`` pair per coordinate (True) or a single scalar
            pair shared by all coordinates (False).

    Shapes: ``x``: ``(batch, *shape)`` -> ``u``: ``(batch, *shape)``, ``logabsdet``: ``(batch,)``.
    """

    def __init__(self, shape: int | Sequence[int], per_dimension: bool = True) -> None:
        super().__init__()
        self.shape = event_shape("shape", shape)
        self.per_dimension = bool(per_dimension)
        param_shape = self.shape if self.per_dimension else ()
        self.log_scale = nn.Parameter(torch.zeros(param_shape))
        self.shift = nn.Parameter(torch.zeros(param_shape))
        # A shared scalar scale multiplies every one of the prod(shape) coordinates.
        self._repeats = 1 if self.per_dimension else math.prod(self.shape)

    def _logabsdet(self, x: Tensor) -> Tensor:
        return _batch_constant(self.log_scale.sum() * self._repeats, x)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, self.shape)
        return torch.addcmul(self.shift, x, self.log_scale.exp()), self._logabsdet(x)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, self.shape)
        return (u - self.shift) * torch.exp(-self.log_scale), -self._logabsdet(u)


class PReLU(Transform):
    """Parametric ReLU with a learnable positive slope per coordinate.

    ``u_i = x_i`` if ``x_i >= 0`` else ``alpha_i * x_i`` (seed 001 section 3.4.2, eqs. 3.12-3.13);
    its Jacobian is diagonal with entries ``j(x_i) = 1`` or ``alpha_i`` (eqs. 3.14-3.15), so
    ``log|det J| = sum_{i: x_i < 0} log alpha_i``.  The log-det is piecewise constant in ``x``:
    exact everywhere except on the measure-zero set ``x_i = 0``, where the right derivative (1)
    is used.

    Invertibility needs ``alpha > 0`` (seed 001, below eq. 3.13).  A plain ``log alpha``
    parameter guarantees that only on paper: one large gradient step sends it to -100 and
    ``exp`` underflows to 0 in float32.  So the slope is a soft-clamped log,
    ``log alpha = B tanh(raw / B)`` with ``B = MAX_LOG_SLOPE``: ``alpha`` always lies in
    ``(exp(-B), exp(B))``, about ``(0.0025, 400)``, and is ``exp(raw)`` for small ``raw``.

    Args:
        shape: event shape, ``D`` or ``(C, H, W)``.
        init: initial slope of every coordinate, in ``(exp(-B), exp(B))``.  The default 1 starts
            the layer at the identity (the convention of every learnable layer here); the
            non-linearity grows in training because ``d log|det J| / d log alpha_i`` counts the
            negative inputs of coordinate ``i``.

    Shapes: ``x``: ``(batch, *shape)`` -> ``u``: ``(batch, *shape)``, ``logabsdet``: ``(batch,)``.
    """

    MAX_LOG_SLOPE = 6.0

    def __init__(self, shape: int | Sequence[int], init: float = 1.0) -> None:
        super().__init__()
        check_positive("init", init)
        bound = self.MAX_LOG_SLOPE
        if not abs(math.log(init)) < bound:
            raise ValueError(
                f"init: expected a slope in (exp(-{bound}), exp({bound})) = "
                f"({math.exp(-bound):.4g}, {math.exp(bound):.4g}), got {init!r}"
            )
        self.shape = event_shape("shape", shape)
        self.raw_slope = nn.Parameter(
            torch.full(self.shape, bound * math.atanh(math.log(init) / bound))
        )

    def log_alpha(self) -> Tensor:
        """``log alpha`` of every coordinate: ``shape``."""
        return self.MAX_LOG_SLOPE * torch.tanh(self.raw_slope / self.MAX_LOG_SLOPE)

    def _apply_slope(self, z: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        # alpha > 0 keeps the sign, so the branch is read off the input in both directions.
        log_slope = torch.where(z < 0, sign * self.log_alpha(), z.new_zeros(()))
        return z * log_slope.exp(), sum_except_batch(log_slope)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, self.shape)
        return self._apply_slope(x, 1.0)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, self.shape)
        return self._apply_slope(u, -1.0)


class LeakyReLU(Transform):
    """Fixed leaky ReLU ``u = x`` if ``x >= 0`` else ``negative_slope * x``.

    The non-learnable case of ``PReLU`` (seed 001 eq. 3.12 with a fixed ``alpha``):
    ``log|det J| = (number of negative coordinates) * log(negative_slope)``.

    Args:
        negative_slope: slope on the negative half-line, a number > 0.

    Shapes: any ``(batch, ...)``; ``logabsdet``: ``(batch,)``.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        check_positive("negative_slope", negative_slope)
        self.negative_slope = float(negative_slope)
        self._log_slope = math.log(self.negative_slope)

    def _apply_slope(self, z: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        negative = z < 0
        factor = math.exp(sign * self._log_slope)
        out = torch.where(negative, z * factor, z)
        return out, sign * self._log_slope * sum_except_batch(negative.to(z.dtype))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._apply_slope(x, 1.0)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._apply_slope(u, -1.0)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


def _log_sigmoid_derivative(x: Tensor) -> Tensor:
    """``log sigmoid'(x) = log sigmoid(x) + log sigmoid(-x) = -softplus(x) - softplus(-x)``.

    Written with softplus so it stays finite for large ``|x|`` (no ``log(0)``).
    """
    return -F.softplus(x) - F.softplus(-x)


class Sigmoid(Transform):
    """The logistic sigmoid ``u = 1 / (1 + exp(-x))``, a bijection from R onto (0, 1).

    The inverse of the logit pre-processing of "Density estimation using Real NVP" (Dinh et al.,
    2017, arXiv:1605.08803, section 4.1) and of seed 000 section 3.1.1.1.
    ``log|det J| = sum log sigmoid(x) + log sigmoid(-x)``.  The inverse checks that ``u`` lies in
    the open interval (0, 1).

    Shapes: any ``(batch, ...)``; ``logabsdet``: ``(batch,)``.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(x), sum_except_batch(_log_sigmoid_derivative(x))

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_interval("u", u, 0.0, 1.0)
        log_u, log_1mu = torch.log(u), torch.log1p(-u)
        return log_u - log_1mu, -sum_except_batch(log_u + log_1mu)


class Logit(Transform):
    """Logit with the "alpha squeeze": ``s = alpha/2 + (1 - alpha) x``, ``u = log(s / (1 - s))``.

    Maps data in (0, 1) (dequantized pixels) to the real line.  The squeeze keeps ``s`` away from
    0 and 1 so pixels at the ends of the range do not land at +-infinity: seed 000 section
    3.1.1.1 uses ``alpha = 1e-5``, "Density estimation using Real NVP" (Dinh et al., 2017,
    arXiv:1605.08803, section 4.1) ``alpha = 0.05``.

    ``log|det J| = sum log(1 - alpha) - log s - log(1 - s)``.

    The domain is the set of ``x`` whose squeezed value ``s`` lies in (0, 1): the open interval
    (0, 1) when ``alpha = 0``, slightly wider,
    ``(-alpha / (2 (1 - alpha)), 1 + alpha / (2 (1 - alpha)))``, when ``alpha > 0`` (so that with
    ``alpha > 0`` pixel values exactly 0 or 1 are accepted).  ``forward`` raises a ``ValueError``
    naming ``x`` and the interval for anything outside.

    Args:
        alpha: squeeze amount in ``[0, 1)``.

    Shapes: any ``(batch, ...)``; ``logabsdet``: ``(batch,)``.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha < 1.0):
            raise ValueError(f"alpha: expected a number in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        margin = self.alpha / (2.0 * (1.0 - self.alpha))
        self._low, self._high = 0.0 - margin, 1.0 + margin  # 0.0 - 0.0 is 0.0, not -0.0
        self._log_1ma = math.log1p(-self.alpha)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_interval("x", x, self._low, self._high)
        s = self.alpha / 2 + (1.0 - self.alpha) * x
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        return log_s - log_1ms, sum_except_batch(self._log_1ma - log_s - log_1ms)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(u) - self.alpha / 2) / (1.0 - self.alpha)
        return x, sum_except_batch(_log_sigmoid_derivative(u) - self._log_1ma)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Tanh(Transform):
    """Hyperbolic tangent ``u = tanh(x)``, a bijection from R onto (-1, 1).

    ``log|det J| = sum log(1 - tanh(x)^2) = sum 2 (log 2 - x - softplus(-2x))``, the second form
    being finite for large ``|x|``.  The inverse ``x = atanh(u)`` checks that ``u`` lies in the
    open interval (-1, 1).

    Shapes: any ``(batch, ...)``; ``logabsdet``: ``(batch,)``.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_derivative = 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))
        return torch.tanh(x), sum_except_batch(log_derivative)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_interval("u", u, -1.0, 1.0)
        return torch.atanh(u), -sum_except_batch(torch.log1p(-u) + torch.log1p(u))
