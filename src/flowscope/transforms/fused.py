"""Fused runs of small affine layers: one autograd node and a hand-written backward pass.

``Compose`` hands each maximal run of the following members to one object here:

* **coupling runs** -- consecutive :class:`~flowscope.transforms.Coupling` layers that cut the
  vector into the SAME two contiguous blocks (``half_mask``, alternating which block is
  transformed, as RealNVP does: Dinh, Sohl-Dickstein & Bengio 2017, arXiv:1605.08803, eqs.
  7-9) with a default ``MLP`` conditioner (linear layers, ReLU between them);
* **autoregressive runs** -- :class:`~flowscope.transforms.MaskedAutoregressive` layers (MAF:
  Papamakarios et al. 2017, arXiv:1705.07057, eqs. 2-5) with ReLU MADEs small enough to have
  no staircase blocks, and the ``ReversePermutation`` layers between them (section 3.2);

all with an ``AffineTransformer`` of soft-clamped scale ``log s = c tanh(h / c)`` and no
context.

Why: at the sizes where these layers are most used (2-D to low-D data, 64-unit conditioners,
the benchmark's W1 and W1b), a layer's arithmetic is a few small matrix products and its cost
is the number of dispatched operators: each slice, ``cat``, mask product, elementwise op and
autograd node costs several microseconds on a CPU core, about as much as the 512x64 product
beside it.  Here a coupling run carries the two blocks as separate tensors (no slice and ``cat``
per layer), the whole run is ONE autograd node, and the backward pass is written out
(docs/benchmarks.md).  For one layer ``y = x s + t`` with ``(h, t) = net(...)``:

* forward: ``log s = c tanh(h / c)``, ``s = exp(log s)``, ``logabsdet += sum log s``;
* backward, with ``g_y`` and ``g_l`` the incoming gradients of ``y`` and of the log-det:
  ``g_x = g_y s``, ``g_logs = g_y x s + g_l``, ``g_h = g_logs (1 - (log s / c)^2)``
  (``d/dh c tanh(h / c) = 1 - tanh^2``), ``g_t = g_y``, then the network's backward by hand
  (``threshold_backward`` for ReLU; a MADE's weight gradients times its masks, as autograd
  gives for ``W * M``) and the network's input gradient added to the conditioning input's.

The maps, log-dets, inverses and gradients are those of the layer-by-layer path:
``tests/test_fast_paths.py`` compares both in float64, and the property test runs fused models
through the autograd Jacobian (which goes through this backward).  With ``create_graph=True``
(higher derivatives) the backward differentiates the layer-by-layer path instead, whose graph
autograd can differentiate again.  ``Compose`` uses a run only where the generic path would
give nothing more: no context, not under ``torch.compile`` or ``vmap`` (``_checks._tracing``),
where the compiler fuses the generic graph itself.

The arithmetic takes any leading axes: :func:`stacked_forward` and :func:`stacked_decoder`
run a ``StackedFlows`` template's one run on its stacked ``(K, ...)`` parameters and a
``(K, batch, D)`` input (batched products, in the layouts MKL handles well), which is how a
mixture of K RealNVP or small-MAF components trains without ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import register_module_module_registration_hook

from .._checks import check_event_shape
from ..nets import MLP
from .autoregressive import MaskedAutoregressive
from .coupling import Coupling
from .linear import ReversePermutation
from .packing import Layout, flatten_dense_tensors, layout, pack_layers, plain_type
from .transformers import AffineTransformer, _soft_clamp, _soft_clamp_affine, _soft_clamp_grads

__all__ = [
    "CouplingRun",
    "AutoregressiveRun",
    "fuse",
    "stacked_forward",
    "stacked_decoder",
    "structure_version",
    "pack_runs",
]

# Every submodule assignment anywhere (``coupling.net = ...``, ``mlp[0] = nn.Linear(...)``,
# ``made.activation = ...``) bumps this count; ``Compose`` rebuilds its runs when it changes, so
# a run never keeps a replaced layer.  (Parameters are read at every call; transformers, which
# are not modules, are checked at every call: ``_Run._spec``.)
_registrations = [0]


def _on_registration(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    # Not while torch.compile traces: compiled code never uses the fused runs, and a count read
    # there would become a guard that every later module construction breaks (recompiles).
    if not torch.compiler.is_compiling():
        _registrations[0] += 1


register_module_module_registration_hook(_on_registration)


def structure_version() -> int:
    """How many submodules have been assigned since flowscope's fused runs were imported."""
    return _registrations[0]


def structure_changed() -> None:
    """Make every ``Compose`` rebuild its runs (a layer was unpacked: ``packing.py``)."""
    _registrations[0] += 1


_NARROW_OUT = 16  # output widths below this are computed transposed (see _mlp)

# Tensor operators (``a * b``) go through a Python wrapper in torch; the torch functions do not,
# which is 1-2 us per call at these sizes.  Hence ``torch.mul(a, b)`` and friends below.


def _soft_clamped(transformer: object) -> bool:
    return type(transformer) is AffineTransformer and transformer.scale == "tanh"


def _coupling_split(t: object) -> tuple[int, int] | None:
    """``(boundary, transformed_block)`` of a fusable coupling, else None.

    The vector is cut at ``boundary`` into block 0 ``x[:, :boundary]`` and block 1
    ``x[:, boundary:]``; ``transformed_block`` says which one the layer transforms.
    """
    if type(t) is not Coupling or t._blocks is None or t.context_features is not None:
        return None
    if not _soft_clamped(t.transformer) or type(t.net) is not MLP or len(t.net) % 2 != 1:
        return None
    for i, m in enumerate(t.net):
        if plain_type(m) is not (nn.Linear if i % 2 == 0 else nn.ReLU):
            return None
        if i % 2 == 0 and m.bias is None:
            return None
    identity_first, n_identity = t._blocks
    if identity_first:
        return n_identity, 1
    return t.event_shape[0] - n_identity, 0


def _fusable_maf(t: object) -> bool:
    if type(t) is not MaskedAutoregressive or t.context_features is not None:
        return False
    made = t.made
    return (
        _soft_clamped(t.transformer)
        and type(made.activation) is nn.ReLU
        and all(layer.blocks is None for layer in made.layers)  # no staircase kernel to lose
    )


class _Run:
    """Consecutive members of a ``Compose`` evaluated as one (see the module docstring).

    Not a module: it holds references to the ``Compose``'s own members, so parameters, state
    dict and ``repr`` are unchanged.  It offers the ``_forward`` / ``_inverse`` of a transform.
    """

    _fused_inverse = True

    def __init__(self, members: list, linears: list[nn.Linear], features: int) -> None:
        self.members = members
        self.features = features
        self.linears = linears
        # Packed layers (``packing.py``, what ``Compose`` does): the run's parameters are ONE
        # flat tensor, the fused node's one parameter input, with one concatenated gradient.
        self.layout: Layout | None = layout(linears)
        # Otherwise the layers' parameter dicts, read at every call (a parameter replaced by
        # assignment is picked up) without nn.Module's attribute lookup (48 of them on W1).
        plain = all(plain_type(m) is type(m) for m in linears)
        self._dicts = [m._parameters for m in linears] if plain else None

    def _params(self) -> list[Tensor]:
        """``[w_0, b_0, w_1, b_1, ...]``: views of the flat tensor when packed."""
        if self.layout is not None:
            return self.layout.views(self.layout.flat())
        if self._dicts is None:  # some layers packed, not as one tensor: through their views
            return [getattr(m, name) for m in self.linears for name in ("weight", "bias")]
        out: list[Tensor] = []
        for d in self._dicts:
            out += (d["weight"], d["bias"])
        return out

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, (self.features,))
        spec = self._spec()
        if spec is None:  # a transformer was changed since the run was built
            return self._plain(x)
        grad = torch.is_grad_enabled()
        if self.layout is not None:
            flat = self.layout.flat()
            if grad and (x.requires_grad or flat.requires_grad):
                return _Fused.apply(x, self, spec, flat)
            return self._run(x, spec, self.layout.cached_views(flat), None)
        if self._dicts is None:  # partly packed (a layer was replaced): layer by layer
            return self._plain(x)
        params = self._params()
        if grad and (x.requires_grad or any(p.requires_grad for p in params)):
            return _Fused.apply(x, self, spec, *params)
        return self._run(x, spec, params, None)

    def _inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, (self.features,))
        if not torch.is_grad_enabled() and self._fused_inverse:
            spec = self._spec()
            if spec is not None:
                params = (
                    self.layout.cached_views(self.layout.flat())
                    if self.layout is not None
                    else self._params()
                )
                return self._run_inverse(u, spec, params)
        # With autograd (reverse KL), or a MAF's one-coordinate-at-a-time sampler: per layer.
        total: Tensor | None = None
        for t in reversed(self.members):
            u, ladj = t._inverse(u, context)
            total = ladj if total is None else torch.add(total, ladj)
        return u, total  # type: ignore[return-value]

    def _plain(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The layer-by-layer forward (with autograd, for higher derivatives)."""
        total: Tensor | None = None
        for t in self.members:
            x, ladj = t._forward(x, None)
            total = ladj if total is None else total + ladj
        return x, total  # type: ignore[return-value]

    def _spec(self) -> list | None:
        """What the arithmetic needs per member, or None if a member no longer qualifies."""
        raise NotImplementedError

    def _run(self, x: Tensor, spec: list, params: list[Tensor], saved: list | None):  # noqa: ANN202
        raise NotImplementedError

    def _run_inverse(self, u: Tensor, spec: list, params: list[Tensor]):  # noqa: ANN202
        raise NotImplementedError

    def _backward(
        self, saved: list, spec: list, params: list, g_y: Tensor, g_l: Tensor, need_x: bool
    ):  # noqa: ANN202
        raise NotImplementedError


class CouplingRun(_Run):
    """Affine couplings on the same two blocks, fused (see the module docstring)."""

    def __init__(self, couplings: list[Coupling], boundary: int, blocks: list[int]) -> None:
        linears = [m for c in couplings for m in c.net if plain_type(m) is nn.Linear]
        super().__init__(couplings, linears, couplings[0].event_shape[0])
        self.couplings = couplings
        self.boundary = boundary
        self.blocks = blocks  # transformed block (0 or 1) of each layer

    def _spec(self) -> list[tuple[int, float, int]] | None:
        """Per layer: ``(transformed block, clamp c, number of linear layers)``."""
        if not all(_soft_clamped(c.transformer) for c in self.couplings):
            return None
        return [
            (b, c.transformer.clamp, (len(c.net) + 1) // 2)
            for b, c in zip(self.blocks, self.couplings)
        ]

    def _run(self, x: Tensor, spec: list, params: list[Tensor], saved: list | None):  # noqa: ANN202
        parts = [x[..., : self.boundary], x[..., self.boundary :]]
        total: Tensor | None = None
        start = 0
        for block, c, n_linear in spec:
            keep: list | None = [] if saved is not None else None
            out = _mlp(parts[1 - block], params, start, n_linear, None, keep)
            start += 2 * n_linear
            x_b = parts[block]
            parts[block], log_s, s = _affine(x_b, out, c)
            total = _sum_log_scale(total, log_s)
            if saved is not None:
                saved.append((x_b, log_s, s, keep))
        return torch.cat(parts, dim=-1), total.squeeze(-1)  # type: ignore[union-attr]

    def _run_inverse(self, u: Tensor, spec: list, params: list[Tensor]):  # noqa: ANN202
        parts = [u[..., : self.boundary], u[..., self.boundary :]]
        start = sum(2 * n for _, _, n in spec)
        total: Tensor | None = None
        for block, c, n_linear in reversed(spec):
            start -= 2 * n_linear
            out = _mlp(parts[1 - block], params, start, n_linear, None, None)
            parts[block], log_s = _affine_inverse(parts[block], out, c)
            total = _sum_log_scale(total, log_s)
        return torch.cat(parts, dim=-1), total.squeeze(-1).neg()  # type: ignore[union-attr]

    def _backward(
        self, saved: list, spec: list, params: list, g_y: Tensor, g_l: Tensor, need_x: bool
    ):  # noqa: ANN202
        grads: list[Tensor | None] = [None] * len(params)
        g = [g_y[..., : self.boundary], g_y[..., self.boundary :]]
        start = len(params)
        for i in range(len(spec) - 1, -1, -1):
            block, c, n_linear = spec[i]
            x_b, log_s, s, keep = saved[i]
            start -= 2 * n_linear
            propagate = i > 0 or need_x  # the first layer's input gradients only if x needs them
            g_xb, g_out = _affine_backward(g[block], g_l, x_b, log_s, s, c)
            g_net = _mlp_backward(g_out, keep, params, start, n_linear, None, grads, propagate)
            if propagate:
                g[1 - block] = torch.add(g[1 - block], g_net)
                g[block] = g_xb
        return (torch.cat(g, dim=-1) if need_x else None), grads


class AutoregressiveRun(_Run):
    """MAF layers and the order reversals between them, fused (see the module docstring).

    Only the density direction is fused: the inverse (sampling) keeps each layer's incremental
    one-coordinate-at-a-time sampler.
    """

    _fused_inverse = False

    def __init__(self, members: list) -> None:
        # Each member's MADE layers (None: a reversal), fixed for the run's life as ``linears``
        # is: replacing a submodule makes ``Compose`` build new runs.
        self._layers = [
            list(t.made.layers) if type(t) is MaskedAutoregressive else None for t in members
        ]
        linears = [layer for layers in self._layers if layers is not None for layer in layers]
        features = next(t for t in members if type(t) is MaskedAutoregressive).features
        super().__init__(members, linears, features)

    def _spec(self) -> list | None:
        """Per member: None (reverse the order) or ``(clamp c, masks, prefix)``.

        ``masks``: each MADE layer's mask, None where all ones; ``prefix``: None, or ``(k,
        full)`` when the MADE reads only its first ``k`` inputs (``_MaskedLinear.used_inputs``),
        ``full`` when the first layer's mask is all ones on them.  Called at every step, so it
        reads the layers' buffers from their dicts (not through ``nn.Module.__getattr__``) and
        leaves the slice of the prefix mask to inference, which uses it (27 -> 3 us a call on W1b).
        """
        spec: list = []
        for t, layers in zip(self.members, self._layers):
            if layers is None:
                spec.append(None)
                continue
            if not _soft_clamped(t.transformer):
                return None
            masks = [None if layer.full else layer._buffers["mask_value"] for layer in layers]
            k = layers[0].used_inputs
            prefix = None if k is None else (k, layers[0].prefix_full)
            spec.append((t.transformer.clamp, masks, prefix))
        return spec

    def _run(self, x: Tensor, spec: list, params: list[Tensor], saved: list | None):  # noqa: ANN202
        total: Tensor | None = None
        start = 0
        for step in spec:
            if step is None:
                x = x.flip(-1)
                continue
            c, masks, prefix = step
            n_linear = len(masks)
            keep: list | None = [] if saved is not None else None
            if saved is None and prefix is not None:
                # Inference: the inputs the MADE never reads are not multiplied (2-D data: one
                # input, the first layer a broadcast multiply-add instead of a product, see
                # _mlp; W1b log_prob 1.03-1.05x in one process, 41 alternating rounds).  In
                # training the narrower first layer's backward (a padded weight gradient, a
                # partial input gradient) cost more than it saved (0.95-0.97x).
                k, full = prefix
                mask = None if full else masks[0][:, :k]
                weights = _masked(params, start, [mask, *masks[1:]], k)
                out = _mlp(x[..., :k], params, start, n_linear, weights, None)
            else:
                weights = _masked(params, start, masks)
                out = _mlp(x, params, start, n_linear, weights, keep)
            start += 2 * n_linear
            y, log_s, s = _affine(x, out, c)
            total = _sum_log_scale(total, log_s)
            if saved is not None:
                saved.append((x, log_s, s, keep, weights))
            x = y
        return x, total.squeeze(-1)  # type: ignore[union-attr]

    def _backward(
        self, saved: list, spec: list, params: list, g_y: Tensor, g_l: Tensor, need_x: bool
    ):  # noqa: ANN202
        grads: list[Tensor | None] = [None] * len(params)
        g: Tensor | None = g_y
        start, layer = len(params), len(saved)
        for step in reversed(spec):
            if step is None:
                g = g.flip(-1) if g is not None else None
                continue
            c, masks, _ = step
            layer -= 1
            x, log_s, s, keep, weights = saved[layer]
            start -= 2 * len(masks)
            propagate = layer > 0 or need_x
            g_x, g_out = _affine_backward(g, g_l, x, log_s, s, c)
            g_net = _mlp_backward(
                g_out, keep, params, start, len(masks), (weights, masks), grads, propagate
            )
            g = torch.add(g_x, g_net) if propagate else None
        return (g if need_x else None), grads


class _StackedRun:
    """A run of a ``StackedFlows`` holder (parameters ``(K, *shape)``) on ``(K, batch, D)``.

    The arithmetic is the run's own (it is written for any number of leading axes); only the
    higher-derivative path differs: ``plain`` evaluates the same map with autograd, as the
    K components' ``vmap``-ed layer-by-layer path.
    """

    def __init__(self, run: _Run, plain: Callable[[Tensor], tuple[Tensor, Tensor]]) -> None:
        self.run = run
        self._plain = plain
        # Packed (``StackedFlows`` packs its holder's runs): the ONE (K, N) tensor's layout.
        self.layout = run.layout

    def _run(self, x: Tensor, spec: list, params: list[Tensor], saved: list | None):  # noqa: ANN202
        return self.run._run(x, spec, params, saved)

    def _backward(
        self, saved: list, spec: list, params: list, g_y: Tensor, g_l: Tensor, need_x: bool
    ):  # noqa: ANN202
        return self.run._backward(saved, spec, params, g_y, g_l, need_x)


def stacked_forward(
    transform: nn.Module, x: Tensor, plain: Callable[[Tensor], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor] | None:
    """K stacked copies of ``transform`` on ``x (K, batch, D)``, as ONE fused run; or None.

    ``transform`` is the template of a ``StackedFlows`` (every parameter ``(K, *shape)``);
    returns ``(u (K, batch, D), logabsdet (K, batch))`` when it is one fusable run (a
    ``Compose`` of RealNVP couplings, or of MAF layers and reversals), else None and the
    caller ``vmap``s the generic path.  ``plain(x)`` must compute the same with autograd: it
    is what ``create_graph=True`` differentiates.
    """
    run, spec = _single_run(transform, x)
    if run is None:
        return None
    grad = torch.is_grad_enabled()
    if run.layout is not None:  # packed: the (K, N) tensor is the node's one parameter input
        flat = run.layout.flat()
        if grad and (x.requires_grad or flat.requires_grad):
            return _Fused.apply(x, _StackedRun(run, plain), spec, flat)
        return run._run(x, spec, run.layout.cached_views(flat), None)
    params = run._params()
    if grad and (x.requires_grad or any(p.requires_grad for p in params)):
        return _Fused.apply(x, _StackedRun(run, plain), spec, *params)
    return run._run(x, spec, params, None)


def stacked_decoder(transform: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """Latent -> data of K stacked copies of ``transform``, ``u (K, n, D) -> (K, n, D)``; or None.

    Decided before any latent is drawn: a coupling run (MAF sampling keeps its
    one-coordinate-at-a-time sampler) whose parameters need no gradient here (sampling for
    figures and evaluation; with autograd the caller takes the generic path).
    """
    probe = next(transform.parameters(), None)
    if probe is None or probe.dim() == 0:
        return None
    run, spec = _single_run(transform, probe)
    if run is None or not run._fused_inverse:
        return None
    params = run._params()
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return None
    return lambda u: run._run_inverse(u, spec, params)[0]


def _single_run(transform: nn.Module, x: Tensor) -> tuple[_Run | None, list | None]:
    """``transform``'s one fused run and its spec, if the whole transform is one run."""
    grouping = getattr(transform, "_members", None)
    if grouping is None:
        return None, None
    # x[0]: one component's slice, for the tracing check (no runs under compile or vmap).
    members = grouping(x[0], None)
    if len(members) != 1 or not isinstance(members[0], _Run):
        return None, None
    spec = members[0]._spec()
    return (None, None) if spec is None else (members[0], spec)


def pack_runs(packs: nn.Module, transforms: list, stacked: int | None = None) -> None:
    """Pack the linear layers of each fused run in ``transforms`` into one tensor of ``packs``
    (``stacked=K``: a ``StackedFlows`` holder's ``(K, ...)`` stacks, into a ``(K, N)`` tensor)."""
    for member in fuse(transforms):
        if isinstance(member, _Run):
            pack_layers(packs, member.linears, stacked)  # type: ignore[arg-type]


def fuse(transforms: list) -> list:
    """``transforms`` with each maximal fusable run replaced by its ``_Run``.

    Couplings fuse when they cut the vector at the same boundary; MAF layers fuse with the
    ``ReversePermutation`` layers before, between and after them.  A run of one layer still
    saves its per-layer overhead.
    """
    out: list = []
    group: list = []
    kind: object = None  # the open run: a coupling boundary (int), "maf" or None

    def close() -> None:
        nonlocal group, kind
        if isinstance(kind, int):
            splits = [_coupling_split(t) for t in group]
            out.append(CouplingRun(group, kind, [s[1] for s in splits]))  # type: ignore[index]
        elif kind == "maf":
            out.append(AutoregressiveRun(group))
        group, kind = [], None

    for i, t in enumerate(transforms):
        split = _coupling_split(t)
        reverse = type(t) is ReversePermutation
        if split is not None:
            if kind != split[0]:
                close()
            group.append(t)
            kind = split[0]
        elif (
            _fusable_maf(t)
            or (reverse and kind == "maf")
            or (reverse and i + 1 < len(transforms) and _fusable_maf(transforms[i + 1]))
        ):
            if kind != "maf":
                close()
            group.append(t)
            kind = "maf"
        else:
            close()
            out.append(t)
    close()
    return out


# --- the arithmetic, shared by both kinds of run ----------------------------------------------


def _affine(x: Tensor, out: Tensor, c: float) -> tuple[Tensor, Tensor, Tensor]:
    """``y = x s + t`` from the net's output ``(batch, n * 2)`` (``(h, t)`` interleaved)."""
    return _soft_clamp_affine(x, *out.view(*x.shape, 2).unbind(-1), c)


def _affine_inverse(y: Tensor, out: Tensor, c: float) -> tuple[Tensor, Tensor]:
    h, t = out.view(*y.shape, 2).unbind(-1)
    log_s = _soft_clamp(h, c)
    return torch.sub(y, t).mul_(torch.exp(log_s.neg())), log_s


def _affine_backward(
    g_y: Tensor, g_l: Tensor, x: Tensor, log_s: Tensor, s: Tensor, c: float
) -> tuple[Tensor, Tensor]:
    """Gradients of ``x`` (direct part) and of the net's output, from those of ``y`` and ``l``."""
    g_x, g_h = _soft_clamp_grads(g_y, g_l, x, log_s, s, c)
    return g_x, torch.stack([g_h, g_y], dim=-1).flatten(-2)


def _sum_log_scale(total: Tensor | None, log_s: Tensor) -> Tensor:
    """Accumulate the log-det as ``(batch, 1)``; one transformed entry needs no reduction."""
    ladj = log_s if log_s.shape[-1] == 1 else log_s.sum(dim=-1, keepdim=True)
    return ladj if total is None else torch.add(total, ladj)


def _masked(params: list[Tensor], start: int, masks: list, k: int | None = None) -> list[Tensor]:
    """A MADE's weights times their masks (the all-ones ones as they are); with ``k``, the
    first layer's first ``k`` columns."""
    weights = [params[start + 2 * j] for j in range(len(masks))]
    if k is not None:
        # Contiguous (a mask product makes it so anyway): the one-input layer's broadcast
        # against a strided (64, 1) column is 3x slower.
        first = weights[0][..., :k]
        weights[0] = first.contiguous() if masks[0] is None else first
    return [w if m is None else torch.mul(w, m) for w, m in zip(weights, masks)]


def _mlp(
    a: Tensor,
    params: list[Tensor],
    start: int,
    n_linear: int,
    weights: list[Tensor] | None,
    keep: list | None,
) -> Tensor:
    """Linear layers with ReLU between them; appends each linear layer's input to ``keep``.

    ``params[start:]`` holds ``weight, bias`` per layer; ``weights`` replaces the weights
    (a MADE's masked ones) when given.
    """
    h = a
    stacked = a.dim() == 3  # (K, batch, n): a StackedFlows run, one weight per component
    for j in range(n_linear):
        if keep is not None:
            keep.append(h)
        w = params[start + 2 * j] if weights is None else weights[j]
        b = params[start + 2 * j + 1]
        if (keep is None or stacked) and j == n_linear - 1 and w.shape[-2] < _NARROW_OUT:
            # Inference: a narrow output (2 parameters for 1-7 entries) is up to twice as fast
            # computed as (W h^T + b)^T: 91 against 146 us for 8192 x 64 -> 2, 108 against
            # 198 us for -> 4.  In training the transposed layout costs the backward more
            # than it saves (W1b: 2.86 against 2.79 ms a step), except batched: 33 against
            # 51 us for 5 x 512 x 64 -> 2, 37 against 81 us for -> 4.
            if stacked:
                return torch.baddbmm(b.unsqueeze(-1), w, h.mT).mT
            return torch.addmm(b.unsqueeze(1), w, h.t()).t()
        if w.shape[-1] == 1:
            # One input (2-D couplings): the outer product as a broadcast multiply-add, not a
            # rank-1 GEMM: 59 against 150 us for 8192 rows x 64, 5 against 7 us for 512.
            h = torch.addcmul(b.unsqueeze(-2) if stacked else b, h, w.mT)
        elif stacked:
            h = torch.baddbmm(b.unsqueeze(-2), h, w.mT)
        else:
            h = F.linear(h, w, b)
        if j < n_linear - 1:
            h = h.relu_()
    return h


def _mlp_backward(
    g_out: Tensor,
    keep: list,
    params: list[Tensor],
    start: int,
    n_linear: int,
    masked: tuple[list, list] | None,
    grads: list,
    need_input: bool,
) -> Tensor | None:
    """Backward of ``_mlp``: writes parameter gradients into ``grads``, returns the input's.

    ``masked``: ``(weights used, masks)`` of a MADE; a weight's gradient is masked as the
    gradient of ``W * M`` is.
    """
    stacked = g_out.dim() == 3  # (K, batch, n): a StackedFlows run, batched products
    mm = torch.bmm if stacked else torch.mm
    for j in range(n_linear - 1, -1, -1):
        act = keep[j]
        # MKL is slow at products whose result has 2-15 columns from row-major operands: on
        # W1b's first MADE layer (2 inputs, batch 512, width 64) g^T act takes 40 us and
        # g W 36 us, against 8 us and 14 us for the transposed forms below.  Batched (K = 5)
        # the same holds for ONE column, which a plain product handles well: g^T act 193
        # against 17 us, g W 141 against 41 us (512 rows, width 64).
        narrow = act.shape[-1] < 16 and (act.shape[-1] > 1 or stacked)
        g_w = mm(act.mT, g_out).mT if narrow else mm(g_out.mT, act)
        if masked is not None and masked[1][j] is not None:
            g_w = g_w.mul_(masked[1][j])
        grads[start + 2 * j] = g_w
        grads[start + 2 * j + 1] = g_out.sum(dim=-2)
        w = params[start + 2 * j] if masked is None else masked[0][j]
        if j > 0:
            g_act = mm(g_out, w)
            # ReLU's backward, written into the product's fresh buffer.
            g_out = torch.ops.aten.threshold_backward.grad_input(g_act, act, 0, grad_input=g_act)
        elif need_input:
            if stacked and act.shape[-1] == 1:
                return mm(w.mT, g_out.mT).mT
            return mm(g_out, w.mT.contiguous().mT if narrow else w)
    return None


class _Fused(torch.autograd.Function):
    """A run's forward as one autograd node, with the run's hand-written backward."""

    @staticmethod
    def forward(ctx, x: Tensor, run: _Run, spec: list, *params: Tensor):  # noqa: ANN001, ANN205
        # A packed run passes its ONE flat tensor (``packing.py``); the arithmetic reads views.
        saved: list = []
        views = run.layout.cached_views(params[0]) if run.layout is not None else list(params)
        y, total = run._run(x, spec, views, saved)
        # The inputs go through save_for_backward, whose version counters catch an in-place
        # change before backward; the intermediates are the Function's own and stay on ctx.
        ctx.save_for_backward(x, *params)
        ctx.saved, ctx.run, ctx.spec = saved, run, spec
        return y, total

    @staticmethod
    def backward(ctx, g_y: Tensor, g_total: Tensor):  # noqa: ANN001, ANN205
        x, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # create_graph=True (higher derivatives): the hand-written backward is not itself
            # differentiable (its saved intermediates have no graph), so differentiate the
            # layer-by-layer path, evaluated again with autograd.
            inputs = ([x] if needs[0] else []) + [p for p, n in zip(params, needs[3:]) if n]
            grads = iter(
                torch.autograd.grad(ctx.run._plain(x), inputs, (g_y, g_total), create_graph=True)
            )
            g_x = next(grads) if needs[0] else None
            return (g_x, None, None, *(next(grads) if n else None for n in needs[3:]))
        layout = ctx.run.layout
        lead = params[0].dim() - 1  # a StackedFlows holder's (K, N) tensor: 1
        if layout is not None:
            params = layout.cached_views(params[0])
        g_x, grads = ctx.run._backward(
            ctx.saved, ctx.spec, params, g_y, g_total.unsqueeze(-1), needs[0]
        )
        if layout is not None:  # every layer's gradients, concatenated in ONE call
            return g_x, None, None, flatten_dense_tensors(grads, lead)
        return (g_x, None, None, *grads)
