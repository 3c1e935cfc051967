"""Two-dimensional toy datasets with their TRUE densities, and the Rezende-Mohamed test energies.

Every dataset ``d`` offers ``d.sample(n, seed) -> (x (n, 2) float32, labels (n,) int64)`` and, with
``d.has_density``, the exact ``d.log_prob(x) -> (n,)`` (computed in float64) and the differential
entropy ``d.entropy()`` in nats, so a fitted flow can be scored against the best possible test
log-likelihood ``-entropy``.  Entropies come from deterministic quadrature (Gauss-Hermite or
Gauss-Legendre over the generating noise, or a midpoint grid of ``p log p`` where the density is
band-limited), never from Monte Carlo, and are cached.  Labels are the wing / circle / moon /
component / square / spiral index (0 where meaningless); classes come in equal sizes (the seeds'
generators draw ``num_per_class`` points per class) in a seeded random order.

Datasets (registry ``DATASETS``; ``get(name, **kwargs)`` builds one with other parameters):

- ``pinwheel``: Johnson et al., "Composing graphical models with neural networks for structured
  representations and fast inference" (2016, arXiv:1603.06277), as used by seed 001 (VMoNF).
- ``two_circles``: seed 001's concentric circles (radial noise only).
- ``moons``: scikit-learn's ``make_moons`` with the arc parameter drawn uniformly.
- ``eight_gaussians``, ``checkerboard``, ``spirals``: FFJORD's toys (Grathwohl et al., "FFJORD",
  2018, arXiv:1810.01367).
- ``sine``: the noisy sine of seed 000's Figure 1.1.

Entropies at the default parameters (nats; accuracy from refining each rule): pinwheel
-1.1431169133 (1e-9), two_circles -1.9181205658 (1e-12), moons 0.28923374 (1e-8),
eight_gaussians 2.8315783605 (1e-10), checkerboard log 32 = 3.4657359028, spirals 2.6454503
(2e-7), sine 0.9542305066 (closed form).  Each matches the mean of ``-log_prob`` over 200k samples
within its Monte Carlo error (tests/test_toy2d.py).

The unnormalized energies U1-U4 of Rezende & Mohamed (2015) live in :mod:`flowscope.data.energies`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from torch import Tensor

from .._checks import check_event_shape, check_finite, check_positive

__all__ = [
    "Toy2D",
    "Pinwheel",
    "TwoCircles",
    "Moons",
    "EightGaussians",
    "Checkerboard",
    "Spirals",
    "Sine",
    "DATASETS",
    "get",
    "plot_range",
]

_PI = math.pi
_TWO_PI = 2.0 * math.pi
_LOG_2PI = math.log(_TWO_PI)
_SQRT_HALF = math.sqrt(0.5)
_F64 = torch.float64
_CHUNK = 1 << 22  # points x quadrature nodes held at once: bounds memory (~32 MB per buffer)


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed: expected an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _stratified_labels(n: int, classes: int, gen: torch.Generator) -> Tensor:
    """Equal class sizes (up to one), shuffled: the seeds draw ``num_per_class`` per class."""
    return (torch.arange(n) % classes)[torch.randperm(n, generator=gen)]


@cache
def _hermite(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes/weights with ``sum w g(t) ~ E g(T)``, ``T ~ N(0, 1)`` (probabilists' Hermite)."""
    t, w = np.polynomial.hermite_e.hermegauss(order)
    return t, w / math.sqrt(_TWO_PI)


@cache
def _legendre(a: float, b: float, panels: int, order: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes/weights on ``[a, b]`` (``panels`` equal panels)."""
    t, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(a, b, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    return (mid + half * t).ravel(), (half * w).ravel()


def _hermite_grid(order: int) -> tuple[Tensor, Tensor]:
    """Tensor-product 2-D Gauss-Hermite rule: nodes ``(order**2, 2)``, weights summing to 1."""
    t, w = (torch.as_tensor(a, dtype=_F64) for a in _hermite(order))
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    return grid, (w[:, None] * w[None, :]).reshape(-1)


def _log_normal(x: Tensor, mean: Tensor | float, std: float) -> Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * _LOG_2PI


class Toy2D:
    """A 2-D toy distribution: seeded sampler, exact log-density, cached entropy.

    Attributes:
        name: registry key.
        num_labels: labels lie in ``0 .. num_labels - 1``.
        has_density: whether ``log_prob`` and ``entropy`` are available.
        bounds: ``(xmin, xmax, ymin, ymax)`` holding essentially all the mass (for plots).
    """

    name: str = ""
    num_labels: int = 1
    has_density: bool = True
    bounds: tuple[float, float, float, float] = (-4.0, 4.0, -4.0, 4.0)
    _chunk_rows: int = 1 << 16  # rows of ``x`` per log_prob chunk (memory bound)

    def __init__(self) -> None:
        self._entropy: float | None = None

    def sample(self, n: int, seed: int | torch.Generator = 0) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points: ``x`` of shape ``(n, 2)`` (float32) and ``labels`` ``(n,)`` (int64).

        The same ``seed`` gives the same data; pass a ``torch.Generator`` for fresh batches.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        x, labels = self._sample(n, _generator(seed))
        return x.to(torch.float32), labels.to(torch.long)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)``, shape ``(n, 2) -> (n,)``, computed in float64, returned in x's dtype.

        ``-inf`` outside the support of a bounded density (checkerboard, sine).
        """
        if not self.has_density:
            raise NotImplementedError(f"{self.name}: no tractable density")
        check_event_shape("x", x, (2,))
        check_finite("x", x)
        x64 = x.to(_F64)
        chunks = [self._log_prob(c) for c in x64.split(self._chunk_rows)]
        out = torch.cat(chunks) if chunks else x64.new_empty(0)
        return out.to(x.dtype if x.is_floating_point() else _F64)

    def entropy(self) -> float:
        """Differential entropy ``-E log p(x)`` in nats (deterministic quadrature, cached)."""
        if not self.has_density:
            raise NotImplementedError(f"{self.name}: no tractable density")
        if self._entropy is None:
            with torch.no_grad():
                self._entropy = float(self._compute_entropy())
        return self._entropy

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _compute_entropy(self) -> float:
        raise NotImplementedError

    def _grid_entropy(self, h: float) -> float:
        """``-sum p log p h^2`` on a midpoint grid over ``bounds``: spectrally accurate when p is
        smoothed by Gaussian noise of std ``s`` (aliasing error ~ exp(-2 pi^2 s^2 / h^2))."""
        x0, x1, y0, y1 = self.bounds
        gx = torch.arange(x0 + h / 2, x1, h, dtype=_F64)
        gy = torch.arange(y0 + h / 2, y1, h, dtype=_F64)
        pts = torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
        lp = self.log_prob(pts)
        return -float(torch.where(lp > -math.inf, lp.exp() * lp, 0.0).sum()) * h * h

    def __repr__(self) -> str:
        shown = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "num_labels"}
        params = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({params})"


class Pinwheel(Toy2D):
    """Pinwheel (Johnson et al. 2016) with seed 001's parameters.

    Wing ``k`` of ``K``: ``f ~ N((1, 0), diag(radial_std^2, tangential_std^2))``,
    ``psi = 2 pi k / K + rate exp(f0)`` and ``x = 0.5 R(-psi) f``.  The original code computes
    ``10 * f @ R(psi)`` (a row vector times the rotation, i.e. a rotation by ``-psi``) and then
    divides by 20; we keep its orientation so the data are the seeds' data.

    Density.  In polar coordinates ``f = r (cos t, sin t)`` the map keeps the radius
    (``|x| = r / 2``) and sends the angle to ``phi = h_r(t) - a_k`` with
    ``h_r(t) = t - rate exp(r cos t)``, so ``|det dx/df| = h_r'(t) / 4`` and
    ``p(x) = (1/K) sum_k sum_{t: h_r(t) = phi + a_k mod 2 pi} 4 N(f(t)) / |h_r'(t)|``.
    ``h_r' = 1 + rate r sin t exp(r cos t)`` is >= 1 on the upper half circle, but on the lower
    half it dips below 0 whenever ``rate r max_u sin u e^{r cos u} > 1`` (about r > 1.6 for the
    defaults): the map then folds and a point has up to three preimages per 2 pi branch, and
    several branches once ``rate e^r > 2 pi``.  We split the circle at the (at most two) roots of
    ``h_r' = 0`` into monotone pieces, enumerate every branch ``m`` with ``phi + a_k + 2 pi m`` in a
    piece's range and solve each by safeguarded Newton.  Preimages with ``f0 > 8`` (Gaussian weight
    below e^-270 of the peak; they exist only for ``|x| > 4``) are left out to bound the work.
    """

    name = "pinwheel"
    bounds = (-1.5, 1.5, -1.5, 1.5)
    _SCALE = 0.5  # the original's 10 / 20
    _F0_MAX = 8.0

    def __init__(
        self,
        wings: int = 5,
        radial_std: float = 0.3,
        tangential_std: float = 0.05,
        rate: float = 0.4,
    ) -> None:
        super().__init__()
        if not isinstance(wings, int) or isinstance(wings, bool) or wings < 1:
            raise ValueError(f"wings: expected a positive int, got {wings!r}")
        check_positive("radial_std", radial_std)
        check_positive("tangential_std", tangential_std)
        if not (isinstance(rate, (int, float)) and 0 <= rate < math.inf):
            raise ValueError(f"rate: expected a finite number >= 0, got {rate!r}")
        self.wings, self.radial_std, self.tangential_std = wings, radial_std, tangential_std
        self.rate = float(rate)
        self.num_labels = wings

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = _stratified_labels(n, self.wings, gen)
        z = torch.randn(n, 2, generator=gen, dtype=_F64)
        f0, f1 = 1.0 + self.radial_std * z[:, 0], self.tangential_std * z[:, 1]
        return self._map(f0, f1, _TWO_PI * labels / self.wings), labels

    def _map(self, f0: Tensor, f1: Tensor, offset: Tensor | float) -> Tensor:
        """``x = 0.5 R(-psi) f`` with ``psi = offset + rate exp(f0)``: shape ``(n, 2)``."""
        psi = offset + self.rate * f0.exp()
        c, s = psi.cos(), psi.sin()
        return self._SCALE * torch.stack([f0 * c + f1 * s, f1 * c - f0 * s], 1)

    def _h(self, t: Tensor, r: Tensor) -> Tensor:
        return t - self.rate * torch.exp(r * t.cos())

    def _dh(self, t: Tensor, r: Tensor) -> Tensor:
        return 1.0 + self.rate * r * t.sin() * torch.exp(r * t.cos())

    def _log_prob(self, x: Tensor) -> Tensor:
        n, k_wings, rate, dev = x.shape[0], self.wings, self.rate, x.device
        r = (torch.linalg.vector_norm(x, dim=1) / self._SCALE).clamp_min(1e-12)
        phi = torch.atan2(x[:, 1], x[:, 0])
        # Folds: h' = 1 - q(u) at t = -u, q(u) = rate r sin u e^{r cos u} is unimodal on (0, pi)
        # with its peak at cos u* = 2r / (1 + sqrt(1 + 4 r^2)) (root of r c^2 + c - r = 0).
        ustar = torch.acos(2 * r / (1 + torch.sqrt(1 + 4 * r * r)))
        fold = rate * r * ustar.sin() * torch.exp(r * ustar.cos()) > 1.0
        u1, u2 = ustar.clone(), ustar.clone()
        if bool(fold.any()):
            rf, uf = r[fold], ustar[fold]
            dq = lambda u: rate * rf * u.sin() * torch.exp(rf * u.cos()) - 1.0  # noqa: E731
            u1[fold] = _bisect(dq, torch.zeros_like(uf), uf)
            u2[fold] = _bisect(dq, uf, torch.full_like(uf, _PI))
        lo_t = torch.stack([torch.full_like(r, -_PI), -u2, -u1], 1)  # monotone pieces (n, 3)
        hi_t = torch.stack([-u2, -u1, torch.full_like(r, _PI)], 1)
        rr = r[:, None].expand(n, 3)
        ha, hb = self._h(lo_t, rr), self._h(hi_t, rr)
        v_lo = torch.minimum(ha, hb).clamp_min(-_PI - rate * math.exp(self._F0_MAX))
        v_hi = torch.maximum(ha, hb)
        # Branch targets phi + a_k + 2 pi m inside [v_lo, v_hi) for every piece and wing.
        c = phi[:, None] + _TWO_PI * torch.arange(k_wings, dtype=_F64, device=dev) / k_wings
        m_lo = torch.ceil((v_lo[:, :, None] - c[:, None, :]) / _TWO_PI)
        m_hi = torch.ceil((v_hi[:, :, None] - c[:, None, :]) / _TWO_PI) - 1
        count = (m_hi - m_lo + 1).clamp_min(0).long()
        count[:, 1] *= fold[:, None]  # the decreasing middle piece exists only with a fold
        flat = count.reshape(-1)
        cell = torch.repeat_interleave(torch.arange(flat.numel(), device=dev), flat)
        start = torch.cumsum(flat, 0) - flat
        m = m_lo.reshape(-1)[cell] + (torch.arange(cell.numel(), device=dev) - start[cell])
        point, piece = cell // (3 * k_wings), (cell // k_wings) % 3
        v = c.reshape(-1)[point * k_wings + cell % k_wings] + _TWO_PI * m
        sign = torch.where(piece == 1, -1.0, 1.0).to(_F64)  # the middle piece decreases
        rp = r[point]

        def fn(s: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
            e = self.rate * torch.exp(rp[i] * s.cos())
            return sign[i] * (s - e - v[i]), sign[i] * (1.0 + rp[i] * s.sin() * e)

        t = _monotone_solve(fn, lo_t[point, piece], hi_t[point, piece])
        f0, f1 = rp * t.cos(), rp * t.sin()
        term = (
            _log_normal(f0, 1.0, self.radial_std)
            + _log_normal(f1, 0.0, self.tangential_std)
            - 2 * math.log(self._SCALE)
            - self._dh(t, rp).abs().log()
        )
        peak = x.new_full((n,), -math.inf).scatter_reduce(0, point, term, "amax")
        total = x.new_zeros(n).index_add(0, point, (term - peak[point]).exp())
        return total.log() + peak - math.log(k_wings)

    def _compute_entropy(self) -> float:
        # p is invariant under rotation by 2 pi / K, so E over all wings equals E over wing 0:
        # integrate -log p(g_0(f)) against the Gaussian on f.  Composite Gauss-Legendre in f0 (near
        # f0 = 0, 3.3 sd out, the wings meet and log p bends sharply: plain Gauss-Hermite
        # converges only to ~1e-5 there), Gauss-Hermite in f1.  Converged to ~1e-10 nats.
        z0, w0 = (torch.as_tensor(v, dtype=_F64) for v in _legendre(-8.0, 8.0, 64))
        w0 = w0 * torch.exp(-0.5 * z0**2) / math.sqrt(_TWO_PI)
        z1, w1 = (torch.as_tensor(v, dtype=_F64) for v in _hermite(32))
        f0 = (1.0 + self.radial_std * z0)[:, None].expand(-1, len(z1)).reshape(-1)
        f1 = (self.tangential_std * z1).repeat(len(z0))
        lp = self.log_prob(self._map(f0, f1, 0.0))
        return -float(((w0[:, None] * w1).reshape(-1) * lp).sum())


def _bisect(g: Callable[[Tensor], Tensor], a: Tensor, b: Tensor, iters: int = 60) -> Tensor:
    """Vectorized bisection for a sign change of ``g`` on ``[a, b]``."""
    neg_a = g(a) < 0
    for _ in range(iters):
        mid = 0.5 * (a + b)
        same = (g(mid) < 0) == neg_a
        a, b = torch.where(same, mid, a), torch.where(same, b, mid)
    return 0.5 * (a + b)


def _monotone_solve(
    fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    a: Tensor,
    b: Tensor,
    iters: int = 100,
    tol: float = 1e-12,
) -> Tensor:
    """Roots of increasing functions on brackets ``[a, b]``, given ``fn(t, idx) = (g, g')`` for the
    entries ``idx``: Newton steps, bisection when one leaves the bracket (bisection speed at
    worst, quadratic near simple roots).  Entries stop once ``|g| <= tol`` or the bracket is
    narrower than ``tol``; only the unfinished ones are iterated."""
    t = 0.5 * (a + b)
    idx = torch.arange(t.numel(), device=t.device)
    lo, hi, cur = a, b, t.clone()
    for _ in range(iters):
        gt, dt = fn(cur, idx)
        done = (gt.abs() <= tol) | (hi - lo <= tol)
        t[idx] = cur
        if bool(done.all()):
            break
        keep = ~done
        idx, lo, hi, cur, gt, dt = idx[keep], lo[keep], hi[keep], cur[keep], gt[keep], dt[keep]
        left = gt < 0
        lo, hi = torch.where(left, cur, lo), torch.where(left, hi, cur)
        step = cur - gt / dt
        cur = torch.where((dt > 0) & (step >= lo) & (step <= hi), step, 0.5 * (lo + hi))
    else:
        t[idx] = cur
    return t


class TwoCircles(Toy2D):
    """Seed 001's two circles: class ``c`` has radius ``N(radii[c], radial_std^2)``, uniform angle.

    The noise is radial, so with ``q`` the density of ``|radius|`` (a folded-normal mixture),
    ``p(x) = q(|x|) / (2 pi |x|)`` exactly, and ``H = H(q) + log 2 pi + E log |x|`` (1-D
    Gauss-Hermite).  Labels follow the original: radius 0.4 -> 0, radius 0.8 -> 1.
    """

    name = "two_circles"
    num_labels = 2
    bounds = (-1.1, 1.1, -1.1, 1.1)

    def __init__(self, radii: tuple[float, float] = (0.4, 0.8), radial_std: float = 0.005) -> None:
        super().__init__()
        for i, rad in enumerate(radii):
            check_positive(f"radii[{i}]", rad)
        check_positive("radial_std", radial_std)
        self.radii, self.radial_std = tuple(float(v) for v in radii), radial_std
        self.num_labels = len(self.radii)

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = _stratified_labels(n, self.num_labels, gen)
        rho = torch.tensor(self.radii, dtype=_F64)[labels]
        rho = rho + self.radial_std * torch.randn(n, generator=gen, dtype=_F64)
        ang = _TWO_PI * torch.rand(n, generator=gen, dtype=_F64)
        return torch.stack([rho * ang.cos(), rho * ang.sin()], 1), labels

    def _log_q(self, rho: Tensor) -> Tensor:
        radii = torch.tensor(self.radii, dtype=_F64, device=rho.device)
        # A negative draw of the radius lands at |radius| on the opposite side: fold it back.
        both = torch.cat(
            [
                _log_normal(rho[:, None], radii, self.radial_std),
                _log_normal(-rho[:, None], radii, self.radial_std),
            ],
            1,
        )
        return torch.logsumexp(both, 1) - math.log(len(self.radii))

    def _log_prob(self, x: Tensor) -> Tensor:
        # |x| = 0 has infinite density (mass ~ e^-3200): clamp to keep log_prob finite.
        rho = torch.linalg.vector_norm(x, dim=1).clamp_min(1e-300)
        return self._log_q(rho) - _LOG_2PI - rho.log()

    def _compute_entropy(self) -> float:
        t, w = (torch.as_tensor(a, dtype=_F64) for a in _hermite(64))
        total = 0.0
        for rad in self.radii:
            rho = (rad + self.radial_std * t).abs()
            total += float((w * (rho.log() - self._log_q(rho))).sum()) / len(self.radii)
        return total + _LOG_2PI


class Moons(Toy2D):
    """Two interleaved half circles (scikit-learn ``make_moons``) plus isotropic noise.

    Moon 0: ``(cos t, sin t)``, moon 1: ``(1 - cos t, 1/2 - sin t)``, with ``t ~ U(0, pi)`` drawn at
    random (sklearn spaces ``t`` evenly, which has no density).  With ``y = x`` (moon 0) or
    ``y = (1, 1/2) - x`` (moon 1), ``|y - c(t)|^2 = |y|^2 + 1 - 2 |y| cos(t - angle(y))``, so each
    moon is ``p_m(x) = 1/pi int_0^pi N(y; (cos t, sin t), noise^2 I) dt``: an incomplete von Mises
    integral.  It is taken by Gauss-Legendre on two windows around the maxima of the integrand on
    ``[0, pi]`` that stop where it has fallen by e^-45 (the rest is below 1e-16 relative).  The
    entropy integrates ``-log p`` over ``t`` (Gauss-Legendre) and the noise (Gauss-Hermite), moon 0
    only since the point reflection about (1/2, 1/4) swaps the moons.
    """

    name = "moons"
    num_labels = 2
    bounds = (-1.5, 2.5, -1.0, 1.5)
    _NODES = 32  # Gauss-Legendre nodes per window
    _CUT = 45.0  # window ends where the integrand is e^-45 below its local maximum

    def __init__(self, noise: float = 0.05) -> None:
        super().__init__()
        check_positive("noise", noise)
        self.noise = noise
        self._chunk_rows = _CHUNK // (4 * self._NODES)

    @staticmethod
    def _curve(t: Tensor, moon: Tensor) -> Tensor:
        c, s = t.cos(), t.sin()
        return torch.where(
            moon[:, None] == 0, torch.stack([c, s], 1), torch.stack([1 - c, 0.5 - s], 1)
        )

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = _stratified_labels(n, 2, gen)
        t = _PI * torch.rand(n, generator=gen, dtype=_F64)
        noise = self.noise * torch.randn(n, 2, generator=gen, dtype=_F64)
        return self._curve(t, labels) + noise, labels

    def _log_arc(self, y: Tensor) -> Tensor:
        """``log 1/pi int_0^pi N(y; (cos t, sin t), noise^2 I) dt`` for ``y`` of shape (n, 2)."""
        s2 = self.noise**2
        rho = torch.linalg.vector_norm(y, dim=1)
        alpha = torch.atan2(y[:, 1], y[:, 0])
        cut = self._CUT * s2 / rho  # 45 / kappa with kappa = |y| / s^2
        inside = alpha >= 0  # peak at t = alpha; else maxima at both ends t = 0 and t = pi
        width = torch.acos((1 - cut).clamp(-1, 1))
        big_a = -alpha
        end0 = (torch.acos((big_a.cos() - cut).clamp(-1, 1)) - big_a).clamp_min(0)
        end_pi = (big_a - torch.acos((big_a.cos() + cut).clamp(-1, 1))).clamp_min(0)
        lo = torch.stack(
            [
                torch.where(inside, (alpha - width).clamp_min(0), 0.0),
                torch.where(inside, alpha, _PI - end_pi),
            ],
            1,
        )
        hi = torch.stack(
            [
                torch.where(inside, alpha, end0),
                torch.where(inside, (alpha + width).clamp_max(_PI), _PI),
            ],
            1,
        )
        xi, wi = (
            torch.as_tensor(v, dtype=_F64, device=y.device)
            for v in np.polynomial.legendre.leggauss(self._NODES)
        )
        half = 0.5 * (hi - lo)
        # |y - c(t)|^2 = (|y| - 1)^2 + 4 |y| sin^2((t - alpha) / 2): no cancellation near the arc.
        u = (0.5 * (hi + lo) - alpha[:, None])[:, :, None] + half[:, :, None] * xi
        expo = (-2 / s2) * rho[:, None, None] * (0.5 * u).sin() ** 2
        logw = half.log()[:, :, None] + wi.log()  # zero-length windows give -inf: no mass
        return (
            torch.logsumexp((expo + logw).flatten(1), 1)
            - (rho - 1) ** 2 / (2 * s2)
            - math.log(_PI)
            - math.log(_TWO_PI * s2)
        )

    def _log_prob(self, x: Tensor) -> Tensor:
        shift = torch.tensor([1.0, 0.5], dtype=_F64, device=x.device)
        return torch.logaddexp(self._log_arc(x), self._log_arc(shift - x)) - math.log(2.0)

    def _compute_entropy(self) -> float:
        nodes, weights = _legendre(0.0, _PI, 64)
        t = torch.as_tensor(nodes, dtype=_F64)
        e, we = _hermite_grid(16)
        x = self._curve(t, torch.zeros_like(t, dtype=torch.long))[:, None, :] + self.noise * e
        w = torch.as_tensor(weights / _PI, dtype=_F64)[:, None] * we
        return -float((w.reshape(-1) * self.log_prob(x.reshape(-1, 2))).sum())


class EightGaussians(Toy2D):
    """FFJORD's eight Gaussians: equal mixture of ``N(radius (cos 2pi k/8, sin 2pi k/8), std^2 I)``.

    FFJORD draws ``4 * unit + N(0, 0.5^2)`` and divides by 1.414; we divide by sqrt(2) exactly:
    ``radius = 2 sqrt 2``, ``std = 0.5 / sqrt 2``.  Entropy: 2-D Gauss-Hermite over component 0
    (the mixture is invariant under rotation by pi/4).
    """

    name = "eight_gaussians"
    num_labels = 8
    bounds = (-4.0, 4.0, -4.0, 4.0)

    def __init__(self, radius: float = 2 * math.sqrt(2), std: float = 0.5 / math.sqrt(2)) -> None:
        super().__init__()
        check_positive("radius", radius)
        check_positive("std", std)
        self.radius, self.std = radius, std
        ang = _TWO_PI * torch.arange(8, dtype=_F64) / 8
        self._centers = radius * torch.stack([ang.cos(), ang.sin()], 1)

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = _stratified_labels(n, 8, gen)
        noise = self.std * torch.randn(n, 2, generator=gen, dtype=_F64)
        return self._centers[labels] + noise, labels

    def _log_prob(self, x: Tensor) -> Tensor:
        comp = _log_normal(x[:, None, :], self._centers.to(x.device), self.std).sum(-1)
        return torch.logsumexp(comp, 1) - math.log(8)

    def _compute_entropy(self) -> float:
        t, w = _hermite_grid(48)
        return -float((w * self.log_prob(self._centers[0] + self.std * t)).sum())


class Checkerboard(Toy2D):
    """FFJORD's checkerboard: uniform on the 8 black cells (``i + j`` even) of a 4 x 4 board of
    2 x 2 cells covering ``[-4, 4]^2``.  ``p = 1/32`` there, 0 elsewhere; ``H = log 32``.  Labels
    index the black cell (column-major)."""

    name = "checkerboard"
    num_labels = 8
    bounds = (-4.0, 4.0, -4.0, 4.0)
    _CELLS = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = _stratified_labels(n, 8, gen)
        u = torch.rand(n, 2, generator=gen, dtype=_F64)
        return -4.0 + 2.0 * (self._CELLS[labels].to(_F64) + u), labels

    def _log_prob(self, x: Tensor) -> Tensor:
        cell = torch.floor((x + 4.0) / 2.0)
        inside = ((cell >= 0) & (cell <= 3)).all(1) & (cell.sum(1) % 2 == 0)
        return torch.where(inside, -math.log(32.0), -math.inf)

    def _compute_entropy(self) -> float:
        return math.log(32.0)


class Spirals(Toy2D):
    """FFJORD's two spirals: ``s = 3 pi sqrt(U)`` (540 degrees), ``c(s) = (-s cos s, s sin s)``,
    ``x = +-(c(s) + u) / 3 + noise * eps`` with ``u ~ U[0, 1/2)^2`` and the sign picking the spiral.

    Per axis, ``u_a / 3`` plus Gaussian noise has density ``D(w) = (Phi(w / tau) - Phi((w - L) /
    tau)) / L`` (``L = 1/6``), so ``p(x) = 1/2 sum_{+-} int_0^{3 pi} (2 s / (3 pi)^2)
    prod_a D(+-x_a - c_a(s) / 3) ds``, a smooth 1-D integral.  Panels are equal in ``U`` (where
    the features have a nearly constant width) with 8 Gauss-Legendre nodes in ``s`` each; only
    panels that can come within e^-40 of the point's largest term are evaluated (the spiral passes
    a point once or twice, so ~10% of them).  Entropy: midpoint grid of ``p log p``.
    """

    name = "spirals"
    num_labels = 2
    bounds = (-4.5, 4.5, -4.5, 4.5)
    _L = 0.5 / 3.0
    _CUT = 40.0
    _chunk_rows = 1 << 14

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__()
        check_positive("noise", noise)
        self.noise = noise
        panels, top = max(64, math.ceil(12.0 / noise)), 3 * _PI
        edges = top * torch.linspace(0, 1, panels + 1, dtype=_F64).sqrt()
        # Near the centre the curve is slow (|c'| / 3 ~ 1/3): split panels longer than 2 noise in s.
        pieces = [
            torch.linspace(
                float(lo), float(hi), max(1, math.ceil((hi - lo) / (2 * noise))) + 1, dtype=_F64
            )[:-1]
            for lo, hi in zip(edges[:-1], edges[1:])
        ]
        edges = torch.cat([*pieces, edges[-1:]])
        xi, wi = (torch.as_tensor(v, dtype=_F64) for v in np.polynomial.legendre.leggauss(8))
        half, mid = 0.5 * (edges[1:] - edges[:-1]), 0.5 * (edges[1:] + edges[:-1])
        s = mid[:, None] + half[:, None] * xi  # (panels, 8)
        self._nodes = self._curve(s)  # (panels, 8, 2)
        self._weights = half[:, None] * wi * 2 * s / top**2
        # Box centre of each panel's middle point, and how far the panel's curve strays from it.
        self._mid = self._curve(mid) + 0.5 * self._L
        fine = self._curve(edges[:-1, None] + (2 * half[:, None]) * torch.linspace(0, 1, 65))
        self._reach = (fine + 0.5 * self._L - self._mid[:, None]).norm(dim=-1).amax(1) * 1.01

    @staticmethod
    def _curve(s: Tensor) -> Tensor:
        return torch.stack([-s * s.cos(), s * s.sin()], -1) / 3.0

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = _stratified_labels(n, 2, gen)
        s = 3 * _PI * torch.rand(n, generator=gen, dtype=_F64).sqrt()
        pts = self._curve(s) + self._L * torch.rand(n, 2, generator=gen, dtype=_F64)
        sign = (1.0 - 2.0 * labels.to(_F64))[:, None]
        return sign * pts + self.noise * torch.randn(n, 2, generator=gen, dtype=_F64), labels

    def _log_prob(self, x: Tensor) -> Tensor:
        # Standardized by tau sqrt 2: per axis the box term is, with q = |centre offset|,
        # 2 L D = erfc(q - h) - erfc(q + h), h = L / (2 sqrt 2 tau); taking |.| puts the interval
        # on the side where the difference does not cancel.
        n, dev, k = x.shape[0], x.device, _SQRT_HALF / self.noise
        nodes, weights = (self._nodes.to(dev) + 0.5 * self._L) * k, self._weights.to(dev)
        mid, reach, h = self._mid.to(dev), self._reach.to(dev), 0.5 * self._L * k
        diag, dens = self._L * _SQRT_HALF, torch.zeros(n, dtype=_F64, device=dev)
        for sign in (1.0, -1.0):
            z = sign * x
            dist = torch.cdist(z, mid)  # (n, panels): point to panel box centres
            best = dist.min(1, keepdim=True).values + diag
            low = (dist - reach - diag).clamp_min(0)
            point, panel = torch.nonzero(
                low**2 <= best**2 + 2 * self._CUT * self.noise**2, as_tuple=True
            )
            q = (z[point, None, :] * k - nodes[panel]).abs()
            term = (torch.special.erfc(q - h) - torch.special.erfc(q + h)).prod(-1)
            dens.index_add_(0, point, (term * weights[panel]).sum(1))
        out = dens.log() - 2 * math.log(2 * self._L) - math.log(2.0)
        tiny = dens < 1e-280  # far from both spirals (|x| beyond ~7): redo in log space, all nodes
        if bool(tiny.any()):
            lw, terms = weights.log().reshape(-1), []
            for sign in (1.0, -1.0):
                q = (sign * x[tiny, None, :] * k - nodes.reshape(-1, 2)).abs()
                # erfc(q - h) - erfc(q + h) = 2 (Phi(b) - Phi(a)), b = sqrt2 (h - q),
                # a = -sqrt2 (q + h)
                lb = torch.special.log_ndtr(math.sqrt(2) * (h - q))
                la = torch.special.log_ndtr(-math.sqrt(2) * (h + q))
                terms.append((lb + torch.log(-torch.expm1(la - lb))).sum(-1) + lw)
            out[tiny] = (
                torch.logsumexp(torch.cat(terms, 1), 1) - 2 * math.log(self._L) - math.log(2.0)
            )
        return out

    def _compute_entropy(self) -> float:
        return self._grid_entropy(0.8 * self.noise)


class Sine(Toy2D):
    """The noisy sine of seed 000's Figure 1.1: ``x ~ U(-pi, pi)``, ``y = sin x + noise * eps``.

    ``p(x, y) = N(y; sin x, noise^2) / (2 pi)`` on the strip, so
    ``H = log 2 pi + 1/2 log(2 pi e noise^2)`` in closed form.
    """

    name = "sine"
    bounds = (-_PI, _PI, -1.5, 1.5)

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__()
        check_positive("noise", noise)
        self.noise = noise

    def _sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        u = -_PI + _TWO_PI * torch.rand(n, generator=gen, dtype=_F64)
        y = u.sin() + self.noise * torch.randn(n, generator=gen, dtype=_F64)
        return torch.stack([u, y], 1), torch.zeros(n, dtype=torch.long)

    def _log_prob(self, x: Tensor) -> Tensor:
        inside = (x[:, 0] >= -_PI) & (x[:, 0] < _PI)
        lp = _log_normal(x[:, 1], x[:, 0].sin(), self.noise) - _LOG_2PI
        return torch.where(inside, lp, -math.inf)

    def _compute_entropy(self) -> float:
        return _LOG_2PI + 0.5 * math.log(_TWO_PI * math.e * self.noise**2)


DATASETS: dict[str, Toy2D] = {
    cls.name: cls()
    for cls in (Pinwheel, TwoCircles, Moons, EightGaussians, Checkerboard, Spirals, Sine)
}


def get(name: str, **kwargs: object) -> Toy2D:
    """The dataset ``name`` with default parameters (shared, entropy cached) or, given keyword
    arguments, a new instance built with them (e.g. ``get("pinwheel", wings=3, rate=0.25)``)."""
    if name not in DATASETS:
        raise ValueError(f"name: expected one of {sorted(DATASETS)}, got {name!r}")
    return type(DATASETS[name])(**kwargs) if kwargs else DATASETS[name]


def plot_range(name: str) -> tuple[float, float, float, float]:
    """``(xmin, xmax, ymin, ymax)`` for plotting dataset or energy ``name``."""
    from .energies import ENERGIES

    if name in ENERGIES:
        return (-4.0, 4.0, -4.0, 4.0)
    return get(name).bounds
