"""Masked products that skip the zero blocks of a MADE mask (the "staircase").

With the natural order and the hidden degrees sorted along the units (as :class:`MADE` assigns
them), row ``r`` of every MADE mask reads columns ``0 .. a_r - 1`` only: about half of ``W * M``
is zero.  Cutting the rows into a few blocks, block ``(r0, r1, lo, hi)`` reads columns ``< hi``
only and all of its rows read every column ``< lo``, so ``x (W * M)^T`` is per block one
unmasked product over ``x[:, :lo]`` plus one over the narrow band ``lo .. hi`` where ``M`` is
applied: 0.56 of the dense product's operations with 8 blocks (W2's MADE: 784 inputs, 512
hidden units), forward and backward.

The blocks are cheap enough only if each costs few Python-level tensor operations: the views of
``W`` and ``M`` that every call reads are made once per storage (:meth:`Staircase.views`; an
optimizer's in-place update is seen through them), the per-call views of the batch come from one
``split`` or a ``narrow``, and the bias is copied into the whole output at once.
"""

from __future__ import annotations

import torch
from torch import Tensor

Blocks = tuple[tuple[int, int, int, int], ...]

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
    """The blocks of one mask, and the views of its layer's tensors that every call reads."""

    def __init__(self, blocks: Blocks) -> None:
        self.blocks = blocks
        self.sizes = [r1 - r0 for r0, r1, _, _ in blocks]  # row blocks = output column blocks
        self._cache: dict[bool, tuple] = {}

    def clear(self) -> None:
        """Drop the cached views (and with them the references to the tensors they view)."""
        self._cache = {}

    def __getstate__(self) -> dict:
        # Copies and pickles carry the blocks only: the views belong to the original's tensors.
        return {"blocks": self.blocks, "sizes": self.sizes, "_cache": {}}

    def make_views(self, weight: Tensor, mask: Tensor | None) -> list[tuple]:
        """Per block ``(W[r0:r1, :lo], its transpose, W band, M band)``, made now.

        ``mask`` None: ``weight`` is already masked, and the whole prefix ``:hi`` is unmasked
        (``lo`` taken as ``hi``, no band).
        """
        views = []
        for r0, r1, lo, hi in self.blocks:
            lo = lo if mask is not None else hi
            w_lo = weight[r0:r1, :lo]
            band_m = mask[r0:r1, lo:hi] if mask is not None else None
            views.append((w_lo, w_lo.t(), weight[r0:r1, lo:hi], band_m))
        return views

    def views(self, weight: Tensor, mask: Tensor | None) -> list[tuple]:
        """:meth:`make_views` without autograd, made once per storage.

        A new storage (``.to()``, a loaded or swapped tensor) or inference mode makes new views;
        in-place updates are seen through the old ones.
        """
        masked = mask is not None
        tensors = (weight, mask)
        key = tuple(None if t is None else t.data_ptr() for t in tensors) + (
            weight.dtype,
            weight.device,
            torch.is_inference_mode_enabled(),
        )
        hit = self._cache.get(masked)
        if hit is None or hit[1] != key or any(a is not b for a, b in zip(hit[0], tensors)):
            with torch.no_grad():
                hit = self._cache[masked] = (tensors, key, self.make_views(weight, mask))
        return hit[2]


def _forward(
    x: Tensor,
    weight: Tensor,
    mask: Tensor | None,
    bias: Tensor,
    plan: Staircase,
    bands: list[Tensor] | None = None,
    recorded: bool = False,
) -> Tensor:
    """The blockwise product; ``recorded``: under autograd (an already masked ``weight`` whose
    graph, or ``x``'s, is recorded): the views are made per call, since the cached ones are made
    without autograd, and the output blocks are ``narrow``s, since ``split``'s outputs may not
    be written in place under autograd."""
    # Each block's product lands in its columns of one output (a strided view that BLAS writes
    # through its leading dimension): no per-block results to concatenate.
    out = x.new_empty(x.shape[0], weight.shape[0])
    out.copy_(bias)  # broadcast over the batch; the blocks cover every output column
    if recorded:
        views = plan.make_views(weight, mask)
        # Made one at a time, after the previous block's write (a view taken before the
        # output joined the graph would count as a leaf).
        blocks = (out.narrow(1, r0, r1 - r0) for r0, r1, _, _ in plan.blocks)
    else:
        views, blocks = plan.views(weight, mask), out.split(plan.sizes, 1)
    for y, (w_lo, w_lo_t, w_band, m_band) in zip(blocks, views):
        lo, width = w_lo.shape[1], w_band.shape[1]
        if lo > 0:
            y.addmm_(x.narrow(1, 0, lo), w_lo_t)
        if m_band is not None:
            band = w_band * m_band
            if bands is not None:
                bands.append(band)
            if width > 0:
                y.addmm_(x.narrow(1, lo, width), band.t())
    return out


class _StaircaseLinear(torch.autograd.Function):
    """``y = x (W * M)^T + b`` for a staircase mask, forward and backward.

    The same function and gradients as ``F.linear(x, W * M, b)``; every product skips the
    all-zero blocks, and ``M`` is applied to the narrow bands only (once: the forward pass keeps
    the masked bands for the backward pass).  Slicing ``W`` under autograd instead would make
    each slice's backward allocate and fill a full-size gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, mask, bias, plan):  # noqa: ANN001, ANN205
        bands: list[Tensor] = []
        out = _forward(x, weight, mask, bias, plan, bands)
        ctx.save_for_backward(x, weight, mask, bias, *bands)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, weight, mask, bias, *bands = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (higher derivatives): the saved bands have no graph, so the
            # dense product is differentiated instead (same first derivatives).
            return _dense_backward(ctx, grad, x, weight, mask, bias)
        plan = ctx.plan
        views = plan.views(weight, mask)
        grad_x = grad_w = grad_b = None
        grad_t = grad.t().split(plan.sizes, 0)  # per block (r1 - r0, batch)
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros_like(x)
            for g_t, (w_lo, _, _, _), band in zip(grad_t, views, bands):
                g, lo, width = g_t.t(), w_lo.shape[1], band.shape[1]
                if lo > 0:
                    grad_x.narrow(1, 0, lo).addmm_(g, w_lo)
                if width > 0:
                    grad_x.narrow(1, lo, width).addmm_(g, band)
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
            for g_w, g_t, (w_lo, _, _, m_band) in zip(grad_w.split(plan.sizes, 0), grad_t, views):
                lo, width = w_lo.shape[1], m_band.shape[1]
                if lo + width > 0:
                    g_w.narrow(1, 0, lo + width).addmm_(g_t, x.narrow(1, 0, lo + width))
                    g_w.narrow(1, lo, width).mul_(m_band)
        if ctx.needs_input_grad[3]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, None, grad_b, None


def _dense_backward(ctx, grad, x, weight, mask, bias):  # noqa: ANN001, ANN202
    with torch.enable_grad():
        inputs = [t for t, n in zip((x, weight, mask, bias), ctx.needs_input_grad) if n]
        y = torch.nn.functional.linear(x, weight * mask, bias)
        grads = iter(torch.autograd.grad(y, inputs, grad, create_graph=True))
    return tuple(next(grads) if n else None for n in ctx.needs_input_grad[:4]) + (None,)


def staircase_linear(
    x: Tensor, weight: Tensor, mask: Tensor | None, bias: Tensor, plan: Staircase
) -> Tensor:
    """``x (W * M)^T + b`` by blocks: ``x (batch, in)``, ``W, M (out, in)`` -> ``(batch, out)``.

    Differentiable in ``x``, ``W`` and ``b``.  ``mask`` None: ``weight`` is already masked
    (eval's cached ``W * M``, or a caller's).
    """
    if mask is None:
        recorded = torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or bias.requires_grad
        )
        return _forward(x, weight, None, bias, plan, recorded=recorded)
    return _StaircaseLinear.apply(x, weight, mask, bias, plan)
