"""Unit tests of the elementwise, linear and normalization transforms beyond the property test."""

from __future__ import annotations

import math

import pytest
import torch

from flowscope.transforms import (
    ActNorm,
    Affine,
    BatchNorm,
    LeakyReLU,
    Logit,
    LULinear,
    Permutation,
    PReLU,
    RandomPermutation,
    ReversePermutation,
    Sigmoid,
    Tanh,
)

# --- domains and argument errors ----------------------------------------------------------------


def test_logit_outside_unit_interval_names_x_and_interval() -> None:
    with pytest.raises(ValueError, match=r"^x: .*\(0\.0, 1\.0\).*1\.5"):
        Logit()(torch.tensor([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="^x: "):
        Logit()(torch.tensor([[0.0, 0.5]]))


def test_logit_with_squeeze_accepts_end_points_and_inverts() -> None:
    t = Logit(alpha=1e-5)
    x = torch.tensor([[0.0, 1.0, 0.25]], dtype=torch.float64)
    u, ladj = t(x)
    assert torch.isfinite(u).all() and torch.isfinite(ladj).all()
    torch.testing.assert_close(t.inverse(u)[0], x)
    with pytest.raises(ValueError, match="^x: "):
        t(torch.tensor([[1.01]]))


@pytest.mark.parametrize(
    ("transform", "bad"), [(Sigmoid(), 1.0), (Sigmoid(), -0.2), (Tanh(), 1.0), (Tanh(), -3.0)]
)
def test_bounded_inverses_check_their_domain(transform, bad: float) -> None:
    with pytest.raises(ValueError, match=r"^u: expected values in the open interval"):
        transform.inverse(torch.tensor([[0.0, bad]]))


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        Logit(alpha=1.0)
    with pytest.raises(ValueError, match="negative_slope"):
        LeakyReLU(0.0)
    with pytest.raises(ValueError, match="init"):
        PReLU(3, init=-1.0)
    with pytest.raises(ValueError, match="shape"):
        Affine((3, 0))
    with pytest.raises(ValueError, match="features"):
        LULinear(0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=0.0)


def test_wrong_event_shape_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^x: expected shape \(batch, 3\), got \(2, 4\)"):
        Affine(3)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"^u: "):
        LULinear(3).inverse(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"^x: "):
        ActNorm((2, 3, 3))(torch.zeros(2, 3, 3, 3))


@pytest.mark.parametrize(
    "perm",
    [torch.tensor([0, 0, 1]), torch.tensor([0, 1, 3]), torch.tensor([[0, 1]]), torch.tensor([0.0])],
    ids=["duplicate", "out-of-range", "2-d", "float"],
)
def test_permutation_validation(perm: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="^permutation: expected"):
        Permutation(perm)


def test_permutation_values_and_input_size_check() -> None:
    x = torch.arange(4.0).reshape(1, 4)
    assert ReversePermutation(4)(x)[0].tolist() == [[3.0, 2.0, 1.0, 0.0]]
    assert Permutation(torch.tensor([2, 0, 3, 1]))(x)[0].tolist() == [[2.0, 0.0, 3.0, 1.0]]
    assert torch.equal(
        RandomPermutation(6, seed=1).permutation, RandomPermutation(6, seed=1).permutation
    )
    with pytest.raises(ValueError, match=r"^x: expected shape \(batch, 4, \.\.\.\)"):
        ReversePermutation(4)(torch.zeros(2, 5))


# --- elementwise ---------------------------------------------------------------------------------


def test_affine_scalar_logdet_counts_every_coordinate() -> None:
    t = Affine((2, 3), per_dimension=False)
    with torch.no_grad():
        t.log_scale.fill_(0.5)
    _, ladj = t(torch.randn(4, 2, 3))
    torch.testing.assert_close(ladj, torch.full((4,), 3.0))
    assert sum(p.numel() for p in t.parameters()) == 2


def test_prelu_slope_stays_positive_after_a_huge_gradient_step() -> None:
    t = PReLU(3)
    opt = torch.optim.SGD(t.parameters(), lr=1e6)
    x = -torch.rand(64, 3) - 0.1  # all negative: every log-det term pulls the slope down
    opt.zero_grad()
    t(x)[1].sum().backward()
    opt.step()
    alpha = t.log_alpha().exp()
    assert (alpha > 0).all() and torch.isfinite(alpha).all()
    assert alpha.max() < 0.01  # the step really did push the slope to its floor
    u, ladj = t(x)
    x_back, ladj_inv = t.inverse(u)
    assert torch.isfinite(u).all() and torch.isfinite(ladj).all()
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_inv, -ladj)


def test_prelu_init_slope() -> None:
    t = PReLU(2, init=0.2)
    u, ladj = t(torch.tensor([[-1.0, 2.0]]))
    torch.testing.assert_close(u, torch.tensor([[-0.2, 2.0]]))
    torch.testing.assert_close(ladj, torch.tensor([math.log(0.2)]))


def test_sigmoid_and_tanh_logdets_stay_finite_far_out() -> None:
    x = torch.tensor([[-200.0, 200.0]])
    for t in (Sigmoid(), Tanh()):
        ladj = t(x)[1]
        assert torch.isfinite(ladj).all(), type(t).__name__


# --- LULinear ------------------------------------------------------------------------------------


def test_lulinear_weight_factors_and_logdet() -> None:
    t = LULinear(6, identity_init=False, seed=0).double()
    w = t.weight()
    # Glow's init: a random rotation.
    torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=torch.float64))
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    w = t.weight()
    x = torch.randn(5, 6, dtype=torch.float64)
    u, ladj = t(x)
    torch.testing.assert_close(u, x @ w.T + t.bias)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(w)[1].expand(5))
    assert torch.equal(LULinear(4).weight(), torch.eye(4))


def test_lulinear_eval_cache_follows_optimizer_steps_and_state_loads() -> None:
    torch.manual_seed(1)
    t = LULinear(5, identity_init=False, seed=2)
    x = torch.randn(8, 5)
    t.eval()
    with torch.no_grad():
        u0 = t(x)[0]
        cache = t._cache
        assert cache is not None
        t(x)
        assert t._cache is cache  # unchanged parameters: the cache is reused

    opt = torch.optim.SGD(t.parameters(), lr=0.05)
    opt.zero_grad()
    u, ladj = t(x)  # grad enabled: no cache, a graph to the parameters
    (u.pow(2).sum() - ladj.sum()).backward()
    opt.step()

    with torch.no_grad():
        u1, ladj1 = t(x)
        x1 = t.inverse(u1)[0]
        expected = x @ t.weight().T + t.bias
    assert not torch.allclose(u1, u0, atol=1e-3)
    torch.testing.assert_close(u1, expected)
    torch.testing.assert_close(x1, x, atol=1e-5, rtol=1e-5)

    other = LULinear(5, identity_init=False, seed=9).eval()
    with torch.no_grad():
        other(x)
        other.load_state_dict(t.state_dict())
        torch.testing.assert_close(other(x)[0], u1)


def test_lulinear_training_inverse_by_solves_matches_cached_inverse() -> None:
    t = LULinear(7, identity_init=False, seed=4).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.2 * torch.randn_like(p))
    u = torch.randn(6, 7, dtype=torch.float64)
    x_train = t.inverse(u)[0]
    t.eval()
    with torch.no_grad():
        x_eval = t.inverse(u)[0]
    torch.testing.assert_close(x_eval, x_train)
    torch.testing.assert_close(t(x_train)[0], u)


# --- BatchNorm -----------------------------------------------------------------------------------


def test_batchnorm_train_uses_batch_statistics_and_updates_running_averages() -> None:
    t = BatchNorm(3, momentum=0.25).double()
    with torch.no_grad():
        t.log_gamma.copy_(torch.tensor([0.0, 0.5, -0.5]))
        t.beta.copy_(torch.tensor([1.0, 0.0, -1.0]))
    x = 3.0 + 2.0 * torch.randn(256, 3, dtype=torch.float64)
    var, mean = torch.var_mean(x, dim=0, correction=0)
    u, ladj = t(x)
    torch.testing.assert_close(u.mean(0), t.beta.detach())
    torch.testing.assert_close(
        u.std(0, correction=0), t.log_gamma.detach().exp(), rtol=1e-4, atol=0
    )
    expected = (t.log_gamma - 0.5 * torch.log(var + t.eps)).sum().detach()
    torch.testing.assert_close(ladj, expected.expand(256))
    torch.testing.assert_close(t.running_mean, 0.25 * mean)
    torch.testing.assert_close(t.running_var, 0.75 + 0.25 * var)


def test_batchnorm_eval_uses_running_averages() -> None:
    t = BatchNorm(2).double()
    with torch.no_grad():
        t.running_mean.copy_(torch.tensor([1.0, -2.0]))
        t.running_var.copy_(torch.tensor([4.0, 0.25]))
    t.eval()
    x = torch.randn(10, 2, dtype=torch.float64)
    u, ladj = t(x)
    scale = 1 / torch.sqrt(torch.tensor([4.0, 0.25], dtype=torch.float64) + t.eps)
    torch.testing.assert_close(u, (x - torch.tensor([1.0, -2.0], dtype=torch.float64)) * scale)
    torch.testing.assert_close(ladj, scale.log().sum().expand(10))
    # The running averages are not touched in eval mode.
    assert t.running_mean.tolist() == [1.0, -2.0]
    # inverse uses the running averages in training mode as well (documented).
    t.train()
    torch.testing.assert_close(t.inverse(u)[0], x)
    with pytest.raises(ValueError, match="at least 2"):
        t(x[:1])


# --- ActNorm -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4,), (3, 5, 5)])
def test_actnorm_data_dependent_init_standardizes_each_channel(shape: tuple[int, ...]) -> None:
    t = ActNorm(shape).double()
    x = 2.0 - 5.0 * torch.randn(32, *shape, dtype=torch.float64)
    x = x * torch.arange(1, shape[0] + 1, dtype=torch.float64).reshape(-1, *[1] * (len(shape) - 1))
    assert not t.initialized
    u, ladj = t(x)
    assert t.initialized
    per_channel = u.transpose(0, 1).reshape(shape[0], -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(shape[0], dtype=torch.float64))
    torch.testing.assert_close(
        per_channel.std(1, correction=0),
        torch.ones(shape[0], dtype=torch.float64),
        rtol=1e-5,
        atol=0,
    )
    positions = math.prod(shape[1:])
    torch.testing.assert_close(ladj, (t.log_scale.sum() * positions).detach().expand(32))
    # The second batch does not initialize again.
    before = t.log_scale.detach().clone()
    t(x + 10.0)
    assert torch.equal(t.log_scale.detach(), before)


def test_actnorm_does_not_initialize_in_eval_mode() -> None:
    t = ActNorm(3).eval()
    x = 5 + torch.randn(8, 3)
    assert torch.equal(t(x)[0], x)
    assert not t.initialized


def test_actnorm_loaded_from_state_dict_never_reinitializes() -> None:
    shape = (2, 3, 3)
    torch.manual_seed(0)
    a = torch.randn(16, *shape)
    b = 100.0 + 30.0 * torch.randn(16, *shape)  # very different statistics
    original = ActNorm(shape)
    original(a)  # initializes on A
    state = original.state_dict()
    assert "initialized" in state and bool(state["initialized"])

    fresh = ActNorm(shape)
    fresh.load_state_dict(state)
    fresh.train()
    u_fresh, ladj_fresh = fresh(b)
    u_orig, ladj_orig = original(b)
    torch.testing.assert_close(u_fresh, u_orig)
    torch.testing.assert_close(ladj_fresh, ladj_orig)
    assert u_fresh.mean().abs() > 10  # B was NOT standardized: no re-initialization
