"""Masked products that skip the zero blocks of a MADE mask (the "staircase").

With the natural order and the hidden degrees sorted along the units (as :class:`MADE` assigns
them), row ``r`` of every MADE mask reads columns ``0 .. a_r - 1`` only: about half of ``W * M``
is zero.  Cutting the rows into a few blocks, block ``(r0, r1, lo, hi)`` reads columns ``< hi``
only and all of its rows read every column ``< lo``.  A layer's masked-out entries inside the
bands ``lo .. hi`` are kept at zero in ``W`` itself (:meth:`Staircase.clean`), so ``x (W * M)^T``
is per block ONE product of ``x[:, :hi]`` with ``W[r0:r1, :hi]``: 0.56-0.58 of the dense
product's operations with 8 blocks (W2's MADE: 784 inputs, 512 hidden units), forward and
backward, and no masked copy of the weight.

A layer that uses the kernel stores only those blocks: its parameter is the ``W[r0:r1, :hi]``
one after the other, row-major, in one flat tensor (:meth:`Staircase.pack`; 0.574 of the dense
matrix for W2's layers).  The rest of ``W`` is structurally zero, so an optimizer, gradient
buffers and checkpoints of the optimizer's state handle 43% fewer numbers, and each block's
weight gradient is written by its product into a contiguous slice.

The blocks are cheap enough only if each costs few Python-level tensor operations: the views of
``W`` and ``M`` that every call reads are made once per storage (an optimizer's in-place update
is seen through them), the per-call views of the batch come from one ``split`` or a ``narrow``,
and the bias is copied into the whole output at once.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable

import torch
from torch import Tensor

Blocks = tuple[tuple[int, int, int, int], ...]

# Every live plan under an integer key: the compiled path's operators (see
# ``compiled_staircase_linear``) take the key, a constant to the compiler, and find the plan
# (and its cached views) by it.
_PLANS: weakref.WeakValueDictionary[int, Staircase] = weakref.WeakValueDictionary()
_KEYS = itertools.count()

__all__ = ["Staircase", "staircase_blocks", "staircase_linear"]


def staircase_blocks(
    mask: Tensor, blocks: int = 8, min_size: int = 2**16, align: int = 16
) -> Blocks | None:
    """Row blocks ``(r0, r1, lo, hi)`` of a mask ``(out, in)`` whose every row allows a PREFIX.

    Rows ``r0 .. r1`` read columns ``< hi`` only, and all of them read every column ``< lo``.
    Block edges, ``lo`` and ``hi`` are multiples of ``align`` (``lo`` rounded down, ``hi`` up:
    the band between them is masked anyway): BLAS runs the products on aligned column offsets
    4-9% faster on W2's 1568 x 512 output layer (196-row blocks against 192/208).  None when
    the mask has no such shape, is small (launching ``2 blocks`` products costs more than the
    skipped zeros) or when the blocks would skip less than a quarter.
    """
    rows, cols = mask.shape
    allowed = mask.sum(1)
    if rows * cols < min_size or not torch.equal(mask, torch.arange(cols) < allowed[:, None]):
        return None
    edges = sorted(
        {0, rows, *(min(rows, round(rows * g / blocks / align) * align) for g in range(1, blocks))}
    )
    out = []
    for r0, r1 in zip(edges[:-1], edges[1:]):
        lo = int(allowed[r0:r1].min()) // align * align
        hi = min(cols, -(-int(allowed[r0:r1].max()) // align) * align)
        out.append((r0, r1, lo, hi))
    if sum((r1 - r0) * hi for r0, r1, _, hi in out) > 0.75 * rows * cols:
        return None
    return tuple(out)


class Staircase:
    """The blocks of one mask ``(out, cols)``, its packed layout, and the views of its layer's
    tensors that every call reads."""

    def __init__(self, blocks: Blocks, cols: int) -> None:
        self.blocks, self.cols = blocks, cols
        self.sizes = [r1 - r0 for r0, r1, _, _ in blocks]  # row blocks = output column blocks
        spans = [(r1 - r0) * hi for r0, r1, _, hi in blocks]
        self.offsets = [sum(spans[:b]) for b in range(len(blocks))]
        self.numel = sum(spans)
        self._cache: dict[str, tuple] = {}
        self._register()

    def _register(self) -> None:
        self.key = next(_KEYS)
        _PLANS[self.key] = self

    def pack(self, dense: Tensor) -> Tensor:
        """``(out, cols)`` -> ``(numel,)``: the blocks ``W[r0:r1, :hi]``, row-major."""
        return torch.cat([dense[r0:r1, :hi].reshape(-1) for r0, r1, _, hi in self.blocks])

    def unpack(self, packed: Tensor) -> Tensor:
        """``(numel,)`` -> ``(out, cols)``, zero outside the blocks; differentiable (and under
        vmap and ``torch.compile``)."""
        parts = [
            torch.nn.functional.pad(w, (0, self.cols - w.shape[-1])) for w in self.blocks_of(packed)
        ]
        return torch.cat(parts, -2)

    def clear(self) -> None:
        """Drop the cached views (and with them the references to the tensors they view)."""
        self._cache = {}

    def __getstate__(self) -> dict:
        # Copies and pickles carry the layout only: the views belong to the original's tensors.
        return {**self.__dict__, "_cache": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._register()  # a copy is a plan of its own (its key would be the original's)

    def blocks_of(self, weight: Tensor) -> list[Tensor]:
        """Per block ``W[r0:r1, :hi]``, from a packed ``(numel,)`` weight (contiguous views) or
        a dense ``(out, cols)`` one (strided views)."""
        if weight.dim() == 1:
            return [
                weight.narrow(0, o, (r1 - r0) * hi).view(r1 - r0, hi)
                for o, (r0, r1, _, hi) in zip(self.offsets, self.blocks)
            ]
        return [weight[r0:r1, :hi] for r0, r1, _, hi in self.blocks]

    def make_views(self, weight: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per block ``(W[r0:r1, :hi], its transpose)``, made now (under autograd if enabled)."""
        return [(w, w.t()) for w in self.blocks_of(weight)]

    def _cached(self, kind: str, tensors: tuple[Tensor, ...], make: Callable) -> list:
        # Made once per storage: a new storage (``.to()``, a loaded or swapped tensor) or
        # inference mode makes new views; in-place updates are seen through the old ones.
        key = tuple(t.data_ptr() for t in tensors) + (
            tensors[0].dtype,
            tensors[0].device,
            torch.is_inference_mode_enabled(),
        )
        hit = self._cache.get(kind)
        if hit is None or hit[1] != key or any(a is not b for a, b in zip(hit[0], tensors)):
            with torch.no_grad():
                hit = self._cache[kind] = (tensors, key, make(*tensors))
        return hit[2]

    def views(self, weight: Tensor) -> list[tuple[Tensor, Tensor]]:
        """:meth:`make_views` without autograd, made once per storage."""
        return self._cached(f"weight{weight.dim()}", (weight,), self.make_views)

    def mask_bands(self, mask: Tensor) -> list[Tensor]:
        """Per block ``M[r0:r1, lo:hi]``, the only part of a block's rows where ``M`` has zeros."""
        return self._cached(
            "mask", (mask,), lambda m: [m[r0:r1, lo:hi] for r0, r1, lo, hi in self.blocks]
        )

    def clean(self, weight: Tensor, mask: Tensor) -> None:
        """Set a packed ``W``'s masked-out entries (inside the bands) to zero, in place.

        They never reach the output (``W * M``), so this changes no function of the layer; it
        makes the blockwise products read ``W`` directly.  Written through ``.data``: the
        version counter does not move, so a graph that saved ``W`` earlier stays valid (its
        products read the same, already clean, entries).  Repeated before every product rather
        than once: a standard optimizer keeps them at zero (their gradient is zero), but a
        regularizer that pulls them away from zero, a noisy optimizer or a write into the
        stored blocks would not.
        """

        def make(w: Tensor, m: Tensor) -> list[tuple[Tensor, Tensor]]:
            return [
                (w_b[:, lo:hi], m[r0:r1, lo:hi])
                for w_b, (r0, r1, lo, hi) in zip(self.blocks_of(w.data), self.blocks)
            ]

        for w_band, m_band in self._cached("clean", (weight, mask), make):
            w_band.mul_(m_band)


def _forward(
    x: Tensor, weight: Tensor, bias: Tensor, plan: Staircase, recorded: bool = False
) -> Tensor:
    """``x W^T + b`` by blocks, for a ``W`` whose masked-out entries are zero.

    ``recorded``: under autograd (an already masked ``weight`` whose graph, or ``x``'s, is
    recorded): the views are made per call, since the cached ones are made without autograd,
    and the output blocks are ``narrow``s, since ``split``'s outputs may not be written in place
    under autograd.
    """
    # Each block's product lands in its columns of one output (a strided view that BLAS writes
    # through its leading dimension): no per-block results to concatenate.
    out = x.new_empty(x.shape[0], sum(plan.sizes))
    out.copy_(bias)  # broadcast over the batch; the blocks cover every output column
    if recorded:
        views = plan.make_views(weight)
        # Made one at a time, after the previous block's write (a view taken before the
        # output joined the graph would count as a leaf).
        blocks = (out.narrow(1, r0, r1 - r0) for r0, r1, _, _ in plan.blocks)
    else:
        views, blocks = plan.views(weight), out.split(plan.sizes, 1)
    for y, (w, w_t) in zip(blocks, views):
        if w.shape[1] > 0:
            y.addmm_(x.narrow(1, 0, w.shape[1]), w_t)
    return out


class _StaircaseLinear(torch.autograd.Function):
    """``y = x (W * M)^T + b`` for a staircase mask and a packed ``W``, forward and backward.

    The same function and gradients as ``F.linear(x, unpack(W) * M, b)``; every product skips
    the all-zero blocks.  ``W``'s masked-out band entries are zeroed first
    (:meth:`Staircase.clean`), so the forward and input-gradient products read ``W`` as it is
    and ``M`` is applied only to the weight gradient's bands; each block's weight gradient is
    one product written into its contiguous slice of the packed gradient (no zero fill).
    """

    @staticmethod
    def forward(ctx, x, weight, mask, bias, plan):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, weight, mask, bias)
        ctx.plan = plan
        return _masked_forward(x, weight, mask, bias, plan)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, weight, mask, bias = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (higher derivatives): differentiate the dense product (same
            # first derivatives) so that the gradients have a graph.
            return _dense_backward(ctx, grad, x, weight, mask, bias)
        plan = ctx.plan
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _grad_input(grad, weight, plan)
        if ctx.needs_input_grad[1]:
            grad_w = _grad_weight(grad, x, mask, plan)
        if ctx.needs_input_grad[3]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, None, grad_b, None


def _masked_forward(
    x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor, plan: Staircase
) -> Tensor:
    """The training forward: ``W``'s masked-out band entries set to zero, then the products."""
    plan.clean(weight, mask)
    return _forward(x, weight, bias, plan)


def _grad_input(grad: Tensor, weight: Tensor, plan: Staircase) -> Tensor:
    """``grad (W * M)``, ``(batch, cols)``, by blocks, for a clean packed ``W``."""
    grad_x = grad.new_zeros(grad.shape[0], plan.cols)
    for g, (w, _) in zip(grad.split(plan.sizes, 1), plan.views(weight)):  # g (batch, r1 - r0)
        if w.shape[1] > 0:
            grad_x.narrow(1, 0, w.shape[1]).addmm_(g, w)
    return grad_x


def _grad_weight(grad: Tensor, x: Tensor, mask: Tensor, plan: Staircase) -> Tensor:
    """The packed ``(numel,)`` gradient of ``W``: per block ``grad^T x``, its band times ``M``."""
    grad_w = x.new_empty(plan.numel)
    grad_t = grad.t().split(plan.sizes, 0)  # per block (r1 - r0, batch)
    bands = plan.mask_bands(mask)
    for g_w, g_t, m_band, (_, _, lo, hi) in zip(plan.blocks_of(grad_w), grad_t, bands, plan.blocks):
        if hi > 0:
            torch.mm(g_t, x.narrow(1, 0, hi), out=g_w)
            g_w.narrow(1, lo, hi - lo).mul_(m_band)
    return grad_w


def _dense_backward(ctx, grad, x, weight, mask, bias):  # noqa: ANN001, ANN202
    with torch.enable_grad():
        inputs = [t for t, n in zip((x, weight, mask, bias), ctx.needs_input_grad) if n]
        y = torch.nn.functional.linear(x, ctx.plan.unpack(weight) * mask, bias)
        grads = iter(torch.autograd.grad(y, inputs, grad, create_graph=True))
    return tuple(next(grads) if n else None for n in ctx.needs_input_grad[:4]) + (None,)


def staircase_linear(
    x: Tensor, weight: Tensor, mask: Tensor | None, bias: Tensor, plan: Staircase
) -> Tensor:
    """``x (W * M)^T + b`` by blocks: ``x (batch, in)``, ``M (out, in)`` -> ``(batch, out)``.

    Differentiable in ``x``, ``W`` and ``b``.  With a ``mask``, ``weight`` is the packed
    ``(numel,)`` parameter of a layer, whose masked-out entries may be overwritten: they are set
    to zero in place (:meth:`Staircase.clean`).  ``mask`` None: ``weight`` is a dense ``(out,
    in)`` matrix, already masked (eval's cached ``W * M``, or a caller's).
    """
    if mask is None:
        recorded = torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or bias.requires_grad
        )
        return _forward(x, weight, bias, plan, recorded=recorded)
    if weight.shape != (plan.numel,):
        # The backward writes the blocks only: a dense gradient would keep garbage elsewhere.
        raise ValueError(
            f"weight: with a mask, expected the packed blocks of shape ({plan.numel},) "
            f"(Staircase.pack), got shape {tuple(weight.shape)}"
        )
    return _StaircaseLinear.apply(x, weight, mask, bias, plan)


# ---------------------------------------------------------------- the kernel as custom operators
# Under torch.compile the autograd.Function above would be traced through (its in-place cleaning
# and cached views are Python the compiler cannot keep), and the dense masked product it replaces
# costs 1.5x the blocks.  The same kernel as three opaque operators keeps the block products in
# compiled code; Inductor fuses the elementwise rest around them.  The forward cleans the masked-
# out band entries of ``weight`` as the eager kernel does (through ``.data``): those entries never
# reach any output, so the compiler may treat the operator as not writing its inputs.


@torch.library.custom_op("flowscope::staircase_linear", mutates_args=())
def _op_linear(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor, key: int) -> Tensor:
    return _masked_forward(x, weight, mask, bias, _PLANS[key])


@_op_linear.register_fake
def _(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor, key: int) -> Tensor:
    return x.new_empty(x.shape[0], sum(_PLANS[key].sizes))


@torch.library.custom_op("flowscope::staircase_grad_input", mutates_args=())
def _op_grad_input(grad: Tensor, weight: Tensor, key: int) -> Tensor:
    return _grad_input(grad, weight, _PLANS[key])


@_op_grad_input.register_fake
def _(grad: Tensor, weight: Tensor, key: int) -> Tensor:
    return grad.new_empty(grad.shape[0], _PLANS[key].cols)


@torch.library.custom_op("flowscope::staircase_grad_weight", mutates_args=())
def _op_grad_weight(grad: Tensor, x: Tensor, mask: Tensor, key: int) -> Tensor:
    return _grad_weight(grad, x, mask, _PLANS[key])


@_op_grad_weight.register_fake
def _(grad: Tensor, x: Tensor, mask: Tensor, key: int) -> Tensor:
    return x.new_empty(_PLANS[key].numel)


def _op_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    x, weight, mask, _, key = inputs
    ctx.save_for_backward(x, weight, mask)
    ctx.key = key


def _op_backward(ctx, grad):  # noqa: ANN001, ANN202
    x, weight, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    grad_x = _op_grad_input(grad, weight, ctx.key) if need[0] else None
    grad_w = _op_grad_weight(grad, x, mask, ctx.key) if need[1] else None
    return grad_x, grad_w, None, grad.sum(0) if need[3] else None, None


_op_linear.register_autograd(_op_backward, setup_context=_op_setup)


def compiled_staircase_linear(
    x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor, plan: Staircase
) -> Tensor:
    """:func:`staircase_linear` with a packed ``weight`` and a ``mask``, as ONE operator that
    ``torch.compile`` keeps whole (first derivatives; the eager kernel also gives higher ones)."""
    return _op_linear(x, weight, mask, bias, plan.key)
