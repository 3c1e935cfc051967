"""Planar and radial flows (Rezende & Mohamed 2015): invertibility constraints, the closed-form
radial inverse, the planar NotImplementedError, and their use as variational flows."""

from __future__ import annotations

import math

import pytest
import torch

from flowscope import Flow
from flowscope.distributions import StandardNormal
from flowscope.transforms import Compose, Inverse, Planar, Radial


def _jacobian_dets(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, log|det|) of the autograd Jacobian of ``fn`` at every row of ``x``."""
    signs, logs = [], []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda z: fn(z.unsqueeze(0))[0][0], xi)
        s, ld = torch.linalg.slogdet(jac)
        signs.append(s)
        logs.append(ld)
    return torch.stack(signs), torch.stack(logs)


def _adversarial_planar(features: int, wu: float) -> Planar:
    """A planar layer whose raw ``u`` points against ``w`` (``w^T u = wu``, far below -1)."""
    t = Planar(features).double()
    with torch.no_grad():
        t.w.copy_(torch.randn(features, dtype=torch.float64) * 2)
        t.u.copy_(wu * t.w / (t.w @ t.w) + 0.5 * torch.randn(features, dtype=torch.float64))
        t.u.sub_((t.w @ t.u - wu) * t.w / (t.w @ t.w))  # make w^T u exactly wu
        t.b.fill_(0.2)
    return t


@pytest.mark.parametrize("features", [1, 2, 5])
@pytest.mark.parametrize("wu", [-50.0, -3.0, -1.0])
def test_u_hat_keeps_planar_invertible(features: int, wu: float) -> None:
    t = _adversarial_planar(features, wu)
    assert torch.isclose(t.w @ t.u, torch.tensor(wu, dtype=torch.float64))
    # Appendix A.1's sufficient condition: w^T u_hat = softplus(w^T u) - 1 > -1 (up to rounding
    # when softplus underflows; the log-det never forms 1 + w^T u_hat, see Planar.forward).
    w_u_hat = t.w @ t.u_hat()
    expected = torch.nn.functional.softplus(torch.tensor(wu, dtype=torch.float64)) - 1
    torch.testing.assert_close(w_u_hat, expected, atol=1e-12, rtol=0)
    assert w_u_hat > -1 - 1e-12

    # Points on and around the hyperplane w^T z + b = 0, where tanh' = 1 and an unconstrained
    # u would make the determinant 1 + w^T u <= 0.
    w_dir = t.w / t.w.norm()
    z = torch.randn(40, features, dtype=torch.float64)
    z = z - ((z @ t.w + t.b) / (t.w @ t.w)).unsqueeze(1) * t.w  # project onto the hyperplane
    z = z + torch.linspace(-2, 2, 40, dtype=torch.float64).unsqueeze(1) * w_dir
    signs, logdets = _jacobian_dets(t, z)
    assert (signs > 0).all()
    torch.testing.assert_close(t(z)[1], logdets)

    # f is strictly increasing along w: s -> w^T f(z + s w/|w|).
    s = torch.linspace(-6, 6, 2001, dtype=torch.float64).unsqueeze(1)
    line = z[:1] + s * w_dir
    with torch.no_grad():
        proj = t(line)[0] @ w_dir
    assert (proj.diff() > 0).all()

    # The same layer without the reparameterization folds space (the test can tell).
    if wu < -1:
        raw_det = 1 + (1 - torch.tanh(z @ t.w + t.b).pow(2)) * (t.w @ t.u)
        assert (raw_det < 0).any()


def test_planar_inverse_raises_with_a_sentence() -> None:
    t = Planar(3)
    with pytest.raises(NotImplementedError) as info:
        t.inverse(torch.zeros(2, 3))
    msg = str(info.value)
    assert msg[0].isupper() and msg.endswith(".") and len(msg.split()) > 8
    assert "root-finding" in msg and "Inverse(" in msg


@pytest.mark.parametrize("features", [1, 3, 6])
@pytest.mark.parametrize("beta_over_alpha", [-0.999, -0.5, 0.3, 20.0])
def test_radial_inverse_round_trip(features: int, beta_over_alpha: float) -> None:
    t = Radial(features).double()
    alpha = 0.4
    with torch.no_grad():
        t.alpha_raw.fill_(math.log(math.expm1(alpha)))
        t.beta_raw.fill_(math.log(math.expm1(alpha * (1 + beta_over_alpha))))
        t.z0.copy_(torch.randn(features, dtype=torch.float64))
    alpha_t, beta_t = t.alpha_beta()
    torch.testing.assert_close(beta_t / alpha_t, torch.tensor(beta_over_alpha, dtype=torch.float64))
    # Radii from 1e-6 to 1e3 around z0: both branches of the stable quadratic root.
    radii = torch.logspace(-6, 3, 50, dtype=torch.float64).unsqueeze(1)
    dirs = torch.nn.functional.normalize(torch.randn(50, features, dtype=torch.float64), dim=1)
    x = t.z0 + radii * dirs
    with torch.no_grad():
        y, ladj = t(x)
        x_back, ladj_inv = t.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-9, atol=1e-12)
    # Radial maps keep each point on its ray from z0 (the radius is what the quadratic solves).
    # (Radii below 1e-3 are left out: y - z0 cancels there, and the round trip covers them.)
    far = radii[:, 0] > 1e-3
    cos = torch.nn.functional.cosine_similarity(y[far] - t.z0, x[far] - t.z0, dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos))


def test_radial_log_det_matches_autograd_near_its_bound() -> None:
    t = Radial(3).double()
    with torch.no_grad():
        t.beta_raw.fill_(-8.0)  # beta = -alpha + softplus(-8): almost the bound
    x = t.z0 + 0.05 * torch.randn(10, 3, dtype=torch.float64)
    signs, logdets = _jacobian_dets(t, x)
    assert (signs > 0).all()
    torch.testing.assert_close(t(x)[1], logdets)


def test_radial_at_its_bound_stays_finite_and_invertible() -> None:
    """beta_raw = -50: alpha + beta = softplus(-50) ~ 2e-22, i.e. beta = -alpha in float64."""
    t = Radial(4).double()
    with torch.no_grad():
        t.beta_raw.fill_(-50.0)
        # z0 = 0: with y ~ z0 + 1e-12 the input itself would lose digits to z0's rounding,
        # which is no fault of the inverse.
        t.z0.zero_()
    alpha, beta = t.alpha_beta()
    assert alpha + beta == 0  # the naive 1 + beta / alpha would be exactly 0 here
    radii = torch.logspace(-6, 3, 40, dtype=torch.float64).unsqueeze(1)
    dirs = torch.nn.functional.normalize(torch.randn(40, 4, dtype=torch.float64), dim=1)
    x = t.z0 + radii * dirs
    y, ladj = t(x)
    assert torch.isfinite(ladj).all()
    x_back, ladj_inv = t.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(ladj_inv, -ladj)
    # Near the bound f maps radius r to about r^2 / alpha:
    # ln|det| ~ (D-1) ln(r / alpha) + ln(2 r / alpha).
    small = radii[:, 0] < 1e-4
    r = radii[small, 0]
    approx = 3 * torch.log(r / alpha) + torch.log(2 * r / alpha)
    torch.testing.assert_close(ladj[small], approx, atol=1e-3, rtol=0)


def test_planar_flow_samples_with_exact_log_density_and_cannot_evaluate() -> None:
    """Wrapped in Inverse, Flow.sample_and_log_prob runs the closed-form planar maps."""
    torch.manual_seed(2)
    layers = [Planar(2) for _ in range(4)]
    flow = Flow(Inverse(Compose(*layers)), StandardNormal(2)).double()
    torch.manual_seed(5)
    x, log_q = flow.sample_and_log_prob(64)
    torch.manual_seed(5)
    z0 = flow.base.sample(64)
    z, expected = z0, flow.base.log_prob(z0)
    for layer in layers:
        _, logdet = _jacobian_dets(layer, z)
        expected = expected - logdet
        z = layer(z)[0]
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_q, expected)
    # Reverse-KL training reaches every planar parameter.
    target = torch.distributions.Normal(torch.tensor(1.0, dtype=torch.float64), 0.5)
    (log_q - target.log_prob(x).sum(1)).mean().backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(NotImplementedError, match="closed-form inverse"):
        flow.log_prob(x.detach())


def test_radial_flow_density_integrates_to_one_and_agrees_with_sampling() -> None:
    torch.manual_seed(3)
    layers = [Radial(2) for _ in range(3)]
    with torch.no_grad():
        for layer, beta_raw in zip(layers, (-2.0, 1.5, 0.2)):
            layer.beta_raw.fill_(beta_raw)
    flow = Flow(Inverse(Compose(*layers)), StandardNormal(2)).double()
    xs = torch.linspace(-9, 9, 601, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).exp()
        x, log_q = flow.sample_and_log_prob(200)
    assert abs(float(p.sum() * (xs[1] - xs[0]) ** 2) - 1) < 2e-3
    torch.testing.assert_close(flow.log_prob(x), log_q)


def test_bad_inputs() -> None:
    for cls in (Planar, Radial):
        for bad in (0, -1, 2.0, True):
            with pytest.raises(ValueError, match=r"^features: expected an int >= 1"):
                cls(bad)
        t = cls(3)
        with pytest.raises(ValueError, match=r"^x: expected shape \(batch, 3\), got \(2, 4\)"):
            t(torch.zeros(2, 4))
        with pytest.raises(ValueError, match=r"^x: expected finite values"):
            t(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"^u: expected shape \(batch, 3\)"):
        Radial(3).inverse(torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"^u: expected finite values"):
        Radial(3).inverse(torch.full((1, 3), float("inf")))
