"""MixtureOfFlows (VMoNF, seed 001 chapter 4): exact ELBO, batched components, training, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowscope import models
from flowscope._checks import check_finite
from flowscope.mixture import (
    MixtureOfFlows,
    SemiSupervised,
    check_labels,
    consistency_penalty,
    default_posterior,
    elbo,
    exact_posterior,
    mixture_log_prob,
    semi_supervised_dataset,
    supervised_loss,
)
from flowscope.mixture_batched import FlowList, StackedFlows
from flowscope.train import Trainer
from flowscope.transforms.packing import unpacked_grads


def _flows(k: int, kind: str = "realnvp", features: int = 2, spread: float = 0.3) -> list:
    """K small flows with non-trivial (non-identity) random parameters."""
    out = []
    for _ in range(k):
        if kind == "realnvp":
            f = models.realnvp(features, layers=4, hidden=8, net_layers=1)
        else:
            f = models.maf(features, layers=2, hidden=8, net_layers=1)
        with torch.no_grad():
            for p in f.parameters():
                p.normal_(0.0, spread)
        out.append(f)
    return out


class _ExactPosterior(nn.Module):
    """A posterior that returns the exact log-posterior of a mixture's components as logits."""

    def __init__(self) -> None:
        super().__init__()
        self.mixture: list[MixtureOfFlows] = []  # a list: not a registered submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mixture:  # the construction-time size probe
            return x.new_zeros(x.shape[0], 3)
        m = self.mixture[0]
        return exact_posterior(m.components.log_prob(x), m.log_weights)


# ----------------------------------------------------------------------------- ELBO


def test_elbo_pure_function_bound_and_equality():
    log_pk = torch.randn(64, 4, dtype=torch.float64) * 3
    log_pi = torch.log_softmax(torch.randn(4, dtype=torch.float64), 0)
    exact = mixture_log_prob(log_pk, log_pi)
    # q = exact posterior: the bound is tight (seed 001 eq. 4.2 with KL(q || p(z|x)) = 0).
    tight = elbo(log_pk, exact_posterior(log_pk, log_pi), log_pi)
    torch.testing.assert_close(tight, exact)
    # any other q: a strict lower bound, short by exactly KL(q || p(z|x)).
    log_q = torch.log_softmax(torch.randn(64, 4, dtype=torch.float64), -1)
    loose = elbo(log_pk, log_q, log_pi)
    assert (loose < exact).all()
    kl = (log_q.exp() * (log_q - exact_posterior(log_pk, log_pi))).sum(-1)
    torch.testing.assert_close(exact - loose, kl)
    # a hard q (q_k = 0 elsewhere) contributes 0, not NaN.
    hard = torch.full((1, 4), -math.inf, dtype=torch.float64)
    hard[0, 2] = 0.0
    assert torch.isfinite(elbo(log_pk[:1], hard, log_pi)).all()


def test_model_elbo_equals_log_prob_with_exact_posterior():
    posterior = _ExactPosterior()
    m = MixtureOfFlows(_flows(3), posterior=posterior, learn_weights=True, temperature=1.0)
    posterior.mixture.append(m)
    with torch.no_grad():
        m.weight_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    x = torch.randn(32, 2)
    assert m.temperature == 1.0  # step 0: T0 = 1, logits used as they are
    torch.testing.assert_close(m.elbo(x), m.log_prob(x), atol=1e-5, rtol=1e-5)
    m2 = MixtureOfFlows(_flows(3))  # a generic posterior network: a lower bound
    assert (m2.elbo(x) <= m2.log_prob(x) + 1e-5).all()


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("kind", ["realnvp", "maf"])
def test_batched_components_equal_a_loop(kind):
    flows = _flows(4, kind, features=3)
    stacked = MixtureOfFlows(flows, batched=True)
    looped = MixtureOfFlows(flows, batched=False)
    assert isinstance(stacked.components, StackedFlows)
    assert isinstance(looped.components, FlowList)
    x = torch.randn(16, 3)
    lp = stacked.component_log_prob(x)
    reference = torch.stack([f.log_prob(x) for f in flows], dim=1)
    assert lp.shape == (16, 4)
    torch.testing.assert_close(lp, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(looped.component_log_prob(x), reference)
    # The gradient reaching the stacked parameters is the per-component gradient, stacked.
    lp[:, 2].sum().backward()
    reference[:, 2].sum().backward()
    # (Per layer: both sides are packed, the holder into one (K, N) tensor.)
    for name, g in unpacked_grads(stacked.components.flow).items():
        torch.testing.assert_close(g[2], unpacked_grads(flows[2])[name])
        assert g[0].abs().max() == 0
    # component(k) is a standalone copy with component k's parameters.
    torch.testing.assert_close(stacked.component(1).log_prob(x), reference[:, 1].detach())


@pytest.mark.parametrize("kind", ["realnvp", "maf"])
def test_stacked_holder_packs_each_run_into_one_tensor(kind):
    # A training step pays per parameter tensor: the holder keeps a fused run's layers in ONE
    # (K, N) tensor, row k being component k's packed tensor.  Per-layer state dict keys and
    # shapes stay (K, *shape); checkpoints load across; Adam trains it as it trains the loop.
    import copy

    from flowscope.transforms.packing import layer_parameters

    flows = _flows(3, kind, features=3)
    bank = MixtureOfFlows(copy.deepcopy(flows), batched=True).components
    looped = MixtureOfFlows(copy.deepcopy(flows), batched=False).components
    transform_params = [p for n, p in bank.flow.named_parameters() if n.startswith("transform.")]
    single = [p for n, p in flows[0].named_parameters() if n.startswith("transform.")]
    assert len(single) == 1 and len(transform_params) == 1
    assert transform_params[0].shape == (3, single[0].numel())
    torch.testing.assert_close(
        transform_params[0][1],
        flows[1].get_parameter(
            [n for n, _ in flows[1].named_parameters() if n.startswith("transform.")][0]
        ),
    )
    state = bank.state_dict()
    expected = {"flow." + k: (3, *v.shape) for k, v in layer_parameters(flows[0]).items()}
    assert {k: tuple(v.shape) for k, v in state.items() if k in expected} == expected
    other = MixtureOfFlows(_flows(3, kind, features=3), batched=True).components
    other.load_state_dict(state)
    x = torch.randn(16, 3)
    torch.testing.assert_close(other.log_prob(x), bank.log_prob(x))
    assert len([n for n, _ in bank.component(2).named_parameters()]) == len(
        list(flows[2].named_parameters())
    )
    torch.testing.assert_close(bank.component(2).log_prob(x), flows[2].log_prob(x))
    # Three Adam steps on the packed holder and on the loop of flows: the same parameters.
    for b in (bank, looped):
        opt = torch.optim.Adam(b.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            (-b.log_prob(x).sum()).backward()
            opt.step()
    stacked_layers = layer_parameters(bank.flow)
    for k, f in enumerate(looped.flows):
        for name, p in layer_parameters(f).items():
            torch.testing.assert_close(stacked_layers[name][k], p, atol=1e-5, rtol=1e-5)


def test_stacked_maf_with_staircase_layers_equals_a_loop():
    # 200 inputs, 512 hidden units: the masked layers take the staircase kernel outside vmap;
    # stacked (vmap) components must give the same densities and gradients.
    from flowscope.transforms.autoregressive import _MaskedLinear

    flows = [models.maf(200, layers=1, hidden=512) for _ in range(2)]
    assert any(m.blocks is not None for m in flows[0].modules() if isinstance(m, _MaskedLinear))
    with torch.no_grad():
        for f in flows:
            for p in f.parameters():
                p.normal_(0.0, 0.02)
    stacked = MixtureOfFlows(flows, batched=True)
    x = torch.randn(8, 200)
    lp = stacked.component_log_prob(x)
    reference = torch.stack([f.log_prob(x) for f in flows], dim=1)
    torch.testing.assert_close(lp, reference, atol=1e-4, rtol=1e-5)
    lp[:, 1].sum().backward()
    reference[:, 1].sum().backward()
    for name, p in stacked.components.flow.named_parameters():
        torch.testing.assert_close(
            p.grad[1], flows[1].get_parameter(name).grad, atol=1e-4, rtol=1e-4
        )


def _vmapped(bank: StackedFlows, x: torch.Tensor) -> torch.Tensor:
    """The generic path: every component's layer-by-layer log_prob under vmap, ``(batch, K)``."""
    xs = x.expand(bank.num_components, *x.shape)
    return bank._map("log_prob", (xs,), (0,)).transpose(0, 1)


@pytest.mark.parametrize("kind", ["realnvp", "maf"])
def test_stacked_fused_run_equals_the_vmapped_path(kind):
    # RealNVP and small-MAF components are one fused run each: StackedFlows evaluates the run
    # on the stacked (K, ...) parameters without vmap.  Same densities and gradients (float64).
    bank = MixtureOfFlows(_flows(3, kind, features=3), batched=True).components.double()
    x = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    assert bank._fused_log_prob(x.expand(3, 16, 3)) is not None  # the path under test is used
    w = torch.randn(16, 3, dtype=torch.float64)
    params = list(bank.parameters())
    fused = bank.log_prob(x)
    reference = _vmapped(bank, x)
    torch.testing.assert_close(fused, reference)
    g_fused = torch.autograd.grad((fused * w).sum(), [x, *params])
    g_ref = torch.autograd.grad((reference * w).sum(), [x, *params])
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # inference: the run without saving anything, in chunks if large
        torch.testing.assert_close(bank.log_prob(x), reference.detach())
        big = torch.randn(6000, 3, dtype=torch.float64)
        assert 6000 > 2 * max(256, bank.flow.chunk_rows // 3)
        torch.testing.assert_close(bank.log_prob(big), _vmapped(bank, big))


def test_stacked_fused_sampling_equals_the_vmapped_decoder():
    from flowscope.transforms.fused import stacked_decoder

    bank = MixtureOfFlows(_flows(3, "realnvp", features=3), batched=True).components.double()
    u = torch.randn(3, 5000, 3, dtype=torch.float64)
    with torch.no_grad():
        decode = stacked_decoder(bank.flow.transform)
        assert decode is not None
        torch.testing.assert_close(decode(u), bank._map("decode", (u,), (0,)))
        draws = bank.sample_all(4000, temperature=0.5)  # chunked: 4000 > max(256, 8192 // 3)
    assert draws.shape == (3, 4000, 3) and torch.isfinite(draws).all()
    # With autograd on trainable parameters the run's inverse is not used (vmap path).
    assert stacked_decoder(bank.flow.transform) is None
    assert bank.sample_all(4, temperature=1.0).requires_grad
    # MAF components keep their one-coordinate-at-a-time sampler (vmap path), and no latent
    # is drawn for nothing before it: the same draws as the vmapped sampler from one seed.
    maf = MixtureOfFlows(_flows(2, "maf", features=3), batched=True).components
    with torch.no_grad():
        assert stacked_decoder(maf.flow.transform) is None
        torch.manual_seed(5)
        a = maf.sample_all(4)
        torch.manual_seed(5)
        b = maf._map("sample", (), (), randomness="different", n=4, temperature=1.0)
    assert a.shape == (2, 4, 3)
    torch.testing.assert_close(a, b)


def test_stacked_fused_run_second_derivatives():
    # create_graph=True differentiates the vmapped generic path instead (same values).
    bank = MixtureOfFlows(_flows(2, "realnvp"), batched=True).components.double()
    x = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    p = next(bank.parameters())
    outs = []
    for log_prob in (bank.log_prob, lambda t: _vmapped(bank, t)):
        (g_x,) = torch.autograd.grad(log_prob(x).sum(), x, create_graph=True)
        outs.append(torch.autograd.grad(g_x.pow(2).sum(), p)[0])
    torch.testing.assert_close(outs[0], outs[1])


def test_stacked_components_off_the_fused_run_use_vmap():
    # A learned base is not part of the run: vmap path, same numbers as the loop.
    flows = [models.realnvp(2, layers=2, hidden=8, base="diagonal") for _ in range(2)]
    m = MixtureOfFlows(flows, batched=True)
    x = torch.randn(6, 2)
    assert m.components._fused_log_prob(x.expand(2, 6, 2)) is None
    reference = torch.stack([f.log_prob(x) for f in flows], dim=1)
    torch.testing.assert_close(m.component_log_prob(x), reference, atol=1e-5, rtol=1e-5)


def test_stacked_components_with_their_own_orders_use_vmap():
    # MADEs with a random order per component: masks and orders are stacked buffers, which the
    # layers read under vmap; the fused run (one template's masks) must not be used.
    from flowscope.distributions import StandardNormal
    from flowscope.flow import Flow
    from flowscope.transforms import AffineTransformer, Compose, MaskedAutoregressive

    flows = [
        Flow(
            Compose([MaskedAutoregressive(3, AffineTransformer(), 8, 1, order="random", seed=s)]),
            StandardNormal(3),
        )
        for s in (0, 1)
    ]
    with torch.no_grad():
        for f in flows:
            for p in f.parameters():
                p.normal_(0.0, 0.3)
    m = MixtureOfFlows(flows, batched=True)
    assert m.components._stacked_buffers
    x = torch.randn(6, 3)
    assert m.components._fused_log_prob(x.expand(2, 6, 3)) is None
    reference = torch.stack([f.log_prob(x) for f in flows], dim=1)
    torch.testing.assert_close(m.component_log_prob(x), reference, atol=1e-5, rtol=1e-5)


def test_top_level_export():
    import flowscope

    assert flowscope.MixtureOfFlows is MixtureOfFlows
    assert "MixtureOfFlows" in flowscope.__all__


def test_different_architectures_fall_back_to_a_loop():
    flows = [models.realnvp(2, layers=2, hidden=8), models.maf(2, layers=2, hidden=8)]
    m = MixtureOfFlows(flows)
    assert isinstance(m.components, FlowList)
    assert m.component_log_prob(torch.randn(5, 2)).shape == (5, 2)
    with pytest.raises(ValueError, match="components"):
        MixtureOfFlows(flows, batched=True)


def test_checks_skip_inside_vmap_but_not_outside():
    with pytest.raises(ValueError, match="x: expected finite"):
        check_finite("x", torch.tensor([1.0, float("nan")]))
    # Inside vmap the value check (data-dependent control flow) is skipped, not an error.
    out = torch.func.vmap(lambda t: (check_finite("t", t), t * 2)[1])(torch.ones(3, 2))
    torch.testing.assert_close(out, torch.full((3, 2), 2.0))
    # ... and the mixture validates at its door instead.
    m = MixtureOfFlows(_flows(2))
    with pytest.raises(ValueError, match="x: expected finite"):
        m.log_prob(torch.tensor([[0.0, float("inf")]]))


# ----------------------------------------------------------------------------- inference


def test_responsibilities_predict_and_sampling_shapes():
    m = MixtureOfFlows(_flows(3, "maf"), learn_weights=True)
    x = torch.randn(20, 2)
    r = m.responsibilities(x)
    assert r.shape == (20, 3)
    torch.testing.assert_close(r.sum(-1), torch.ones(20))
    for by in ("posterior", "exact"):
        z = m.predict(x, by=by)
        assert z.shape == (20,) and z.dtype == torch.long
        assert ((z >= 0) & (z < 3)).all()
    torch.testing.assert_close(m.predict(x, by="exact"), r.argmax(-1))
    with torch.no_grad():
        xs, zs = m.sample(50)
        assert xs.shape == (50, 2) and zs.shape == (50,)
        assert set(zs.tolist()) <= {0, 1, 2}
        assert m.sample_component(2, 7).shape == (7, 2)
    with torch.no_grad():  # a component with all the weight gets all the samples
        m.weight_logits.copy_(torch.tensor([-50.0, 50.0, -50.0]))
        assert (m.sample(30)[1] == 1).all()


def test_sample_comes_from_the_right_component():
    # Two components shifted far apart: samples labeled k must lie near component k's mode.
    flows = _flows(2, spread=0.0)
    m = MixtureOfFlows(flows)
    with torch.no_grad():
        # The base is a fixed N(0, I): shift component 1 through its first coupling's bias.
        bias = m.components.flow.transform.transforms[0].net[-1].bias  # (K, out)
        bias[0].fill_(0.0)
        bias[1].fill_(0.0)
        bias[1, 1::2] = -20.0  # t of component 1: u = x + t  =>  x = u + 20 in dimension 0
        x, z = m.sample(200)
    assert (x[z == 1, 0] > 10).all() and (x[z == 0, 0].abs() < 10).all()


# ----------------------------------------------------------------------------- training


def _two_gaussians(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    centres = torch.tensor([[-4.0, 0.0], [4.0, 0.0]])
    return centres[y] + 0.5 * torch.randn(n, 2, generator=g), y


def test_tiny_mixture_separates_two_far_apart_gaussians():
    x, y = _two_gaussians()
    m = MixtureOfFlows(
        (lambda: models.realnvp(2, layers=2, hidden=8, net_layers=1), 2), posterior_hidden=16
    )
    Trainer(
        m,
        x,
        steps=300,
        batch_size=128,
        lr=1e-2,
        weight_decay=0.0,
        schedule="constant",
        progress=False,
    ).fit()
    m.eval()
    with torch.no_grad():
        for by in ("posterior", "exact"):
            pred = m.predict(x, by=by)
            accuracy = max((pred == y).float().mean(), (pred != y).float().mean())
            assert accuracy == 1.0
        assert m.step == 300 and m.temperature == pytest.approx(math.exp(-0.3))


def test_semi_supervised_cross_entropy_goes_down():
    x, y = _two_gaussians(64)
    m = MixtureOfFlows((lambda: models.realnvp(2, layers=2, hidden=8, net_layers=1), 2))
    objective = SemiSupervised(m)

    def cross_entropy() -> float:
        with torch.no_grad():
            return float(-m.log_q(x, temperature=1.0).gather(1, y[:, None]).mean())

    before = cross_entropy()
    Trainer(
        objective,
        (x, y),
        steps=60,
        batch_size=32,
        lr=1e-2,
        weight_decay=0.0,
        schedule="constant",
        progress=False,
    ).fit()
    after = cross_entropy()
    assert after < 0.5 * before  # the seed's sign error would have pushed it UP
    with torch.no_grad():
        assert (m.predict(x) == y).all()
    # Unlabeled rows (-1) contribute the negative ELBO; the mask says which is which.
    xs, ys = semi_supervised_dataset(x[:10], x[10:14], y[10:14], repeats=2)
    assert xs.shape == (18, 2) and (ys[:10] == -1).all() and (ys[10:] >= 0).all()
    rows, labeled, _ = objective.losses(xs, ys)
    torch.testing.assert_close(rows[:10], -m.elbo(xs[:10]))
    log_pk, log_q = m.component_log_prob(xs[10:]), m.log_q(xs[10:])
    torch.testing.assert_close(rows[10:], supervised_loss(log_pk, log_q, m.log_weights, ys[10:]))
    assert labeled.tolist() == [False] * 10 + [True] * 8


def test_consistency_penalty_is_a_kl_and_only_trains():
    log_q = torch.log_softmax(torch.randn(6, 3), -1)
    assert torch.allclose(consistency_penalty(log_q, log_q), torch.zeros(6), atol=1e-6)
    other = torch.log_softmax(torch.randn(6, 3), -1)
    assert (consistency_penalty(log_q, other) > 0).all()
    x = torch.randn(16, 2)
    m = MixtureOfFlows(_flows(2), consistency=5.0, consistency_noise=0.5)
    m.eval()  # evaluation: the plain negative ELBO, no penalty, no step
    torch.testing.assert_close(m.loss(x), -m.elbo(x).mean())
    m.train()
    torch.manual_seed(3)
    with_penalty = m.loss(x)
    assert with_penalty > -m.elbo(x).mean()  # a KL >= 0 added (strictly: q varies with x)
    # The seed's posterior (Linear-ReLU-BatchNorm blocks) is available and K-sized.
    seed_style = default_posterior(2, 3, hidden=8, layers=2, batch_norm=True)
    assert any(isinstance(mod, nn.BatchNorm1d) for mod in seed_style.modules())
    assert MixtureOfFlows(_flows(3), posterior=seed_style).predict(x).shape == (16,)


def test_learned_weights_receive_gradient():
    m = MixtureOfFlows(_flows(3), learn_weights=True, weights=[0.2, 0.3, 0.5])
    torch.testing.assert_close(m.log_weights.exp(), torch.tensor([0.2, 0.3, 0.5]))
    m.loss(torch.randn(8, 2)).backward()
    assert m.weight_logits.grad is not None and m.weight_logits.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- state


def test_state_dict_round_trip():
    m = MixtureOfFlows(_flows(3), learn_weights=True)
    m.step.fill_(1234)
    clone = MixtureOfFlows(_flows(3), learn_weights=True)
    clone.load_state_dict(m.state_dict())
    x = torch.randn(10, 2)
    torch.testing.assert_close(clone.log_prob(x), m.log_prob(x))
    torch.testing.assert_close(clone.elbo(x), m.elbo(x))
    assert clone.temperature == m.temperature == max(0.05, math.exp(-1.234))


def test_temperature_step_resumes_exactly(tmp_path):
    x, _ = _two_gaussians(256)

    def make() -> MixtureOfFlows:
        torch.manual_seed(1)
        return MixtureOfFlows((lambda: models.realnvp(2, layers=2, hidden=8, net_layers=1), 2))

    options = dict(batch_size=64, lr=1e-2, weight_decay=0.0, schedule="constant",
                   progress=False, eval_every=5)  # fmt: skip
    straight = make()
    Trainer(straight, x, steps=12, **options).fit()
    first = make()
    Trainer(first, x, steps=7, out_dir=tmp_path, checkpoint_every=7, **options).fit()
    resumed = make()
    Trainer(resumed, x, steps=12, out_dir=tmp_path, resume=True, **options).fit()
    assert int(resumed.step) == int(straight.step) == 12
    assert resumed.temperature == straight.temperature
    for a, b in zip(resumed.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b)
    # Evaluation does not advance the schedule.
    resumed.eval()
    resumed.loss(x[:8])
    assert int(resumed.step) == 12


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    factory = lambda: models.realnvp(2, layers=2, hidden=8)  # noqa: E731
    with pytest.raises(ValueError, match="K: expected an int >= 1"):
        MixtureOfFlows((factory, 0))
    with pytest.raises(ValueError, match="components: expected K >= 1"):
        MixtureOfFlows([])
    with pytest.raises(ValueError, match=r"components\[1\]: expected a flowscope Flow"):
        MixtureOfFlows([factory(), nn.Linear(2, 2)])
    with pytest.raises(ValueError, match=r"posterior: expected an output of shape \(batch, K\)"):
        MixtureOfFlows((factory, 3), posterior=nn.Linear(2, 4))
    with pytest.raises(ValueError, match="weights: expected 2 finite positive"):
        MixtureOfFlows((factory, 2), weights=[1.0, -1.0])
    m = MixtureOfFlows((factory, 3))
    with pytest.raises(ValueError, match=r"labels: expected -1 \(unlabeled\) or component"):
        SemiSupervised(m).loss((torch.randn(4, 2), torch.tensor([0, 1, 3, -1])))
    with pytest.raises(ValueError, match="labels: expected component indices in 0..2"):
        check_labels("labels", torch.tensor([0, -1]), 3)
    with pytest.raises(ValueError, match="labels: expected an integer tensor"):
        SemiSupervised(m).loss((torch.randn(2, 2), torch.tensor([0.0, 1.0])))
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 2\)"):
        m.log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match="k: expected a component index in 0..2"):
        m.sample_component(3, 5)
    with pytest.raises(ValueError, match="by: expected 'posterior' or 'exact'"):
        m.predict(torch.randn(2, 2), by="q")
    with pytest.raises(ValueError, match="temperature_min"):
        MixtureOfFlows((factory, 2), temperature_min=-1.0)
