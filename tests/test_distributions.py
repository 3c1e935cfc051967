"""Base distributions: densities against scipy/torch, normalization, sampling moments, tempering,
gradients, state dicts, dtype/device moves and bad-input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from flowscope.distributions import (
    DiagonalNormal,
    Distribution,
    GaussianMixture,
    Logistic,
    StandardNormal,
    StudentT,
)

SHAPE = (2, 3)
BUILDERS = {
    "StandardNormal": lambda s: StandardNormal(s),
    "DiagonalNormal": lambda s: DiagonalNormal(s),
    "StudentT": lambda s: StudentT(s, df=4.0),
    "StudentT-fixed-df": lambda s: StudentT(s, df=4.0, learn_df=False),
    "Logistic": lambda s: Logistic(s),
    "GaussianMixture": lambda s: GaussianMixture(s, components=3, seed=1),
}


def _randomize(d: Distribution, scale: float = 0.3) -> Distribution:
    """Move every parameter off its init so that checks cannot pass at a symmetric default."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return d


def _reference_log_prob(d: Distribution, u: torch.Tensor) -> np.ndarray:
    """The same density computed with scipy.stats (or torch.distributions for the mixture)."""
    x = u.detach().double().reshape(u.shape[0], -1).numpy()
    if isinstance(d, StandardNormal):
        return stats.norm.logpdf(x).sum(1)
    if isinstance(d, DiagonalNormal):
        loc = d.loc.detach().double().reshape(-1).numpy()
        scale = d.log_scale.detach().double().exp().reshape(-1).numpy()
        return stats.norm.logpdf(x, loc, scale).sum(1)
    if isinstance(d, StudentT):
        loc = d.loc.detach().double().reshape(-1).numpy()
        scale = d.log_scale.detach().double().exp().reshape(-1).numpy()
        return stats.t.logpdf(x, d.df.item(), loc, scale).sum(1)
    if isinstance(d, Logistic):
        return stats.logistic.logpdf(x).sum(1)
    if isinstance(d, GaussianMixture):
        k = d.components
        comp = torch.distributions.Independent(
            torch.distributions.Normal(
                d.means.detach().double().reshape(k, -1),
                d.log_scales.detach().double().exp().reshape(k, -1),
            ),
            1,
        )
        mix = torch.distributions.Categorical(logits=d.logits.detach().double())
        ref = torch.distributions.MixtureSameFamily(mix, comp)
        return ref.log_prob(torch.from_numpy(x)).numpy()
    raise AssertionError(type(d))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_log_prob_matches_reference(name: str) -> None:
    d = _randomize(BUILDERS[name](SHAPE)).double()
    u = 2.0 * torch.randn(64, *SHAPE, dtype=torch.float64)
    got = d.log_prob(u)
    assert got.shape == (64,)
    np.testing.assert_allclose(
        got.detach().numpy(), _reference_log_prob(d, u), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_one_dimensional_density_integrates_to_one(name: str) -> None:
    d = _randomize(BUILDERS[name](1)).double()
    # StudentT's df=4 tails hold ~1e-8 of the mass beyond |u| = 400; a fine grid keeps the
    # trapezoid error of the narrowest mixture component below 1e-6.
    grid = torch.linspace(-400, 400, 800_001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        p = d.log_prob(grid).exp()
    total = torch.trapezoid(p, grid[:, 0]).item()
    assert abs(total - 1.0) < 1e-4, total


def _moments(d: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-dimension mean and variance of ``d`` (flattened event)."""
    if isinstance(d, StandardNormal):
        return torch.zeros(d.features), torch.ones(d.features)
    if isinstance(d, DiagonalNormal):
        return d.loc.detach().reshape(-1), d.log_scale.detach().exp().reshape(-1) ** 2
    if isinstance(d, StudentT):
        v = d.df.item()
        var = d.log_scale.detach().exp().reshape(-1) ** 2 * v / (v - 2)
        return d.loc.detach().reshape(-1), var
    if isinstance(d, Logistic):
        return torch.zeros(d.features), torch.full((d.features,), math.pi**2 / 3)
    raise AssertionError(type(d))


@pytest.mark.parametrize("name", ["StandardNormal", "DiagonalNormal", "StudentT", "Logistic"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_moments_and_temperature(name: str, temperature: float) -> None:
    d = BUILDERS[name](3)
    if isinstance(d, StudentT):
        d = StudentT(3, df=9.0)  # a finite 4th moment keeps the variance estimate tight
    _randomize(d)
    with torch.no_grad():
        x = d.sample(20_000, temperature=temperature)
    assert x.shape == (20_000, 3)
    mean, var = _moments(d)
    std = var.sqrt() * temperature
    torch.testing.assert_close(
        x.mean(0), mean, atol=float(4 * std.max() / math.sqrt(20_000)), rtol=0
    )
    torch.testing.assert_close(x.std(0), std, rtol=0.05, atol=0)
    torch.testing.assert_close(d.mean.reshape(-1), mean)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_mixture_sample_moments_and_temperature(temperature: float) -> None:
    d = _randomize(GaussianMixture(2, components=3, spread=3.0, seed=0))
    with torch.no_grad():
        x = d.sample(20_000, temperature=temperature)
    w = d.log_weights.detach().exp().unsqueeze(1)
    mu, s = d.means.detach(), d.log_scales.detach().exp()
    mean = (w * mu).sum(0)
    # Temperature scales each component's std, not the spread of the means.
    var = (w * ((temperature * s) ** 2 + mu**2)).sum(0) - mean**2
    torch.testing.assert_close(d.mean, mean)
    torch.testing.assert_close(
        x.mean(0), mean, atol=float(4 * var.sqrt().max() / math.sqrt(20_000)), rtol=0
    )
    torch.testing.assert_close(x.var(0), var, rtol=0.05, atol=0)


def test_mixture_components_classify_their_own_samples() -> None:
    """FlowGMM-style: argmax_k of log pi_k + log N_k(u) recovers the component that drew u."""
    d = GaussianMixture(4, components=3, spread=4.0, seed=3)
    with torch.no_grad():
        for k in range(3):
            x = d.sample_component(k, 500, temperature=0.5)
            comp = d.component_log_prob(x)
            assert comp.shape == (500, 3)
            resp = d.log_responsibilities(x)
            torch.testing.assert_close(resp.exp().sum(1), torch.ones(500))
            assert (resp.argmax(1) == k).float().mean() > 0.99
            # Each column is the component's own Gaussian density.
            ref = torch.distributions.Normal(d.means[k], d.log_scales[k].exp()).log_prob(x).sum(1)
            torch.testing.assert_close(comp[:, k], ref)


def test_student_t_tends_to_normal_for_large_df() -> None:
    t = _randomize(StudentT(3, df=1e7)).double()
    n = DiagonalNormal(3).double()
    n.load_state_dict({"loc": t.loc.detach(), "log_scale": t.log_scale.detach()})
    u = torch.randn(16, 3, dtype=torch.float64)
    torch.testing.assert_close(t.log_prob(u), n.log_prob(u), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradients_reach_every_parameter(name: str) -> None:
    d = _randomize(BUILDERS[name](SHAPE))
    u = torch.randn(32, *SHAPE, requires_grad=True)
    # Density (maximum likelihood) and reparameterized sampling (reverse KL) paths.
    loss = -d.log_prob(u).mean()
    if not isinstance(d, GaussianMixture):  # the component draw is not reparameterizable
        loss = loss + d.sample(32).pow(2).mean()
    loss.backward()
    assert u.grad is not None and u.grad.abs().sum() > 0  # flows train through the base's score
    for pname, p in d.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"zero gradient in {pname}"


def test_student_t_samples_carry_gradient_to_df() -> None:
    d = StudentT(4, df=3.0)
    d.sample(256).abs().mean().backward()
    assert d.log_df.grad is not None and d.log_df.grad.abs() > 0
    fixed = StudentT(4, df=3.0, learn_df=False)
    assert "log_df" not in dict(fixed.named_parameters())
    assert "log_df" in fixed.state_dict()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_state_dict_round_trip(name: str) -> None:
    d = _randomize(BUILDERS[name](SHAPE))
    fresh = BUILDERS[name](SHAPE)
    if isinstance(fresh, GaussianMixture):
        fresh = GaussianMixture(SHAPE, components=3, seed=99)  # different init means
    fresh.load_state_dict(d.state_dict())
    u = torch.randn(8, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(fresh.log_prob(u), d.log_prob(u))
        torch.testing.assert_close(fresh.mean, d.mean)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_dtype_and_device_moves(name: str) -> None:
    d = BUILDERS[name](SHAPE).double()
    with torch.no_grad():
        x = d.sample(5)
        assert x.dtype == torch.float64 and x.shape == (5, *SHAPE)
        assert d.log_prob(x).dtype == torch.float64
        assert d.mean.dtype == torch.float64 and d.mean.shape == SHAPE
        d = d.to("cpu", torch.float32)
        assert d.sample(5, temperature=0.5).dtype == torch.float32
        assert d.mean.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_bad_inputs_raise_value_errors_naming_the_argument(name: str) -> None:
    d = BUILDERS[name](SHAPE)
    with pytest.raises(ValueError, match=r"^u: expected shape \(batch, 2, 3\), got \(4, 6\)"):
        d.log_prob(torch.zeros(4, 6))
    nan = torch.zeros(4, *SHAPE)
    nan[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^u: expected finite values, got 1 NaN"):
        d.log_prob(nan)
    for bad in (0, -1, 0.0, float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=rf"^temperature: expected a finite number > 0, got {bad!r}"
        ):
            d.sample(3, temperature=bad)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=r"^n: expected a positive int"):
            d.sample(bad)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"^shape:"):
        StudentT(0)
    with pytest.raises(ValueError, match=r"^shape:"):
        Logistic((2, -1))
    with pytest.raises(ValueError, match=r"^df: expected a finite number > 0, got 0"):
        StudentT(2, df=0)
    with pytest.raises(ValueError, match=r"^df:"):
        StudentT(2, df=-3.0)
    with pytest.raises(ValueError, match=r"^components: expected a positive int, got 0"):
        GaussianMixture(2, components=0)
    with pytest.raises(ValueError, match=r"^spread:"):
        GaussianMixture(2, components=2, spread=0.0)
    g = GaussianMixture(2, components=2)
    with pytest.raises(ValueError, match=r"^component: expected an int in \[0, 2\), got 2"):
        g.sample_component(2, 4)
    with pytest.raises(ValueError, match=r"^u: expected shape"):
        g.component_log_prob(torch.zeros(3, 3))


def test_mixture_init_is_reproducible_from_its_seed() -> None:
    a = GaussianMixture(3, components=4, seed=7)
    torch.manual_seed(1234)  # the global RNG must not matter
    b = GaussianMixture(3, components=4, seed=7)
    c = GaussianMixture(3, components=4, seed=8)
    torch.testing.assert_close(a.means, b.means)
    assert not torch.allclose(a.means, c.means)
    # Distinct means: components can specialize.
    assert torch.pdist(a.means).min() > 0.1
