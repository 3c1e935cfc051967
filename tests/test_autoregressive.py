"""MADE masks, MAF/IAF directions, the incremental sampler and input errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowscope.transforms.autoregressive import MADE, InverseAutoregressive, MaskedAutoregressive
from flowscope.transforms.splines import RationalQuadraticSpline
from flowscope.transforms.transformers import AdditiveTransformer, AffineTransformer


def _perturb(module: nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("order", ["natural", "random", "explicit"])
@pytest.mark.parametrize("context", [None, 3])
def test_made_jacobian_is_triangular_in_its_order(layers: int, order: str, context: int | None):
    d, p = 6, 2
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    made = MADE(
        d,
        p,
        hidden=12,
        layers=layers,
        order=perm if order == "explicit" else order,
        context_features=context,
        seed=1,
        zero_init=False,
        activation=nn.Tanh,
    ).double()
    if order == "explicit":
        assert torch.equal(made.order, perm)
    rank = made.rank
    x = torch.randn(1, d, dtype=torch.float64)
    ctx = torch.randn(1, context, dtype=torch.float64) if context else None

    jac = torch.autograd.functional.jacobian(lambda z: made(z, ctx), x)[0, :, :, 0, :]  # (D, P, D)
    allowed = (rank[:, None] > rank[None, :]).unsqueeze(1).expand(d, p, d)  # out i <- in j
    assert jac[~allowed].abs().max() == 0
    # Tanh and hidden >= D - 1: every allowed dependency is realized, so the test can fail.
    assert (jac[allowed].abs() > 0).all()

    if context:
        # The context reaches every output, the first coordinate's included (degree-0 units).
        jc = torch.autograd.functional.jacobian(lambda c: made(x, c), ctx)[0, :, :, 0, :]
        assert (jc.abs().sum(-1) > 0).all()


def test_made_masks_connect_exactly_the_allowed_pairs():
    made = MADE(7, 3, hidden=9, layers=2, order="random", seed=4)
    paths = made.layers[0].mask.long()
    for layer in made.layers[1:]:
        paths = layer.mask.long() @ paths
    allowed = made.rank.repeat_interleave(3)[:, None] > made.rank[None, :]
    assert torch.equal(paths > 0, allowed)


def test_made_zero_init_outputs_zero_and_buffers_in_state_dict():
    made = MADE(4, 2, hidden=8, layers=1, order="random", seed=0)
    assert made(torch.randn(5, 4)).abs().max() == 0
    keys = set(made.state_dict())
    assert {"order", "rank", "layers.0.mask", "layers.1.mask"} <= keys


def _maf(d: int, transformer, layers: int, order: str = "random", context: int | None = None):
    torch.manual_seed(0)
    maf = MaskedAutoregressive(
        d, transformer, hidden=16, layers=layers, order=order, context_features=context, seed=2
    )
    _perturb(maf)
    return maf.eval()


@pytest.mark.parametrize("layers", [1, 2])
def test_maf_round_trip_float32(layers: int):
    maf = _maf(10, AffineTransformer(), layers, context=None)
    x = torch.randn(64, 10)
    with torch.no_grad():
        u, ladj = maf(x)
        x_back, ladj_inv = maf.inverse(u)
    assert x_back.dtype == torch.float32
    assert (u - x).abs().max() > 1e-2  # not the identity
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "transformer",
    [AffineTransformer(), AdditiveTransformer(), RationalQuadraticSpline(bins=5, bound=2.0)],
    ids=["affine", "additive", "spline"],
)
def test_incremental_inverse_equals_plain_loop(layers: int, transformer):
    maf = _maf(7, transformer, layers, order="random", context=2).double()
    u = torch.randn(9, 7, dtype=torch.float64)
    ctx = torch.randn(9, 2, dtype=torch.float64)
    x_fast, l_fast = maf.inverse(u, ctx)
    x_ref, l_ref = maf._inverse_plain(u, ctx)
    torch.testing.assert_close(x_fast, x_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(l_fast, l_ref, atol=1e-12, rtol=1e-12)
    # And both invert the one-pass direction.
    u_back, l_fwd = maf(x_fast, ctx)
    torch.testing.assert_close(u_back, u, atol=1e-10, rtol=0)
    torch.testing.assert_close(l_fwd, -l_fast, atol=1e-10, rtol=0)


def test_incremental_inverse_gradients_match_plain_loop():
    maf = _maf(5, AffineTransformer(), 1, order="random").double()
    u = torch.randn(4, 5, dtype=torch.float64)
    grads = []
    for fn in (maf.inverse, maf._inverse_plain):
        maf.zero_grad()
        x, ladj = fn(u)
        (x.pow(2).sum() + ladj.sum()).backward()
        grads.append([p.grad.clone() for p in maf.parameters()])
    for g_fast, g_ref in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, atol=1e-10, rtol=1e-8)


def test_iaf_is_the_inverse_of_the_wrapped_maf():
    torch.manual_seed(0)
    iaf = InverseAutoregressive(6, AffineTransformer(), hidden=12, layers=2, order="random", seed=7)
    _perturb(iaf)
    u = torch.randn(8, 6, dtype=torch.float64)
    iaf = iaf.double()
    x, ladj = iaf.inverse(u)  # one pass
    x_maf, ladj_maf = iaf.transform(u)
    torch.testing.assert_close(x, x_maf)
    torch.testing.assert_close(ladj, ladj_maf)
    u_back, ladj_back = iaf(x)  # D passes
    torch.testing.assert_close(u_back, u, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_back, -ladj, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cls", [MaskedAutoregressive, InverseAutoregressive])
def test_context_errors(cls):
    t = cls(4, AffineTransformer(), hidden=8, layers=1, context_features=3)
    x = torch.randn(2, 4)
    for call in (t.forward, t.inverse):
        with pytest.raises(ValueError, match="context"):
            call(x)
        with pytest.raises(ValueError, match="context"):
            call(x, torch.randn(2, 5))
        with pytest.raises(ValueError, match="context"):
            call(x, torch.randn(3, 3))
    unconditional = cls(4, AffineTransformer(), hidden=8, layers=1)
    with pytest.raises(ValueError, match="context"):
        unconditional(x, torch.randn(2, 3))


def test_input_errors():
    maf = MaskedAutoregressive(4, AffineTransformer(), hidden=8, layers=1)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 4\)"):
        maf(torch.randn(2, 5))
    with pytest.raises(ValueError, match="u: expected finite"):
        maf.inverse(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    iaf = InverseAutoregressive(4, AffineTransformer(), hidden=8, layers=1)
    with pytest.raises(ValueError, match=r"x: expected shape"):
        iaf(torch.randn(2, 3))
    with pytest.raises(ValueError, match="order"):
        MADE(3, 2, order=[0, 0, 1])
    with pytest.raises(ValueError, match="order"):
        MADE(3, 2, order="reversed")
    with pytest.raises(ValueError, match="layers"):
        MADE(3, 2, layers=-1)
    with pytest.raises(ValueError, match="hidden"):
        MADE(3, 2, hidden=0)
    with pytest.raises(ValueError, match="transformer"):
        MaskedAutoregressive(3, "affine")  # type: ignore[arg-type]


def test_state_dict_keeps_the_random_order():
    a = MaskedAutoregressive(6, AffineTransformer(), hidden=8, layers=1, order="random", seed=1)
    b = MaskedAutoregressive(6, AffineTransformer(), hidden=8, layers=1, order="random", seed=2)
    assert not torch.equal(a.order, b.order)
    _perturb(a)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.order, b.order)
    u = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(b.inverse(u)[0], a.inverse(u)[0])
