"""flowscope.data.toy2d: samplers, exact densities, entropies, Rezende-Mohamed energies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from flowscope.data import energies, toy2d

NAMES = ["pinwheel", "two_circles", "moons", "eight_gaussians", "checkerboard", "spirals", "sine"]

# Midpoint-grid spacing per dataset: about a third of the narrowest noise scale, where the grid
# sum of a Gaussian-smoothed density is accurate far beyond the 1e-3 asserted.
GRID_STEP = {
    "pinwheel": 0.01,
    "two_circles": 0.004,
    "moons": 0.02,
    "eight_gaussians": 0.1,
    "checkerboard": 0.25,
    "spirals": 0.08,
    "sine": math.pi / 200,
}
# Samples for the Monte Carlo check of the entropy (spirals' density costs the most per point).
MC_SAMPLES = {"spirals": 20_000}


def _grid(bounds: tuple[float, float, float, float], h: float) -> torch.Tensor:
    x0, x1, y0, y1 = bounds
    gx = torch.arange(x0 + h / 2, x1, h, dtype=torch.float64)
    gy = torch.arange(y0 + h / 2, y1, h, dtype=torch.float64)
    return torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)


def test_registry_get_and_plot_range():
    assert sorted(toy2d.DATASETS) == sorted(NAMES)
    with pytest.raises(ValueError, match="name: expected one of .*pinwheel.*got 'pinwheels'"):
        toy2d.get("pinwheels")
    assert toy2d.get("moons") is toy2d.DATASETS["moons"]
    three = toy2d.get("pinwheel", wings=3, rate=0.25)
    assert (three.wings, three.rate, three.num_labels) == (3, 0.25, 3)
    assert three is not toy2d.DATASETS["pinwheel"]
    assert "wings=3" in repr(three)
    for name in NAMES:
        assert toy2d.plot_range(name) == toy2d.get(name).bounds
    assert toy2d.plot_range("u3") == (-4.0, 4.0, -4.0, 4.0)


@pytest.mark.parametrize("name", NAMES)
def test_sample_contract_and_determinism(name):
    data = toy2d.get(name)
    x, labels = data.sample(1001, seed=7)
    assert x.shape == (1001, 2) and x.dtype == torch.float32
    assert labels.shape == (1001,) and labels.dtype == torch.long
    assert 0 <= int(labels.min()) and int(labels.max()) < data.num_labels
    counts = torch.bincount(labels, minlength=data.num_labels)
    assert int(counts.max() - counts.min()) <= 1  # equal class sizes, like the seeds' generators
    x2, labels2 = data.sample(1001, seed=7)
    assert torch.equal(x, x2) and torch.equal(labels, labels2)
    assert not torch.equal(x, data.sample(1001, seed=8)[0])
    gen = torch.Generator().manual_seed(7)
    assert not torch.equal(data.sample(50, seed=gen)[0], data.sample(50, seed=gen)[0])
    x0, x1, y0, y1 = data.bounds
    inside = (x[:, 0] >= x0) & (x[:, 0] <= x1) & (x[:, 1] >= y0) & (x[:, 1] <= y1)
    assert inside.float().mean() > 0.995


def test_bad_inputs_raise_value_errors():
    data = toy2d.get("pinwheel")
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n: expected a positive int"):
            data.sample(n)
    with pytest.raises(ValueError, match="seed"):
        data.sample(4, seed="a")
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 2\)"):
        data.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="x: expected finite"):
        data.log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="wings"):
        toy2d.Pinwheel(wings=0)
    with pytest.raises(ValueError, match="radial_std"):
        toy2d.TwoCircles(radial_std=-1.0)
    with pytest.raises(ValueError, match="noise"):
        toy2d.Moons(noise=0.0)
    assert data.log_prob(torch.zeros(0, 2)).shape == (0,)


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name):
    data = toy2d.get(name)
    h = GRID_STEP[name]
    lp = data.log_prob(_grid(data.bounds, h))
    assert lp.dtype == torch.float64 and not torch.isnan(lp).any()
    mass = float(lp.exp().sum()) * h * h
    assert abs(mass - 1.0) < 1e-3, mass


@pytest.mark.parametrize("name", NAMES)
def test_mean_log_prob_matches_entropy(name):
    data = toy2d.get(name)
    n = MC_SAMPLES.get(name, 200_000)
    x, _ = data.sample(n, seed=11)
    lp = data.log_prob(x.double())
    assert torch.isfinite(lp).all()
    nll, se = -float(lp.mean()), float(lp.std()) / math.sqrt(n)
    entropy = data.entropy()
    assert abs(nll - entropy) <= 3 * se + 1e-6, (nll, entropy, se)
    assert data.entropy() == entropy  # cached


def test_closed_form_entropies():
    assert toy2d.get("checkerboard").entropy() == pytest.approx(math.log(32.0), abs=1e-15)
    s = toy2d.get("sine").noise
    assert toy2d.get("sine").entropy() == pytest.approx(
        math.log(2 * math.pi) + 0.5 * math.log(2 * math.pi * math.e * s * s), abs=1e-12
    )
    # Well-separated rings: H = log 2 + H(N(0, s^2)) + log 2 pi + mean_c E log R_c, with
    # E log R = log r - s^2 / (2 r^2) + O(s^4 / r^4).
    circles = toy2d.get("two_circles")
    s, radii = circles.radial_std, circles.radii
    approx = math.log(2) + 0.5 * math.log(2 * math.pi * math.e * s * s) + math.log(2 * math.pi)
    approx += sum(math.log(r) - s * s / (2 * r * r) for r in radii) / 2
    assert circles.entropy() == pytest.approx(approx, abs=1e-7)


def _pinwheel_brute_force(x: np.ndarray, data: toy2d.Pinwheel) -> tuple[float, int]:
    """log p(x) by scanning the circle of radius |f| = 2|x| for every preimage of every wing."""
    r, phi = 2 * math.hypot(*x), math.atan2(x[1], x[0])
    theta = np.linspace(-math.pi, math.pi, 200_001)

    def dh(t: float) -> float:
        return 1 + data.rate * r * math.sin(t) * math.exp(r * math.cos(t))

    terms = []
    for k in range(data.wings):
        target = phi + 2 * math.pi * k / data.wings

        def g(t, target=target):
            return np.angle(np.exp(1j * (t - data.rate * np.exp(r * np.cos(t)) - target)))

        gv = g(theta)
        crossing = (np.sign(gv[:-1]) != np.sign(gv[1:])) & (np.abs(gv[:-1] - gv[1:]) < 1)
        for i in np.nonzero(crossing)[0]:
            t = brentq(g, theta[i], theta[i + 1], xtol=1e-15)
            f0, f1 = r * math.cos(t), r * math.sin(t)
            terms.append(
                -0.5 * ((f0 - 1) / data.radial_std) ** 2
                - 0.5 * (f1 / data.tangential_std) ** 2
                - math.log(2 * math.pi * data.radial_std * data.tangential_std)
                + math.log(4.0)
                - math.log(abs(dh(t)))
            )
    terms = np.array(terms)
    log_p = terms.max() + np.log(np.exp(terms - terms.max()).sum()) - math.log(data.wings)
    return float(log_p), len(terms)


def test_pinwheel_sums_over_every_preimage():
    """Far out on the wings the map folds (one x, several f per wing): match a brute-force scan."""
    data = toy2d.get("pinwheel")
    rng = np.random.default_rng(0)
    rad, ang = rng.uniform(0.7, 2.0, 12), rng.uniform(-math.pi, math.pi, 12)
    pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    ours = data.log_prob(torch.tensor(pts)).numpy()
    folded = 0
    for p, value in zip(pts, ours):
        reference, preimages = _pinwheel_brute_force(p, data)
        folded += preimages > data.wings
        assert value == pytest.approx(reference, abs=1e-8)
    assert folded >= 3  # the check did exercise points with extra preimages


def test_pinwheel_histogram_matches_density():
    data = toy2d.get("pinwheel")
    n, h = 1_000_000, 0.1
    x, _ = data.sample(n, seed=3)
    x0, x1, y0, y1 = data.bounds
    bins = round((x1 - x0) / h)
    # Expected mass per bin: 12 x 12 Gauss-Legendre nodes inside each bin (6 x 6 is too coarse
    # for wings 0.025 wide: chi2/dof 3.6 from quadrature error alone).
    t, w = np.polynomial.legendre.leggauss(12)
    sub = torch.tensor((t + 1) * h / 2)
    corner = torch.arange(bins, dtype=torch.float64) * h + x0
    pos = (corner[:, None] + sub).reshape(-1)
    pts = torch.stack(torch.meshgrid(pos, pos, indexing="ij"), -1).reshape(-1, 2)
    wts = torch.tensor(w * h / 2)
    density = data.log_prob(pts).exp().reshape(bins, 12, bins, 12)
    expected = n * torch.einsum("iajb,a,b->ij", density, wts, wts)

    def chi2_per_dof(samples: torch.Tensor) -> float:
        observed = torch.histogramdd(samples.double(), bins=[bins, bins], range=[x0, x1, y0, y1])
        keep = expected > 20
        diff = observed.hist[keep] - expected[keep]
        return float((diff**2 / expected[keep]).sum()) / int(keep.sum())

    assert float(expected.sum()) == pytest.approx(n, rel=1e-3)
    assert chi2_per_dof(x) < 1.25
    # Negative control: the mirror image (the rotation sense the original code does NOT use).
    assert chi2_per_dof(x * torch.tensor([1.0, -1.0])) > 50


def _dense_moons(x: torch.Tensor, noise: float) -> torch.Tensor:
    t, w = np.polynomial.legendre.leggauss(8)
    edges = np.linspace(0, math.pi, 601)
    t = torch.tensor(((edges[:-1] + edges[1:]) / 2)[:, None] + (np.diff(edges) / 2)[:, None] * t)
    lw = torch.tensor((np.diff(edges) / 2)[:, None] * w / math.pi).log().reshape(-1)
    t = t.reshape(-1)
    out = []
    for y in (x, torch.tensor([1.0, 0.5], dtype=torch.float64) - x):
        d2 = (y[:, :1] - t.cos()) ** 2 + (y[:, 1:] - t.sin()) ** 2
        out.append(torch.logsumexp(lw - d2 / (2 * noise**2), 1))
    return torch.logaddexp(*out) - math.log(2) - math.log(2 * math.pi * noise**2)


def _dense_spirals(x: torch.Tensor, tau: float) -> torch.Tensor:
    top, box = 3 * math.pi, 0.5 / 3
    t, w = np.polynomial.legendre.leggauss(8)
    edges = np.linspace(0, top, 601)
    s = torch.tensor(((edges[:-1] + edges[1:]) / 2)[:, None] + (np.diff(edges) / 2)[:, None] * t)
    lw = (torch.tensor((np.diff(edges) / 2)[:, None] * w) * 2 * s / top**2).log().reshape(-1)
    s = s.reshape(-1)
    c = torch.stack([-s * s.cos(), s * s.sin()], -1) / 3
    out = []
    for sign in (1.0, -1.0):
        v = sign * x[:, None, :] - c
        a, b = (v - box) / tau, v / tau  # log(Phi(b) - Phi(a)), per axis, in log space
        flip = a + b > 0
        a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
        lb = torch.special.log_ndtr(b)
        out.append((lb + torch.log(-torch.expm1(torch.special.log_ndtr(a) - lb))).sum(-1) + lw)
    return torch.logsumexp(torch.cat(out, 1), 1) - 2 * math.log(box) - math.log(2)


@pytest.mark.parametrize(
    "name, dense, scale",
    [("moons", _dense_moons, 0.05), ("spirals", _dense_spirals, 0.1)],
)
def test_windowed_quadrature_matches_dense_quadrature(name, dense, scale):
    """Moons and spirals only integrate where the integrand matters: compare with all nodes."""
    data = toy2d.get(name)
    g = torch.Generator().manual_seed(0)
    x0, x1, y0, y1 = data.bounds
    box = torch.rand(100, 2, generator=g, dtype=torch.float64)
    box = box * torch.tensor([x1 - x0 + 2, y1 - y0 + 2]) + torch.tensor([x0 - 1, y0 - 1])
    x = torch.cat([box, data.sample(100, seed=5)[0].double(), torch.zeros(1, 2)])
    ours, reference = data.log_prob(x), dense(x, scale)
    near = reference > -60
    assert near.sum() > 100
    torch.testing.assert_close(ours[near], reference[near], rtol=0, atol=1e-7)
    # Far tails (log p down to about -1000): the panels are coarse for such steep integrands.
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-7)


def _paper_energy(name: str, z: torch.Tensor) -> torch.Tensor:
    """Table 1 of Rezende & Mohamed (2015), transcribed literally (exp, then log)."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = torch.sin(2 * math.pi * z1 / 4)
    w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + torch.exp(-(z1 - 1) / 0.3))
    if name == "u1":
        return 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2 - torch.log(
            torch.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + torch.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
        )
    if name == "u2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "u3":
        return -torch.log(
            torch.exp(-0.5 * ((z2 - w1) / 0.35) ** 2)
            + torch.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        )
    return -torch.log(
        torch.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + torch.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    )


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_energies_and_normalizers(name):
    energy = energies.ENERGIES[name]
    z = _grid((-4.0, 4.0, -4.0, 4.0), 0.05)
    values = energy(z)
    assert values.shape == (z.shape[0],) and torch.isfinite(values).all()
    torch.testing.assert_close(values, _paper_energy(name, z), rtol=1e-9, atol=1e-9)
    log_z = energies.log_normalizer(name)
    assert math.isfinite(log_z)
    assert log_z == pytest.approx(energies.log_normalizer(energy, panels=32), abs=1e-9)
    midpoint = math.log(float(torch.exp(-values).sum()) * 0.05**2)
    assert log_z == pytest.approx(midpoint, abs=1e-3)
    with pytest.raises(ValueError, match=r"z: expected shape \(batch, 2\)"):
        energy(torch.zeros(3))


def test_energy_spot_values_and_normalizer_errors():
    assert float(energies.energy_u2(torch.zeros(1, 2))) == 0.0
    # U1 at (2, 0): on the ring, at the centre of one of the two bumps.
    assert float(energies.energy_u1(torch.tensor([[2.0, 0.0]]))) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="energy: expected one of"):
        energies.log_normalizer("u5")
    with pytest.raises(ValueError, match="bounds"):
        energies.log_normalizer("u1", bounds=(1.0, -1.0, 0.0, 1.0))
