"""Monotonic rational-quadratic splines, an elementwise transformer.

Neural Spline Flows (Durkan, Bekasov, Murray & Papamakarios, 2019; arXiv:1906.04032), section 3.
On the interval ``[-B, B]`` the map is a monotone piecewise rational-quadratic function with ``K``
bins whose knots ``(x^(k), y^(k))`` and knot derivatives ``delta^(k)`` are produced by a
conditioner; outside ``[-B, B]`` it is the identity ("linear tails"), and the two boundary
derivatives are fixed to 1 so that the map is C^1 across ``+-B``.

Within bin ``k`` (width ``w_k = x^(k+1) - x^(k)``, height ``h_k = y^(k+1) - y^(k)``, slope
``s_k = h_k / w_k``) and with ``xi = (x - x^(k)) / w_k`` in ``[0, 1]`` (Durkan et al. 2019,
section 3.1, eqs. 4-5):

    y = y^(k) + h_k [s_k xi^2 + delta^(k) xi (1 - xi)] / D(xi)
    D(xi) = s_k + (delta^(k+1) + delta^(k) - 2 s_k) xi (1 - xi)

    dy/dx = s_k^2 [delta^(k+1) xi^2 + 2 s_k xi (1 - xi) + delta^(k) (1 - xi)^2]
            / D(xi)^2

The inverse solves the quadratic ``a xi^2 + b xi + c = 0`` of their appendix A, here divided by
``h_k`` and written in ``r = (y - y^(k)) / h_k`` with ``e = delta^(k+1) + delta^(k) - 2 s_k``:

    a = s_k - delta^(k) + r e,   b = delta^(k) - r e,   c = -s_k r,
    b^2 - 4ac = (delta^(k) (1 - r) - delta^(k+1) r)^2 + 4 s_k^2 r (1 - r)

(the second line is exact algebra; as a sum of non-negative terms it cannot cancel, unlike
``b^2 - 4ac`` evaluated directly, which loses everything in float32 for steep bins).  The monotone
root is ``xi = 2c / (-b - sqrt(b^2 - 4ac)) = (-b + sqrt(b^2 - 4ac)) / (2a)``: the paper's first
form is stable when ``b >= 0``; when ``b < 0`` (a nearly flat bin next to a steep knot) its
denominator cancels, so the second, then cancellation-free form is used there.  This keeps the
float32 inverse within a few ulps of ``y`` (backward error) even for extreme parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .transformers import Transformer

__all__ = ["RationalQuadraticSpline", "rational_quadratic_spline"]


def _knots(sizes: Tensor, bound: float) -> Tensor:
    """Knot positions ``(..., K+1)`` from bin sizes ``(..., K)`` summing to ``2 * bound``.

    The end knots are pinned to exactly ``-bound`` and ``+bound`` so that rounding in the cumulative
    sum can neither leave a gap before the linear tail nor push the last knot past it.
    """
    inner = sizes[..., :-1].cumsum(dim=-1) - bound
    lo = torch.full_like(sizes[..., :1], -bound)
    hi = torch.full_like(sizes[..., :1], bound)
    return torch.cat([lo, inner, hi], dim=-1)


def _softmax(raw: Tensor) -> Tensor:
    """Softmax over the (short) last axis.

    Written out because torch's CPU softmax kernel is ~3x slower (forward + backward) than these
    few elementwise ops on rows of a handful of bins.  Subtracting the detached row maximum keeps
    exp() from overflowing without changing the value or the gradient (softmax is shift-invariant).
    """
    e = (raw - raw.amax(dim=-1, keepdim=True).detach()).exp()
    return e / e.sum(dim=-1, keepdim=True)


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    inverse: bool = False,
    bound: float = 3.0,
) -> tuple[Tensor, Tensor]:
    """Evaluate a monotone rational-quadratic spline (or its inverse) with identity tails.

    Durkan et al. 2019, eqs. 4-5 (forward and derivative) and appendix A (inverse); see the module
    docstring for the formulas.

    Args:
        x: input of any shape ``S`` (``x`` in the forward direction, ``y`` in the inverse one).
        widths: positive bin widths ``(*S, K)`` summing to ``2 * bound`` along the last axis.
        heights: positive bin heights ``(*S, K)`` summing to ``2 * bound``.
        derivatives: positive derivatives at the ``K + 1`` knots, ``(*S, K + 1)``; set the first
            and last to 1 for C^1 identity tails.
        inverse: evaluate the inverse map.
        bound: the spline acts on ``[-bound, bound]``; it is the identity outside.

    Returns:
        ``(out, logabsdet)``, both of shape ``S``: the mapped values and the elementwise
        ``log|d out / d x|`` (0 in the tails).
    """
    x_knots = _knots(widths, bound)
    y_knots = _knots(heights, bound)
    # Recompute sizes from the pinned knots so the formulas and the knots agree exactly.
    widths = x_knots[..., 1:] - x_knots[..., :-1]
    heights = y_knots[..., 1:] - y_knots[..., :-1]

    inside = (x >= -bound) & (x <= bound)
    # Clamping keeps the spline branch finite (and its gradients zero, not NaN) in the tails,
    # where torch.where then selects the identity.
    z = x.clamp(-bound, bound)
    search = y_knots if inverse else x_knots
    # Bin index = number of interior knots <= z, which lies in [0, K-1] without any clamping.
    interior = search[..., 1:-1].contiguous()
    idx = torch.searchsorted(interior, z.unsqueeze(-1).contiguous(), right=True)

    def pick(t: Tensor, offset: int = 0) -> Tensor:
        return t.gather(-1, idx + offset).squeeze(-1)

    x_k, y_k, w, h = pick(x_knots), pick(y_knots), pick(widths), pick(heights)
    d_k, d_k1 = pick(derivatives), pick(derivatives, 1)
    s = h / w
    slack = d_k1 + d_k - 2 * s  # the coefficient of xi (1 - xi) in the denominator

    if inverse:
        # Appendix A's quadratic divided by h_k, in r = (y - y^(k)) / h_k, the fraction of the
        # bin's height below y (in [0, 1]; the clamp only removes rounding).
        r = ((z - y_k) / h).clamp(0.0, 1.0)
        a = s - d_k + r * slack
        b = d_k - r * slack
        c = -s * r
        # b^2 - 4ac expanded exactly into a sum of two non-negative terms: computed directly it
        # cancels catastrophically in float32 (steep bins: b^2 ~ 4ac ~ 1e8) and can come out
        # <= 0, where sqrt has an infinite gradient.  Here both terms vanish together only if a
        # knot derivative is 0, so the square root and its gradient stay finite.
        root = ((d_k * (1 - r) - d_k1 * r) ** 2 + 4 * s * s * r * (1 - r)).sqrt()
        # The wanted root is 2c / (-b - root) == (-b + root) / (2a).  The first form cancels
        # catastrophically when b < 0 (flat bin next to a steep knot), the second when b > 0, so
        # pick per entry; in the b < 0 branch a > 0 (c <= 0 and the root lies in [0, 1]), and both
        # branches are finite, so torch.where passes no NaN gradients.
        negative = b < 0
        xi = torch.where(negative, root - b, 2 * c) / torch.where(negative, 2 * a, -b - root)
        # Where a bin is nearly flat, rounding in y can put the root just outside [0, 1] (where
        # the denominator may vanish); the true root is in [0, 1], so clamping only removes error.
        xi = xi.clamp(0.0, 1.0)
    else:
        xi = (z - x_k) / w

    t = xi * (1 - xi)
    denom = s + slack * t
    if inverse:
        out = x_k + xi * w
    else:
        out = y_k + h * (s * xi * xi + d_k * t) / denom
    numer = d_k1 * xi * xi + 2 * s * t + d_k * (1 - xi) * (1 - xi)
    logabsdet = numer.log() + 2 * s.log() - 2 * denom.log()  # log dy/dx at xi (eq. 5)
    if inverse:
        logabsdet = -logabsdet
    out = torch.where(inside, out, x)
    logabsdet = torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
    return out, logabsdet


class RationalQuadraticSpline(Transformer):
    """Rational-quadratic spline transformer (Durkan et al. 2019, "Neural Spline Flows").

    Each coordinate gets ``params_per_dim = 3 * bins - 1`` unconstrained numbers, laid out as
    ``[widths (bins), heights (bins), interior derivatives (bins - 1)]`` and constrained as

        widths  = 2B [min_w + (1 - bins * min_w) softmax(raw_w)]      (same for heights)
        delta   = min_d + softplus(raw_d + c),   c = log(exp(1 - min_d) - 1)

    so that all-zero parameters give uniform bins and unit derivatives, i.e. EXACTLY the identity
    map (a zero-initialized conditioner starts the flow at the identity). The boundary
    derivatives are 1 so the identity tails outside ``[-bound, bound]`` join smoothly.

    Args:
        bins: number of bins ``K`` (>= 1).
        bound: half-width ``B`` of the interval the spline acts on.
        min_bin_width: smallest bin width as a fraction of ``2B`` (keeps the inverse stable).
        min_bin_height: smallest bin height as a fraction of ``2B``.
        min_derivative: smallest knot derivative (must be < 1).

    Shapes: ``x`` ``(*batch, D)``, ``params`` ``(*batch, D, 3 * bins - 1)``; outputs and the
    elementwise log-derivatives have the shape of ``x``.
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 3.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ValueError(f"bins: expected an int >= 1, got {bins!r}")
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise ValueError(f"bound: expected a finite number > 0, got {bound!r}")
        for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
            if not (isinstance(value, (int, float)) and 0 <= value and value * bins < 1):
                raise ValueError(
                    f"{name}: expected a number in [0, 1/bins) = [0, {1 / bins:.4g}), got {value!r}"
                )
        if not (isinstance(min_derivative, (int, float)) and 0 <= min_derivative < 1):
            raise ValueError(f"min_derivative: expected a number in [0, 1), got {min_derivative!r}")
        self.bins = bins
        self.bound = float(bound)
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)
        self.params_per_dim = 3 * bins - 1
        # softplus(c) = 1 - min_derivative, so a raw derivative of 0 gives exactly 1.
        self._shift = math.log(math.expm1(1.0 - self.min_derivative))

    def __repr__(self) -> str:
        return f"RationalQuadraticSpline(bins={self.bins}, bound={self.bound})"

    def constrain(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw ``(..., 3K-1)`` -> widths, heights ``(..., K)`` and derivatives ``(..., K+1)``."""
        k = self.bins
        scale = 2 * self.bound
        # split (not three slices): its backward is one cat instead of three zero-filled copies.
        raw_widths, raw_heights, raw_derivatives = params.split([k, k, k - 1], dim=-1)
        widths = scale * (self.min_bin_width + (1 - k * self.min_bin_width) * _softmax(raw_widths))
        heights = scale * (
            self.min_bin_height + (1 - k * self.min_bin_height) * _softmax(raw_heights)
        )
        inner = self.min_derivative + F.softplus(raw_derivatives + self._shift)
        ones = torch.ones_like(raw_widths[..., :1])
        derivatives = torch.cat([ones, inner, ones], dim=-1)
        return widths, heights, derivatives

    def _check(self, x: Tensor, params: Tensor) -> None:
        if params.shape != (*x.shape, self.params_per_dim):
            raise ValueError(
                f"params: expected shape {(*x.shape, self.params_per_dim)} "
                f"(input shape + 3 * bins - 1), got {tuple(params.shape)}"
            )

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``x (*batch, D)`` -> ``(y, log|dy/dx|)``, both ``(*batch, D)``."""
        self._check(x, params)
        return rational_quadratic_spline(x, *self.constrain(params), bound=self.bound)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``y (*batch, D)`` -> ``(x, log|dx/dy|)``, both ``(*batch, D)``."""
        self._check(y, params)
        return rational_quadratic_spline(y, *self.constrain(params), inverse=True, bound=self.bound)
