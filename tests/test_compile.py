"""flowscope models compile with ``torch.compile(fullgraph=True)``: no graph breaks.

``fullgraph=True`` turns any graph break into an error, so these tests fail if a data-dependent
check (``if not torch.isfinite(x).all(): raise``), a storage-keyed cache (``data_ptr``) or a
host sync (``.item()``, ``.tolist()``) is reached while compiling: flowscope skips them in ONE
place (``flowscope._checks._tracing``) and validates before entering compiled code.

Cost on a 2-core CPU: Dynamo tracing is what detects graph breaks, so most models compile with
the ``"eager"`` backend (trace only, seconds); one model goes through the default Inductor
backend (generated C++) to check that the real compiler's output equals eager too.
"""

from __future__ import annotations

import pytest
import torch

from flowscope import Flow, models

compile_available = hasattr(torch, "compile") and hasattr(torch, "_dynamo")
pytestmark = [
    pytest.mark.skipif(not compile_available, reason="torch.compile is unavailable"),
    # torch.compile imports modules that warn about their own deprecated APIs.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def _glow_body() -> Flow:
    # The multi-scale body of models.glow (squeeze, ActNorm, 1x1 conv, channel coupling, factor
    # out) on continuous inputs.  The dequantization in front of it checks that pixels are
    # integers with a data-dependent branch of its own (transforms/dequantization.py).
    full = models.glow((3, 4, 4), levels=2, steps=1, hidden=4)
    return Flow(full.transform.transforms[-1], full.base, shape=(3, 4, 4))


def _tiny_models() -> dict[str, torch.nn.Module]:
    return {
        "realnvp": models.realnvp(2, layers=2, hidden=8),
        "maf": models.maf(2, layers=2, hidden=8),
        "nsf": models.nsf(2, layers=1, hidden=8, bins=4),
        "glow": _glow_body(),
    }


def _inputs(name: str) -> torch.Tensor:
    return torch.randn(4, 3, 4, 4) if name == "glow" else torch.randn(16, 2)


def _perturbed(flow: torch.nn.Module) -> torch.nn.Module:
    # Zero-initialized conditioners make every layer the identity: perturb so that compiled and
    # eager outputs could differ.
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow.eval()


@pytest.mark.parametrize("name", ["realnvp", "maf", "nsf", "glow"])
def test_log_prob_compiles_without_graph_breaks(name: str) -> None:
    torch._dynamo.reset()
    flow = _perturbed(_tiny_models()[name])
    x = _inputs(name)
    compiled = torch.compile(flow.log_prob, fullgraph=True, backend="eager")
    expected = flow.log_prob(x)
    got = compiled(x)
    torch.testing.assert_close(got, expected)
    assert got.shape == (x.shape[0],)
    # Inference: eval mode without autograd is where LULinear, the 1x1 convolution and MADE
    # cache their assembled weights (keyed on storage): skipped while compiling.
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), expected)
    # Validation stays at the eager door: the same compiled function still refuses NaN.
    bad = x.clone()
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="x: expected finite values"):
        flow.log_prob(bad)


def test_training_step_compiles_without_graph_breaks() -> None:
    """Forward and backward of a MAF loss trace as one graph (the training use)."""
    torch._dynamo.reset()
    flow = _perturbed(models.maf(2, layers=2, hidden=8)).train()
    x = torch.randn(16, 2)

    def loss() -> torch.Tensor:
        return -flow.log_prob(x).mean()

    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    expected = torch.autograd.grad(loss(), list(flow.parameters()))
    got = torch.autograd.grad(compiled(), list(flow.parameters()))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_staircase_maf_training_step_compiles_without_graph_breaks() -> None:
    """A MADE large enough for the staircase kernel stores its weight blocks packed
    (``weight_blocks``); compiled code runs them through the kernel's custom operator."""
    torch._dynamo.reset()
    # float64: the blockwise and the dense products sum in different orders
    flow = _perturbed(models.maf(300, layers=1, hidden=256, net_layers=1).double()).train()
    made = flow.transform.transforms[0].made
    assert all(layer.staircase is not None for layer in made.layers)
    x = torch.randn(4, 300, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return -flow.log_prob(x).mean()

    calls: list = []

    def backend(gm: torch.fx.GraphModule, inputs: list) -> object:
        calls.extend(n.target for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    compiled = torch.compile(loss, fullgraph=True, backend=backend)
    params = list(flow.parameters())
    expected = torch.autograd.grad(loss(), params)
    got = torch.autograd.grad(compiled(), params)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    # The layers reach the compiler as the blockwise kernel (one operator each), not as the dense
    # masked product.
    assert calls.count(torch.ops.flowscope.staircase_linear.default) == len(made.layers)
    # Inference too (eager eval multiplies a cached masked copy instead).
    flow.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(), loss())


def test_staircase_operator_passes_opcheck() -> None:
    """The compiled path's operator: schema (it writes no input), fake tensors, autograd
    registration and AOT dispatch, as ``torch.library.opcheck`` checks them."""
    flow = _perturbed(models.maf(300, layers=1, hidden=256, net_layers=1).double())
    layer = flow.transform.transforms[0].made.layers[0]
    # Clean weights: the kernel's zeroing of masked-out entries then writes nothing.
    layer.staircase.clean(layer.weight_blocks, layer.mask_value)
    x = torch.randn(4, 300, dtype=torch.float64, requires_grad=True)
    args = (x, layer.weight_blocks, layer.mask_value, layer.bias, layer.staircase.key)
    results = torch.library.opcheck(torch.ops.flowscope.staircase_linear.default, args)
    assert set(results.values()) == {"SUCCESS"}, results


def test_inductor_output_equals_eager() -> None:
    """One model through the real compiler (Inductor, generated C++): same numbers as eager."""
    torch._dynamo.reset()
    flow = _perturbed(models.realnvp(2, layers=2, hidden=8))
    x = torch.randn(16, 2)
    try:
        compiled = torch.compile(flow.log_prob, fullgraph=True)
        with torch.no_grad():
            got = compiled(x)
    except Exception as err:  # noqa: BLE001 - only a missing C++ toolchain may skip
        if "compiler" in str(err).lower() and "not found" in str(err).lower():
            pytest.skip(f"Inductor needs a C++ compiler: {err}")
        raise
    with torch.no_grad():
        torch.testing.assert_close(got, flow.log_prob(x), rtol=1e-5, atol=1e-5)


def test_compiled_loss_does_not_recompile_when_modules_are_built_elsewhere() -> None:
    """Building other modules between calls (the fused runs count submodule assignments for
    eager mode) must not invalidate a compiled graph: one compilation for all calls."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    for build in (models.realnvp, models.maf):
        counter.clear()
        flow = _perturbed(build(2, layers=2, hidden=8)).train()
        x = torch.randn(16, 2)
        flow.loss(x)  # eager first: the fused runs (and their registration count) are in use
        loss = torch.compile(flow.loss, backend=counter)
        for _ in range(3):
            loss(x).backward()
            models.maf(2, layers=1, hidden=4)  # registers submodules: the fused runs' count
        assert counter.frame_count == 1, build.__name__


def test_copied_staircase_layer_compiles_after_the_original_is_gone() -> None:
    """The operator finds a layer's blocks by a key: a deep copy gets a key of its own, so it
    keeps working when the original is collected."""
    import copy
    import gc

    torch._dynamo.reset()
    flow = _perturbed(models.maf(300, layers=1, hidden=256, net_layers=1).double()).train()
    twin = copy.deepcopy(flow)
    key = flow.transform.transforms[0].made.layers[0].staircase.key
    assert twin.transform.transforms[0].made.layers[0].staircase.key != key
    del flow
    gc.collect()
    x = torch.randn(4, 300, dtype=torch.float64)
    compiled = torch.compile(lambda: -twin.log_prob(x).mean(), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(), -twin.log_prob(x).mean())
