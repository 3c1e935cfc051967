"""Unit tests of the rational-quadratic spline transformer, the coupling masks and Coupling."""

from __future__ import annotations

import pytest
import torch
from cases.coupling import BOUND, IMAGE, TinyConv, with_tails
from torch import nn

from flowscope.nets import MLP
from flowscope.transforms import (
    AdditiveTransformer,
    AffineTransformer,
    Coupling,
    RationalQuadraticSpline,
    affine_coupling,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    half_mask,
    rational_quadratic_spline,
    spline_coupling,
)

DTYPES = [torch.float32, torch.float64]


def _spline_points(n: int, d: int, scale: float, dtype: torch.dtype, bins: int = 8):
    """Inputs over [-1.5B, 1.5B] (tails included) and random raw params of the given spread."""
    spline = RationalQuadraticSpline(bins=bins, bound=3.0)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(n, d, generator=gen, dtype=torch.float64) * 9 - 4.5).to(dtype)
    params = (scale * torch.randn(n, d, spline.params_per_dim, generator=gen)).to(dtype)
    return spline, x, params


# --------------------------------------------------------------------------- spline transformer


@pytest.mark.parametrize("dtype", DTYPES)
def test_spline_zero_params_is_identity(dtype: torch.dtype) -> None:
    spline, x, params = _spline_points(1000, 3, 0.0, dtype)
    eps = torch.finfo(dtype).eps * 8
    y, ladj = spline.forward(x, params)
    torch.testing.assert_close(y, x, atol=eps, rtol=0)
    assert ladj.abs().max() <= eps
    x_back, ladj_inv = spline.inverse(x, params)
    torch.testing.assert_close(x_back, x, atol=eps, rtol=0)
    assert ladj_inv.abs().max() <= eps
    widths, heights, derivatives = spline.constrain(params)
    torch.testing.assert_close(derivatives, torch.ones_like(derivatives))
    torch.testing.assert_close(widths, torch.full_like(widths, 6.0 / 8))


@pytest.mark.parametrize(
    ("dtype", "scale", "tol"), [(torch.float32, 0.5, 1e-4), (torch.float64, 3.0, 1e-7)]
)
def test_spline_round_trip(dtype: torch.dtype, scale: float, tol: float) -> None:
    """10k points with random params; tails included; inverse log-det = -forward log-det."""
    spline, x, params = _spline_points(2500, 4, scale, dtype)
    y, ladj = spline.forward(x, params)
    x_back, ladj_inv = spline.inverse(y, params)
    assert (x_back - x).abs().max() < tol
    assert (ladj + ladj_inv).abs().max() < tol * 100
    inside = x.abs() < 3.0
    assert inside.any() and (~inside).any()
    assert (y - x)[inside].abs().max() > 0.1  # the spline is not secretly the identity
    assert torch.equal(y[~inside], x[~inside])  # identity tails, exactly


@pytest.mark.parametrize("dtype", DTYPES)
def test_spline_round_trip_extreme_params(dtype: torch.dtype) -> None:
    """Raw params ~ N(0, 20^2) saturate the bin and derivative minimums.

    The absolute error in ``x`` of ``inverse(forward(x))`` is ill-conditioned where the spline is
    nearly flat (``|dx| ~ ulp(y) / f'(x)`` with ``f'`` down to ~1e-8 here), whatever the algorithm,
    so the well-posed checks are the backward errors: ``|x' - x| * min(1, f'(x))`` and
    ``|f(x') - f(x)|`` must stay at a few ulps of the bound.
    """
    spline, x, params = _spline_points(2500, 4, 20.0, dtype)
    ulps = 3.0 * torch.finfo(dtype).eps
    y, ladj = spline.forward(x, params)
    x_back, ladj_inv = spline.inverse(y, params)
    assert torch.isfinite(x_back).all() and torch.isfinite(ladj_inv).all()
    backward = (x_back - x).abs() * ladj.exp().clamp(max=1.0)
    assert backward.max() < 100 * ulps
    y_again, _ = spline.forward(x_back, params)
    assert (y_again - y).abs().max() < 100 * ulps
    # Where the spline is not flat the inverse is accurate in x itself.
    ok = ladj > -2
    assert (x_back - x)[ok].abs().max() < 1e3 * ulps
    # Gradients through both directions stay finite (sampling with gradients, e.g. reverse KL),
    # including in the tails where the unused spline branch is evaluated at the clamped +-bound.
    edges = torch.tensor([-4.0, -3.0, 3.0, 4.0], dtype=dtype).expand_as(x)  # steepest spot
    for direction, points in ((spline.forward, x), (spline.inverse, x), (spline.inverse, edges)):
        inp, raw = points.clone().requires_grad_(), params.clone().requires_grad_()
        out, logdet = direction(inp, raw)
        (out.sum() + logdet.sum()).backward()
        assert torch.isfinite(inp.grad).all() and torch.isfinite(raw.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_spline_inverse_of_steep_bins(dtype: torch.dtype) -> None:
    """Very steep end bins (slope ~1e5): the discriminant b^2 - 4ac computed naively is pure
    rounding noise in float32 (it can come out <= 0, giving an infinite sqrt gradient)."""
    spline = RationalQuadraticSpline(bins=4, bound=3.0, min_bin_width=1e-5)
    raw = torch.zeros(4, spline.params_per_dim, dtype=dtype)
    raw[:, [0, 3]] = -40.0  # first and last bins as narrow as allowed ...
    raw[:, [4, 7]] = 40.0  # ... and as tall as the softmax gives
    raw[:, 8:] = torch.tensor([3.0, -6.0, 3.0], dtype=dtype)
    params = raw.repeat(64, 1, 1)  # (64, 4, 11)
    y = torch.linspace(-3.5, 3.5, 64, dtype=dtype)[:, None].repeat(1, 4)
    y[:, 1], y[:, 2] = -3.0, 3.0  # exactly at the knots of the steep bins
    y = y.requires_grad_()
    raw_params = params.clone().requires_grad_()
    x, ladj_inv = spline.inverse(y, raw_params)
    (x.sum() + ladj_inv.sum()).backward()
    assert torch.isfinite(y.grad).all() and torch.isfinite(raw_params.grad).all()
    # Round trip measured in y, relative to the local slope: a rounding of x moves y by
    # f'(x) * ulp(x), and f' ranges over ~1e-5 .. 1e5 here.
    y_again, ladj = spline.forward(x.detach(), params)
    error = (y_again - y.detach()).abs() / ladj.exp().clamp(min=1.0)
    assert error.max() < 50 * torch.finfo(dtype).eps
    assert ladj.max() > 10  # the steep bins are really there


def test_spline_monotone_and_continuous() -> None:
    spline = RationalQuadraticSpline(bins=6, bound=2.0)
    params = 2.0 * torch.randn(1, 3, spline.params_per_dim, dtype=torch.float64)
    x = torch.linspace(-3, 3, 20001, dtype=torch.float64)[:, None].expand(-1, 3)
    y, ladj = spline.forward(x, params.expand(x.shape[0], -1, -1))
    steps = y.diff(dim=0)
    assert (steps > 0).all()
    # No jumps (continuity across knots and at +-bound): every step is what the local slope gives.
    slope = torch.maximum(ladj[1:], ladj[:-1]).exp()
    assert (steps <= 1.5 * slope * (x[1, 0] - x[0, 0])).all()
    edge = torch.tensor([[-2.0, 2.0, 0.0]], dtype=torch.float64)
    y_edge, _ = spline.forward(edge, params)
    torch.testing.assert_close(y_edge[0, :2], edge[0, :2])  # the spline maps [-B, B] onto itself


def test_spline_logabsdet_matches_finite_differences() -> None:
    spline, x, params = _spline_points(500, 2, 1.5, torch.float64)
    x = x.clamp(-2.99, 2.99)  # avoid straddling +-bound with the stencil
    h = 1e-6
    y_plus, _ = spline.forward(x + h, params)
    y_minus, _ = spline.forward(x - h, params)
    _, ladj = spline.forward(x, params)
    numeric = (y_plus - y_minus) / (2 * h)
    torch.testing.assert_close(ladj.exp(), numeric, rtol=1e-5, atol=1e-7)
    # and it is the derivative of the inverse, inverted
    y, _ = spline.forward(x, params)
    _, ladj_inv = spline.inverse(y, params)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-8, atol=1e-8)


def test_spline_function_and_derivative_constraints() -> None:
    """The pure function accepts constrained knots; boundary derivatives 1 give C^1 tails."""
    spline = RationalQuadraticSpline(bins=5, bound=1.0, min_derivative=1e-2)
    params = 30 * torch.randn(64, 1, spline.params_per_dim, dtype=torch.float64)
    widths, heights, derivatives = spline.constrain(params)
    assert torch.allclose(widths.sum(-1), torch.tensor(2.0, dtype=torch.float64))
    assert widths.min() >= 2 * 1e-3 * (1 - 1e-9) and heights.min() >= 2 * 1e-3 * (1 - 1e-9)
    assert derivatives.min() >= 1e-2 and (derivatives[..., [0, -1]] == 1).all()
    # At exactly +-bound (xi = 1 in the last bin, 0 in the first) the derivative is the boundary
    # derivative 1 and the value is the knot itself: C^1 with the identity tails.
    edge = torch.tensor([-1.0, 1.0], dtype=torch.float64).repeat(32)[:, None]
    y, ladj = rational_quadratic_spline(edge, widths, heights, derivatives, bound=1.0)
    torch.testing.assert_close(y, edge, atol=1e-12, rtol=0)
    assert ladj.abs().max() < 1e-9
    x_back, ladj_inv = rational_quadratic_spline(edge, widths, heights, derivatives, True, 1.0)
    torch.testing.assert_close(x_back, edge, atol=1e-12, rtol=0)
    assert ladj_inv.abs().max() < 1e-9


def test_spline_rejects_bad_arguments() -> None:
    spline = RationalQuadraticSpline(bins=4)
    with pytest.raises(ValueError, match="params"):
        spline.forward(torch.zeros(2, 3), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="bins"):
        RationalQuadraticSpline(bins=0)
    with pytest.raises(ValueError, match="bound"):
        RationalQuadraticSpline(bound=-1.0)
    with pytest.raises(ValueError, match="min_bin_width"):
        RationalQuadraticSpline(bins=10, min_bin_width=0.1)
    with pytest.raises(ValueError, match="min_derivative"):
        RationalQuadraticSpline(min_derivative=1.0)


# --------------------------------------------------------------------------------------- masks


def test_vector_masks() -> None:
    assert half_mask(5).tolist() == [False, False, True, True, True]
    assert half_mask(5, flip=True).tolist() == [True, True, False, False, False]
    assert alternating_mask(5).tolist() == [False, True, False, True, False]
    assert torch.equal(alternating_mask(4, flip=True), ~alternating_mask(4))
    assert half_mask(2).dtype == torch.bool
    with pytest.raises(ValueError, match="features"):
        half_mask(1)
    with pytest.raises(ValueError, match="features"):
        alternating_mask(0)


def test_image_masks() -> None:
    board = checkerboard_mask((3, 4, 5))
    assert board.shape == (3, 4, 5) and board.dtype == torch.bool
    assert not board[0, 0, 0] and board[0, 0, 1] and board[2, 1, 0] and not board[1, 1, 1]
    assert torch.equal(board[0], board[2])  # same pattern in every channel
    assert int(board.sum()) == 3 * 10
    assert torch.equal(checkerboard_mask((3, 4, 5), flip=True), ~board)
    chan = channel_mask((5, 2, 2))
    assert chan[:, 0, 0].tolist() == [False, False, True, True, True]
    assert chan.all(dim=(1, 2)).tolist() == chan.any(dim=(1, 2)).tolist()  # constant per channel
    assert torch.equal(channel_mask((5, 2, 2), flip=True), ~chan)
    with pytest.raises(ValueError, match="shape"):
        channel_mask((1, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        checkerboard_mask((4, 4))


# ------------------------------------------------------------------------------------ coupling


def _perturb(module: nn.Module, scale: float = 0.1) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize(
    "transformer",
    [
        AdditiveTransformer(),
        AffineTransformer(),
        AffineTransformer("sigmoid"),
        RationalQuadraticSpline(),
    ],
    ids=["additive", "affine-tanh", "affine-sigmoid", "spline"],
)
def test_coupling_starts_at_identity_and_keeps_identity_part(transformer) -> None:
    mask = alternating_mask(6)
    layer = Coupling(mask, transformer, context_features=2)
    x, ctx = torch.randn(16, 6), torch.randn(16, 2)
    u, ladj = layer(x, ctx)
    # sigmoid scale is exp(log(sigmoid(2) + eps)) != 1 at zero params by design (Glow's shift)
    if not (isinstance(transformer, AffineTransformer) and transformer.scale == "sigmoid"):
        torch.testing.assert_close(u, x)
        torch.testing.assert_close(ladj, torch.zeros(16), atol=1e-6, rtol=0)
    _perturb(layer)
    u, ladj = layer(x, ctx)
    assert torch.equal(u[:, mask], x[:, mask])
    assert (u[:, ~mask] - x[:, ~mask]).abs().max() > 1e-2
    x_back, ladj_inv = layer.inverse(u, ctx)
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-5, rtol=1e-5)


def test_default_conditioner_sees_only_identity_entries_and_context() -> None:
    layer = spline_coupling(half_mask(7), bins=5, hidden=8, context_features=3)
    assert isinstance(layer.net, MLP)
    first, last = layer.net[0], layer.net[-1]
    assert first.in_features == 4 + 3  # 4 identity entries + context, no wasted inputs
    assert last.out_features == 3 * (3 * 5 - 1)  # params for the 3 transformed entries only
    assert (last.weight == 0).all() and (last.bias == 0).all()
    _perturb(layer)
    x = torch.randn(8, 7)
    c1, c2 = torch.randn(8, 3), torch.randn(8, 3)
    assert (layer(x, c1)[0] - layer(x, c2)[0]).abs().max() > 1e-3  # context reaches the net


def test_harness_perturbation_makes_spline_cases_nontrivial() -> None:
    """Mirror of the property harness: 0.1 noise on every parameter moves the spline visibly."""
    from cases.coupling import CASES

    for case in (c for c in CASES if "spline" in c.name):
        torch.manual_seed(0)
        layer = case.build().double()
        _perturb(layer)
        x = with_tails(64, case.shape)
        ctx = torch.randn(64, case.context, dtype=torch.float64) if case.context else None
        u, ladj = layer(x, ctx)
        inside = (x.abs() < BOUND) & ~layer.mask
        assert (u - x)[inside].abs().max() > 0.05, case.name
        assert ladj.abs().max() > 0.05, case.name
        assert (x.abs() > BOUND).any(), case.name


def test_image_coupling_updates_only_transformed_entries() -> None:
    mask = checkerboard_mask(IMAGE)
    spline = RationalQuadraticSpline(bins=4, bound=BOUND)
    net = TinyConv(IMAGE[0], IMAGE[0] * spline.params_per_dim)
    layer = Coupling(mask, spline, net=net).double()
    _perturb(layer, 0.3)
    x = torch.randn(5, *IMAGE, dtype=torch.float64)
    u, ladj = layer(x)
    assert u.shape == x.shape and ladj.shape == (5,)
    assert torch.equal(u[:, mask], x[:, mask])
    assert (u[:, ~mask] - x[:, ~mask]).abs().max() > 1e-2
    torch.testing.assert_close(layer.inverse(u)[0], x, atol=1e-5, rtol=1e-5)


def test_coupling_context_errors() -> None:
    layer = affine_coupling(half_mask(4), context_features=3)
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="context"):
        layer(x)
    with pytest.raises(ValueError, match="context"):
        layer.inverse(x)
    with pytest.raises(ValueError, match=r"context.*\(5, 3\)"):
        layer(x, torch.randn(5, 2))
    with pytest.raises(ValueError, match="context"):
        layer(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="context"):
        affine_coupling(half_mask(4))(x, torch.randn(5, 3))
    # image coupling: context broadcast as channels, and checked the same way
    spline = RationalQuadraticSpline(bins=3)
    image = Coupling(
        channel_mask(IMAGE), spline, net=TinyConv(IMAGE[0] + 2, IMAGE[0] * 8), context_features=2
    )
    with pytest.raises(ValueError, match="context"):
        image(torch.randn(3, *IMAGE))
    assert image(torch.randn(3, *IMAGE), torch.randn(3, 2))[0].shape == (3, *IMAGE)


def test_coupling_construction_and_shape_errors() -> None:
    spline = RationalQuadraticSpline(bins=3)
    with pytest.raises(ValueError, match="net"):
        Coupling(checkerboard_mask(IMAGE), spline)
    with pytest.raises(ValueError, match="mask"):
        Coupling(torch.ones(4), spline)  # not bool
    with pytest.raises(ValueError, match="mask"):
        Coupling(torch.ones(2, 2, dtype=torch.bool), spline)  # not (D,) nor (C, H, W)
    with pytest.raises(ValueError, match="mask"):
        Coupling(torch.ones(4, dtype=torch.bool), spline)  # nothing transformed
    with pytest.raises(ValueError, match="mask"):
        Coupling(torch.zeros(4, dtype=torch.bool), spline)  # nothing to condition on
    with pytest.raises(ValueError, match="transformer"):
        Coupling(half_mask(4), "spline")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context_features"):
        Coupling(half_mask(4), spline, context_features=0)
    layer = Coupling(half_mask(4), spline)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 4\)"):
        layer(torch.randn(3, 5))
    with pytest.raises(ValueError, match="u"):
        layer.inverse(torch.randn(3, 4, 1))
    bad = Coupling(checkerboard_mask(IMAGE), spline, net=TinyConv(IMAGE[0], 3))
    with pytest.raises(ValueError, match="net"):
        bad(torch.randn(2, *IMAGE))
    # all-False mask is fine when a context feeds the conditioner
    ctx_only = Coupling(torch.zeros(3, dtype=torch.bool), spline, context_features=2)
    assert ctx_only(torch.randn(2, 3), torch.randn(2, 2))[0].shape == (2, 3)


def test_coupling_state_dict_holds_only_weights() -> None:
    layer = spline_coupling(half_mask(4))
    assert all(k.startswith("net.") for k in layer.state_dict())
    assert layer.double().mask.dtype == torch.bool
