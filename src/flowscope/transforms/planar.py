"""Planar and radial flows (Rezende & Mohamed, 2015), built for variational inference.

Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015), arXiv 1505.05770,
section 4.1 (eqs. 10-14) and appendix A.1.

Direction, and why it is "backwards" here.  Both flows are defined by a closed-form map
``f(z)`` whose log-determinant is cheap, and in variational inference that map must be the
*generative* one: ``z_K = f_K o ... o f_1(z_0)`` with ``z_0`` from the base, scored by
``ln q(z_K) = ln q(z_0) - sum_k ln |det df_k/dz|``.  In this module ``forward`` IS that closed-form
map ``f`` (returning its exact ``ln |det df/dz|``).  The ``planar()`` model constructor therefore
wraps a ``Compose`` of these layers in ``Inverse(...)``, so that the flow's generative direction
(``Flow.sample_and_log_prob`` calls ``transform.inverse``) runs ``f``; wrapping radial layers the
same way keeps the paper's parameterization of the generative map.

* ``Planar``'s inverse has no closed form (inverting ``f`` needs a scalar root-finding along
  ``w``), so ``Planar.inverse`` raises ``NotImplementedError``: a planar flow can sample with
  its exact log-density (the reverse-KL / ELBO path) but cannot evaluate the density of given
  data.
* ``Radial``'s inverse has a closed form (the radius solves a quadratic), implemented here, so a
  radial flow can do both.

Shapes: inputs ``(batch, features)``; log-determinants ``(batch,)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_event_shape, check_finite, check_int
from .base import Transform

__all__ = ["Planar", "Radial"]


def _softplus_inverse(y: float) -> float:
    """``x`` with ``softplus(x) = y`` (``y > 0``)."""
    return y + math.log(-math.expm1(-y))


class Planar(Transform):
    """Planar flow ``f(z) = z + u_hat tanh(w^T z + b)`` (Rezende & Mohamed 2015, eq. 10).

    ``ln |det df/dz| = ln |1 + u_hat^T psi(z)|`` with ``psi(z) = tanh'(w^T z + b) w`` (eqs. 11-12).

    Invertibility (appendix A.1): ``f`` is invertible iff ``w^T u_hat >= -1``.  The free parameter
    ``u`` is mapped to ``u_hat = u + (m(w^T u) - w^T u) w / ||w||^2`` with
    ``m(x) = -1 + softplus(x)``, so ``w^T u_hat = m(w^T u) > -1`` whatever ``u`` and ``w`` are.
    Then ``1 + u_hat^T psi = 1 + tanh'(.) w^T u_hat > 1 - tanh'(.) >= 0``: the determinant is
    positive everywhere and ``f`` is strictly increasing along ``w`` (the only direction it
    bends).

    ``forward`` is the closed-form map ``f`` (see the module docstring for why); ``inverse``
    raises ``NotImplementedError``.

    Args:
        features: dimension ``D`` of ``z``.

    Parameters: ``u (D,)``, ``w (D,)``, ``b ()``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = check_int("features", features)
        bound = 1.0 / math.sqrt(features)
        # Random (not zero) init: w = 0 would leave u_hat undefined and tanh(b) constant.
        self.u = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(()))

    def _constrain(self) -> tuple[Tensor, Tensor]:
        """``(softplus(w^T u), u_hat)``; ``w^T u_hat = softplus(w^T u) - 1``."""
        wu = self.w @ self.u
        sp = F.softplus(wu)
        # tiny only guards the 0/0 of an exactly-zero w (then the correction is 0).
        w_sq = (self.w @ self.w).clamp_min(torch.finfo(self.w.dtype).tiny)
        return sp, self.u + (sp - 1 - wu) * self.w / w_sq

    def u_hat(self) -> Tensor:
        """The constrained ``u_hat`` with ``w^T u_hat > -1`` (appendix A.1), shape ``(D,)``."""
        return self._constrain()[1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``f(x)`` and ``ln |det df/dx|``: ``(batch, D) -> ((batch, D), (batch,))``."""
        check_event_shape("x", x, (self.features,))
        check_finite("x", x)
        sp, u_hat = self._constrain()
        h = torch.tanh(x @ self.w + self.b)
        out = x + h.unsqueeze(1) * u_hat
        # det = 1 + tanh'(a) w^T u_hat with tanh' = 1 - h^2 and w^T u_hat = sp - 1, rewritten as
        # h^2 + (1 - h^2) sp: a sum of non-negative terms, so no cancellation when w^T u << 0
        # drives w^T u_hat towards -1 (there the direct form rounds to 0 or below).
        h2 = h.pow(2)
        det = h2 + (1 - h2) * sp
        return out, torch.log(det)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            "Planar has no closed-form inverse: recovering z from f(z) = z + u_hat tanh(w^T z + b) "
            "requires a scalar root-finding in w^T z, so use it in the generative direction "
            "wrapped in Inverse(...), as the planar() model constructor does."
        )


class Radial(Transform):
    """Radial flow ``f(z) = z + beta h(alpha, r) (z - z0)`` (Rezende & Mohamed 2015, eq. 13).

    ``r = ||z - z0||``, ``h(alpha, r) = 1 / (alpha + r)``, and (eq. 14)

        ln |det df/dz| = (D - 1) ln(1 + beta h) + ln(1 + beta h + beta h'(alpha, r) r)
                       = (D - 1) ln(1 + beta / (alpha + r)) + ln(1 + alpha beta / (alpha + r)^2).

    Invertibility (appendix A.1) needs ``beta >= -alpha``; here ``alpha = softplus(alpha_raw) > 0``
    and ``beta = -alpha + softplus(beta_raw) > -alpha``, so both factors are positive; the code
    works with ``gamma = alpha + beta = softplus(beta_raw)`` so that a ``beta`` at its bound
    still gives finite log-determinants.

    Inverse in closed form: ``f`` moves each point along its ray from ``z0``, and the radii obey
    ``rho = r (alpha + beta + r) / (alpha + r)`` with ``rho = ||f(z) - z0||``, i.e.
    ``r^2 + (alpha + beta - rho) r - alpha rho = 0``, whose one non-negative root is ``r``
    (the product of the roots is ``-alpha rho <= 0``).  Then
    ``z - z0 = (f(z) - z0) (alpha + r) / (alpha + beta + r)``.

    ``forward`` is the closed-form generative map ``f`` (see the module docstring).

    Args:
        features: dimension ``D`` of ``z``.

    Parameters: ``z0 (D,)``, ``alpha_raw ()``, ``beta_raw ()``; initialized at
    ``alpha = 1, beta = 0`` (the identity) with a random centre ``z0``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = check_int("features", features)
        self.z0 = nn.Parameter(torch.randn(features) / math.sqrt(features))
        self.alpha_raw = nn.Parameter(torch.tensor(_softplus_inverse(1.0)))
        # softplus(beta_raw) = alpha  <=>  beta = 0.
        self.beta_raw = nn.Parameter(torch.tensor(_softplus_inverse(1.0)))

    def alpha_beta(self) -> tuple[Tensor, Tensor]:
        """The constrained ``(alpha > 0, beta > -alpha)``, scalar tensors."""
        alpha, gamma = self._alpha_gamma()
        return alpha, gamma - alpha

    def _alpha_gamma(self) -> tuple[Tensor, Tensor]:
        # gamma = alpha + beta > 0 is the quantity every formula below needs; working with it
        # (never with 1 + beta / alpha) keeps beta near its bound -alpha free of cancellation.
        return F.softplus(self.alpha_raw), F.softplus(self.beta_raw)

    def _logabsdet(self, r: Tensor, alpha: Tensor, gamma: Tensor) -> Tensor:
        # Eq. 14 with 1 + beta h = (gamma + r) / (alpha + r) and
        # 1 + alpha beta / (alpha + r)^2 = (r^2 + 2 alpha r + alpha gamma) / (alpha + r)^2:
        # every term is positive, so the log never meets a rounded-to-zero difference.
        log_ar = torch.log(alpha + r)
        radial = torch.log(r * (r + 2 * alpha) + alpha * gamma) - 2 * log_ar
        return (self.features - 1) * (torch.log(gamma + r) - log_ar) + radial

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``f(x)`` and ``ln |det df/dx|``: ``(batch, D) -> ((batch, D), (batch,))``."""
        check_event_shape("x", x, (self.features,))
        check_finite("x", x)
        alpha, gamma = self._alpha_gamma()
        diff = x - self.z0
        r = diff.norm(dim=1)
        out = x + ((gamma - alpha) / (alpha + r)).unsqueeze(1) * diff
        return out, self._logabsdet(r, alpha, gamma)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``f^{-1}(u)`` and ``ln |det df^{-1}/du|``: ``(batch, D) -> ((batch, D), (batch,))``."""
        check_event_shape("u", u, (self.features,))
        check_finite("u", u)
        alpha, gamma = self._alpha_gamma()
        diff = u - self.z0
        rho = diff.norm(dim=1)
        c = gamma - rho  # r^2 + c r - alpha rho = 0
        s = torch.sqrt(c.pow(2) + 4 * alpha * rho)
        # The two algebraically equal forms of the non-negative root; each avoids the
        # cancellation of s - c where the other suffers it.
        r = torch.where(
            c > 0, 2 * alpha * rho / (c + s).clamp_min(torch.finfo(s.dtype).tiny), (s - c) / 2
        )
        x = self.z0 + ((alpha + r) / (gamma + r)).unsqueeze(1) * diff
        return x, -self._logabsdet(r, alpha, gamma)
