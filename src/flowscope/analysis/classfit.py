"""Class-conditional fits of embedded data: MAP Gaussians, Student-t's, and (non-)unimodality.

Seed 000 (section 4.2) models the latents ``u = T^-1(x)`` of each attribute class with a diagonal
Gaussian whose parameters are the mode of a Normal-Gamma posterior, classifies by the larger class
log-probability (section 5.2.2, Figs. 5.19-5.20) and samples the fit at temperature 0.7 to bias
generation towards the attribute (section 5.2.3, Figs. 5.21-5.24).  Section 6.1 proposes a
Student-t of learned degrees of freedom beside it, and a "non-unimodality" metric as a divergence
between the two fits.

The Normal-Gamma posterior (Bishop 2006, "Pattern Recognition and Machine Learning", section
2.3.6; seed 000 eqs. 4.3-4.8).  Per dimension, with ``N`` observations of sample mean ``xbar`` and
BIASED sample variance ``s^2 = mean((x - xbar)^2)`` (eq. 4.8) and the prior
``NG(mu, lambda | m0, kappa0, a0, b0) = N(mu | m0, (kappa0 lambda)^-1) Gam(lambda | a0, b0)``::

    kappa_N = kappa0 + N                                                   (4.5)
    m_N     = (kappa0 m0 + N xbar) / (kappa0 + N)                          (4.4)
    a_N     = a0 + N / 2                                                   (4.6)
    b_N     = b0 + (N s^2 + kappa0 N (xbar - m0)^2 / (kappa0 + N)) / 2     (4.7)

The posterior is ``NG(m_N, kappa_N, a_N, b_N)`` with density proportional to
``lambda^(a_N - 1/2) exp(-b_N lambda) exp(-kappa_N lambda (mu - m_N)^2 / 2)``, whose JOINT mode is
``mu = m_N``, ``lambda = (a_N - 1/2) / b_N`` (eqs. 4.9-4.10; the thesis prints eq. 4.10 with a
garbled ``beta^-1``).  The seed's code plugs in ``(a_N - 1) / b_N`` instead: the mode of the
MARGINAL posterior ``Gam(lambda | a_N, b_N)``.  Both are offered (``precision="mode"|"seed"``).
The seed's code also computed ``m_N`` with ``kappa0`` in place of ``kappa0 m0``, which shifts
every mean by ``kappa0 (1 - m0) / (kappa0 + N)``: wrong whenever ``m0 != 1``, the default
``m0 = 0`` included.  ``normal_gamma_map`` follows the equations; the tests check it against a
direct numerical maximization of :func:`normal_gamma_log_posterior`.

Example::

    >>> g = torch.Generator().manual_seed(0)
    >>> u0, u1 = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 1.5
    >>> fits = class_fit_classifier(torch.cat([u0, u1]), torch.tensor([0] * 200 + [1] * 200))
    >>> pred = classify(fits, torch.cat([u0, u1]))
    >>> bool((pred == torch.tensor([0] * 200 + [1] * 200)).float().mean() > 0.9)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..distributions import DiagonalNormal, StudentT

__all__ = [
    "DiagonalGaussianFit",
    "StudentTFit",
    "normal_gamma_map",
    "normal_gamma_log_posterior",
    "student_t_fit",
    "class_fit_classifier",
    "class_log_probs",
    "classify",
    "confusion_matrix",
    "sample_from_fit",
    "non_unimodality",
    "multimodality_per_dim",
    "multimodality_gain",
]

_LOG_2PI = math.log(2 * math.pi)
_F64 = torch.float64


def as_matrix(name: str, x: Any, min_rows: int = 1) -> Tensor:
    """``x`` as a finite float64 tensor of shape ``(N, D)`` (from a tensor, array or list)."""
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        t = torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (N, D), got shape {tuple(t.shape)}"
        )
    if t.shape[0] < min_rows or t.shape[1] < 1:
        raise ValueError(
            f"{name}: expected at least {min_rows} row(s) and 1 column, got shape {tuple(t.shape)}"
        )
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ValueError(f"{name}: expected real numbers, got dtype {t.dtype}")
    t = t.to(_F64)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries")
    return t


def as_labels(name: str, y: Any, n: int) -> Tensor:
    """Integer class labels ``0..K-1`` of shape ``(n,)`` as an int64 tensor."""
    t = y.detach().cpu() if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name}: expected integer labels, got non-integer values")
    t = t.to(torch.int64)
    if n and int(t.min()) < 0:
        raise ValueError(f"{name}: expected labels >= 0, got a minimum of {int(t.min())}")
    return t


@dataclass(frozen=True, eq=False)
class DiagonalGaussianFit:
    """``N(mean, diag(1 / precision))`` plus the Normal-Gamma posterior it was read from.

    Attributes: ``mean (D,)``, ``precision (D,)`` (float64); ``kappa_n``, ``a_n`` scalars and
    ``b_n (D,)`` of the posterior (``m_N`` is ``mean``); ``n`` data points; ``precision_rule``.
    """

    mean: Tensor
    precision: Tensor
    kappa_n: float
    a_n: float
    b_n: Tensor
    n: int
    precision_rule: str

    @property
    def std(self) -> Tensor:
        return self.precision.rsqrt()

    def log_prob(self, u: Any) -> Tensor:
        """``ln N(u | mean, diag(precision^-1))`` (eq. 4.2): ``(N, D) -> (N,)`` float64."""
        u = as_matrix("u", u).to(self.mean.device)
        _check_width(u, self.mean.shape[0])
        lam = self.precision
        return 0.5 * (lam.log() - _LOG_2PI - lam * (u - self.mean) ** 2).sum(1)

    def to_distribution(self) -> DiagonalNormal:
        """The fit as a flowscope base distribution (seed 000 section 6.1: "use one of the
        approximate distributions as the base distribution itself")."""
        d = DiagonalNormal(self.mean.shape[0]).to(_F64)
        with torch.no_grad():
            d.loc.copy_(self.mean)
            d.log_scale.copy_(-0.5 * self.precision.log())
        return d


@dataclass(frozen=True, eq=False)
class StudentTFit:
    """Independent Student-t per dimension: ``loc (D,)``, ``scale (D,)``, ``df`` (``()`` when
    shared by all dimensions, ``(D,)`` otherwise), fitted by maximum likelihood.

    ``log p(u_i) = lgamma((v+1)/2) - lgamma(v/2) - log(v pi)/2 - log scale_i
    - (v+1)/2 log(1 + z_i^2/v)``, ``z_i = (u_i - loc_i)/scale_i`` (as in
    :class:`flowscope.distributions.StudentT`).
    """

    loc: Tensor
    scale: Tensor
    df: Tensor
    n: int
    iterations: int
    converged: bool

    def log_prob_per_dim(self, u: Any) -> Tensor:
        """Per-dimension log-densities ``(N, D) -> (N, D)`` float64."""
        u = as_matrix("u", u).to(self.loc.device)
        _check_width(u, self.loc.shape[0])
        return _t_log_prob(u, self.loc, self.scale, self.df)

    def log_prob(self, u: Any) -> Tensor:
        """``(N, D) -> (N,)`` float64."""
        return self.log_prob_per_dim(u).sum(1)

    def to_distribution(self) -> StudentT:
        """The fit as a flowscope ``StudentT`` base (shared df only: that class has one df)."""
        if self.df.dim() != 0:
            raise ValueError("df: to_distribution needs a shared df, got one df per dimension")
        d = StudentT(self.loc.shape[0], df=float(self.df)).to(_F64)
        with torch.no_grad():
            d.loc.copy_(self.loc)
            d.log_scale.copy_(self.scale.log())
        return d


Fit = DiagonalGaussianFit | StudentTFit


def _check_width(u: Tensor, d: int) -> None:
    if u.shape[1] != d:
        raise ValueError(f"u: expected {d} columns to match the fit, got {u.shape[1]}")


def _check_prior(m0: float, kappa0: float, a0: float, b0: float) -> None:
    if not math.isfinite(m0):
        raise ValueError(f"m0: expected a finite number, got {m0!r}")
    for name, v in (("kappa0", kappa0), ("a0", a0), ("b0", b0)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")


def normal_gamma_map(
    x: Any,
    m0: float = 0.0,
    kappa0: float = 1.0,
    a0: float = 1e-3,
    b0: float = 1e-3,
    precision: Literal["mode", "seed"] = "mode",
) -> DiagonalGaussianFit:
    """MAP diagonal Gaussian under a per-dimension Normal-Gamma prior (seed 000 eqs. 4.3-4.10).

    Args:
        x: data ``(N, D)``.
        m0, kappa0, a0, b0: prior ``NG(m0, kappa0, a0, b0)`` (the seed's values by default).
        precision: ``"mode"``: the joint posterior mode ``(a_N - 1/2) / b_N`` (eq. 4.10; together
            with ``m_N`` it maximizes the posterior density in ``(mu, lambda)``); ``"seed"``: the
            seed code's ``(a_N - 1) / b_N``, the mode of the marginal ``Gam(lambda | a_N, b_N)``
            (needs ``a_N > 1``).

    Returns:
        ``DiagonalGaussianFit`` with ``mean = m_N`` and the chosen precision, float64.
    """
    _check_prior(m0, kappa0, a0, b0)
    if precision not in ("mode", "seed"):
        raise ValueError(f"precision: expected 'mode' or 'seed', got {precision!r}")
    x = as_matrix("x", x)
    n = x.shape[0]
    xbar = x.mean(0)
    s2 = ((x - xbar) ** 2).mean(0)  # biased, eq. 4.8
    kappa_n = kappa0 + n
    m_n = (kappa0 * m0 + n * xbar) / kappa_n
    a_n = a0 + n / 2
    b_n = b0 + 0.5 * (n * s2 + kappa0 * n * (xbar - m0) ** 2 / kappa_n)
    offset = 0.5 if precision == "mode" else 1.0
    shape_term = a_n - offset
    if shape_term <= 0:
        raise ValueError(
            f"x: precision={precision!r} needs a_N = a0 + N/2 > {offset:g} (a positive mode), "
            f"got a_N = {a_n:g} from N = {n} rows"
        )
    return DiagonalGaussianFit(m_n, shape_term / b_n, float(kappa_n), float(a_n), b_n, n, precision)


def normal_gamma_log_posterior(
    x: Any,
    mu: Any,
    lam: Any,
    m0: float = 0.0,
    kappa0: float = 1.0,
    a0: float = 1e-3,
    b0: float = 1e-3,
) -> Tensor:
    """Unnormalized log posterior density in ``(mu, lambda)`` per dimension (eq. 4.3):
    ``sum_n ln N(x_n | mu, 1/lambda) + ln N(mu | m0, 1/(kappa0 lambda)) + ln Gam(lambda | a0, b0)``.

    Args: ``x (N, D)``, ``mu (D,)``, ``lam (D,) > 0``.  Returns ``(D,)`` float64.
    """
    _check_prior(m0, kappa0, a0, b0)
    x = as_matrix("x", x)
    mu = torch.as_tensor(mu, dtype=_F64).reshape(-1)
    lam = torch.as_tensor(lam, dtype=_F64).reshape(-1)
    if (lam <= 0).any():
        raise ValueError("lam: expected precisions > 0")
    n = x.shape[0]
    lik = 0.5 * n * (lam.log() - _LOG_2PI) - 0.5 * lam * ((x - mu) ** 2).sum(0)
    prior_mu = 0.5 * (math.log(kappa0) + lam.log() - _LOG_2PI) - 0.5 * kappa0 * lam * (mu - m0) ** 2
    prior_lam = a0 * math.log(b0) - math.lgamma(a0) + (a0 - 1) * lam.log() - b0 * lam
    return lik + prior_mu + prior_lam


def _t_log_prob(u: Tensor, loc: Tensor, scale: Tensor, df: Tensor) -> Tensor:
    z2 = ((u - loc) / scale) ** 2
    norm = torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * torch.log(df * math.pi)
    return norm - scale.log() - 0.5 * (df + 1) * torch.log1p(z2 / df)


def _best_df(z2: Tensor, shared: bool, lo: float, hi: float, steps: int = 36) -> Tensor:
    """``argmax_v`` of the observed t log-likelihood at fixed standardized residuals ``z2``
    (golden-section search on ``log v`` in ``[lo, hi]``; all dimensions at once when not shared).

    The ECME step of Liu & Rubin (1995): maximizing the ACTUAL likelihood in ``v`` instead of the
    ECM's expected complete-data one converges in far fewer cycles, above all when ``v`` runs to
    the Gaussian limit (the upper bound).
    """

    def loglik(v: Tensor) -> Tensor:
        per = torch.lgamma((v + 1) / 2) - torch.lgamma(v / 2) - 0.5 * torch.log(v)
        per = per - 0.5 * (v + 1) * torch.log1p(z2 / v).mean(0)
        return per.mean() if shared else per

    shape = () if shared else z2.shape[1:]
    a = torch.full(shape, math.log(lo), dtype=_F64, device=z2.device)
    b = torch.full(shape, math.log(hi), dtype=_F64, device=z2.device)
    r = (math.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = loglik(c.exp()), loglik(d.exp())
    for _ in range(steps):
        left = fc > fd  # the maximum lies in [a, d]
        a, b = torch.where(left, a, c), torch.where(left, d, b)
        c_new, d_new = b - r * (b - a), a + r * (b - a)
        f_new = loglik(torch.where(left, c_new, d_new).exp())
        fc, fd = torch.where(left, f_new, fd), torch.where(left, fc, f_new)
        c, d = torch.where(left, c_new, d), torch.where(left, c, d_new)
    return (0.5 * (a + b)).exp()


def student_t_fit(
    x: Any,
    df_init: float = 5.0,
    shared_df: bool = True,
    max_iter: int = 300,
    tol: float = 1e-10,
    df_bounds: tuple[float, float] = (0.1, 1e3),
) -> StudentTFit:
    """Maximum-likelihood independent Student-t per dimension, with ONE shared df (seed 000
    section 6.1, as :class:`flowscope.distributions.StudentT`) or one df per dimension.

    Fitted by ECME ("ML estimation of the t distribution using EM and its extensions, ECM and
    ECME", Liu & Rubin, 1995, Statistica Sinica 5): each ``t`` is a Gaussian scale mixture with
    latent precision ``w ~ Gam(v/2, v/2)``.  E-step: ``w_nd = (v+1) / (v + z_nd^2)``; CM-steps:
    ``loc_d = sum_n w x / sum_n w``, ``scale_d^2 = mean_n w (x - loc)^2``, then ``v`` maximizes
    the observed log-likelihood at the new ``loc, scale`` (a 1-D search, jointly over the
    dimensions that share ``v``).  No step decreases the likelihood; ``df`` is kept in
    ``df_bounds`` (the upper end stands for "Gaussian").

    Args:
        x: data ``(N, D)``, ``N >= 2``.
        df_init: starting degrees of freedom.
        shared_df: one df for all dimensions (True) or one per dimension.
        max_iter, tol: stop when the mean log-likelihood per entry moves by less than ``tol``.
    """
    x = as_matrix("x", x, min_rows=2)
    lo, hi = df_bounds
    if not (0 < lo < hi < math.inf):
        raise ValueError(f"df_bounds: expected 0 < low < high < inf, got {df_bounds!r}")
    if not (isinstance(df_init, (int, float)) and lo <= df_init <= hi):
        raise ValueError(f"df_init: expected a number in {df_bounds}, got {df_init!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: expected an int >= 1, got {max_iter!r}")
    n, d = x.shape
    loc = x.median(0).values
    # Scale from the mean absolute deviation (robust to the heavy tails being fitted), floored so
    # that a constant column cannot produce a zero scale.
    tiny = 1e-12 * (1.0 + x.abs().max())
    scale = (x - loc).abs().mean(0).clamp_min(tiny)
    df = torch.full(() if shared_df else (d,), float(df_init), dtype=_F64, device=x.device)
    prev = -math.inf
    converged = False
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        z2 = ((x - loc) / scale) ** 2
        w = (df + 1) / (df + z2)
        loc = (w * x).sum(0) / w.sum(0)
        scale = (w * (x - loc) ** 2).mean(0).sqrt().clamp_min(tiny)
        df = _best_df(((x - loc) / scale) ** 2, shared_df, lo, hi)
        ll = float(_t_log_prob(x, loc, scale, df).mean())
        if abs(ll - prev) < tol * (1.0 + abs(ll)):
            converged = True
            break
        prev = ll
    return StudentTFit(loc, scale, df, n, iterations, converged)


def class_fit_classifier(
    u_train: Any,
    y_train: Any,
    fit: Literal["gaussian", "student"] = "gaussian",
    balance: bool = False,
    **fit_kwargs: Any,
) -> list[Fit]:
    """One fit per class (seed 000 section 5.2): ``fits[k]`` models the latents of class ``k``.

    Args:
        u_train: latents ``(N, D)``.
        y_train: labels ``(N,)`` in ``0..K-1`` (0/1 for one attribute), every class present.
        fit: ``"gaussian"`` (:func:`normal_gamma_map`) or ``"student"`` (:func:`student_t_fit`).
        balance: keep only the FIRST ``n_min`` examples of each class, ``n_min`` the smallest
            class size: the seed's code truncated the negatives to the first ``n_pos`` examples
            (order kept, no shuffling, so the result is deterministic).
        fit_kwargs: passed to the fitting function (prior, ``precision``, ``shared_df``...).
    """
    u = as_matrix("u_train", u_train)
    y = as_labels("y_train", y_train, u.shape[0])
    if fit not in ("gaussian", "student"):
        raise ValueError(f"fit: expected 'gaussian' or 'student', got {fit!r}")
    k = int(y.max()) + 1
    counts = torch.bincount(y, minlength=k)
    if (counts < 2).any():
        raise ValueError(
            f"y_train: expected >= 2 examples of every class 0..{k - 1}, got {counts.tolist()}"
        )
    keep = int(counts.min()) if balance else None
    fitter = normal_gamma_map if fit == "gaussian" else student_t_fit
    y = y.to(u.device)
    return [fitter(u[y == c][:keep], **fit_kwargs) for c in range(k)]


def class_log_probs(fits: Sequence[Fit], u: Any) -> Tensor:
    """``ln p(u | class k)`` for every fit: ``(N, D) -> (N, K)`` float64."""
    if len(fits) < 1:
        raise ValueError("fits: expected at least one fit, got none")
    return torch.stack([f.log_prob(u) for f in fits], 1)


def classify(fits: Sequence[Fit], u: Any) -> Tensor:
    """Predicted class = the fit with the larger log-probability (seed 000 section 5.2.2):
    ``(N, D) -> (N,)`` int64 (ties go to the lower class index)."""
    return class_log_probs(fits, u).argmax(1)


def confusion_matrix(true: Any, pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts ``(K, K)`` int64: rows the true class, columns the predicted one (as
    :func:`flowscope.plots.confusion_matrix` expects)."""
    t = as_labels("true", true, len(true))
    p = as_labels("pred", pred, t.shape[0])
    k = num_classes if num_classes is not None else int(max(t.max(), p.max())) + 1
    if not isinstance(k, int) or k < 1 or int(max(t.max(), p.max())) >= k:
        raise ValueError(f"num_classes: expected an int above every label, got {num_classes!r}")
    return torch.bincount(t * k + p, minlength=k * k).reshape(k, k).numpy()


def sample_from_fit(
    fit: Fit, n: int, temperature: float = 0.7, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Attribute-biased latents (seed 000 section 5.2.3, Figs. 5.21-5.24): ``n`` draws from a
    class fit with its spread scaled by ``temperature`` (``u = mean + tau std eps`` for the
    Gaussian; ``loc + tau scale t`` for the Student-t), to be decoded by the caller's flow.

    Returns:
        ``u (n, D)`` in ``dtype`` on the fit's device, and ``ln p(c) (n,)`` float64: the
        UNtempered class log-density of each draw (what the figures print as ``ln p(c)``).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    if isinstance(fit, DiagonalGaussianFit):
        center, spread = fit.mean, fit.std
    elif isinstance(fit, StudentTFit):
        center, spread = fit.loc, fit.scale
    else:
        raise ValueError(
            f"fit: expected a DiagonalGaussianFit or StudentTFit, got {type(fit).__name__}"
        )
    d = center.shape[0]
    # Drawn on the CPU from a private generator: the same seed gives the same latents anywhere.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        eps = torch.randn(n, d, dtype=_F64)
        if isinstance(fit, StudentTFit):
            half = (fit.df.cpu() / 2).expand(n, d)
            g = torch.distributions.Gamma(half, half, validate_args=False).sample()
            eps = eps * g.clamp_min(1e-300).rsqrt()
    u = center + temperature * spread * eps.to(center.device)
    return u.to(dtype), fit.log_prob(u)


def non_unimodality(x: Any, **t_kwargs: Any) -> float:
    """Seed 000 section 6.1's proposed metric: how much better a Student-t explains the data than
    the MAP Gaussian, in nats per dimension per example.

    ``mean_{n,d} [ln t(x_nd | ML fit, shared df) - ln N(x_nd | MAP fit)]``: an in-sample
    estimate of ``KL(p || N_MAP) - KL(p || t_ML)``, the divergence gap between the two fits as
    seen BY THE DATA.  Chosen over a Monte Carlo KL between the two fitted models because a KL
    between fits ignores where the data actually lie, and because it needs no sampling; since the
    t family contains the Gaussian (df -> inf), it is ~0 when the data are Gaussian.

    CAUTION (validated in the tests): a Student-t can only be HEAVIER-tailed than a Gaussian,
    so this measures tail weight (kurtosis > 3), not multimodality.  A well-separated bimodal
    mixture is light-tailed (kurtosis < 3): its t fit runs to df -> inf and the metric is ~0,
    below any heavy-tailed UNIMODAL distribution.  Use :func:`multimodality_gain` to detect modes.
    """
    x = as_matrix("x", x, min_rows=2)
    gauss = normal_gamma_map(x)
    lam = gauss.precision
    log_gauss = 0.5 * (lam.log() - _LOG_2PI - lam * (x - gauss.mean) ** 2)
    log_t = student_t_fit(x, shared_df=True, **t_kwargs).log_prob_per_dim(x)
    return float((log_t - log_gauss).mean())


def _gmm2(x: Tensor, max_iter: int, tol: float) -> tuple[Tensor, Tensor]:
    """Two-component 1-D Gaussian mixture per column by EM, all columns at once.

    Returns the per-entry mixture log-density ``(N, D)`` and whether each column's fitted
    mixture density is bimodal ``(D,)``.  Variances are floored at 1e-3 of the column variance so
    that no component can collapse onto a single point (an unbounded likelihood).
    """
    n, d = x.shape
    mu = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=_F64, device=x.device), dim=0).T
    var_x = x.var(0, unbiased=False).clamp_min(1e-300)
    floor = 1e-3 * var_x.unsqueeze(1)
    var = (var_x / 2).unsqueeze(1).repeat(1, 2)
    w = torch.full((d, 2), 0.5, dtype=_F64, device=x.device)
    xs = x.unsqueeze(2)
    prev = -math.inf
    for _ in range(max_iter):
        lp = w.log() - 0.5 * (var.log() + _LOG_2PI) - 0.5 * (xs - mu) ** 2 / var
        ll = torch.logsumexp(lp, 2)
        r = (lp - ll.unsqueeze(2)).exp()
        nk = r.sum(0).clamp_min(1e-12)
        w = nk / n
        mu = (r * xs).sum(0) / nk
        var = torch.maximum((r * (xs - mu) ** 2).sum(0) / nk, floor)
        mean_ll = float(ll.mean())
        if abs(mean_ll - prev) < tol * (1.0 + abs(mean_ll)):
            break
        prev = mean_ll
    lp = w.log() - 0.5 * (var.log() + _LOG_2PI) - 0.5 * (xs - mu) ** 2 / var
    # Every critical point of a two-Gaussian mixture lies between the two means, so the density
    # is bimodal iff it has an interior local minimum on a fine grid between them.
    lo, hi = torch.minimum(mu[:, 0], mu[:, 1]), torch.maximum(mu[:, 0], mu[:, 1])
    grid = lo[:, None] + (hi - lo)[:, None] * torch.linspace(
        0, 1, 1025, dtype=_F64, device=x.device
    )
    dens = (
        w[:, None]
        * torch.exp(-0.5 * (grid[..., None] - mu[:, None]) ** 2 / var[:, None])
        / var[:, None].sqrt()
    ).sum(2)
    step = dens.diff(dim=1)
    bimodal = ((step[:, :-1] < 0) & (step[:, 1:] > 0)).any(1)
    return torch.logsumexp(lp, 2), bimodal


def multimodality_per_dim(
    x: Any,
    basis: Literal["pca", "axes"] = "pca",
    max_dims: int | None = None,
    max_iter: int = 300,
    tol: float = 1e-9,
) -> Tensor:
    """Per-axis evidence of several modes, in nats per example: ``(N, D) -> (D,)`` float64.

    Along each axis ``d`` (principal axes of the centred data, or the coordinate axes)::

        g_d = mean_n [ln p_GMM2(x_nd) - ln p_t(x_nd)] - (k_GMM2 - k_t) ln N / (2 N)

    with ``p_GMM2`` a two-component Gaussian mixture (EM, ``k = 5`` parameters) and ``p_t`` the
    ML Student-t with its own df (``k = 3``): a BIC-corrected log-likelihood ratio ("Estimating
    the dimension of a model", Schwarz, 1978) between a model that can have two modes and the best
    heavy-tailed UNIMODAL model.  Comparing with the t rather than the Gaussian is what keeps
    heavy tails out: a 2-mixture with a shared mean (a scale mixture) would beat the Gaussian on
    t-distributed data.  ``g_d`` counts only where it is positive AND the fitted mixture density
    is itself bimodal; elsewhere it is 0.

    Why principal axes by default: clusters separated along an oblique direction ``v`` show up
    in each coordinate only with separation ``|v_d| * distance`` (``~distance / sqrt(D)``),
    whereas the between-cluster direction carries extra variance and becomes a leading principal
    axis.  Known limits: marginals that are bounded and flat (uniform) or strongly skewed
    (exponential) can read as bimodal on the coordinate axes (2-mixtures fit them better than any
    t); mixing into principal axes removes this when D is not tiny.

    Args:
        x: data ``(N, D)``, ``N >= 4``.  Memory is O(N D) float64 (a few copies).
        basis: ``"pca"`` (default) or ``"axes"``.
        max_dims: with ``"pca"``, keep only the leading ``max_dims`` principal axes (for image
            latents, where the between-cluster directions carry the most variance).

    Returns ``(D,)`` (``(min(N, D),)`` or ``(max_dims,)`` in the PCA basis).
    """
    x = as_matrix("x", x, min_rows=4)
    if basis not in ("pca", "axes"):
        raise ValueError(f"basis: expected 'pca' or 'axes', got {basis!r}")
    if max_dims is not None and (not isinstance(max_dims, int) or max_dims < 1 or basis != "pca"):
        raise ValueError(f"max_dims: expected an int >= 1 with basis='pca', got {max_dims!r}")
    n = x.shape[0]
    if basis == "pca":
        xc = x - x.mean(0)
        x = xc @ torch.linalg.svd(xc, full_matrices=False).Vh[:max_dims].T
    log_mix, bimodal = _gmm2(x, max_iter, tol)
    log_t = student_t_fit(x, shared_df=False, max_iter=max_iter, tol=tol).log_prob_per_dim(x)
    gain = (log_mix - log_t).mean(0) - (5 - 3) * math.log(n) / (2 * n)
    return torch.where(bimodal & (gain > 0), gain, torch.zeros_like(gain))


def multimodality_gain(x: Any, basis: Literal["pca", "axes"] = "pca", **kwargs: Any) -> float:
    """Total evidence of several modes, ``sum_d`` of :func:`multimodality_per_dim` (nats per
    example; 0 for unimodal data up to sampling noise).  Summed, not averaged, so that adding
    Gaussian dimensions does not dilute it.  The metric to use for the coherence experiment;
    :func:`non_unimodality` (the seed's idea) measures tail weight instead."""
    return float(multimodality_per_dim(x, basis=basis, **kwargs).sum())
