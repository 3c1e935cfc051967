"""Packed parameters: the linear layers of a fused run keep their weights in ONE flat tensor.

Why: a training step pays per parameter TENSOR, whatever its size -- an ``AccumulateGrad``
node in autograd, a ``zero_grad`` entry, and the optimizer's per-tensor bookkeeping (torch's
``Adam``, even ``fused=True``, visits each tensor in Python and bumps a step counter per tensor).
A 2-D RealNVP of 8 couplings with 2x64 conditioners has 48 weight and bias tensors of 35k
numbers in all; with them in one tensor the whole training step (log_prob, backward, fused Adam)
is 1.13x faster, and 1.17x on the 5-layer MAF of the benchmark's W1b (``benchmarks/packing.py``,
docs/benchmarks.md item 10).  The fused run (``fused.py``) takes the flat tensor as its ONE
parameter input, reads views of it made once per storage, and returns one gradient (the
per-layer ones concatenated in one call).

How: :class:`~flowscope.transforms.Compose` packs each fused run it holds when it is built.
The run's layers stay what they were (``coupling.net[0]`` is still an ``nn.Linear``), but their
``weight`` and ``bias`` become views of the flat tensor, read through properties of a subclass
made for the layer's class (the device ``torch.nn.utils.parametrize`` uses).  What a user sees:

* ``flow.parameters()`` yields the flat tensor (``transform.packed.0``) instead of the layers'
  weights; an optimizer built on it updates the layers, and ``.to()``/``.double()`` convert it;
* ``layer.weight`` is a view: reading, ``layer.weight.data.normal_()``, ``copy_`` under
  ``no_grad`` and the ``nn.init`` functions act on the packed numbers; gradients land in the
  flat tensor's ``.grad`` (:func:`unpacked_grads` gives them per layer);
* the state dict is unchanged: per-layer ``weight``/``bias`` keys, no flat tensor, so
  checkpoints of packed and unpacked models are interchangeable;
* assigning a new ``layer.weight = nn.Parameter(...)`` unpacks that layer first (its slot in
  the flat tensor is then unused); :func:`unpack` turns a whole module back into plain layers
  (``StackedFlows`` does, before stacking K components);
* a packed layer holds the flat tensor in its submodule ``pack`` too (a tied parameter: a
  layer moved into another container brings its storage along), and pickles
  (``torch.save(model)``) and deep-copies;
* ``torch.func.functional_call`` with the flat tensor swaps it in every layer and restores
  the model's own afterwards (see :class:`_PackRef`).

A ``StackedFlows`` holder (``mixture_batched.py``) packs its K stacked components into ONE
``(K, N)`` tensor the same way (``pack_layers(..., stacked=K)``): each layer's slot is a
column range, read as a ``(K, *shape)`` view, and row ``k`` is component ``k``'s packed
tensor.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "Packs",
    "pack_layers",
    "unpack",
    "layout",
    "layer_parameters",
    "unpacked_grads",
    "plain_type",
    "flatten_dense_tensors",
    "retie",
]

_NAMES = ("weight", "bias")


class Packs(nn.Module):
    """The flat parameter tensors of a ``Compose``'s fused runs (``"0"``, ``"1"``, ...).

    Left out of the state dict: it keeps the layers' own keys (their views of these tensors);
    saving the flat tensors too would store every number twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self._count = 0

    def add(self, flat: nn.Parameter) -> str:
        """Register ``flat``; returns its name."""
        key = str(self._count)
        self._count += 1
        self.register_parameter(key, flat)
        return key

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {p.numel()}" for k, p in self._parameters.items() if p is not None)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        pass

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        pass  # the layers load their slots; nothing of ours is missing


class _PackRef(nn.Module):
    """A packed layer's submodule ``pack``: holds the SAME flat ``Parameter`` as its ``Packs``.

    So every module tree that holds the layer holds the flat tensor: a layer moved into another
    ``Compose`` or ``nn.ModuleList`` is still trained and converted with it (a tied parameter,
    listed once by ``parameters()``).  Not the ``Packs`` itself: one module registered under
    several parents is a module with several names, and ``torch.func.functional_call`` (torch
    2.13, ``tie_weights=True``, its default) swaps it once per name and restores it once per
    name, the later restores putting the replacement back, so the model kept the tensor it was
    called with instead of its own parameter (checked in tests/test_packing.py).  A tied
    parameter in distinct modules is swapped and restored correctly.  Left out of the state
    dict, like ``Packs``.
    """

    def __init__(self, flat: nn.Parameter) -> None:
        super().__init__()
        self.flat = flat

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        pass

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        pass


class _Packed:
    """Mixin of the packed layer classes: ``weight``/``bias`` are views of a flat tensor.

    The instance attribute ``_pack_slots = (packs, key, {name: (offset, shape)})`` says where;
    the flat tensor is read at every access from the layer's submodule ``pack`` (a
    :class:`_PackRef`, holding the same tensor as ``packs``), which is in every module tree that
    calls the layer: ``torch.func.functional_call`` (which swaps every name of a tied tensor)
    and ``.to()`` are seen, also for a layer moved into another container.
    """

    _pack_slots: tuple[Packs, str, dict[str, tuple[int, tuple[int, ...]]]]
    _unpacked: type[nn.Module]

    def _slot(self, name: str) -> Tensor:
        offset, shape = self._pack_slots[2][name]
        return _view(self._modules["pack"].flat, offset, shape)  # type: ignore[union-attr]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _NAMES:
            # Assigning a weight unpacks the layer; so does constructing this class afresh
            # (``type(layer)(...)``, whose ``__init__`` assigns its parameters).
            if "_pack_slots" in self.__dict__:
                _unpack_layer(self)  # type: ignore[arg-type]
            else:
                object.__setattr__(self, "__class__", self._unpacked)
            setattr(self, name, value)  # through the plain class now
            return
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return f"{self._unpacked.__name__}({self.extra_repr()}, packed)"

    def __reduce_ex__(self, protocol: Any) -> tuple:
        # The class is made at run time, so pickle (``torch.save(model)``) cannot import it by
        # name: rebuild it from the layer's own class, then restore the state as usual.
        return _new_packed, (self._unpacked,), self.__getstate__()

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        for name in _NAMES:
            value = self._slot(name)
            destination[prefix + name] = value if keep_vars else value.detach()
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]

    def _load_from_state_dict(
        self,
        state_dict: Any,
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        for name in _NAMES:
            key = prefix + name
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            value, target = state_dict[key], self._slot(name)
            if not isinstance(value, Tensor) or value.shape != target.shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                error_msgs.append(
                    f"size mismatch for {key}: copying a param with shape {got} from checkpoint, "
                    f"the shape in current model is {tuple(target.shape)}."
                )
                continue
            with torch.no_grad():
                target.copy_(value)
        rest = {k: v for k, v in state_dict.items() if k not in {prefix + n for n in _NAMES}}
        super()._load_from_state_dict(  # type: ignore[misc]
            rest, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _view(flat: Tensor, offset: int, shape: tuple[int, ...]) -> Tensor:
    """The slot ``(offset, shape)`` of a flat tensor (or of its gradient), on its LAST axis.

    A ``(N,)`` tensor gives ``shape``; a ``StackedFlows`` holder's ``(K, N)`` tensor gives
    ``(K, *shape)`` (a strided view: every component's slot is contiguous), and its per-component
    ``(N,)`` slices under ``vmap`` give ``shape`` again.
    """
    return flat.narrow(-1, offset, math.prod(shape)).unflatten(-1, shape)


_classes: dict[type, type] = {}


def _packed_class(cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` with ``weight``/``bias`` read from the pack (one subclass per class, cached)."""
    if cls not in _classes:
        props = {name: property(lambda self, n=name: self._slot(n)) for name in _NAMES}
        _classes[cls] = type(
            f"Packed{cls.__name__}",
            (_Packed, cls),
            {**props, "_unpacked": cls, "__module__": cls.__module__},
        )
    return _classes[cls]


def _new_packed(cls: type[nn.Module]) -> nn.Module:
    """An empty instance of ``cls``'s packed class (unpickling fills its ``__dict__``)."""
    packed = _packed_class(cls)
    return packed.__new__(packed)


def plain_type(module: nn.Module) -> type:
    """The class a layer had before packing (``type(module)`` for any other module)."""
    return getattr(type(module), "_unpacked", type(module))


def pack_layers(packs: Packs, layers: list[nn.Module], stacked: int | None = None) -> bool:
    """Move the ``weight`` and ``bias`` of ``layers`` (in order) into one new tensor of ``packs``.

    Skipped (False) unless every layer holds both as its own parameters with one dtype, device
    and ``requires_grad`` (a layer already packed elsewhere, e.g. shared by two flows, or a
    partly frozen run stays as it is).  ``stacked=K``: the parameters are a ``StackedFlows``
    holder's ``(K, *shape)`` stacks, packed into ONE ``(K, N)`` tensor (each layer's slot a
    column range, so that ``flat[k]`` is component ``k``'s own packed tensor).
    """
    params = [layer._parameters.get(name) for layer in layers for name in _NAMES]
    if not params or any(type(p) is not nn.Parameter for p in params):
        return False
    first = params[0]
    if any(
        p.dtype != first.dtype or p.device != first.device or p.requires_grad != first.requires_grad
        for p in params
    ):
        return False
    lead: tuple[int, ...] = () if stacked is None else (stacked,)
    if any(tuple(p.shape[: len(lead)]) != lead for p in params):
        return False
    flat = nn.Parameter(
        torch.cat([p.detach().reshape(*lead, -1) for p in params], dim=-1),
        requires_grad=first.requires_grad,
    )
    key = packs.add(flat)
    offset = 0
    for layer in layers:
        spans = {}
        for name in _NAMES:
            p = layer._parameters.pop(name)
            shape = tuple(p.shape[len(lead) :])
            spans[name] = (offset, shape)
            offset += math.prod(shape)
        object.__setattr__(layer, "_pack_slots", (packs, key, spans))
        layer.__class__ = _packed_class(type(layer))
        layer._modules["pack"] = _PackRef(flat)
    return True


def retie(packs: Packs, root: nn.Module) -> None:
    """Point every packed layer of ``packs`` under ``root`` at the ``Packs`` entry again.

    ``nn.Module._apply`` converts in place (``.data``, ``swap_tensors``) where it can, which
    keeps the tie; where it cannot (``.to("meta")``, a change of device type) it makes a new
    ``Parameter`` for each module holding one, and the layers' handles and the ``Packs`` entry
    would part (``Compose._apply`` calls this afterwards).
    """
    for m in root.modules():
        if isinstance(m, _Packed) and m._pack_slots[0] is packs:
            flat = getattr(packs, m._pack_slots[1], None)
            ref = m._modules["pack"]
            if flat is not None and ref is not None and ref._parameters["flat"] is not flat:
                ref._parameters["flat"] = flat


def _unpack_layer(layer: nn.Module) -> None:
    if not isinstance(layer, _Packed):
        return
    values = {name: layer._slot(name) for name in _NAMES}
    layer.__class__ = plain_type(layer)
    object.__delattr__(layer, "_pack_slots")
    del layer._modules["pack"]
    for name, value in values.items():
        layer.register_parameter(
            name, nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)
        )
    from .fused import structure_changed  # fused imports this module

    structure_changed()  # runs holding the old layout are rebuilt


def unpack(module: nn.Module) -> nn.Module:
    """Every packed layer in ``module`` back to plain parameters (copies); returns ``module``."""
    modules = list(module.modules())
    for m in modules:
        _unpack_layer(m)
    for m in modules:  # then the flat tensors, which the layers read until they are unpacked
        if isinstance(m, Packs):
            m._parameters.clear()
    return module


# ONE C++ call that concatenates the flattened tensors (torch's own helper for DDP buckets):
# 24 us for W1's 48 gradients against 56 us for ``torch.cat`` of 48 reshapes.
_flatten = getattr(torch._C._nn, "flatten_dense_tensors", None)


def flatten_dense_tensors(tensors: list[Tensor], lead: int = 0) -> Tensor:
    """``torch.cat([t.reshape(-1) for t in tensors])``; with ``lead`` leading axes kept (the
    gradient of a ``(K, N)`` stacked tensor), ``torch.cat([t.flatten(lead) ...], dim=-1)``."""
    if lead:
        return torch.cat([t.flatten(lead) for t in tensors], dim=-1)
    if _flatten is not None:
        return _flatten(tensors)
    return torch.cat([t.reshape(-1) for t in tensors])


class Layout:
    """Where each ``weight, bias`` of a run's layers lies in ONE flat tensor of a ``Packs``."""

    def __init__(self, spans: list[tuple[int, tuple[int, ...]]], ref: nn.Module) -> None:
        self.spans = spans
        self.ref = ref  # the first layer's ``pack`` (a _PackRef): read like the layers read
        self._cache: tuple[Tensor, tuple, list[Tensor]] | None = None

    def flat(self) -> Tensor:
        return self.ref.flat  # type: ignore[return-value]

    def views(self, flat: Tensor) -> list[Tensor]:
        """``[w_0, b_0, w_1, b_1, ...]`` as views of ``flat`` (with autograd when enabled)."""
        return [_view(flat, o, s) for o, s in self.spans]

    def cached_views(self, flat: Tensor) -> list[Tensor]:
        """:meth:`views` without autograd, made once per storage of ``flat``.

        For the fused run's own arithmetic (no graph): 48 slices and views cost 120 us a call
        on W1, a quarter of what packing saves.  An in-place update (an optimizer step) is seen
        through the views; a new storage (``.to()``, ``.data = ...``, a swapped tensor) or
        inference mode makes new ones.
        """
        key = (flat.data_ptr(), flat.dtype, flat.device, torch.is_inference_mode_enabled())
        cache = self._cache
        if cache is None or cache[0] is not flat or cache[1] != key:
            with torch.no_grad():
                cache = self._cache = (flat, key, self.views(flat))
        return cache[2]


def layout(layers: list[nn.Module]) -> Layout | None:
    """The layout of ``layers`` if they are exactly one packed tensor, in order; else None."""
    spans: list[tuple[int, tuple[int, ...]]] = []
    owner = None
    for layer in layers:
        if not isinstance(layer, _Packed):
            return None
        packs, key, slots = layer._pack_slots
        if owner is None:
            owner = (packs, key)
        elif owner[0] is not packs or owner[1] != key:
            return None
        spans += [slots[name] for name in _NAMES]
    if owner is None:
        return None
    ref = layers[0]._modules["pack"]
    expected = 0
    for offset, shape in spans:
        if offset != expected:
            return None
        expected += math.prod(shape)
    if expected != ref.flat.shape[-1]:  # type: ignore[union-attr]
        return None
    return Layout(spans, ref)  # type: ignore[arg-type]


def _layer_tensors(module: nn.Module, grads: bool) -> dict[str, Tensor | None]:
    out: dict[str, Tensor | None] = {}
    # remove_duplicate=False: a state-dict name for each path to a layer (as state_dict gives)
    for prefix, m in module.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        if isinstance(m, _Packed):
            spans = m._pack_slots[2]
            flat = m._modules["pack"].flat
            source = flat.grad if grads else flat
            for name, (offset, shape) in spans.items():
                out[dot + name] = None if source is None else _view(source, offset, shape)
        elif not isinstance(m, (Packs, _PackRef)):
            for name, p in m._parameters.items():
                if p is not None:
                    out[dot + name] = p.grad if grads else p
    return out


def layer_parameters(module: nn.Module) -> dict[str, Tensor]:
    """Every parameter of ``module`` by its state-dict name, a packed one as its view.

    ``named_parameters`` shows a packed run as one flat tensor; this lists each layer's
    ``weight``/``bias`` as before packing (in the same order).
    """
    return _layer_tensors(module, grads=False)  # type: ignore[return-value]


def unpacked_grads(module: nn.Module) -> dict[str, Tensor | None]:
    """The gradients of :func:`layer_parameters` (views of a flat tensor's ``.grad``), e.g.
    for per-layer gradient norms."""
    return _layer_tensors(module, grads=True)
