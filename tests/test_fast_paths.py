"""Every speed path computes what the plain path computes (issue 7's library work).

Each fast path is compared with the slower path it replaces, on inputs where the two could
differ: values, log-dets, inverses and gradients, in float64.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from flowscope import models
from flowscope.transforms import (
    AffineTransformer,
    Compose,
    Coupling,
    MaskedAutoregressive,
    affine_coupling,
    alternating_mask,
    channel_mask,
    half_mask,
    image_coupling,
)
from flowscope.transforms.autoregressive import MADE
from flowscope.transforms.packing import layer_parameters
from flowscope.transforms.staircase import staircase_blocks, staircase_linear


def _perturb(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    with torch.no_grad():  # per layer, packed ones too (the same draws as unpacked)
        for p in layer_parameters(module).values():
            p.add_(scale * torch.randn_like(p))
    return module


def _dense_made(made: MADE, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """The MADE as written in the paper: ``x (W * M)^T + b`` with the full masks."""
    layers = made.layers
    h = F.linear(x, layers[0].weight * layers[0].mask, layers[0].bias)
    if made.context_layer is not None:
        h = h + made.context_layer(context)
    for layer in layers[1:]:
        h = F.linear(torch.relu(h), layer.weight * layer.mask, layer.bias)
    return h.reshape(x.shape[0], made.features, made.params_per_dim)


@pytest.mark.parametrize("context", [None, 3])
def test_staircase_made_equals_the_dense_masked_product(context: int | None) -> None:
    made = _perturb(MADE(300, 2, hidden=256, layers=2, context_features=context).double(), 0.2)
    assert all(layer.blocks is not None for layer in made.layers)  # the fast path is taken
    x = torch.randn(7, 300, dtype=torch.float64, requires_grad=True)
    c = torch.randn(7, context, dtype=torch.float64) if context else None
    got, want = made(x, c), _dense_made(made, x, c)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    inputs = [x, *made.parameters()]
    for a, b in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(want, inputs, g)):
        torch.testing.assert_close(a, b)
    made.eval()  # eval without a graph: the cached masked weights, blockwise
    with torch.no_grad():
        torch.testing.assert_close(made(x, c), want)


def test_staircase_under_autograd_with_masked_weights() -> None:
    # MADE.forward(x, weights=masked_weights()) in training (the MAF inverse's hidden layers):
    # gradients must reach the weights through the given masked weights.
    made = _perturb(MADE(300, 2, hidden=256, layers=2).double(), 0.2)
    x = torch.randn(4, 300, dtype=torch.float64, requires_grad=True)
    params = [x, *made.parameters()]
    got = torch.autograd.grad(made(x, None, made.masked_weights()).sum(), params)
    want = torch.autograd.grad(_dense_made(made, x, None).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # A frozen model in eval mode differentiated w.r.t. its input (caches filled first under
    # inference mode): the cached masked weights, blockwise, under autograd.
    made.eval().requires_grad_(False)
    with torch.inference_mode():
        made(x.detach())
    (got,) = torch.autograd.grad(made(x).sum(), x)
    (want,) = torch.autograd.grad(_dense_made(made, x, None).sum(), x)
    torch.testing.assert_close(got, want)


def test_staircase_reads_the_weight_after_zeroing_its_masked_entries() -> None:
    # The kernel's products read the stored blocks of W itself: whatever sits in their
    # masked-out entries (an in-place write, or one through .data that autograd does not see)
    # must not reach the output or the gradients, and the zeroing must not invalidate a graph
    # that saved W.
    made = MADE(300, 2, hidden=256, layers=1, zero_init=False).double()
    assert all(layer.staircase is not None for layer in made.layers)
    for layer in made.layers:  # they start at zero
        assert not layer.weight[~layer.mask].any()
    x = torch.randn(4, 300, dtype=torch.float64, requires_grad=True)
    params = [x, *made.parameters()]
    for layer, dirt in zip(made.layers, (3.0, -2.0)):
        dense = layer.weight.detach().masked_fill(~layer.mask, dirt)
        packed = layer.staircase.pack(dense)
        if dirt > 0:
            with torch.no_grad():
                layer.weight_blocks.copy_(packed)  # moves the version counter
        else:
            layer.weight_blocks.data.copy_(packed)  # .data: does not
        assert layer.weight[~layer.mask].ne(0).any()  # dirty where the blocks read
    allowed = [layer.weight[layer.mask].clone() for layer in made.layers]
    versions = [layer.weight_blocks._version for layer in made.layers]
    first, second = made(x), made(x)  # the second zeroes again, after the first saved W
    assert [layer.weight_blocks._version for layer in made.layers] == versions
    want = _dense_made(made, x, None)
    torch.testing.assert_close(first, want)
    torch.testing.assert_close(second, want)
    got = torch.autograd.grad((first + second).sum(), params)
    for a, b in zip(got, torch.autograd.grad(2 * want.sum(), params)):
        torch.testing.assert_close(a, b)
    for layer, before in zip(made.layers, allowed):
        assert not layer.weight[~layer.mask].any()  # what the products read is zero now
        assert torch.equal(layer.weight[layer.mask], before)  # the allowed entries untouched


def test_staircase_layer_with_a_given_weight_masks_a_copy() -> None:
    # A weight that is not the layer's own parameter (functional_call's, a parametrization's)
    # is not the kernel's to overwrite: it masks a copy, and the caller's tensor is untouched.
    made = MADE(300, 2, hidden=256, layers=1).double()
    layer = made.layers[0]
    x = torch.randn(4, 300, dtype=torch.float64)
    w = torch.randn_like(layer.weight_blocks, requires_grad=True)
    before = w.detach().clone()
    got = torch.func.functional_call(made, {"layers.0.weight_blocks": w}, (x,))
    (g_got,) = torch.autograd.grad(got.sum(), w)
    h = F.linear(x, layer.staircase.unpack(w) * layer.mask, layer.bias)
    want = F.linear(torch.relu(h), made.layers[1].weight * made.layers[1].mask, made.layers[1].bias)
    (g_want,) = torch.autograd.grad(want.sum(), w)
    torch.testing.assert_close(got, want.reshape(got.shape))
    torch.testing.assert_close(g_got, g_want)
    assert torch.equal(w.detach(), before)


def test_staircase_layer_stores_its_blocks_and_saves_the_dense_weight() -> None:
    made = MADE(300, 2, hidden=256, layers=1, zero_init=False).double()
    layer = made.layers[1]
    names = dict(made.named_parameters())
    assert "layers.1.weight_blocks" in names and "layers.1.weight" not in names
    assert layer.weight_blocks.shape == (layer.staircase.numel,)
    assert layer.staircase.numel < 0.6 * layer.mask.numel()
    # The state dict holds the dense weight (as before packing), zero where masked.
    state = made.state_dict()
    assert "layers.1.weight_blocks" not in state and state["layers.1.weight"].shape == (600, 256)
    assert torch.equal(state["layers.1.weight"], layer.weight.detach())
    # A dense state dict with anything in its masked-out entries loads, packed, exactly.
    other = _perturb(MADE(300, 2, hidden=256, layers=1, zero_init=False).double(), 0.3)
    dense_state = {k: v.clone() for k, v in other.state_dict().items()}
    for i in (0, 1):
        w, m = dense_state[f"layers.{i}.weight"], dense_state[f"layers.{i}.mask"]
        w[~m] = 5.0
    made.load_state_dict(dense_state)
    x = torch.randn(3, 300, dtype=torch.float64)
    torch.testing.assert_close(made(x), _dense_made(other, x, None))
    # Assigning a dense weight packs it; reset_parameters draws nn.Linear's initialization.
    layer.weight = torch.ones(600, 256, dtype=torch.float64)
    assert torch.equal(layer.weight, layer.mask.double())
    layer.reset_parameters()
    assert layer.weight[layer.mask].abs().max() <= 1 / 256**0.5
    assert not layer.weight[~layer.mask].any()
    # The kernel itself takes a mask with the packed blocks only.
    with pytest.raises(ValueError, match="weight: with a mask, expected the packed blocks"):
        staircase_linear(x[:, :256], layer.weight, layer.mask_value, layer.bias, layer.staircase)
    # A state dict whose masks have another layout (a random order: no staircase in the
    # first layer) re-lays the layer out, and the model computes the loaded one.
    rnd = _perturb(MADE(300, 2, hidden=256, layers=1, order="random", seed=0).double(), 0.3)
    made.load_state_dict(rnd.state_dict())
    assert made.layers[0].staircase is None and "weight" in dict(made.layers[0].named_parameters())
    torch.testing.assert_close(made(x), rnd(x))


def test_staircase_second_derivatives_equal_the_dense_ones() -> None:
    # create_graph=True: the staircase backward differentiates the dense product instead.
    made = _perturb(MADE(300, 2, hidden=256, layers=1).double(), 0.2)
    assert all(layer.staircase is not None for layer in made.layers)
    x = torch.randn(5, 300, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 300, 2, dtype=torch.float64)
    params = list(made.parameters())
    outs = []
    for f in (made, lambda t: _dense_made(made, t, None)):
        (g_x,) = torch.autograd.grad((f(x) * v).sum(), x, create_graph=True)
        outs.append(torch.autograd.grad(g_x.pow(2).sum(), params, materialize_grads=True))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


def test_staircase_views_follow_new_storages() -> None:
    # The per-block views are cached per storage: .double(), load_state_dict and an in-place
    # update must all be seen.
    made = _perturb(MADE(300, 2, hidden=256, layers=1), 0.2)
    x = torch.randn(4, 300)
    made(x).sum().backward()  # fills the view caches
    made = made.double()
    x = x.double()
    torch.testing.assert_close(made(x), _dense_made(made, x, None))
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.1)
    torch.testing.assert_close(made(x), _dense_made(made, x, None))
    other = _perturb(MADE(300, 2, hidden=256, layers=1).double(), 0.3)
    made.load_state_dict(other.state_dict())
    torch.testing.assert_close(made(x), _dense_made(other, x, None))
    copy = pickle.loads(pickle.dumps(made))
    torch.testing.assert_close(copy(x), _dense_made(other, x, None))


def test_staircase_needs_a_prefix_mask_and_size() -> None:
    assert staircase_blocks(torch.ones(300, 300).tril().bool()) is not None
    # Block edges and column bounds on multiples of 16 (or the matrix's end); the blocks cover
    # every row, and each bound is safe: no row reads past hi, every row reads below lo.
    for layer in MADE(784, 2, hidden=512, layers=1).layers:
        rows, cols = layer.mask.shape
        allowed = layer.mask.sum(1)
        assert layer.blocks[0][0] == 0 and layer.blocks[-1][1] == rows
        for (r0, r1, lo, hi), nxt in zip(layer.blocks, layer.blocks[1:] + ((rows,),)):
            assert r1 == nxt[0] and r0 % 16 == 0 and lo % 16 == 0 and (hi % 16 == 0 or hi == cols)
            assert int(allowed[r0:r1].min()) >= lo and int(allowed[r0:r1].max()) <= hi
    assert staircase_blocks(torch.ones(8, 8).tril().bool()) is None  # too small to gain
    assert staircase_blocks(torch.ones(300, 300).triu().bool()) is None  # rows are suffixes
    # A random order permutes the inputs: the first layer has no staircase, and stays exact.
    made = MADE(300, 2, hidden=256, layers=1, order="random", seed=0)
    assert made.layers[0].blocks is None


def test_masked_weight_cache_follows_the_weights() -> None:
    maf = _perturb(MaskedAutoregressive(300, AffineTransformer(), hidden=256, layers=1)).double()
    x = torch.randn(5, 300, dtype=torch.float64)
    maf.eval()
    with torch.no_grad():
        before = maf(x)[0]
        for p in maf.made.layers[0].parameters():
            p.add_(0.5)  # bumps the version counter: cache invalid
        after = maf(x)[0]
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, maf._forward(x, None)[0])
    other = MaskedAutoregressive(300, AffineTransformer(), hidden=256, layers=1).double().eval()
    other.load_state_dict(maf.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(x)[0], after)


def _generic(coupling: Coupling) -> Coupling:
    """The same layer through the generic image path (``Coupling`` with the adapter net)."""
    return Coupling(coupling.mask, coupling.transformer, net=coupling.net).double()


@pytest.mark.parametrize(
    "mask",
    [
        alternating_mask(4)[:, None, None].expand(4, 3, 3).clone(),  # interleaved channels
        channel_mask((4, 3, 3), flip=True),  # two blocks
        alternating_mask(3, flip=True)[:, None, None].expand(3, 3, 3).clone(),  # odd: gather
    ],
    ids=["interleave", "halves", "odd"],
)
def test_channel_coupling_equals_the_generic_image_path(mask: torch.Tensor) -> None:
    fast = _perturb(image_coupling(mask, AffineTransformer(scale="sigmoid"), hidden=4).double())
    slow = _generic(fast)
    x = torch.randn(5, *mask.shape, dtype=torch.float64)
    for a, b in zip(fast(x), slow(x)):
        torch.testing.assert_close(a, b)
    u = fast(x)[0]
    for a, b in zip(fast.inverse(u), slow.inverse(u)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(fast.inverse(u)[0], x)


def test_vector_coupling_blocks_equal_the_index_path() -> None:
    for flip in (False, True):
        fast = _perturb(affine_coupling(half_mask(5, flip=flip), context_features=2).double())
        assert fast._blocks is not None
        slow = affine_coupling(half_mask(5, flip=flip), context_features=2).double()
        slow.load_state_dict(fast.state_dict())
        slow._blocks = None  # the gather/scatter path
        x, c = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
        for a, b in zip(fast(x, c), slow(x, c)):
            torch.testing.assert_close(a, b)
        for a, b in zip(fast.inverse(x, c), slow.inverse(x, c)):
            torch.testing.assert_close(a, b)


def _one_by_one(compose: Compose, x: torch.Tensor, inverse: bool = False):
    """The plain path of a ``Compose``: every member's public method, in turn."""
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    members = reversed(compose.transforms) if inverse else compose.transforms
    for t in members:
        x, ladj = t.inverse(x) if inverse else t(x)
        total = total + ladj
    return x, total


@pytest.mark.parametrize(
    ("model", "features", "batch", "kw"),
    [
        ("realnvp", 2, 9, {}),  # W1's shape: one entry per block, no reductions
        ("realnvp", 5, 9, {"layers": 3, "net_layers": 1}),  # blocks of 2 and 3
        ("realnvp", 8, 4100, {"layers": 2, "hidden": 8}),  # 16,400 entries: sigmoid clamp form
        ("realnvp", 3, 9, {"actnorm": True, "clamp": 1.5}),  # runs of one between ActNorms
        ("maf", 2, 9, {}),  # W1b's shape (narrow first-layer products)
        ("maf", 5, 9, {"layers": 3, "net_layers": 1}),
        ("maf", 20, 9, {"layers": 2, "net_layers": 0}),  # one masked linear map, wide input
        ("maf", 3, 9, {"batch_norm": True}),  # runs of one between BatchNorms
    ],
    ids=["2d", "5d-odd", "sigmoid-form", "actnorm", "maf-2d", "maf-5d", "maf-linear", "maf-bn"],
)
def test_fused_run_equals_the_plain_path(model: str, features: int, batch: int, kw: dict) -> None:
    from flowscope.transforms.fused import _Run

    compose = _perturb(getattr(models, model)(features, **kw).transform.double(), 0.3)
    x = torch.randn(batch, features, dtype=torch.float64)
    compose.train()
    compose(x)  # ActNorm's data-dependent initialization, before comparing
    runs = [m for m in compose._members(x, None) if isinstance(m, _Run)]
    assert runs, "the fused path is not taken"
    params = list(compose.parameters())
    for need_x in (True, False):
        xg = x.clone().requires_grad_(need_x)
        fast, slow = compose(xg), _one_by_one(compose, xg)
        for a, b in zip(fast, slow):
            torch.testing.assert_close(a, b)
        g_u, g_l = torch.randn_like(fast[0]), torch.randn_like(fast[1])
        inputs = ([xg] if need_x else []) + params
        got = torch.autograd.grad([fast[0], fast[1]], inputs, [g_u, g_l])
        want = torch.autograd.grad([slow[0], slow[1]], inputs, [g_u, g_l])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
    compose.eval()
    u = compose(x)[0].detach()
    with torch.no_grad():  # the fused inverse (no autograd) and forward
        for a, b in zip(compose.inverse(u), _one_by_one(compose, u, inverse=True)):
            torch.testing.assert_close(a, b)
        for a, b in zip(compose(x), _one_by_one(compose, x)):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(compose.inverse(u)[0], x)  # with autograd: layer by layer
    compose.train()


def test_coupling_fusion_takes_only_what_it_computes_exactly() -> None:
    from flowscope.transforms import spline_coupling
    from flowscope.transforms.fused import CouplingRun, fuse

    x = torch.randn(4, 2)
    plain = models.realnvp(2, layers=8).transform
    members = plain._members(x, None)
    assert len(members) == 1 and isinstance(members[0], CouplingRun)
    assert len(members[0].couplings) == 8 and members[0].blocks == [0, 1] * 4
    # Another layer type cuts a run; so does a different split of the vector.
    mixed = fuse(list(models.realnvp(3, layers=2, actnorm=True).transform))
    assert [type(m).__name__ for m in mixed] == ["ActNorm", "CouplingRun"] * 2
    # MAF layers fuse with the order reversals between them, not with a BatchNorm; a MADE
    # large enough for the staircase kernel (W2's 784-512) keeps its own path.
    maf = fuse(list(models.maf(2, layers=3).transform))
    assert [type(m).__name__ for m in maf] == ["AutoregressiveRun"]
    assert len(maf[0].members) == 5
    bn = fuse(list(models.maf(2, layers=2, batch_norm=True).transform))
    assert [type(m).__name__ for m in bn] == ["AutoregressiveRun", "BatchNorm"] * 2
    assert type(bn[2].members[0]).__name__ == "ReversePermutation"  # a leading reversal
    big = list(models.maf(784, layers=1, hidden=512, net_layers=1).transform)
    assert fuse(big) == big
    not_fused = [
        affine_coupling(alternating_mask(4)),  # not two blocks
        affine_coupling(half_mask(4), scale="sigmoid"),
        spline_coupling(half_mask(4)),
        affine_coupling(half_mask(4), context_features=2),
        affine_coupling(half_mask(4), net=torch.nn.Sequential(torch.nn.Linear(2, 4))),
    ]
    assert fuse(not_fused) == not_fused
    # A context, or a tracer, takes the plain path.
    ctx = models.realnvp(2, context_features=3).transform
    assert ctx._members(x, torch.randn(4, 3)) is ctx.transforms


def test_fused_run_reads_the_current_parameters_and_has_second_derivatives() -> None:
    compose = _perturb(models.realnvp(2, layers=2).transform.double())
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    before = compose(x)[0]
    linear = compose[0].net[0]
    linear.weight = torch.nn.Parameter(linear.weight.detach() + 1.0)  # replaced, not updated
    after = compose(x)
    assert not torch.allclose(before, after[0])
    torch.testing.assert_close(after, _one_by_one(compose, x))
    # retain_graph=True: a second backward through the same graph gives the same gradients.
    loss = after[0].pow(2).sum() + after[1].sum()
    first = torch.autograd.grad(loss, x, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0], first)
    # create_graph=True: the second derivatives (e.g. a gradient penalty) are the plain path's.
    params = list(compose.parameters())
    second = []
    for fn in (compose, lambda z: _one_by_one(compose, z)):
        u, ladj = fn(x)
        (g,) = torch.autograd.grad(u.pow(2).sum() + ladj.sum(), x, create_graph=True)
        second.append(torch.autograd.grad(g.pow(2).sum(), [x, *params]))
    for a, b in zip(*second):
        torch.testing.assert_close(a, b)


def test_fused_runs_follow_replaced_layers_and_transformers() -> None:
    from flowscope.transforms import AffineTransformer
    from flowscope.transforms.fused import CouplingRun

    x = torch.randn(6, 2, dtype=torch.float64)
    for model in ("realnvp", "maf"):
        compose = _perturb(getattr(models, model)(2, layers=2).transform.double())
        compose(x)  # the runs are built
        first = compose[0].net if model == "realnvp" else compose[0].made.layers
        # A layer replaced inside a member's network: the next call uses the new one.
        old = first[0]
        first[0] = type(old)(old.mask.clone()) if model == "maf" else torch.nn.Linear(1, 64)
        _perturb(first[0].double(), 0.5)
        for a, b in zip(compose(x), _one_by_one(compose, x)):
            torch.testing.assert_close(a, b)
        # A member's transformer replaced (not a module): the layer-by-layer path.
        compose[0].transformer = AffineTransformer(scale="sigmoid")
        for a, b in zip(compose(x), _one_by_one(compose, x)):
            torch.testing.assert_close(a, b)
        with torch.no_grad():
            u = compose(x)[0]
            for a, b in zip(compose.inverse(u), _one_by_one(compose, u, inverse=True)):
                torch.testing.assert_close(a, b)
    # Rebuilt after a submodule assignment: a replaced conditioner is no longer fused.
    compose = models.realnvp(2, layers=2).transform
    assert isinstance(compose._members(x, None)[0], CouplingRun)
    compose[1].net = torch.nn.Sequential(torch.nn.Linear(1, 2))
    assert [type(m).__name__ for m in compose._members(x, None)] == ["CouplingRun", "Coupling"]


@pytest.mark.parametrize("name", ["realnvp", "maf"])
def test_chunked_inference_equals_one_pass(name: str) -> None:
    flow = _perturb(getattr(models, name)(2, layers=2, hidden=8)).eval()
    x = torch.randn(100, 2)
    with torch.no_grad():
        flow.chunk_rows = 10**9
        whole, whole_parts = flow.log_prob(x), flow.log_prob_parts(x)
        torch.manual_seed(3)
        whole_samples = flow.sample(100)
        flow.chunk_rows = 16  # 100 rows -> 7 chunks
        torch.testing.assert_close(flow.log_prob(x), whole)
        for a, b in zip(flow.log_prob_parts(x), whole_parts):
            torch.testing.assert_close(a, b)
        torch.manual_seed(3)
        torch.testing.assert_close(flow.sample(100), whole_samples)
    # With autograd (training) the batch is never cut: gradients see one graph.
    flow.train()
    assert flow.log_prob(x).requires_grad


def test_values_are_checked_once_at_the_door() -> None:
    bad = torch.tensor([[0.0, float("nan")]])
    flow = models.maf(2, layers=2, hidden=8)
    with pytest.raises(ValueError, match="x: expected finite values"):
        flow.log_prob(bad)
    # A Compose called directly is a door too, even when its members only check shapes.
    chain = Compose(affine_coupling(half_mask(2)), affine_coupling(half_mask(2, flip=True)))
    with pytest.raises(ValueError, match="x: expected finite values"):
        chain(bad)
    with pytest.raises(ValueError, match="u: expected finite values"):
        chain.inverse(bad)


def test_reverse_permutation_flip_equals_the_gather() -> None:
    from flowscope.transforms import RandomPermutation, ReversePermutation

    rev = ReversePermutation(5)
    assert rev._reverse
    x = torch.randn(3, 5, 2)
    torch.testing.assert_close(rev(x)[0], x.index_select(1, rev.permutation))
    torch.testing.assert_close(rev.inverse(rev(x)[0])[0], x)
    # A state dict holding another permutation turns the flip off (and back on).
    shuffled = RandomPermutation(5, seed=0)
    rev.load_state_dict(shuffled.state_dict())
    assert not rev._reverse
    torch.testing.assert_close(rev(x)[0], shuffled(x)[0])
    shuffled.load_state_dict(ReversePermutation(5).state_dict())
    assert shuffled._reverse


def test_sigmoid_soft_clamp_equals_the_tanh_form() -> None:
    from flowscope.transforms.transformers import _SIGMOID_TANH_MIN

    for clamp in (0.5, 1.0, 3.0):
        affine = AffineTransformer(scale="tanh", clamp=clamp)
        # Large enough for the sigmoid form; values from the linear part to deep saturation.
        h = torch.linspace(-40, 40, _SIGMOID_TANH_MIN + 1, dtype=torch.float64)
        h = h.reshape(-1, 1).requires_grad_(True)
        got = affine._log_scale(h)
        want = clamp * torch.tanh(h / clamp)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        (g_got,) = torch.autograd.grad(got.sum(), h)
        (g_want,) = torch.autograd.grad(want.sum(), h)
        torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-12)
        assert bool((got.abs() <= clamp).all())
        # Small tensors take the tanh form itself.
        torch.testing.assert_close(affine._log_scale(h[:5]), want[:5], rtol=0, atol=0)
    # float32: the two forms differ only by rounding.
    h32 = torch.randn(_SIGMOID_TANH_MIN, 2) * 5
    torch.testing.assert_close(
        AffineTransformer(clamp=3.0)._log_scale(h32), 3.0 * torch.tanh(h32 / 3.0), rtol=0, atol=2e-6
    )


def test_large_affine_node_equals_the_generic_graph() -> None:
    from flowscope.transforms.transformers import _SIGMOID_TANH_MIN

    for clamp in (0.5, 3.0):
        affine = AffineTransformer(scale="tanh", clamp=clamp)
        x = torch.randn(8, _SIGMOID_TANH_MIN // 8 + 3, dtype=torch.float64, requires_grad=True)
        params = (torch.randn(*x.shape, 2, dtype=torch.float64) * 4).requires_grad_(True)
        before = (x.detach().clone(), params.detach().clone())
        (y, log_s), (y0, log_s0) = affine.forward(x, params), affine._generic(x, params)
        # the node's in-place passes touch its own fresh tensors only
        assert torch.equal(x, before[0]) and torch.equal(params, before[1])
        assert y.grad_fn is not None and "_SoftClampAffine" in type(y.grad_fn).__name__
        torch.testing.assert_close((y, log_s), (y0, log_s0), rtol=1e-13, atol=1e-13)
        cot = (torch.randn_like(y), torch.randn_like(log_s))
        got = torch.autograd.grad((y, log_s), (x, params), cot)
        want = torch.autograd.grad((y0, log_s0), (x, params), cot)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        # Second derivatives: the node differentiates the generic graph instead.
        outs = []
        for f in (affine.forward, affine._generic):
            g_x, g_p = torch.autograd.grad(f(x, params), (x, params), cot, create_graph=True)
            outs.append(torch.autograd.grad((g_x * g_x).sum() + g_p.pow(3).sum(), (x, params)))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    # Small tensors, no graph, or params that broadcast: the generic graph.
    small = torch.randn(3, 4, requires_grad=True)
    y, _ = AffineTransformer().forward(small, torch.randn(3, 4, 2))
    assert "_SoftClampAffine" not in type(y.grad_fn).__name__


def test_made_input_layers_know_the_inputs_they_read() -> None:
    # Natural order: the last coordinate is read by no unit; the fused MAF runs' inference
    # path multiplies the others only (and equals the plain path: test above, "maf-*").
    for features, k in ((2, 1), (5, 4)):
        first = MADE(features, 2, hidden=8, layers=2).layers[0]
        assert first.used_inputs == k
        assert not first.mask[:, k:].any() and first.mask[:, :k].any(0).all()
    assert MADE(2, 2, hidden=8).layers[0].prefix_full  # 2-D: the one input feeds every unit
    # A random order puts the unread input anywhere: no prefix unless it happens to be last.
    made = MADE(6, 2, hidden=8, order="random", seed=3)
    unread = int(made.order[-1])
    assert made.layers[0].used_inputs == (5 if unread == 5 else None)
    # With a context every input but the last is read too (degree-0 units see the context).
    assert MADE(3, 2, hidden=8, context_features=2).layers[0].used_inputs == 2


def test_exp2_form_equals_exp() -> None:
    from flowscope.transforms.transformers import _SIGMOID_TANH_MIN, _exp

    # Large enough for the exp2 form; the soft clamp's whole range and beyond.
    x = torch.linspace(-12, 12, _SIGMOID_TANH_MIN + 1, dtype=torch.float64).requires_grad_(True)
    for sign in (1.0, -1.0):
        got, want = _exp(x, sign), torch.exp(sign * x)
        torch.testing.assert_close(got, want, rtol=1e-14, atol=0)
        (g_got,) = torch.autograd.grad(got.sum(), x)
        (g_want,) = torch.autograd.grad(want.sum(), x)
        torch.testing.assert_close(g_got, g_want, rtol=1e-14, atol=0)
        torch.testing.assert_close(_exp(x[:5], sign), want[:5], rtol=0, atol=0)  # small: exp
    # float32: the rounding of x log2(e) costs about |x| ulp; over the log-scales the
    # transformer produces (tanh clamp (-3, 3), sigmoid scale down to log 1e-3 = -6.9) that
    # stays within 1e-6 relative.
    x32 = torch.linspace(-7, 7, 2 * _SIGMOID_TANH_MIN)
    torch.testing.assert_close(_exp(x32), torch.exp(x32), rtol=1e-6, atol=0)


def test_finite_check_sum_shortcut_keeps_every_verdict() -> None:
    from flowscope._checks import check_finite

    x = torch.randn(1000, 50)
    check_finite("x", x)
    # Finite entries whose sum overflows to inf (or inf - inf = NaN) still pass.
    check_finite("x", torch.full((4, 3), 3e38))
    check_finite("x", torch.tensor([3e38, 3e38, -3e38, -3e38, -3e38]))
    check_finite("n", torch.arange(10))  # integer tensors are always finite
    for bad, count in ((float("nan"), 1), (float("inf"), 1), (-float("inf"), 1)):
        y = x.clone()
        y[17, 3] = bad
        with pytest.raises(ValueError, match=f"x: expected finite values, got {count} NaN/inf"):
            check_finite("x", y)
    y = x.clone()
    y[0, 0], y[5, 5] = float("inf"), -float("inf")  # their sum is NaN: caught all the same
    with pytest.raises(ValueError, match="got 2 NaN/inf entries"):
        check_finite("x", y)


def test_every_model_parameter_is_dense_for_fused_adam() -> None:
    # torch's CPU fused Adam (what the Trainer and the benchmark use) updates a parameter's
    # storage as if it were contiguous: a strided view as a parameter (e.g. per-block views of
    # one matrix) would be updated in the wrong places (torch 2.13, docs/benchmarks.md item 3).
    # Every parameter must be contiguous, or channels-last (dense, the convolutions').
    built = {
        "realnvp": models.realnvp(2),
        "maf": models.maf(300, layers=2, hidden=256, net_layers=1),  # staircase layers
        "iaf": models.iaf(4),
        "nsf": models.nsf(3),
        "nice": models.nice(4),
        "planar": models.planar(2),
        "glow": models.glow((3, 8, 8), levels=2, steps=1, hidden=8),
        "realnvp_image": models.realnvp_image((1, 8, 8)),
    }
    for name, flow in built.items():
        for key, p in flow.named_parameters():
            dense = p.is_contiguous() or (
                p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
            )
            assert dense, f"{name}: {key} has strides {p.stride()}"
