"""The ONE property test over every exported transform and every constructor.

For each case, in float64 on small shapes:
  * inverse(forward(x)) == x;
  * forward's logabsdet == log|det| of the autograd Jacobian (torch.autograd.functional.jacobian
    + slogdet), per example;
  * inverse's logabsdet == minus forward's;
  * gradients reach every parameter;
  * under ``torch.func``: ``jacrev`` over the input equals the autograd Jacobian, ``grad``
    through ``functional_call`` over the parameters equals ``backward``'s, and the transform
    keeps its own parameters afterwards;
  * a state-dict round trip into a freshly built transform gives the same outputs.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from cases import Case, all_cases

import flowscope.models as M
import flowscope.transforms as T
from flowscope.transforms.packing import unpacked_grads

CASES = all_cases()
BATCH = 3


def _prepare(case: Case) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]:
    torch.manual_seed(0)
    t = case.build().double()
    x = case.sample(BATCH, case.shape)
    ctx = torch.randn(BATCH, case.context, dtype=torch.float64) if case.context else None
    with torch.no_grad():
        for p in t.parameters():
            p.add_(case.perturb * torch.randn_like(p))
    if case.warmup:
        t.train()
        with torch.no_grad():
            warm = case.sample(64, case.shape)
            wctx = torch.randn(64, case.context, dtype=torch.float64) if case.context else None
            t(warm, wctx)
    t.eval()
    return t, x, ctx


def _jacobian_logdets(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of ``fn`` at every example of ``x`` (examples must be independent)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda z: fn(z).reshape(-1), xi)
        jac = jac.reshape(jac.shape[0], -1)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transform_properties(case: Case) -> None:
    t, x, ctx = _prepare(case)

    u, ladj = t(x, ctx)
    assert u.dtype == torch.float64
    assert ladj.shape == (BATCH,), f"logabsdet must have shape (batch,), got {tuple(ladj.shape)}"
    assert torch.isfinite(u).all() and torch.isfinite(ladj).all()

    # log-det against the autograd Jacobian, one example at a time.
    expected = torch.stack(
        [
            _jacobian_logdets(
                lambda z, i=i: t(z, None if ctx is None else ctx[i : i + 1])[0], x[i : i + 1]
            )[0]
            for i in range(BATCH)
        ]
    )
    torch.testing.assert_close(ladj, expected, atol=case.atol * 100, rtol=1e-6)

    if case.inverse:
        x_back, ladj_inv = t.inverse(u, ctx)
        torch.testing.assert_close(x_back, x, atol=case.atol * 1e3, rtol=1e-6)
        torch.testing.assert_close(ladj_inv, -ladj, atol=case.atol * 100, rtol=1e-6)
    else:
        with pytest.raises(NotImplementedError):
            t.inverse(u, ctx)

    # Gradients reach every parameter (and the input: a transform must be differentiable).
    t.zero_grad()
    xg = x.clone().requires_grad_(True)
    u, ladj = t(xg, ctx)
    (u.pow(2).sum() + ladj.sum()).backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    # Per layer: a packed run's flat tensor (transforms/packing.py) is checked slot by slot.
    for name, grad in unpacked_grads(t).items():
        assert grad is not None, f"no gradient reached parameter {name}"
        assert torch.isfinite(grad).all(), f"non-finite gradient in {name}"
        assert grad.abs().sum() > 0, f"gradient of {name} is identically zero"

    # torch.func: the written backward passes (fused runs, the staircase kernel, the soft-clamp
    # node) are autograd Functions functorch cannot run; every transform must switch to its
    # generic path under a transform, over the input or the parameters.
    x1, c1 = x[:1], None if ctx is None else ctx[:1]
    jac = torch.func.jacrev(lambda z: t(z, c1)[0].reshape(-1))(x1)
    want = torch.autograd.functional.jacobian(lambda z: t(z, c1)[0].reshape(-1), x1)
    torch.testing.assert_close(jac, want)
    own = dict(t.named_parameters())
    if own:
        t.zero_grad()
        u, ladj = t(x, ctx)
        (u.pow(2).sum() + ladj.sum()).backward()

        def loss(params: dict) -> torch.Tensor:
            u, ladj = torch.func.functional_call(t, params, (x, ctx))
            return u.pow(2).sum() + ladj.sum()

        got = torch.func.grad(loss)({n: p.detach() for n, p in own.items()})
        for name, p in own.items():
            torch.testing.assert_close(got[name], p.grad, msg=f"torch.func.grad of {name}")
        assert all(t.get_parameter(n) is p for n, p in own.items()), "parameters replaced"

    # State-dict round trip into a freshly built transform.
    fresh = case.build().double()
    fresh.load_state_dict(t.state_dict())
    fresh.eval()
    with torch.no_grad():
        u2, ladj2 = fresh(x, ctx)
        u1, ladj1 = t(x, ctx)
    torch.testing.assert_close(u2, u1)
    torch.testing.assert_close(ladj2, ladj1)


def test_every_exported_transform_has_a_case() -> None:
    covered = {cls for case in CASES for cls in case.covers}
    exported = {
        obj
        for name in T.__all__
        if inspect.isclass(obj := getattr(T, name)) and issubclass(obj, T.Transform)
    }
    missing = sorted(c.__name__ for c in exported - covered - {T.Transform})
    assert not missing, f"exported transforms with no property-test case: {missing}"


def test_every_constructor_has_a_case() -> None:
    covered = {obj for case in CASES for obj in case.covers}
    constructors = {getattr(M, name) for name in M.__all__ if name != "make_base"}
    missing = sorted(f.__name__ for f in constructors - covered)
    assert not missing, f"model constructors with no property-test case: {missing}"
