"""Packed parameters (transforms/packing.py): one flat tensor per fused run, same model."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from flowscope import models
from flowscope.transforms import Compose
from flowscope.transforms.packing import layer_parameters, unpack, unpacked_grads

torch.set_num_threads(1)

BUILDS = {
    "realnvp": lambda: models.realnvp(2, layers=4, hidden=16),
    "maf": lambda: models.maf(3, layers=3, hidden=16),
}


def _twins(kind: str) -> tuple[nn.Module, nn.Module]:
    """The same flow (same seed) packed, and with ``pack=False``, in float64."""
    torch.manual_seed(0)
    packed = BUILDS[kind]().double()
    torch.manual_seed(0)
    plain = BUILDS[kind]().double()
    plain.transform = Compose(list(unpack(plain.transform).transforms), pack=False)
    with torch.no_grad():  # move away from the zero-initialized output layers
        for a, b in zip(layer_parameters(packed).values(), layer_parameters(plain).values()):
            a.add_(0.2 * torch.randn_like(a))
            b.copy_(a)
    return packed, plain


@pytest.mark.parametrize("kind", list(BUILDS))
def test_one_flat_tensor_same_state_dict(kind: str) -> None:
    packed, plain = _twins(kind)
    assert [n for n, _ in packed.named_parameters()] == ["transform.packed.0"]
    assert len(list(plain.parameters())) > 1
    assert sum(p.numel() for p in packed.parameters()) == sum(p.numel() for p in plain.parameters())
    a, b = packed.state_dict(), plain.state_dict()
    assert list(a) == list(b)  # the same keys, in the same order
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("kind", list(BUILDS))
def test_training_the_flat_tensor_trains_the_same_model(kind: str) -> None:
    packed, plain = _twins(kind)
    x = torch.randn(64, packed.shape[0], dtype=torch.float64)
    # One backward: each layer's gradient, read from the flat tensor's, is the plain one.
    packed.loss(x).backward()
    plain.loss(x).backward()
    got, want = unpacked_grads(packed), {n: p.grad for n, p in plain.named_parameters()}
    assert list(got) == list(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n])
    # Adam on one flat tensor takes the same steps as Adam on the 2L tensors.
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (packed, plain)]
    for _ in range(5):
        for m, opt in zip((packed, plain), opts):
            opt.zero_grad(set_to_none=True)
            m.loss(x).backward()
            opt.step()
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(packed.state_dict()[k], v)
    torch.testing.assert_close(packed.log_prob(x), plain.log_prob(x))


def test_state_dicts_load_across_packing_and_errors_name_the_key() -> None:
    packed, plain = _twins("realnvp")
    fresh = BUILDS["realnvp"]().double()
    fresh.load_state_dict(plain.state_dict())  # unpacked -> packed
    x = torch.randn(8, 2, dtype=torch.float64)
    torch.testing.assert_close(fresh.log_prob(x), plain.log_prob(x))
    plain.load_state_dict(packed.state_dict())  # packed -> unpacked
    torch.testing.assert_close(plain.log_prob(x), packed.log_prob(x))
    sd = packed.state_dict()
    key = "transform.transforms.0.net.0.weight"
    missing = {k: v for k, v in sd.items() if k != key}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*transforms\.0\.net\.0\.weight"):
        fresh.load_state_dict(missing)
    wrong = dict(sd, **{key: torch.zeros(3, 3, dtype=torch.float64)})
    with pytest.raises(RuntimeError, match=r"size mismatch for transform\.transforms\.0\.net\.0"):
        fresh.load_state_dict(wrong)


def test_conversion_copy_and_layers_moved_elsewhere_keep_their_numbers() -> None:
    flow = BUILDS["realnvp"]()
    x = torch.randn(8, 2)
    want = flow.log_prob(x).detach()  # views cached for float32 ...
    flow.double()  # ... and the flat tensor converted: every layer reads float64
    layer = flow.transform.transforms[0].net[0]
    assert layer.weight.dtype == torch.float64
    torch.testing.assert_close(flow.log_prob(x.double()).float(), want)
    twin = copy.deepcopy(flow)  # a copy has its own flat tensor
    with torch.no_grad():
        twin.transform.transforms[0].net[0].weight.add_(1.0)
    torch.testing.assert_close(flow.log_prob(x.double()).float(), want)
    # Layers taken into a new container are still trained with it: their flat tensor comes along.
    moved = Compose(list(flow.transform.transforms))
    params = list(moved.parameters())
    assert len(params) == 1 and params[0] is flow.transform.packed.get_parameter("0")
    u, ladj = moved(x.double())
    (u.pow(2).sum() + ladj.sum()).backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0


def test_functional_call_swaps_the_flat_tensor_and_gives_the_model_its_own_back() -> None:
    # Each packed layer holds the flat tensor (a tied parameter): torch.func.functional_call
    # swaps every name of it, and the model keeps its own Parameter afterwards.  (With the
    # Packs module itself registered under every layer, torch 2.13 restored the swapped tensor
    # and the flow lost its parameter.)
    transform = BUILDS["realnvp"]().transform
    (name, own), *rest = transform.named_parameters()
    assert not rest
    x = torch.randn(8, 2)
    other = torch.randn_like(own) * 0.1
    got = torch.func.functional_call(transform, {name: other}, (x,))
    with torch.no_grad():
        saved = own.detach().clone()
        own.copy_(other)
        want = transform(x)
        own.copy_(saved)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert transform.get_parameter(name) is own and type(own) is nn.Parameter
    assert transform.transforms[0].net[0].pack.flat is own  # the layer's handle is back too
    grads = torch.func.grad(
        lambda p: torch.func.functional_call(transform, {name: p}, (x,))[1].sum()
    )(own.detach())
    assert grads.shape == own.shape and grads.abs().sum() > 0
    assert transform.get_parameter(name) is own


class _LogProb(nn.Module):
    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x)


@pytest.mark.parametrize("kind", sorted(BUILDS))
def test_torch_func_recipes_on_packed_flows(kind: str) -> None:
    # torch's own recipes: per-example gradients (vmap of grad over functional_call) and model
    # ensembling (stack_module_state, a copy moved to "meta", vmap over functional_call).
    # ``.to("meta")`` makes a new Parameter per module that holds one: Compose ties the packed
    # layers' handles to its Packs entry again, or the copy would read its own stale tensors.
    import copy

    from torch.func import functional_call, grad, stack_module_state, vmap

    torch.manual_seed(0)
    model = _LogProb(BUILDS[kind]())
    d = model.flow.shape[0]
    xs = torch.randn(4, d)
    params = {k: v.detach() for k, v in model.named_parameters()}
    per_example = vmap(
        grad(lambda p, x: functional_call(model, p, (x[None],)).sum()), in_dims=(None, 0)
    )(params, xs)
    for i in range(4):
        model.zero_grad()
        model(xs[i : i + 1]).sum().backward()
        for k, p in model.named_parameters():
            torch.testing.assert_close(per_example[k][i], p.grad, atol=1e-5, rtol=1e-5)
    members = [_LogProb(BUILDS[kind]()) for _ in range(3)]
    stacked, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    flat = base.flow.transform.packed.get_parameter("0")
    layers = [m for m in base.modules() if hasattr(m, "_pack_slots")]
    assert flat.is_meta and layers and all(m.pack.flat is flat for m in layers)
    out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))(
        stacked, buffers, xs
    )
    torch.testing.assert_close(out, torch.stack([m(xs) for m in members]).detach())


def test_layer_level_edits_act_on_the_packed_numbers() -> None:
    flow = BUILDS["realnvp"]()
    layer = flow.transform.transforms[1].net[2]
    assert isinstance(layer, nn.Linear) and "packed" in repr(layer)
    nn.init.normal_(layer.weight)  # an init function writes through the view
    flat = flow.transform.packed.get_parameter("0")
    view = layer_parameters(flow)["transform.transforms.1.net.2.weight"]
    assert torch.equal(view, layer.weight) and view.data_ptr() >= flat.data_ptr()
    # Assigning a new parameter unpacks that layer; the model still computes the plain path.
    x = torch.randn(16, 2)
    layer.weight = nn.Parameter(torch.randn(16, 16))
    assert type(layer) is nn.Linear and layer.weight.is_leaf
    u, ladj = flow.transform(x)
    total, z = torch.zeros(16), x
    for t in flow.transform.transforms:
        z, l = t(z)
        total = total + l
    torch.testing.assert_close(u, z)
    torch.testing.assert_close(ladj, total)
    # A new instance of a packed layer's class is a plain layer.
    other = flow.transform.transforms[0].net[0]
    fresh = type(other)(3, 4)
    assert type(fresh) is nn.Linear and [n for n, _ in fresh.named_parameters()] == [
        "weight",
        "bias",
    ]


def test_inference_mode_first_then_training() -> None:
    flow = BUILDS["maf"]()
    x = torch.randn(32, 3)
    with torch.inference_mode():
        before = flow.log_prob(x)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    flow.loss(x).backward()  # views made under inference mode are not reused for autograd
    opt.step()
    with torch.inference_mode():
        after = flow.log_prob(x)
    assert not torch.allclose(before, after)  # the step is seen through the cached views
    torch.testing.assert_close(after, flow.log_prob(x).detach())


def test_a_pickled_packed_model_comes_back_packed() -> None:
    # torch.save(model) pickles the module; the packed classes are made at run time, so they
    # rebuild themselves from the layer's own class (flowscope's checkpoints never pickle).
    flow = BUILDS["maf"]()
    x = torch.randn(8, 3)
    back = pickle.loads(pickle.dumps(flow))
    torch.testing.assert_close(back.log_prob(x), flow.log_prob(x))
    assert [n for n, _ in back.named_parameters()] == ["transform.packed.0"]
    with torch.no_grad():  # its own flat tensor, read by its own layers
        back.transform.packed.get_parameter("0").add_(0.1)
    assert not torch.allclose(back.log_prob(x), flow.log_prob(x))
