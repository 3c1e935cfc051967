"""Base distributions of flows, as ``nn.Module``s over a flat or shaped event.

Every distribution has ``log_prob(u) -> (batch,)``, ``sample(n, temperature=1.0) -> (n, *shape)``
and ``mean`` (the ``shape``-shaped mode/mean that seed 000 decodes into its "mean image",
Figures 3.7-3.8).  Tempered sampling (Kingma & Dhariwal 2018, section 5; seed 000 uses
tau = 0.7) scales the spread of the distribution by ``temperature``; ``log_prob`` is never
tempered.

The family: ``StandardNormal`` (seed 000's M_std), ``DiagonalNormal`` (M_diag), ``StudentT``
(heavy tails, seed 000 section 6.1), ``Logistic`` (NICE's prior) and ``GaussianMixture`` (a
FlowGMM-style latent mixture whose per-component log-densities classify).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_event_shape, check_finite, check_positive

__all__ = [
    "Distribution",
    "StandardNormal",
    "DiagonalNormal",
    "StudentT",
    "Logistic",
    "GaussianMixture",
]

_LOG_2PI = math.log(2 * math.pi)
_LOG_PI = math.log(math.pi)


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or any(not _is_int(s) or s < 1 for s in shape):
        raise ValueError(
            f"shape: expected a positive int or a tuple of positive ints, got {shape!r}"
        )
    return shape


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_n(n: int) -> None:
    if not _is_int(n) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")


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
        _check_n(n)
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


class StudentT(Distribution):
    """Product of independent Student-t's with learned ``loc``, ``log_scale`` and ONE shared df.

    Per dimension ``i`` with ``z_i = (u_i - loc_i) / scale_i`` and degrees of freedom ``v``:

        log p(u_i) = lgamma((v+1)/2) - lgamma(v/2) - log(v pi)/2 - log scale_i
                     - (v+1)/2 log(1 + z_i^2 / v).

    Each factor is an infinite mixture of Gaussians over the precision,
    ``t = eps / sqrt(g)`` with ``eps ~ N(0, 1)`` and ``g ~ Gamma(v/2, rate=v/2)``: the reading of
    seed 000 section 6.1 ("integrates the precision parameter by summing an infinite number of
    Gaussian distributions of distinct precision"), which is also how ``sample`` draws (so samples
    are reparameterized: gradients reach ``loc``, ``log_scale`` and ``df``).

    Why one df for all dimensions: df measures how heavy the latent's tails are, a property of the
    embedding as a whole in seed 000's proposed non-unimodality metric; one scalar is also what
    that metric compares with the MAP Gaussian.  (The dimensions still draw their precisions
    independently: this is not the multivariate t, whose single precision couples them.)

    Args:
        shape: event shape.
        df: initial degrees of freedom, > 0 (df -> inf recovers ``DiagonalNormal``).
        learn_df: learn df (stored as ``log_df`` so it stays > 0); otherwise a fixed buffer.

    ``mean`` returns ``loc``: the mode and median, and the mean whenever df > 1.
    """

    def __init__(self, shape: int | Sequence[int], df: float = 5.0, learn_df: bool = True) -> None:
        super().__init__(shape)
        check_positive("df", df)
        self.loc = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))
        log_df = torch.tensor(math.log(float(df)))
        if learn_df:
            self.log_df = nn.Parameter(log_df)
        else:
            self.register_buffer("log_df", log_df)

    @property
    def df(self) -> Tensor:
        """Degrees of freedom, a scalar tensor > 0."""
        return self.log_df.exp()

    def _log_prob(self, u: Tensor) -> Tensor:
        v = self.df
        z = (u - self.loc) * torch.exp(-self.log_scale)
        z = z.reshape(u.shape[0], -1)
        d = z.shape[1]
        norm = torch.lgamma((v + 1) / 2) - torch.lgamma(v / 2) - 0.5 * (torch.log(v) + _LOG_PI)
        # log1p keeps precision for the small z^2/v of the bulk of the data.
        kernel = -0.5 * (v + 1) * torch.log1p(z.pow(2) / v).sum(1)
        return kernel + d * norm - self.log_scale.sum()

    def _sample(self, n: int, temperature: float) -> Tensor:
        v = self.df
        eps = torch.randn(n, *self.shape, device=self.loc.device, dtype=self.loc.dtype)
        half = (v / 2).expand(n, *self.shape)
        # Gamma(v/2, rate=v/2) precision; rsample gives implicit reparameterization gradients in v.
        g = torch.distributions.Gamma(half, half, validate_args=False).rsample()
        t = eps * torch.rsqrt(g.clamp_min(torch.finfo(g.dtype).tiny))
        return self.loc + temperature * torch.exp(self.log_scale) * t

    @property
    def mean(self) -> Tensor:
        return self.loc.detach().clone()


class Logistic(Distribution):
    """Fixed standard logistic per dimension: the prior of NICE.

    ``log p(u) = -sum_i [softplus(u_i) + softplus(-u_i)]`` (NICE: Non-linear Independent
    Components Estimation (Dinh, Krueger & Bengio, 2015), arXiv 1410.8516, section 3.4); its
    variance is pi^2/3 per dimension.  Samples are ``temperature * logit(U)``, ``U ~ U(0, 1)``.
    """

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__(shape)
        # A buffer so that .to(device/dtype) moves the distribution with the flow.
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def _log_prob(self, u: Tensor) -> Tensor:
        u = u.reshape(u.shape[0], -1)
        # softplus(u) + softplus(-u) = -log sigmoid(u) - log sigmoid(-u), stable for large |u|.
        return -(F.softplus(u) + F.softplus(-u)).sum(1)

    def _sample(self, n: int, temperature: float) -> Tensor:
        z = self._zero
        p = torch.rand(n, *self.shape, device=z.device, dtype=z.dtype)
        # torch.rand can return exactly 0 (never 1): keep logit finite.
        p = p.clamp_min(torch.finfo(p.dtype).tiny)
        return temperature * (torch.log(p) - torch.log1p(-p))

    @property
    def mean(self) -> Tensor:
        return self._zero.new_zeros(self.shape)


class GaussianMixture(Distribution):
    """Mixture of ``K`` diagonal Gaussians with learned weights, means and scales.

    ``p(u) = sum_k pi_k N(u; mu_k, diag(sigma_k^2))`` with ``pi = softmax(logits)``: the latent
    of FlowGMM (Semi-Supervised Learning with Normalizing Flows (Izmailov et al., 2020),
    arXiv 1912.13025, eq. 3), where component ``k`` is class ``k`` and
    ``component_log_prob`` gives the class-conditional log-densities that classify.

    Args:
        shape: event shape.
        components: number of components ``K``.
        spread: the means start as ``spread * N(0, I)`` draws (distinct, so components can
            specialize); weights start uniform and scales at 1.
        seed: seed of the generator that draws the initial means (independent of torch's global
            RNG, so a mixture is reproducible from its arguments).

    Parameters: ``logits (K,)``, ``means (K, *shape)``, ``log_scales (K, *shape)``.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        components: int = 2,
        spread: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(shape)
        if not _is_int(components) or components < 1:
            raise ValueError(f"components: expected a positive int, got {components!r}")
        check_positive("spread", spread)
        gen = torch.Generator().manual_seed(int(seed))
        self.components = components
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(spread * torch.randn(components, *self.shape, generator=gen))
        self.log_scales = nn.Parameter(torch.zeros(components, *self.shape))

    @property
    def log_weights(self) -> Tensor:
        """``log pi_k``, shape ``(K,)``."""
        return torch.log_softmax(self.logits, dim=0)

    def component_log_prob(self, u: Tensor) -> Tensor:
        """``log N(u; mu_k, diag(sigma_k^2))`` per component: ``(batch, *shape) -> (batch, K)``.

        The mixture weights are NOT included (add ``log_weights`` for the joint ``log p(u, k)``);
        FlowGMM classifies by ``argmax_k`` of the joint.
        """
        check_event_shape("u", u, self.shape)
        check_finite("u", u)
        return self._component_log_prob(u)

    def _component_log_prob(self, u: Tensor) -> Tensor:
        k = self.components
        u = u.reshape(u.shape[0], 1, -1)
        mu = self.means.reshape(1, k, -1)
        log_s = self.log_scales.reshape(1, k, -1)
        z = (u - mu) * torch.exp(-log_s)
        return -0.5 * (z.pow(2).sum(2) + z.shape[2] * _LOG_2PI) - log_s.sum(2)

    def log_responsibilities(self, u: Tensor) -> Tensor:
        """``log p(k | u)``, shape ``(batch, *shape) -> (batch, K)``; rows logsumexp to 0."""
        joint = self.component_log_prob(u) + self.log_weights
        return torch.log_softmax(joint, dim=1)

    def _log_prob(self, u: Tensor) -> Tensor:
        return torch.logsumexp(self._component_log_prob(u) + self.log_weights, dim=1)

    def _draw(self, idx: Tensor, temperature: float) -> Tensor:
        eps = torch.randn(
            idx.shape[0], *self.shape, device=self.means.device, dtype=self.means.dtype
        )
        return self.means[idx] + temperature * torch.exp(self.log_scales[idx]) * eps

    def _sample(self, n: int, temperature: float) -> Tensor:
        # Ancestral sampling: the component first (not reparameterizable), then its Gaussian.
        idx = torch.multinomial(self.log_weights.detach().exp(), n, replacement=True)
        return self._draw(idx, temperature)

    def sample_component(self, component: int, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples of component ``component`` alone (class-conditional), ``(n, *shape)``."""
        if not _is_int(component) or not (0 <= component < self.components):
            raise ValueError(
                f"component: expected an int in [0, {self.components}), got {component!r}"
            )
        _check_n(n)
        check_positive("temperature", temperature)
        idx = torch.full((n,), component, dtype=torch.long, device=self.means.device)
        return self._draw(idx, float(temperature))

    @property
    def mean(self) -> Tensor:
        """The mixture mean ``sum_k pi_k mu_k``, shape ``shape``."""
        w = self.log_weights.exp().reshape(-1, *([1] * len(self.shape)))
        return (w * self.means).sum(0).detach()
