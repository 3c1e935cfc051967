"""The K component flows of a mixture as ONE batched computation, or as a list.

:class:`StackedFlows` keeps the parameters of K flows of the same architecture stacked along a
new leading axis (a parameter of shape ``s`` in the template becomes ``(K, *s)``) and evaluates
all components at once with ``torch.func.vmap`` over ``torch.func.functional_call``: one pass of
batched kernels instead of K passes of small ones.  Storing the stack (rather than stacking K
modules' parameters at every step) matters on small models: the optimizer then updates one
tensor per parameter name instead of K, and no ``torch.stack`` / ``unbind`` pair is paid per
step (measured in ``benchmarks/mixture_scaling.py``).

Buffers equal in every component at construction (masks, index tables, MADE orders, reverse
permutations) are stored once and shared; buffers that differ (e.g. random permutations drawn
per component) are stacked like parameters.  Integer buffers read with ``.tolist()`` (the
MADE order in sampling) therefore work inside ``vmap`` as long as they are shared.

:class:`FlowList` is the fallback for components of different architectures, or with layers
that mutate their state in ``forward`` (``BatchNorm`` running averages, ``ActNorm``'s
data-dependent initialization), which ``vmap`` cannot write through: a Python loop.

Both expose the same small interface (``log_prob``, ``sample``, ``sample_all``, ``component``)
used by :class:`~flowscope.mixture.MixtureOfFlows`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .distributions import StandardNormal
from .flow import Flow
from .transforms.base import Compose
from .transforms.fused import pack_runs, stacked_decoder, stacked_forward, structure_changed
from .transforms.normalization import ActNorm, BatchNorm
from .transforms.packing import unpack

__all__ = ["ComponentBank", "StackedFlows", "FlowList", "same_architecture", "make_bank"]

# Layers whose forward writes to their own buffers/parameters: vmap cannot write through them.
_STATEFUL = (BatchNorm, ActNorm)


class ComponentBank(nn.Module):
    """K flows over the same event shape, evaluated together.

    Attributes:
        num_components: K.
        shape: the data's event shape.
    """

    num_components: int
    shape: tuple[int, ...]

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p_k(x)`` for every component: ``(batch, *shape) -> (batch, K)``."""
        raise NotImplementedError

    def sample(self, k: int, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples of component ``k``: ``(n, *shape)``."""
        raise NotImplementedError

    def sample_all(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples of every component: ``(K, n, *shape)``."""
        raise NotImplementedError

    def component(self, k: int) -> Flow:
        """Component ``k`` as a standalone :class:`~flowscope.Flow` (a copy for StackedFlows)."""
        raise NotImplementedError


def _signature(flow: Flow) -> tuple:
    """What must agree for two flows to be stacked: module types, parameter and buffer layout."""
    return (
        tuple((name, type(m)) for name, m in flow.named_modules()),
        tuple((n, tuple(p.shape), p.dtype) for n, p in flow.named_parameters()),
        tuple((n, tuple(b.shape), b.dtype) for n, b in flow.named_buffers()),
        flow.shape,
    )


def same_architecture(flows: Sequence[Flow]) -> bool:
    """Whether every flow has the first one's modules, parameter and buffer shapes."""
    first = _signature(flows[0])
    return all(_signature(f) == first for f in flows[1:])


def _stateful(flow: Flow) -> bool:
    return any(isinstance(m, _STATEFUL) for m in flow.modules())


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule holding the dotted tensor ``name`` and the tensor's attribute name."""
    path, _, leaf = name.rpartition(".")
    return (root.get_submodule(path) if path else root), leaf


class StackedFlows(ComponentBank):
    """K flows of one architecture with stacked parameters, evaluated by ``vmap``.

    Args:
        flows: K >= 1 flows with identical module structure and parameter/buffer shapes and no
            state-mutating layers (see the module docstring).  Their current values are copied;
            the flows themselves are not kept.

    The state dict reads like the template's with a leading K axis:
    ``flow.transform.transforms.0.net.0.weight`` has shape ``(K, 8, 1)``.
    """

    def __init__(self, flows: Sequence[Flow]) -> None:
        super().__init__()
        flows = list(flows)
        if not same_architecture(flows):
            raise ValueError(
                "components: StackedFlows needs flows of one architecture (same modules, "
                "parameter and buffer shapes); got different ones (use FlowList)"
            )
        if any(_stateful(f) for f in flows):
            raise ValueError(
                "components: StackedFlows cannot vmap layers that update their own state in "
                "forward (BatchNorm, ActNorm); got one (use FlowList)"
            )
        if flows[0].context_features is not None:
            raise ValueError(
                f"components: expected unconditional flows, got context_features="
                f"{flows[0].context_features}"
            )
        self.num_components = len(flows)
        self.shape = tuple(flows[0].shape)
        # The holder: the template's modules, with every parameter replaced by its K-stack.  It
        # is never called with these (K, ...) tensors, only through functional_call with slices
        # or by the stacked fused run.  Unpacked (``transforms/packing.py``) to stack each layer
        # parameter, then each fused run's layers packed again into ONE (K, N) tensor.
        self.flow = unpack(copy.deepcopy(flows[0]))
        with torch.no_grad():
            for name, _ in self.flow.named_parameters():
                owner, leaf = _owner(self.flow, name)
                # getattr: a packed flow's layer parameter is a view of its flat tensor
                values = [getattr(*_owner(f, name)).detach() for f in flows]
                owner._parameters[leaf] = nn.Parameter(torch.stack(values).clone())
            stacked: list[str] = []
            for name, _ in flows[0].named_buffers():
                values = [f.get_buffer(name) for f in flows]
                if all(torch.equal(values[0], v) for v in values[1:]):
                    continue  # shared: the deep copy already holds it, once
                owner, leaf = _owner(self.flow, name)
                owner._buffers[leaf] = torch.stack([v.detach() for v in values]).clone()
                stacked.append("flow." + name)
        self._stacked_buffers = tuple(stacked)
        self._pack(self.flow)

    def _pack(self, flow: Flow) -> None:
        """Pack the holder's fused runs into (K, N) tensors: a training step pays per parameter
        TENSOR (autograd's AccumulateGrad, the optimizer's per-tensor work), so W5's K = 1
        mixture had 48 stacks against one packed tensor for a lone flow (see packing.py)."""
        transform = flow.transform
        if isinstance(transform, Compose) and not self._stacked_buffers:
            pack_runs(transform.packed, list(transform.transforms), self.num_components)
            structure_changed()  # runs built before packing hold no layout

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``self.flow.<method>``: only meaningful inside :meth:`_map` / :meth:`_at`."""
        return getattr(self.flow, method)(*args, **kwargs)

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        return params, {n: buffers[n] for n in self._stacked_buffers}

    def _map(
        self,
        method: str,
        tensors: tuple[Tensor, ...],
        dims: tuple[int | None, ...],
        randomness: str = "error",
        **kwargs: Any,
    ) -> Any:
        """``vmap`` of ``flow.<method>(*tensors, **kwargs)`` over the K components (axis 0)."""

        def one(params: dict, buffers: dict, *a: Tensor) -> Any:
            return functional_call(self, (params, buffers), (method, *a), kwargs)

        params, buffers = self._state()
        return vmap(one, in_dims=(0, 0, *dims), randomness=randomness)(params, buffers, *tensors)

    def _at(self, k: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """``flow.<method>`` of component ``k`` alone (sliced parameters, no vmap)."""
        params, buffers = self._state()
        sliced = {n: t[k] for n, t in {**params, **buffers}.items()}
        return functional_call(self, sliced, (method, *args), kwargs)

    def log_prob(self, x: Tensor) -> Tensor:
        # x enters batched (a stride-0 view, no copy), so that every tensor the component sees
        # is batched: layers that switch to a custom kernel unless their input is traced (e.g.
        # a MADE fast path keyed on `_tracing(x)`) then take their vmap-safe path.
        xs = x.expand(self.num_components, *x.shape)
        fused = self._fused_log_prob(xs)
        if fused is not None:
            return fused.transpose(0, 1)
        return self._map("log_prob", (xs,), (0,)).transpose(0, 1)

    def _fusable(self) -> bool:
        """Whether the fused run may serve: a vector flow with the standard-normal base and no
        per-component buffers (masks or orders that differ are read by the layers under vmap)."""
        return (
            len(self.shape) == 1
            and type(self.flow.base) is StandardNormal
            and not self._stacked_buffers
        )

    def _fused_log_prob(self, xs: Tensor) -> Tensor | None:
        """``(K, batch)`` log-densities without ``vmap``, when the template is one fused run.

        RealNVP and small-MAF components with a standard-normal base: their whole transform is
        one run of ``transforms/fused.py``, whose arithmetic takes the stacked ``(K, ...)``
        parameters as they are (batched products, one autograd node, the written-out
        backward).  Anything else (another base, other layers, buffers that differ between
        components, a compiler): None.
        """
        flow = self.flow
        if not self._fusable():
            return None
        # Without autograd, large batches go in chunks of about a single flow's chunk of
        # activations (Flow._rows): K times fewer rows.
        rows = max(256, flow.chunk_rows // self.num_components)
        if not torch.is_grad_enabled() and xs.shape[1] > 2 * rows:
            parts = [self._fused_log_prob(c) for c in xs.split(rows, dim=1)]
            return None if parts[0] is None else torch.cat(parts, dim=1)  # type: ignore[arg-type]
        out = stacked_forward(flow.transform, xs, lambda x: self._map("encode", (x,), (0,)))
        if out is None:
            return None
        u, ladj = out
        return flow.base._log_prob(u.reshape(-1, u.shape[-1])).view(u.shape[:-1]) + ladj

    def sample(self, k: int, n: int, temperature: float = 1.0) -> Tensor:
        return self._at(k, "sample", n, temperature=temperature)

    def sample_all(self, n: int, temperature: float = 1.0) -> Tensor:
        decode = stacked_decoder(self.flow.transform) if self._fusable() else None
        if decode is not None:
            # K * n base draws, decoded by the coupling run on the stacked parameters (no
            # autograd; chunked like Flow.sample): (K, n, D).
            u = self.flow.base.sample(self.num_components * n, temperature)
            u = u.view(self.num_components, n, *self.shape)
            rows = max(256, self.flow.chunk_rows // self.num_components)
            return torch.cat([decode(c) for c in u.split(rows, dim=1)], dim=1)
        return self._map("sample", (), (), randomness="different", n=n, temperature=temperature)

    def component(self, k: int) -> Flow:
        flow = copy.deepcopy(self.flow)
        with torch.no_grad():
            # Every name of a parameter (a packed run's (K, N) tensor is also held by each of
            # its layers, packing.py) gets the same new one: the copy keeps the ties.
            sliced: dict[int, nn.Parameter] = {}
            for name, p in list(flow.named_parameters(remove_duplicate=False)):
                if id(p) not in sliced:
                    sliced[id(p)] = nn.Parameter(p[k].clone(), requires_grad=p.requires_grad)
                owner, leaf = _owner(flow, name)
                owner._parameters[leaf] = sliced[id(p)]
            for name in self._stacked_buffers:
                name = name.removeprefix("flow.")
                owner, leaf = _owner(flow, name)
                owner._buffers[leaf] = self.flow.get_buffer(name)[k].clone()
        return flow


class FlowList(ComponentBank):
    """K flows of any architectures over one event shape, evaluated one after the other."""

    def __init__(self, flows: Sequence[Flow]) -> None:
        super().__init__()
        flows = list(flows)
        shapes = {tuple(f.shape) for f in flows}
        if len(shapes) > 1:
            raise ValueError(
                f"components: expected flows over one event shape, got shapes {sorted(shapes)}"
            )
        conditional = [f.context_features for f in flows if f.context_features is not None]
        if conditional:
            raise ValueError(
                f"components: expected unconditional flows, got context_features={conditional[0]}"
            )
        self.flows = nn.ModuleList(flows)
        self.num_components = len(flows)
        self.shape = tuple(flows[0].shape)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.stack([f.log_prob(x) for f in self.flows], dim=1)

    def sample(self, k: int, n: int, temperature: float = 1.0) -> Tensor:
        return self.flows[k].sample(n, temperature=temperature)

    def sample_all(self, n: int, temperature: float = 1.0) -> Tensor:
        return torch.stack([f.sample(n, temperature=temperature) for f in self.flows])

    def component(self, k: int) -> Flow:
        return self.flows[k]


def make_bank(flows: Sequence[Flow], batched: bool | None = None) -> ComponentBank:
    """:class:`StackedFlows` when possible (``batched=None``) or required (``True``), else
    :class:`FlowList` (``batched=False``, or different architectures / stateful layers)."""
    flows = list(flows)
    for i, f in enumerate(flows):
        if not isinstance(f, Flow):
            raise ValueError(f"components[{i}]: expected a flowscope Flow, got {type(f).__name__}")
    if batched is None:
        batched = same_architecture(flows) and not any(_stateful(f) for f in flows)
    return StackedFlows(flows) if batched else FlowList(flows)
