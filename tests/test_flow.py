"""Flow-level behaviour: normalization of 2-D densities, sampling, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from flowscope import Flow, models
from flowscope.distributions import StandardNormal

DENSITY_MODELS = {
    "nice": lambda: models.nice(2, layers=4, hidden=32),
    "realnvp": lambda: models.realnvp(2, layers=4, hidden=32),
    "maf": lambda: models.maf(2, layers=3, hidden=32),
    "iaf": lambda: models.iaf(2, layers=2, hidden=32),
    "nsf": lambda: models.nsf(2, layers=2, hidden=32),
}


def _grid_integral(flow: Flow, lim: float = 8.0, n: int = 400) -> float:
    """Riemann sum of p(x) over [-lim, lim]^2 (float64)."""
    xs = torch.linspace(-lim, lim, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        logp = torch.cat([flow.log_prob(chunk) for chunk in pts.split(40_000)])
    cell = (xs[1] - xs[0]) ** 2
    return float(logp.exp().sum() * cell)


def _moons(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * torch.pi
    side = torch.rand(n, generator=g) < 0.5
    x = torch.where(side, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(side, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x - 0.5, y - 0.25], 1)
    return pts + 0.05 * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("name", sorted(DENSITY_MODELS))
def test_2d_density_integrates_to_one_before_and_after_training(name: str) -> None:
    torch.manual_seed(1)
    flow = DENSITY_MODELS[name]()
    # Randomize so the untrained flow is not the identity (zero-initialized conditioners).
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    flow.eval()
    assert abs(_grid_integral(flow.double()) - 1.0) < 0.01
    flow = flow.float().train()
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    data = _moons(512, 0)
    for _ in range(30):
        opt.zero_grad()
        loss = flow.loss(data)
        loss.backward()
        opt.step()
    flow.eval()
    assert abs(_grid_integral(flow.double()) - 1.0) < 0.01


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    flow = models.realnvp(2, layers=4, hidden=32)
    data = _moons(1024, 1)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    first = float(flow.loss(data).detach())
    for _ in range(150):
        opt.zero_grad()
        flow.loss(data).backward()
        opt.step()
    assert float(flow.loss(data).detach()) < first - 0.5


def test_sample_shapes_and_log_prob_consistency() -> None:
    torch.manual_seed(0)
    flow = models.realnvp(3, layers=2, hidden=16).double().eval()
    x, logp = flow.sample_and_log_prob(7)
    assert x.shape == (7, 3) and logp.shape == (7,)
    torch.testing.assert_close(logp, flow.log_prob(x))
    parts = flow.log_prob_parts(x)
    torch.testing.assert_close(parts.log_px, parts.log_pu + parts.logabsdet)
    u, _ = flow.encode(x)
    torch.testing.assert_close(flow.decode(u), x)


def test_temperature_scales_base_samples() -> None:
    flow = Flow(models.realnvp(2, layers=1).transform, StandardNormal(2))
    torch.manual_seed(0)
    a = flow.base.sample(20_000, temperature=0.7)
    assert abs(float(a.std()) - 0.7) < 0.02


@pytest.mark.parametrize("name", ["nice", "realnvp", "maf", "iaf", "nsf"])
def test_conditional_flows_use_the_context(name: str) -> None:
    torch.manual_seed(0)
    flow = getattr(models, name)(2, context_features=3, layers=2, hidden=16)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(5, 2)
    c1, c2 = torch.randn(5, 3), torch.randn(5, 3)
    assert not torch.allclose(flow.log_prob(x, c1), flow.log_prob(x, c2))
    samples = flow.sample(4, context=c1)
    assert samples.shape == (20, 2)


# --- Bad input gets a clear ValueError naming the argument, the expected and the received value.


def test_wrong_feature_count() -> None:
    flow = models.realnvp(2, layers=2)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 2\), got \(4, 3\)"):
        flow.log_prob(torch.randn(4, 3))


def test_nan_and_inf_inputs() -> None:
    flow = models.realnvp(2, layers=2)
    x = torch.randn(4, 2)
    x[1, 0] = float("nan")
    with pytest.raises(ValueError, match="x: expected finite values"):
        flow.log_prob(x)
    x[1, 0] = float("inf")
    with pytest.raises(ValueError, match="x: expected finite values"):
        flow.log_prob(x)


def test_conditional_flow_without_context() -> None:
    flow = models.maf(2, context_features=3, layers=1)
    with pytest.raises(
        ValueError, match=r"context: .*expects a context of shape \(batch, 3\), got None"
    ):
        flow.log_prob(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"context: .*got None"):
        flow.sample(4)


def test_wrong_context_shape() -> None:
    flow = models.realnvp(2, context_features=3, layers=1)
    with pytest.raises(ValueError, match=r"context: expected shape \(4, 3\), got \(4, 2\)"):
        flow.log_prob(torch.randn(4, 2), torch.randn(4, 2))


def test_context_given_to_unconditional_flow() -> None:
    flow = models.realnvp(2, layers=1)
    with pytest.raises(ValueError, match="context: this flow is unconditional"):
        flow.log_prob(torch.randn(4, 2), torch.randn(4, 3))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_non_positive_temperature(temperature: float) -> None:
    flow = models.realnvp(2, layers=1)
    with pytest.raises(ValueError, match="temperature: expected a finite number > 0"):
        flow.sample(3, temperature=temperature)


def test_logit_outside_its_domain() -> None:
    from flowscope.transforms import Logit

    with pytest.raises(
        ValueError, match=r"x: expected values in the open interval \(0(\.0)?, 1(\.0)?\).*1\.5"
    ):
        Logit()(torch.tensor([[0.5, 1.5]]))


def test_unknown_constructor_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="features"):
        models.realnvp(0)
    with pytest.raises(ValueError, match="layers"):
        models.maf(2, layers=0)
