"""Latent-space analysis (seed 000): coherence tools, attribute directions, class fits and the
(non-)unimodality metrics, on seeded synthetic latents and tiny flows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from flowscope.analysis.classfit import (
    DiagonalGaussianFit,
    class_fit_classifier,
    class_log_probs,
    classify,
    confusion_matrix,
    multimodality_gain,
    multimodality_per_dim,
    non_unimodality,
    normal_gamma_log_posterior,
    normal_gamma_map,
    sample_from_fit,
    student_t_fit,
)
from flowscope.analysis.coherence import (
    ImageJudge,
    coherence_score,
    decode_latents,
    density_judge,
    density_threshold,
    encode_dataset,
    mean_image,
    tempered_samples,
    two_sigma_bound,
    typical_set,
)
from flowscope.analysis.directions import (
    cosine_similarity,
    manipulate,
    mean_difference_directions,
    monotonic_fraction,
    svm_directions,
)
from flowscope.distributions import DiagonalNormal, GaussianMixture, StandardNormal, StudentT
from flowscope.flow import Flow
from flowscope.models import realnvp
from flowscope.transforms import Affine, Compose

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _affine_flow(d: int, log_scale: float = 0.0, shift: float = 0.0, base=None) -> Flow:
    """u = x exp(log_scale) + shift: the identity at the defaults."""
    t = Affine(d)
    with torch.no_grad():
        t.log_scale.fill_(log_scale)
        t.shift.fill_(shift)
    return Flow(Compose(t), base if base is not None else StandardNormal(d))


# ----------------------------------------------------------------------------- coherence


def test_encode_dataset_tensor_and_loader_agree_and_restore_mode() -> None:
    flow = realnvp(2, layers=2, hidden=8)
    x = torch.randn(70, 2, generator=_gen(1))
    y = torch.arange(70)
    flow.train()
    enc = encode_dataset(flow, x, batch_size=16, labels=y)
    assert flow.training, "encode_dataset must restore the training flag"
    assert enc.u.shape == (70, 2) and enc.log_px.shape == (70,)
    torch.testing.assert_close(enc.log_px, flow.log_prob(x).detach())
    torch.testing.assert_close(enc.log_px, enc.log_pu + enc.logabsdet)
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 70, 16)]
    enc2 = encode_dataset(flow, loader)
    torch.testing.assert_close(enc2.u, enc.u)
    assert torch.equal(enc2.labels, y)
    with pytest.raises(ValueError, match="labels"):
        encode_dataset(flow, x, labels=y[:5])
    with pytest.raises(ValueError, match="data"):
        encode_dataset(flow, 3.0)
    with pytest.raises(ValueError, match="x"):
        encode_dataset(flow, torch.randn(4, 3))


def test_decode_latents_inverts_encode_with_exact_log_prob() -> None:
    flow = realnvp(2, layers=2, hidden=8)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=_gen(2)))
    x = torch.randn(40, 2, generator=_gen(3))
    enc = encode_dataset(flow, x)
    dec = decode_latents(flow, enc.u, batch_size=7)
    torch.testing.assert_close(dec.x, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec.log_px, enc.log_px, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="u"):
        decode_latents(flow, torch.full((2, 2), float("nan")))


def test_mean_image_of_an_affine_flow() -> None:
    d = 5
    flow = _affine_flow(d, log_scale=math.log(2.0), shift=1.0)
    x, log_px, log_pu = mean_image(flow)
    # u = 2 x + 1 and the base mean is u = 0, so x = -1/2; ln p(x) = ln p(u) + D ln 2.
    torch.testing.assert_close(x, torch.full((1, d), -0.5))
    assert log_pu.item() == pytest.approx(-0.5 * d * math.log(2 * math.pi), rel=1e-6)
    assert log_px.item() == pytest.approx(log_pu.item() + d * math.log(2.0), rel=1e-6)


def test_tempered_samples_spread_and_log_probs() -> None:
    flow = _affine_flow(3, shift=1.0)  # u = x + 1
    s = tempered_samples(flow, 4000, temperature=0.5, seed=4)
    torch.testing.assert_close(s.x.std(0), torch.full((3,), 0.5), rtol=0.05, atol=0)
    torch.testing.assert_close(s.x.mean(0), torch.full((3,), -1.0), rtol=0, atol=0.05)
    torch.testing.assert_close(s.log_px, flow.log_prob(s.x).detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(tempered_samples(flow, 10, seed=4).x, tempered_samples(flow, 10, seed=4).x)


def test_two_sigma_bound_matches_eq_5_1() -> None:
    # Seed 000 eq. 5.1, M_std at 128 x 128 x 3: -143471.671875 (float32 in the thesis).
    assert two_sigma_bound(StandardNormal(128 * 128 * 3)) == pytest.approx(-143471.67, abs=0.1)
    base = DiagonalNormal(6)
    with torch.no_grad():
        base.loc.copy_(torch.randn(6, generator=_gen(4)))
        base.log_scale.copy_(0.3 * torch.randn(6, generator=_gen(5)))
    want = -0.5 * 6 * (math.log(2 * math.pi) + 4) - float(base.log_scale.detach().sum())
    assert two_sigma_bound(base) == pytest.approx(want, rel=1e-6)
    assert two_sigma_bound(Flow(Compose(Affine(6)), base), k=1.0) == pytest.approx(
        want + 0.5 * 6 * 3, rel=1e-6
    )
    t = StudentT(3, df=5.0)  # std = sqrt(5/3) per axis
    z = 2 * math.sqrt(5 / 3)
    want_t = 3 * float(stats.t.logpdf(z, 5.0))
    assert two_sigma_bound(t) == pytest.approx(want_t, rel=1e-5)
    with pytest.raises(ValueError, match="base"):
        two_sigma_bound(GaussianMixture(2, components=2))


def test_typical_set_identity_flow_and_mismatched_data() -> None:
    d = 10
    flow = _affine_flow(d)
    x = torch.randn(4000, d, generator=_gen(6))
    ts = typical_set(flow, encode_dataset(flow, x), n=4000, seed=1)
    # Data ARE base samples: ~90% within the 5-95% band, KS statistic near 0.
    assert abs(ts.data_in_band - 0.9) < 0.03
    assert abs(ts.base_in_band - 0.9) < 0.01
    assert ts.ks_statistic < 0.05
    assert ts.bound is not None and ts.base_above_bound > 0.99 and ts.data_above_bound > 0.99
    assert ts.mode_log_pu == pytest.approx(-0.5 * d * math.log(2 * math.pi), rel=1e-6)
    assert ts.base_log_pu.shape == (4000,) and set(ts.metrics()) >= {"data_in_band", "ks_statistic"}
    # Data twice as spread: its ln p(u) falls below the typical band.
    ts2 = typical_set(flow.base, 2.0 * x, n=4000, seed=1)
    assert ts2.data_below_band > 0.9 and ts2.ks_statistic > 0.8
    # Seeded: the same seed gives the same base samples.
    np.testing.assert_array_equal(ts2.base_log_pu, ts.base_log_pu)
    with pytest.raises(ValueError, match="quantiles"):
        typical_set(flow, x, quantiles=(0.9, 0.1))


def _gauss_log_prob(mean: float, std: float):
    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(mean, std).log_prob(x.double()).sum(1)

    return log_prob


def test_coherence_score_identity_flow_on_known_densities() -> None:
    flow = _affine_flow(2)
    # The data ARE N(0, I): every typical-band base sample lies above the 1% density level.
    truth = _gauss_log_prob(0.0, 1.0)
    data = torch.randn(5000, 2, generator=_gen(7))
    judge = density_judge(truth, density_threshold(truth, data, mass=0.99))
    res = coherence_score(flow, judge, n=800, seed=3)
    assert res.score > 0.99 and 0.85 < res.kept / res.drawn < 0.95
    # The data are N(3, 0.5^2): the base's high-probability region decodes off the data.
    truth2 = _gauss_log_prob(3.0, 0.5)
    data2 = 3.0 + 0.5 * torch.randn(5000, 2, generator=_gen(8))
    judge2 = density_judge(truth2, density_threshold(truth2, data2, mass=0.99))
    res2 = coherence_score(flow, judge2, n=800, seed=3)
    assert res2.score < 0.02
    # The mode-centred region (q, 1]: the 30% of samples nearest the mode, all good.
    res3 = coherence_score(flow, judge, n=800, quantiles=(0.7, 1.0), seed=3)
    assert 0.25 < res3.kept / res3.drawn < 0.35 and res3.score == 1.0
    # Eq. 5.1's region {ln p(u) >= bound}: in 2-D it holds P(chi2_2 <= 8) = 1 - e^-4 of the mass.
    res4 = coherence_score(flow, judge, n=2000, band=(two_sigma_bound(flow), math.inf), seed=3)
    assert abs(res4.kept / res4.drawn - (1 - math.exp(-4))) < 0.01
    bad = density_judge(truth, 0.0)(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))
    assert bad.tolist() == [False, False]  # ln N(0; 0, I) = -1.84 < 0 too


def test_image_judge_confidence_and_nearest_neighbour() -> None:
    g = _gen(9)
    centres = torch.rand(4, 1, 4, 4, generator=g)
    ref = (centres.repeat(25, 1, 1, 1) + 0.02 * torch.randn(100, 1, 4, 4, generator=g)).clamp(0, 1)
    conf = lambda x: torch.where(x.reshape(len(x), -1).mean(1) >= 0, 0.9, 0.1)  # noqa: E731
    judge = ImageJudge(conf, ref, conf_threshold=0.5, nn_quantile=0.95)
    near = centres + 0.01 * torch.randn(4, 1, 4, 4, generator=g)
    far = torch.rand(4, 1, 4, 4, generator=g) + 2.0
    assert judge(near).all() and not judge(far).any()
    unsure = ImageJudge(lambda x: torch.zeros(len(x)), ref)
    assert not unsure(near).any()
    with pytest.raises(ValueError, match="x"):
        judge.details(torch.rand(2, 1, 3, 3))


# ----------------------------------------------------------------------------- directions


def _planted(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    u = rng.normal(size=(n, d))
    return u, (u @ w > 0.1).astype(int), w


def test_svm_directions_recover_a_planted_direction() -> None:
    u, y, w = _planted(1200, 10, 0)
    u2, y2, _ = _planted(1200, 10, 1)
    # A second attribute with a shifted mean only in coordinate 3 and noisy labels.
    rng = np.random.default_rng(2)
    a2 = (rng.random(1200) < 0.3).astype(int)
    u = u + 1.0 * a2[:, None] * np.eye(10)[3]
    (d1, d2) = svm_directions(
        u[:800],
        np.stack([y, a2], 1)[:800],
        ["planted", "shift"],
        u[800:],
        np.stack([y, a2], 1)[800:],
    )
    assert cosine_similarity(d1.unit, w) > 0.9
    assert d1.split == "test" and d1.balanced_accuracy > 0.9 and d1.converged
    assert abs(d2.unit[3]) > 0.8 and 0.55 < d2.balanced_accuracy < 0.85
    # Overlapping classes put far more training points inside the margin.
    assert 0 < d1.n_support < d2.n_support <= 800
    assert d1.n_positive == int(y[:800].sum()) and d1.n_train == 800
    (d3,) = svm_directions(u2, y2, ["train-only"])
    assert d3.split == "train" and d3.accuracy == d3.train_accuracy
    with pytest.raises(ValueError, match="one class"):
        svm_directions(u2, np.zeros(1200, dtype=int), ["empty"])
    with pytest.raises(ValueError, match="0/1"):
        svm_directions(u2, 2 * y2 - 1, ["pm1"])


def test_mean_difference_directions() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random((2000, 2)) < 0.5).astype(int)
    u = rng.normal(size=(2000, 6)) + 2.0 * a[:, :1] * np.eye(6)[1] - 1.5 * a[:, 1:] * np.eye(6)[4]
    dirs = mean_difference_directions(u, a)
    assert dirs.shape == (2, 6)
    assert dirs[0, 1] == pytest.approx(2.0, abs=0.15) and dirs[1, 4] == pytest.approx(
        -1.5, abs=0.15
    )
    assert cosine_similarity(dirs[0], np.eye(6)[1]) > 0.98


def test_manipulate_shapes_and_norms() -> None:
    u = torch.randn(5, 7, generator=_gen(10))
    v = np.arange(1.0, 8.0)
    out = manipulate(u, v)
    assert out.shape == (5, 20, 7) and out.dtype == u.dtype
    alphas = np.linspace(-20, 20, 20)
    step = out - u[:, None]
    np.testing.assert_allclose(step.norm(dim=2)[0].numpy(), np.abs(alphas), rtol=1e-5)
    unit = torch.as_tensor(v / np.linalg.norm(v), dtype=u.dtype)
    torch.testing.assert_close(step[2, -1] / 20.0, unit)
    one = manipulate(u[0], torch.as_tensor(v), alphas=[0.0, 1.0])
    assert one.shape == (2, 7)
    torch.testing.assert_close(one[0], u[0])
    with pytest.raises(ValueError, match="direction"):
        manipulate(u, np.zeros(7))
    with pytest.raises(ValueError, match="direction"):
        manipulate(u, np.ones(6))


def test_monotonic_fraction_on_hand_made_rows() -> None:
    rows = [[0.1, 0.2, 0.3], [0.1, 0.1, 0.9], [0.5, 0.4, 0.9], [0.9, 0.5, 0.1]]
    assert monotonic_fraction(rows) == 0.5
    assert monotonic_fraction(rows, tol=0.1) == 0.75
    with pytest.raises(ValueError, match="scores"):
        monotonic_fraction([[1.0], [2.0]])


# ----------------------------------------------------------------------------- class fits


def _numerical_map(x: torch.Tensor, prior: dict) -> tuple[np.ndarray, np.ndarray]:
    """Maximize the log posterior (mu, lambda) per dimension with scipy, in (mu, log lambda)
    coordinates (a reparameterization of the argmax: no Jacobian term is added)."""
    mus, lams = [], []
    for j in range(x.shape[1]):
        col = x[:, j : j + 1]

        def neg(p: np.ndarray, col=col) -> tuple[float, np.ndarray]:
            t = torch.tensor(p, dtype=F64, requires_grad=True)
            val = -normal_gamma_log_posterior(col, t[:1], t[1:].exp(), **prior).sum()
            val.backward()
            return float(val.detach()), t.grad.numpy()

        start = np.array([float(col.mean()) + 0.3, 0.0])
        res = optimize.minimize(neg, start, jac=True, method="BFGS", options={"gtol": 1e-11})
        mus.append(res.x[0])
        lams.append(math.exp(res.x[1]))
    return np.array(mus), np.array(lams)


@pytest.mark.parametrize(
    "prior",
    [{}, {"m0": 0.7, "kappa0": 3.0, "a0": 2.0, "b0": 0.5}, {"m0": -2.0, "kappa0": 0.1}],
    ids=["seed-prior", "informative", "far-mean"],
)
def test_normal_gamma_map_is_the_numerical_posterior_mode(prior: dict) -> None:
    x = 1.3 + 0.6 * torch.randn(25, 3, generator=_gen(11), dtype=F64)
    fit = normal_gamma_map(x, **prior)
    mu, lam = _numerical_map(x, prior)
    np.testing.assert_allclose(fit.mean.numpy(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fit.precision.numpy(), lam, rtol=1e-5)
    assert isinstance(fit, DiagonalGaussianFit) and fit.n == 25


def test_normal_gamma_log_posterior_against_scipy() -> None:
    x = torch.randn(9, 2, generator=_gen(12), dtype=F64)
    mu, lam = torch.tensor([0.2, -0.4], dtype=F64), torch.tensor([1.5, 0.7], dtype=F64)
    m0, k0, a0, b0 = 0.3, 2.0, 1.5, 0.8
    got = normal_gamma_log_posterior(x, mu, lam, m0, k0, a0, b0).numpy()
    want = (
        stats.norm.logpdf(x.numpy(), mu.numpy(), 1 / np.sqrt(lam.numpy())).sum(0)
        + stats.norm.logpdf(mu.numpy(), m0, 1 / np.sqrt(k0 * lam.numpy()))
        + stats.gamma.logpdf(lam.numpy(), a0, scale=1 / b0)
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_seed_bias_bug_in_the_posterior_mean_fails_the_check() -> None:
    """The seed's code computed m_N = (kappa0 + N xbar)/(kappa0 + N): wrong unless m0 = 1."""
    x = 1.3 + 0.6 * torch.randn(25, 3, generator=_gen(11), dtype=F64)
    n, xbar = 25, x.mean(0).numpy()
    for m0 in (0.0, 3.0):
        prior = {"m0": m0, "kappa0": 1.0}
        mu, _ = _numerical_map(x, prior)
        buggy = (1.0 + n * xbar) / (1.0 + n)
        assert np.abs(buggy - mu).min() > 1e-2
        np.testing.assert_allclose(normal_gamma_map(x, **prior).mean.numpy(), mu, atol=1e-6)
    # With m0 = 1 the bug is invisible, which is how it could go unnoticed.
    mu1, _ = _numerical_map(x, {"m0": 1.0})
    np.testing.assert_allclose((1.0 + n * xbar) / (1.0 + n), mu1, atol=1e-6)


def test_seed_precision_rule_is_the_marginal_gamma_mode() -> None:
    x = torch.randn(30, 2, generator=_gen(13), dtype=F64)
    mode, seed = normal_gamma_map(x), normal_gamma_map(x, precision="seed")
    torch.testing.assert_close(seed.mean, mode.mean)
    torch.testing.assert_close(seed.precision, (mode.a_n - 1) / mode.b_n)
    torch.testing.assert_close(mode.precision, (mode.a_n - 0.5) / mode.b_n)
    for j in range(2):  # argmax of Gam(lambda | a_N, rate b_N)
        b = float(mode.b_n[j])
        res = optimize.minimize_scalar(
            lambda t, b=b: -stats.gamma.logpdf(math.exp(t), mode.a_n, scale=1 / b),
            bracket=(-3, 3),
            tol=1e-12,
        )
        assert math.exp(res.x) == pytest.approx(float(seed.precision[j]), rel=1e-5)
    with pytest.raises(ValueError, match="precision"):
        normal_gamma_map(x, precision="bogus")
    with pytest.raises(ValueError, match="a_N"):
        normal_gamma_map(x[:1], precision="seed")
    with pytest.raises(ValueError, match="kappa0"):
        normal_gamma_map(x, kappa0=0.0)


def test_student_t_fit_recovers_parameters_at_a_likelihood_maximum() -> None:
    true_df, loc, scale = 4.0, torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.5, 2.0, 1.0])
    t = torch.distributions.StudentT(true_df).sample((4000, 3)).to(F64) * scale + loc
    fit = student_t_fit(t)
    assert fit.converged and 3.0 < float(fit.df) < 5.5
    torch.testing.assert_close(fit.loc, loc.to(F64), atol=0.1, rtol=0)
    torch.testing.assert_close(fit.scale, scale.to(F64), atol=0.1, rtol=0.08)
    # The same density as flowscope's StudentT, and a stationary point of its likelihood.
    dist = fit.to_distribution()
    ll = dist.log_prob(t).mean()
    torch.testing.assert_close(ll, fit.log_prob(t).mean())
    grads = torch.autograd.grad(ll, [dist.loc, dist.log_scale, dist.log_df])
    assert max(float(gr.abs().max()) for gr in grads) < 1e-4
    per_dim = student_t_fit(t, shared_df=False)
    assert per_dim.df.shape == (3,) and (per_dim.df > 2.5).all() and (per_dim.df < 7).all()


def test_class_fit_classifier_confusion_and_balance() -> None:
    g = _gen(15)
    u0 = torch.randn(300, 5, generator=g, dtype=F64)
    u1 = torch.randn(100, 5, generator=g, dtype=F64) * 0.7 + 2.0
    u, y = torch.cat([u0, u1]), torch.tensor([0] * 300 + [1] * 100)
    for kind in ("gaussian", "student"):
        fits = class_fit_classifier(u, y, fit=kind)
        pred = classify(fits, u)
        assert (pred == y).double().mean() > 0.97
        assert class_log_probs(fits, u).shape == (400, 2)
    fits = class_fit_classifier(u, y, balance=True)
    assert [f.n for f in fits] == [100, 100]
    torch.testing.assert_close(fits[0].mean, normal_gamma_map(u0[:100]).mean)
    cm = confusion_matrix(y, classify(fits, u))
    np.testing.assert_array_equal(cm, sk_confusion_matrix(y.numpy(), classify(fits, u).numpy()))
    assert cm.sum() == 400
    with pytest.raises(ValueError, match="y_train"):
        class_fit_classifier(u, torch.ones(400, dtype=torch.long))
    with pytest.raises(ValueError, match="fit"):
        class_fit_classifier(u, y, fit="mixture")


def test_sample_from_fit_temperature_and_seed() -> None:
    x = 3.0 + 2.0 * torch.randn(2000, 4, generator=_gen(16), dtype=F64)
    fit = normal_gamma_map(x)
    u, log_pc = sample_from_fit(fit, 5000, temperature=0.7, seed=1)
    assert u.shape == (5000, 4) and u.dtype == torch.float32 and log_pc.shape == (5000,)
    torch.testing.assert_close(u.double().std(0), 0.7 * fit.std, rtol=0.05, atol=0)
    torch.testing.assert_close(log_pc, fit.log_prob(u.double()), rtol=1e-5, atol=1e-4)
    u2, _ = sample_from_fit(fit, 5000, temperature=0.7, seed=1)
    assert torch.equal(u, u2)
    tfit = student_t_fit(x)
    ut, lt = sample_from_fit(tfit, 100, seed=2, dtype=F64)
    assert ut.shape == (100, 4) and torch.isfinite(lt).all()
    with pytest.raises(ValueError, match="temperature"):
        sample_from_fit(fit, 3, temperature=0.0)


# ----------------------------------------------------------------------------- (non-)unimodality


def _mixture(n: int, d: int, sep: float, k: int, seed: int, dims: int = 2) -> torch.Tensor:
    """N(0, I) plus ``k`` equally spaced modes ``sep`` apart along the first ``dims`` axes."""
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    c = torch.randint(0, k, (n,), generator=g).to(F64)
    x[:, :dims] += ((c - (k - 1) / 2) * sep)[:, None]
    return x


@pytest.fixture(scope="module")
def synthetic_latents() -> dict[str, torch.Tensor]:
    g = _gen(17)
    n, d = 1000, 4
    return {
        "gaussian": torch.randn(n, d, generator=g, dtype=F64),
        "student_t3": torch.distributions.StudentT(3.0).sample((n, d)).to(F64),
        "bimodal_sep4": _mixture(n, d, 4.0, 2, 18),
        "bimodal_sep6": _mixture(n, d, 6.0, 2, 19),
        "trimodal_sep5": _mixture(n, d, 5.0, 3, 20),
    }


def test_multimodality_gain_ranks_synthetic_latents(synthetic_latents) -> None:
    s = {k: multimodality_gain(v) for k, v in synthetic_latents.items()}
    unimodal = max(s["gaussian"], s["student_t3"])
    assert unimodal < 0.02  # heavy tails are NOT counted as modes
    assert s["bimodal_sep4"] > unimodal + 0.2
    assert s["trimodal_sep5"] > unimodal + 0.2
    assert s["bimodal_sep6"] > s["bimodal_sep4"]  # more separated modes score higher
    axes = multimodality_per_dim(synthetic_latents["bimodal_sep6"], basis="axes")
    assert axes.shape == (4,) and (axes[:2] > 0.2).all() and (axes[2:] == 0).all()


def test_multimodality_pca_basis_finds_oblique_clusters() -> None:
    # Two clusters 6 apart along the diagonal of R^16: each coordinate sees a separation of
    # 6/4 = 1.5 < 2 standard deviations (a unimodal marginal); the principal axis sees 6.
    g = _gen(21)
    c = torch.randint(0, 2, (1000,), generator=g).to(F64) - 0.5
    x = torch.randn(1000, 16, generator=g, dtype=F64) + 6.0 * c[:, None] / 4.0
    assert multimodality_gain(x, basis="pca") > 0.3
    assert multimodality_gain(x, basis="axes") < 0.02
    top = multimodality_per_dim(x, max_dims=2)
    assert top.shape == (2,) and float(top.sum()) == pytest.approx(multimodality_gain(x), rel=1e-6)
    with pytest.raises(ValueError, match="max_dims"):
        multimodality_per_dim(x, basis="axes", max_dims=2)


def test_thesis_metric_measures_tails_not_modes(synthetic_latents) -> None:
    """Seed 000 section 6.1's Student-t vs Gaussian divergence, validated where the truth is
    known: it sees heavy tails, and is blind to (light-tailed) bimodality."""
    s = {k: non_unimodality(v) for k, v in synthetic_latents.items()}
    assert abs(s["gaussian"]) < 0.01
    assert s["student_t3"] > 0.05
    for k in ("bimodal_sep4", "bimodal_sep6", "trimodal_sep5"):
        assert abs(s[k]) < 0.01 and s[k] < s["student_t3"]
