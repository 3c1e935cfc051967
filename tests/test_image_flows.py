"""Image flows: glow / realnvp_image, multi-scale latents, 1x1 conv cache, dequantization, bits/dim.

The transform-level properties (round trip, log-det vs autograd Jacobian, gradients, state dict)
are in tests/cases/image.py; this file checks what the harness cannot: the models on real-sized
images, training, sampling, the eval cache, the variational noise density and the errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from flowscope.metrics import bits_per_dim, importance_weighted_log_prob
from flowscope.models import glow, realnvp_image
from flowscope.transforms import (
    Compose,
    InvertibleConv1x1,
    MultiScale,
    Squeeze,
    UniformDequantization,
    VariationalDequantization,
)
from flowscope.transforms.coupling import checkerboard_mask


def _digits(n: int) -> torch.Tensor:
    """The first ``n`` scikit-learn digits as ``(n, 1, 8, 8)`` floats with 17 levels (0..16)."""
    return torch.as_tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1)


def _perturb(module: torch.nn.Module, scale: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _tiny_glow(shape=(1, 8, 8), quanta=17, **kwargs):
    kwargs = {"steps": 2, "hidden": 16, **kwargs}
    return glow(shape, quanta=quanta, **kwargs)


# --- building and evaluating -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "quanta", "levels"), [((1, 8, 8), 17, 3), ((3, 8, 8), 256, 3), ((1, 28, 28), 256, 2)]
)
def test_glow_builds_and_bits_per_dim_is_sane_at_init(shape, quanta, levels) -> None:
    flow = _tiny_glow(shape, quanta, levels=levels, steps=1)
    x = torch.randint(0, quanta, (4, *shape)).float()
    log_px = flow.log_prob(x)
    assert log_px.shape == (4,)
    bpd = bits_per_dim(log_px, math.prod(shape))
    # At init ActNorm standardizes the logit pixels: close to the uniform model's log2(quanta).
    assert torch.all((bpd > 0.5 * math.log2(quanta)) & (bpd < 2 * math.log2(quanta))), bpd
    u, _ = flow.encode(x)
    assert u.shape == (4, math.prod(shape))


def test_glow_synthfaces_size_and_realnvp_image_build() -> None:
    flow = glow((3, 32, 32), levels=3, steps=1, hidden=8)
    assert flow.log_prob(torch.randint(0, 256, (2, 3, 32, 32)).float()).shape == (2,)
    flow = realnvp_image((1, 8, 8), levels=3, hidden=8, quanta=17)
    lp = flow.log_prob(_digits(4))
    assert torch.isfinite(lp).all() and lp.shape == (4,)


def test_glow_decode_inverts_encode_in_float32_after_perturbing() -> None:
    flow = _tiny_glow((3, 8, 8), 256, dequantization=UniformDequantization(256, seed=3))
    x = torch.randint(0, 256, (8, 3, 8, 8)).float()
    flow.log_prob(x)  # ActNorm's data-dependent initialization
    _perturb(flow.transform, 0.02)
    flow.eval()
    with torch.no_grad():
        u, _ = flow.encode(x)
        assert torch.equal(flow.decode(u), x)
        # The continuous part (logit + multi-scale flow) on the dequantized pixels.
        y, _ = flow.transform[0](x)
        body = Compose(*flow.transform.transforms[1:])
        v, ladj = body(y)
        y_back, ladj_back = body.inverse(v)
    assert (y_back - y).abs().max() < 1e-4
    torch.testing.assert_close(ladj_back, -ladj, rtol=1e-4, atol=1e-2)


def test_a_few_adam_steps_on_digits_lower_the_loss() -> None:
    flow = _tiny_glow(levels=2)
    data = _digits(64)

    def loss() -> float:
        torch.manual_seed(1234)  # the same dequantization noise for both evaluations
        with torch.no_grad():
            return bits_per_dim(flow.log_prob(data), 64).mean().item()

    flow.log_prob(data)  # ActNorm's data-dependent initialization
    before = loss()
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        flow.loss(data).backward()
        optimizer.step()
    after = loss()
    assert after < before - 0.2, (before, after)


def test_tempered_samples_are_images_of_the_right_shape_and_levels() -> None:
    flow = _tiny_glow()
    flow.log_prob(_digits(16))
    flow.eval()
    with torch.no_grad():
        cold = flow.sample(6, temperature=0.7)
        for t in (0.01, 1.0):
            u = flow.base.sample(500, temperature=t)
            assert abs(u.std().item() - t) < 0.05 * t
    assert cold.shape == (6, 1, 8, 8)
    assert torch.equal(cold, cold.round()) and cold.min() >= 0 and cold.max() <= 16


def test_diagonal_base_has_learned_parameters_that_train() -> None:
    flow = _tiny_glow(base="diagonal")
    params = dict(flow.base.named_parameters())
    assert set(params) == {"loc", "log_scale"} and params["loc"].shape == (64,)
    before = params["loc"].detach().clone()
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    flow.loss(_digits(32)).backward()
    assert params["loc"].grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(params["loc"], before)


# --- multi-scale latent ----------------------------------------------------------------------


def test_multiscale_latent_is_flat_in_documented_order() -> None:
    # Squeeze-only levels make the expected latent computable by hand.
    ms = MultiScale([Compose(Squeeze()), Compose(Squeeze())], (1, 4, 4))
    x = torch.randn(2, 1, 4, 4)
    u, ladj = ms(x)
    s0 = F.pixel_unshuffle(x, 2)  # (2, 4, 2, 2): keep channels 0-1, factor out 2-3
    s1 = F.pixel_unshuffle(s0[:, :2], 2)  # (2, 8, 1, 1)
    expected = torch.cat([s0[:, 2:].flatten(1), s1.flatten(1)], dim=1)
    assert torch.equal(u, expected) and torch.equal(ladj, torch.zeros(2))
    assert ms.latent_shapes == [(2, 2, 2), (8, 1, 1)]
    pieces = ms.unflatten(u)
    assert torch.equal(pieces[0], s0[:, 2:]) and torch.equal(pieces[1], s1)
    assert torch.equal(ms.inverse(u)[0], x)


def test_split_prior_starts_standard_and_then_standardizes_the_factored_half() -> None:
    flow = _tiny_glow(levels=2, split_prior=True)
    ms = flow.transform[2]
    assert ms.split_prior and len(ms.levels) == 2
    prior = ms.transforms[1].transform[1]  # level 0: Compose(level, prior)
    h = torch.randn(5, 4, 4, 4)
    out, ladj = prior(h)  # zero-initialized: N(0, I) on the factored half, i.e. the identity
    assert torch.equal(out, h) and torch.equal(ladj, torch.zeros(5))
    x = _digits(8)
    flow.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        u1, _ = flow.encode(x)
        _perturb(prior, 0.1)
        out, ladj = prior(h)
        torch.manual_seed(0)
        u2, _ = flow.encode(x)
    # eps = (z - mu(h)) / sigma(h): the factored channels 2-3 move, the kept channels 0-1 don't.
    assert torch.equal(out[:, :2], h[:, :2]) and not torch.allclose(out[:, 2:], h[:, 2:])
    assert not torch.allclose(ladj, torch.zeros(5))
    n_factored = math.prod(ms.latent_shapes[0])
    assert not torch.allclose(u2[:, :n_factored], u1[:, :n_factored])
    assert torch.equal(u2[:, n_factored:], u1[:, n_factored:])


# --- invertible 1x1 convolution --------------------------------------------------------------


def test_invconv_eval_cache_is_reused_and_invalidated_by_an_optimizer_step(monkeypatch) -> None:
    conv = InvertibleConv1x1(4, init="rotation", seed=0)
    x = torch.randn(3, 4, 5, 5)
    conv.eval()
    calls = []
    assemble = conv._assemble
    monkeypatch.setattr(conv, "_assemble", lambda: calls.append(1) or assemble())
    with torch.no_grad():
        y1, _ = conv(x)
        conv(x)
        conv.inverse(y1)
    assert len(calls) == 1  # assembled once for three eval calls
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.05)
    (conv(x)[0].pow(2).mean() - conv(x)[1].mean() / 100).backward()  # grad mode: no cache
    optimizer.step()
    with torch.no_grad():
        y2, ladj2 = conv(x)
        weight, _, logdet = assemble()
        expected = F.conv2d(x, weight[:, :, None, None])
        x_back, _ = conv.inverse(y2)
    assert not torch.allclose(y2, y1)
    torch.testing.assert_close(y2, expected)
    torch.testing.assert_close(ladj2, (25 * logdet).expand(3))
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)


def test_invconv_permutation_init_is_a_permutation_and_rotation_is_orthogonal() -> None:
    w = InvertibleConv1x1(6, seed=0)._assemble()[0]
    assert torch.equal(w.abs().sum(0), torch.ones(6)) and torch.equal(w.abs().sum(1), torch.ones(6))
    assert not torch.equal(w, torch.eye(6))
    w = InvertibleConv1x1(6, init="rotation", seed=0)._assemble()[0]
    torch.testing.assert_close(w @ w.T, torch.eye(6), atol=1e-5, rtol=0)


# --- dequantization --------------------------------------------------------------------------


def test_uniform_dequantization_noise_and_inverse() -> None:
    deq = UniformDequantization(17)
    x = torch.randint(0, 17, (4, 1, 8, 8)).float()
    y1, ladj = deq.eval()(x)
    y2, _ = deq(x)
    assert not torch.equal(y1, y2)  # fresh noise at every call, eval mode included
    assert torch.all((y1 * 17 >= x) & (y1 * 17 < x + 1))
    torch.testing.assert_close(ladj, torch.full((4,), -64 * math.log(17)))
    assert torch.equal(deq.inverse(y1)[0], x)
    seeded = UniformDequantization(17, seed=5)
    assert torch.equal(seeded(x)[0], seeded(x)[0])
    assert torch.equal(seeded(x[:1])[0], seeded(x)[0][:1])  # independent of the batch


def test_variational_dequantization_density_integrates_to_one() -> None:
    deq = VariationalDequantization((1, 1, 2), levels=3, steps=2, hidden=8).double()
    _perturb(deq, 0.3)
    n = 200
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    u = torch.cartesian_prod(grid, grid).reshape(-1, 1, 1, 2)
    for pixels in ([0.0, 2.0], [1.0, 1.0]):
        x = torch.tensor(pixels, dtype=torch.float64).reshape(1, 1, 1, 2).expand_as(u)
        with torch.no_grad():
            q = deq.log_noise_density(x, u).exp()
        assert abs(q.mean().item() - 1.0) < 0.02, q.mean()


def test_squeezed_variational_dequantization_density_integrates_to_one() -> None:
    # (1, 2, 2) pixels: the squeezed noise flow acts on (8, 1, 1); midpoint rule on (0, 1)^4.
    deq = VariationalDequantization((1, 2, 2), levels=3, steps=2, hidden=8, squeeze=True)
    deq = deq.double()
    _perturb(deq, 0.3)
    n = 20
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    u = torch.cartesian_prod(grid, grid, grid, grid).reshape(-1, 1, 2, 2)
    for pixels in ([0.0, 2.0, 1.0, 0.0], [1.0, 1.0, 2.0, 2.0]):
        x = torch.tensor(pixels, dtype=torch.float64).reshape(1, 1, 2, 2).expand_as(u)
        with torch.no_grad():
            q = deq.log_noise_density(x, u).exp()
        assert abs(q.mean().item() - 1.0) < 0.02, q.mean()


@pytest.mark.parametrize("squeeze", [False, True])
def test_variational_dequantization_forward_inverse_and_gradients(squeeze: bool) -> None:
    shape = (2, 4, 2) if squeeze else (2, 3, 3)
    deq = VariationalDequantization(shape, levels=5, steps=2, hidden=8, squeeze=squeeze).double()
    _perturb(deq, 0.1)
    x = torch.randint(0, 5, (4, *shape)).double()
    y, ladj = deq(x)
    x_back, ladj_back = deq.inverse(y)
    assert torch.equal(x_back, x)
    torch.testing.assert_close(ladj_back, -ladj)
    u = y * 5 - x
    expected = -math.prod(shape) * math.log(5) - deq.log_noise_density(x, u)
    torch.testing.assert_close(ladj, expected)
    ladj.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deq.parameters())
    flow = _tiny_glow(dequantization={"kind": "variational", "squeeze": squeeze, "hidden": 8})
    assert flow.transform[0].squeeze is squeeze
    flow.loss(_digits(8)).backward()
    grads = [p.grad for p in flow.transform[0].noise_flow.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_squeezed_noise_flow_splits_pixels_as_the_checkerboard() -> None:
    # In the squeezed layout the coupling must transform exactly the checkerboard's pixels.
    shape = (1, 4, 4)
    for k in range(2):
        deq = VariationalDequantization(shape, levels=4, steps=2, hidden=4, squeeze=True)
        coupling = deq.noise_flow[k]
        _perturb(coupling, 1.0)
        joint = torch.randn(3, 8, 2, 2)
        out, _ = coupling(joint)
        moved = F.pixel_shuffle((out != joint).float(), 2)[:, 1].bool()  # the v channel
        expected = ~checkerboard_mask(shape, flip=k % 2 == 1)[0]
        assert torch.equal(moved, expected.expand_as(moved))


def test_bits_per_dim() -> None:
    d = 3 * 4 * 4
    torch.testing.assert_close(
        bits_per_dim(torch.tensor([-d * math.log(256.0)]), d), torch.tensor([8.0])
    )
    assert bits_per_dim(-d * math.log(2.0), d).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(torch.zeros(2), 0)


# --- errors ----------------------------------------------------------------------------------


def test_clear_errors() -> None:
    flow = _tiny_glow()
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 1, 8, 8\)"):
        flow.log_prob(torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match=r"divisible by 2\*\*3 = 8.*at most 2"):
        glow((1, 28, 28), levels=3)
    with pytest.raises(ValueError, match="divisible by 2"):
        Squeeze(shape=(1, 5, 4))
    with pytest.raises(ValueError, match="x: .*divisible by 2"):
        Squeeze()(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError, match="integer pixel values in 0..16"):
        flow.log_prob(_digits(2) / 16)  # rescaled to [0, 1]: not the raw levels
    with pytest.raises(ValueError, match="integer pixel values in 0..255"):
        UniformDequantization(256)(torch.full((1, 3), 256.0))
    with pytest.raises(ValueError, match="dequantization"):
        glow((1, 8, 8), dequantization="gaussian")
    with pytest.raises(ValueError, match="kind: 'variational'"):
        glow((1, 8, 8), dequantization={"kind": "uniform"})
    with pytest.raises(ValueError, match=r"unknown options \['width'\]"):
        glow((1, 8, 8), dequantization={"kind": "variational", "width": 8})
    with pytest.raises(ValueError, match="even height and width"):
        VariationalDequantization((1, 3, 4), squeeze=True)
    with pytest.raises(ValueError, match="squeeze: expected True or False"):
        VariationalDequantization((1, 4, 4), squeeze=1)
    with pytest.raises(ValueError, match="init"):
        InvertibleConv1x1(3, init="random")
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 3, H, W\)"):
        InvertibleConv1x1(3)(torch.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match="levels"):
        MultiScale([], (1, 4, 4))
    with pytest.raises(ValueError, match="levels"):
        UniformDequantization(1)


# --- the couplings' scale (bounded inverse) ------------------------------------------------------


def _couplings(flow):
    from flowscope.transforms import Coupling

    return [m for m in flow.modules() if isinstance(m, Coupling)]


def _max_inverse_log_scale(flow) -> float:
    """Largest per-entry inverse log-scale over the couplings, on far-off-data inputs with
    perturbed (not identity) conditioners: how much one coupling can amplify when decoding."""
    torch.manual_seed(0)
    _perturb(flow, 0.5)
    worst = 0.0
    with torch.no_grad():
        for c in _couplings(flow):
            y = 30.0 * torch.randn(8, *c.event_shape)
            _, ladj = c.inverse(y)
            transformed = int((~c.mask).sum())
            worst = max(worst, float(ladj.max()) / transformed)
    return worst


def test_glow_scale_defaults_to_seed_sigmoid_and_tanh_bounds_the_inverse() -> None:
    seed = _tiny_glow((3, 8, 8), 256, levels=2)
    assert {c.transformer.scale for c in _couplings(seed)} == {"sigmoid"}
    bounded = _tiny_glow((3, 8, 8), 256, levels=2, scale="tanh", clamp=1.0)
    couplings = _couplings(bounded)
    assert len(couplings) == 4 and {c.transformer.scale for c in couplings} == {"tanh"}
    assert {c.transformer.clamp for c in couplings} == {1.0}
    # Same parameter count: only the scale's squashing function differs.
    assert sum(p.numel() for p in seed.parameters()) == sum(p.numel() for p in bounded.parameters())
    # Seed 000's sigmoid lets the inverse amplify by up to 1000x (log 6.9) per coupling; the
    # soft clamp keeps every entry's inverse log-scale below clamp = 1.
    assert _max_inverse_log_scale(seed) > 2.0
    assert _max_inverse_log_scale(bounded) <= 1.0 + 1e-6


def test_glow_scale_options_are_checked() -> None:
    with pytest.raises(ValueError, match="scale: expected 'tanh' or 'sigmoid', got 'exp'"):
        glow((1, 8, 8), scale="exp")
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="clamp: expected a finite number > 0"):
            glow((1, 8, 8), scale="tanh", clamp=bad)


class _ExponentialPixel(torch.nn.Module):
    """One "pixel" x in {0, 1, ...} under uniform dequantization of the density 2 exp(-2 y):
    ``log_prob`` is the one-draw bound ``log p(x + u)``, u ~ U(0, 1); the exact discrete
    probability is ``P(x) = exp(-2 x) (1 - exp(-2))``."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        y = x + torch.rand_like(x, dtype=torch.float64)
        return math.log(2.0) - 2.0 * y


def test_importance_weighted_bound_tightens_to_the_discrete_likelihood() -> None:
    model, x = _ExponentialPixel(), torch.zeros(4000, dtype=torch.float64)
    exact = math.log(1 - math.exp(-2.0))  # -0.1454
    torch.manual_seed(0)
    one = importance_weighted_log_prob(model, x, 1).mean().item()
    ten = importance_weighted_log_prob(model, x, 10).mean().item()
    many = importance_weighted_log_prob(model, x[:200], 2000).mean().item()
    assert one == pytest.approx(math.log(2.0) - 1.0, abs=0.02)  # E log p(u) = log 2 - 2 E[u]
    assert one < ten < many <= exact + 0.002
    assert many == pytest.approx(exact, abs=0.005)
    # Deterministic: the same draws give logmeanexp of the one-draw values, which is >= their mean.
    torch.manual_seed(1)
    draws = torch.stack([model.log_prob(x[:50]) for _ in range(7)])
    torch.manual_seed(1)
    iw = importance_weighted_log_prob(model, x[:50], 7)
    torch.testing.assert_close(iw, torch.logsumexp(draws, 0) - math.log(7))
    assert bool((iw >= draws.mean(0) - 1e-12).all())
    with pytest.raises(ValueError, match="samples: expected an int >= 1, got 0"):
        importance_weighted_log_prob(model, x, 0)


def test_evaluate_image_reports_the_importance_weighted_bpd() -> None:
    from flowscope.data.images import ImageDataset
    from flowscope.runs import evaluate_image

    torch.manual_seed(0)
    flow = _tiny_glow(dequantization="variational")
    data = ImageDataset(_digits(16).to(torch.uint8), None, None, [], "test", "digits", levels=17)
    out = evaluate_image(flow, data, importance_samples=4)
    assert out["importance_samples"] == 4
    assert math.isfinite(out["test_bpd_iw"]) and out["test_bpd_iw_se"] > 0
    assert "test_bpd_iw" not in evaluate_image(flow, data)
    with pytest.raises(ValueError, match="importance_samples: expected an int >= 1, got 0"):
        evaluate_image(flow, data, importance_samples=0)
