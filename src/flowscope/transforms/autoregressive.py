"""Autoregressive transforms: MADE, MAF and IAF, generic over the elementwise transformer.

An autoregressive transform is a conditioner plus a transformer (Papamakarios et al. 2021,
"Normalizing Flows for Probabilistic Modeling and Inference", arXiv 1912.02762, section 3.1):
coordinate ``i`` (in a chosen order) goes through a monotone scalar map whose parameters are a
function of the coordinates that come before it.  The conditioner is one masked network (MADE),
so all ``D`` parameter vectors come out of ONE pass in the direction where the inputs are known;
the other direction has to produce the coordinates one at a time (``D`` passes).

* :class:`MADE` -- "MADE: Masked Autoencoder for Distribution Estimation" (Germain et al. 2015,
  arXiv 1502.03509), masks from degrees, eqs. 12-13.
* :class:`MaskedAutoregressive` -- "Masked Autoregressive Flow for Density Estimation"
  (Papamakarios et al. 2017, arXiv 1705.07057, eqs. 2-5; seed 001 section 3.4.5, eqs.
  3.24-3.27): the density direction (data -> latent) is one pass.  With a rational-quadratic
  spline transformer this is the autoregressive NSF ("Neural Spline Flows", Durkan et al. 2019,
  arXiv 1906.04032).
* :class:`InverseAutoregressive` -- "Improved Variational Inference with Inverse Autoregressive
  Flow" (Kingma et al. 2016, arXiv 1606.04934, section 4): the inverse of a MAF, so sampling is
  one pass and density is ``D`` passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import _tracing, check_context, check_event_shape, check_finite, check_int
from .base import Inverse, Transform
from .staircase import Staircase, compiled_staircase_linear, staircase_blocks, staircase_linear
from .transformers import Transformer

__all__ = ["MADE", "MaskedAutoregressive", "InverseAutoregressive"]


def _make_order(features: int, order: str | Tensor | Sequence[int], seed: int | None) -> Tensor:
    """The generation order as a LongTensor ``(features,)``: ``order[r]`` is the r-th coordinate."""
    if isinstance(order, str):
        if order == "natural":
            return torch.arange(features)
        if order == "random":
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            return torch.randperm(features, generator=gen)
        raise ValueError(f"order: expected 'natural', 'random' or a permutation, got {order!r}")
    perm = torch.as_tensor(order)
    if perm.dtype.is_floating_point or perm.dtype == torch.bool or perm.dim() != 1:
        raise ValueError(
            f"order: expected a 1-D integer permutation of range({features}), got a tensor of "
            f"dtype {perm.dtype} and shape {tuple(perm.shape)}"
        )
    perm = perm.long().cpu()
    if perm.numel() != features or not torch.equal(perm.sort().values, torch.arange(features)):
        raise ValueError(f"order: expected a permutation of range({features}), got {perm.tolist()}")
    return perm.clone()


def _hidden_degrees(width: int, features: int, conditional: bool) -> Tensor:
    """Degrees ``m(k)`` of one hidden layer, spread evenly (deterministically) over their range.

    A unit of degree ``m`` may see the inputs of degree ``<= m`` (Germain et al. 2015, eq. 12)
    and feed the outputs of degree ``> m`` (eq. 13).  Germain et al. draw ``m(k)`` uniformly from
    ``[1, D-1]``; spreading them evenly covers every degree as soon as ``width >= D - 1`` and is
    reproducible.  With a context, degree 0 (a unit that sees the context only) is allowed too:
    otherwise the parameters of the first coordinate could not depend on the context at all.
    """
    low = 0 if conditional else 1
    span = features - low  # number of useful degrees: low .. features - 1
    if span <= 0:  # features == 1 and no context: nothing may feed the (single) output
        return torch.full((width,), low, dtype=torch.long)
    return low + torch.arange(width) * span // width


class _MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed boolean connectivity mask ``M`` (a buffer).

    Speed: ``M`` is also kept in the weight's dtype (``float * bool`` converts the bool tensor
    at every call, several times the cost of ``float * float``); in eval mode, when no graph is
    recorded, ``W * M`` is computed once and cached, keyed on the weight's version counter,
    storage and dtype (an optimizer step, ``load_state_dict`` or ``.to(...)`` invalidates it;
    ``train()``/``eval()`` clear it); and large staircase masks skip their zero blocks
    (``staircase.py``: 0.56 of the dense product's operations at 784 inputs and 512 hidden
    units, 8 row blocks).

    **Storage of a staircase layer.** It keeps only the blocks ``W[r0:r1, :hi]`` that its
    products read, in ONE flat parameter ``weight_blocks`` (0.574 of the dense matrix on W2's
    layers; the rest is structurally zero): ``named_parameters()`` lists ``weight_blocks``
    instead of ``weight``.  ``layer.weight`` still reads as the dense ``(out, in)`` matrix
    (zero outside the blocks; differentiable w.r.t. ``weight_blocks``), assigning
    ``layer.weight = w`` packs ``w``, and the state dict holds the dense ``weight`` as before,
    so checkpoints of either storage load into the other.  An in-place write into
    ``layer.weight`` (``nn.init.normal_``) changes a temporary: initialize through
    ``weight_blocks``, by assignment or ``reset_parameters()``.  The masked-out entries start at
    zero, and the kernel sets those it reads back to zero before every training product (they
    never reach the output: no function of the layer changes).
    """

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.bool())
        # Derived from `mask`: out of the state dict, refreshed when a state dict is loaded.
        self.register_buffer("mask_value", mask.to(self.weight.dtype), persistent=False)
        with torch.no_grad():
            # The masked-out entries never reach the output: they start (and show) as zeros.
            self.weight.mul_(self.mask_value)
        self._cache: tuple[tuple, Tensor] | None = None
        self._derive()

    def _derive(self) -> None:
        # An all-True mask (e.g. hidden-to-hidden layers when every hidden degree is equal)
        # needs no product at all; a large staircase mask skips its zero blocks.
        self.full = bool(self.mask.all())
        blocks = staircase_blocks(self.mask)
        self._relayout(Staircase(blocks, self.in_features) if blocks is not None else None)
        # Inputs no unit reads (a MADE's input layer never reads the last coordinate of its
        # order): with the natural order they are the trailing columns, and the fused runs
        # (fused.py) multiply by the leading ``used_inputs`` columns only.
        read = self.mask.any(0)
        k = int(read.sum())
        prefix = 0 < k < read.numel() and bool(read[:k].all())
        self.used_inputs = k if prefix else None
        self.prefix_full = prefix and bool(self.mask[:, :k].all())

    def _relayout(self, plan: Staircase | None) -> None:
        """Store ``W`` packed by ``plan`` (None: dense), converting the current values; the
        parameter object is kept when the layout does not change."""
        old = self.__dict__.get("staircase")
        if old is None and plan is None:  # dense (a parameter, or packing.py's view) stays
            self.staircase = None
            return
        if old is not None and plan is not None and old.blocks == plan.blocks:
            return  # same layout: keep the parameter and the views cache
        stored = self._stored()
        with torch.no_grad():
            dense = old.unpack(stored) if old is not None else stored
            dense = dense * self.mask_value
            value = plan.pack(dense) if plan is not None else dense
        param = nn.Parameter(value, requires_grad=stored.requires_grad)
        self._parameters.pop("weight_blocks" if old is not None else "weight")
        self._parameters["weight_blocks" if plan is not None else "weight"] = param
        self.staircase = plan
        self._cache = None

    def _stored(self) -> Tensor:
        """The stored weight: ``weight_blocks`` ``(numel,)`` (staircase), else ``weight``."""
        return self._parameters["weight_blocks"] if self.__dict__.get("staircase") else self.weight

    def __getattr__(self, name: str) -> Any:
        if name == "weight" and self.__dict__.get("staircase") is not None:
            return self.staircase.unpack(self._parameters["weight_blocks"])
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "weight" and self.__dict__.get("staircase") is not None:
            with torch.no_grad():
                self._parameters["weight_blocks"].copy_(
                    self.staircase.pack(value * self.mask_value)
                )
            return
        super().__setattr__(name, value)

    def reset_parameters(self) -> None:
        if self.__dict__.get("staircase") is None:
            return super().reset_parameters()
        # nn.Linear's own initialization, drawn on a dense twin and packed.
        ref = self.mask_value
        twin = nn.Linear(self.in_features, self.out_features, dtype=ref.dtype, device=ref.device)
        self.weight = twin.weight.detach()
        with torch.no_grad():
            self.bias.copy_(twin.bias)
        return None

    @property
    def blocks(self) -> tuple | None:
        """The staircase's row blocks ``(r0, r1, lo, hi)``, or None (dense masked product)."""
        return None if self.staircase is None else self.staircase.blocks

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.staircase is not None:  # the dense matrix, as an unpacked layer saves it
            packed = destination.pop(prefix + "weight_blocks")
            destination[prefix + "weight"] = self.staircase.unpack(
                packed if keep_vars else packed.detach()
            )

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kw: Any) -> None:
        w_key, m_key = prefix + "weight", prefix + "mask"
        mask = state_dict.get(m_key)
        early = isinstance(mask, Tensor) and mask.shape == self.mask.shape
        if early:
            # Take the loaded mask's layout first, then hand the weight over packed by it.
            with torch.no_grad():
                self.mask.copy_(mask)
                self.mask_value.copy_(mask)
            self._derive()
            weight = state_dict.get(w_key)
            if self.staircase is not None and isinstance(weight, Tensor):
                if weight.shape == self.mask.shape:
                    state_dict[prefix + "weight_blocks"] = self.staircase.pack(
                        state_dict.pop(w_key) * mask.to(self.mask_value.dtype)
                    )
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)
        if not early:  # no usable mask in the state dict: the layer's own stays, re-derived
            with torch.no_grad():
                self.mask_value.copy_(self.mask)
            self._derive()

    def _cacheable(self) -> bool:
        w = self._stored()
        return not (self.training or (torch.is_grad_enabled() and w.requires_grad) or _tracing(w))

    def masked_weight(self) -> Tensor:
        # Multiplying (rather than zeroing the weights once) keeps the autoregressive property
        # whatever an optimizer or weight decay does to the masked-out entries.
        if self.full:
            return self.weight
        if not self._cacheable():
            return self.weight * self.mask_value
        # A cache filled under inference_mode holds inference tensors, which autograd cannot
        # save (a frozen model differentiated w.r.t. its input): the mode is part of the key.
        w = self._stored()
        key = (
            torch.is_inference_mode_enabled(),
            w._version,
            w.data_ptr(),
            w.dtype,
            w.device,
            self.mask_value._version,
        )
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.weight * self.mask_value)
        return self._cache[1]

    def train(self, mode: bool = True) -> _MaskedLinear:
        self._cache = None
        return super().train(mode)

    def _apply(self, *args: Any, **kwargs: Any) -> _MaskedLinear:
        # New storages (``.to()``, ``.double()``): drop the views of the old ones now.
        if self.staircase is not None:
            self.staircase.clear()
        return super()._apply(*args, **kwargs)

    def forward(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """``x (W * M)^T + b``; ``weight``: ``W * M`` when the caller computed it already."""
        # Batched (vmap) weights or inputs take the plain path: the staircase kernel has no
        # vmap rules.  A compiler gets the kernel as one opaque operator for the layer's own
        # packed parameter, else the plain path.
        stored = self._stored()
        plan = self.staircase
        if plan is not None and torch.compiler.is_compiling():
            if weight is None and isinstance(stored, nn.Parameter) and x.dim() == 2:
                return compiled_staircase_linear(x, stored, self.mask_value, self.bias, plan)
        if plan is None or _tracing(x) or _tracing(stored):
            return F.linear(x, self.masked_weight() if weight is None else weight, self.bias)
        if weight is None and self._cacheable():
            weight = self.masked_weight()
        if weight is None and not isinstance(stored, nn.Parameter):
            # A substituted weight (functional_call's, a parametrization's) is not ours to
            # clean in place: mask a copy.
            weight = self.weight * self.mask_value
        if weight is not None:
            return staircase_linear(x, weight, None, self.bias, self.staircase)
        return staircase_linear(x, stored, self.mask_value, self.bias, self.staircase)


class MADE(nn.Module):
    """Masked autoencoder: ``D`` parameter vectors, the ``i``-th a function of ``x_{<i}`` only.

    "MADE: Masked Autoencoder for Distribution Estimation" (Germain et al. 2015, arXiv
    1502.03509).  Every unit gets a degree: input ``j`` has degree ``rank(j) + 1`` (its position
    in ``order``, counted from 1), hidden units have degrees in ``[1, D-1]`` (``[0, D-1]`` with a
    context) and a connection exists from degree ``a`` to a hidden unit of degree ``b`` iff
    ``b >= a`` (eq. 12) and to an output of degree ``b`` iff ``b > a`` (eq. 13).  Hence output
    ``(i, p)`` depends only on inputs that come strictly before ``i`` in ``order``.

    The context, when given, enters every unit of the first hidden layer through an unmasked
    linear map (the output layer when ``layers == 0``); every later unit sees it through them.

    Args:
        features: ``D``, the number of inputs.
        params_per_dim: ``P``, parameters produced per input.
        hidden: width of every hidden layer.
        layers: number of hidden layers (``>= 0``; 0 gives one masked linear map).
        order: the generation order: ``"natural"`` (0, 1, ..., D-1), ``"random"`` (a seeded
            permutation) or a permutation ``order`` (LongTensor or sequence) where ``order[r]`` is
            the index of the r-th coordinate, i.e. the one that depends on ``order[:r]``.
        context_features: size of the context vector (None: unconditional).
        seed: seed of the random order (None: torch's global generator).
        zero_init: zero the output layer so that the parameters start at 0 (which the
            transformers map to the identity).
        activation: module class between layers.

    Shapes: ``x (batch, D)``, ``context (batch, context_features)`` -> ``(batch, D, P)``.

    Buffers: ``order`` and ``rank`` (its inverse permutation), and each layer's boolean ``mask``;
    they are part of the state dict, so a loaded model keeps the order it was trained with.
    """

    def __init__(
        self,
        features: int,
        params_per_dim: int,
        hidden: int = 64,
        layers: int = 2,
        order: str | Tensor | Sequence[int] = "natural",
        context_features: int | None = None,
        seed: int | None = None,
        zero_init: bool = True,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.features = check_int("features", features)
        self.params_per_dim = check_int("params_per_dim", params_per_dim)
        check_int("hidden", hidden)
        self.num_hidden_layers = check_int("layers", layers, minimum=0)
        if context_features is not None:
            check_int("context_features", context_features)
        self.context_features = context_features

        perm = _make_order(features, order, seed)
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(features)
        self.register_buffer("order", perm)
        self.register_buffer("rank", rank)

        in_deg = rank + 1
        # Output unit i * P + p belongs to input i, so that the output reshapes to (batch, D, P).
        out_deg = in_deg.repeat_interleave(params_per_dim)
        degrees = [in_deg]
        degrees += [_hidden_degrees(hidden, features, context_features is not None)] * layers
        masked = [
            _MaskedLinear(d_out[:, None] >= d_in[None, :])
            for d_in, d_out in zip(degrees[:-1], degrees[1:])
        ]
        masked.append(_MaskedLinear(out_deg[:, None] > degrees[-1][None, :]))
        self.layers = nn.ModuleList(masked)
        self.context_layer = (
            nn.Linear(context_features, masked[0].out_features, bias=False)
            if context_features is not None
            else None
        )
        self.activation = activation()
        if zero_init:
            with torch.no_grad():  # weight (or weight_blocks) and bias
                for p in masked[-1].parameters():
                    p.zero_()

    def masked_weights(self) -> list[Tensor]:
        """``W * M`` of every layer, input to output (compute once, reuse across passes)."""
        return [layer.masked_weight() for layer in self.layers]

    def forward(
        self, x: Tensor, context: Tensor | None = None, weights: list[Tensor] | None = None
    ) -> Tensor:
        """Parameters ``(batch, D, P)`` of every coordinate, from ``x (batch, D)``.

        ``weights`` (from :meth:`masked_weights`) skips recomputing the masked weights when the
        network is called many times with unchanged parameters (the ``D``-pass direction).
        """
        check_event_shape("x", x, (self.features,))
        check_context("context", context, self.context_features, x.shape[0])
        # ReLU is applied in place to the fresh pre-activation (its backward needs only its
        # result); the layers skip their masks' zero blocks when large (``_MaskedLinear``).
        h = self.layers[0].forward(x, weights[0] if weights else None)
        if self.context_layer is not None:
            h = h + self.context_layer(context)
        relu = type(self.activation) is nn.ReLU
        for i, layer in enumerate(self.layers[1:], 1):
            h = torch.relu_(h) if relu else self.activation(h)
            h = layer.forward(h, weights[i] if weights else None)
        return h.reshape(x.shape[0], self.features, self.params_per_dim)


class MaskedAutoregressive(Transform):
    """Masked autoregressive flow layer (MAF): density in one pass, sampling in ``D`` passes.

    "Masked Autoregressive Flow for Density Estimation" (Papamakarios et al. 2017, arXiv
    1705.07057, eqs. 2-5; seed 001 section 3.4.5).  In the paper a sample is generated as
    ``x_i = u_i exp(alpha_i) + mu_i`` with ``(mu_i, alpha_i) = g(x_{<i})``, so the data -> latent
    map ``u_i = (x_i - mu_i) exp(-alpha_i)`` needs only the (known) ``x`` and is ONE MADE pass.
    With the generic transformer interface this reads::

        forward(x):  theta = MADE(x);  u_i = tau(x_i; theta_i)        (one pass)
        inverse(u):  for r in order: theta_i = MADE(x)_i;  x_i = tau^-1(u_i; theta_i)

    which is the paper's layer for ``AffineTransformer`` (``tau(x) = x s + t`` with ``s =
    exp(-alpha)``, ``t = -mu exp(-alpha)``; the scale is bounded as the transformer documents),
    NICE-like for ``AdditiveTransformer`` and the autoregressive NSF (Durkan et al. 2019, arXiv
    1906.04032) for a rational-quadratic spline.  ``tau`` is elementwise in ``x_i`` once the
    parameters are fixed and the parameters of ``i`` see only ``x_{<i}``, so the Jacobian is
    triangular (in ``order``) and ``log|det| = sum_i log|tau'(x_i; theta_i)|`` (eq. 5, seed 001
    eq. 3.27).

    The inverse produces the coordinates in ``order`` and recomputes only what the next one
    needs: the first layer's pre-activations are kept and updated by a rank-1 step as each
    coordinate appears (``O(B H)`` instead of ``O(B D H)``), later hidden layers are recomputed
    and only the ``P`` output rows of the coordinate being produced are evaluated.  With one
    hidden layer sampling costs ``O(B D H P)`` in all, the cost of one forward pass, instead of
    ``O(B D^2 H P)``.  It is the same function as the plain loop of ``D`` full MADE passes
    (:meth:`_inverse_plain`, kept as the reference the tests compare against).

    Args:
        features: ``D``.
        transformer: the elementwise bijection (``AdditiveTransformer``, ``AffineTransformer``,
            ``RationalQuadraticSpline``...); its ``params_per_dim`` sizes the MADE output.
        hidden, layers, order, context_features, seed, activation: as in :class:`MADE`; the
            MADE's output layer starts at zero, so the layer starts as the identity.

    Shapes: ``x, u (batch, D)``; ``context (batch, context_features)``; logabsdet ``(batch,)``.
    """

    def __init__(
        self,
        features: int,
        transformer: Transformer,
        hidden: int = 64,
        layers: int = 2,
        order: str | Tensor | Sequence[int] = "natural",
        context_features: int | None = None,
        seed: int | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if not isinstance(transformer, Transformer):
            raise ValueError(
                "transformer: expected a flowscope Transformer (e.g. AffineTransformer()), got "
                f"{type(transformer).__name__}"
            )
        self.transformer = transformer
        self.made = MADE(
            features,
            transformer.params_per_dim,
            hidden=hidden,
            layers=layers,
            order=order,
            context_features=context_features,
            seed=seed,
            zero_init=True,
            activation=activation,
        )
        self.features = self.made.features
        self.context_features = context_features

    @property
    def order(self) -> Tensor:
        """``(D,)``: ``order[r]`` is the index of the r-th coordinate produced."""
        return self.made.order

    def _check(self, name: str, x: Tensor, context: Tensor | None) -> None:
        check_event_shape(name, x, (self.features,))
        check_finite(name, x)
        check_context("context", context, self.context_features, x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data -> latent in one MADE pass: ``x (batch, D) -> (u, logabsdet (batch,))``."""
        self._check("x", x, context)
        return self._forward(x, context)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent -> data, one coordinate at a time: ``u (batch, D) -> (x, logabsdet (batch,))``."""
        self._check("u", u, context)
        return self._inverse(u, context)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, ladj = self.transformer.forward(x, self.made(x, context))
        return u, ladj.sum(dim=-1)

    def _inverse(self, u: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        made, tr = self.made, self.transformer
        batch, dim, npar = u.shape[0], self.features, made.params_per_dim
        weights = made.masked_weights()
        # Columns of the first layer as contiguous rows (D, 1, width): column i, scaled by x_i,
        # is added to the pre-activations when x_i appears.
        first_cols = weights[0].t().contiguous().unsqueeze(1)
        # Output rows grouped per coordinate: (D, P, width of the last hidden layer).
        last = weights[-1].reshape(dim, npar, -1)
        last_bias = made.layers[-1].bias.reshape(dim, npar)

        pre = made.layers[0].bias.expand(batch, -1)
        if made.context_layer is not None:
            pre = pre + made.context_layer(context)
        order = made.order.tolist()  # one host sync per call, then plain ints
        u_cols = u.split(1, dim=1)  # one op instead of a slice per step
        cols: list[Tensor] = []
        ladjs: list[Tensor] = []
        for r, i in enumerate(order):
            if r > 0:
                prev = order[r - 1]
                pre = torch.addcmul(pre, cols[-1], first_cols[prev])
            # The first coordinate sees no input: without a context its parameters are the same
            # for every row, so they are computed on one row and broadcast (1/D of the work).
            rows = 1 if r == 0 and made.context_layer is None else batch
            if made.num_hidden_layers == 0:
                theta = pre[:rows].reshape(rows, dim, npar)[:, i]
            else:
                h = made.activation(pre[:rows])
                for layer, w in zip(made.layers[1:-1], weights[1:-1]):
                    h = made.activation(layer(h, w))
                theta = F.linear(h, last[i], last_bias[i])
            xi, ladj = tr.inverse(u_cols[i], theta.expand(batch, -1).unsqueeze(1))
            cols.append(xi)
            ladjs.append(ladj)
        x = torch.cat(cols, dim=1)  # columns in generation order
        total = torch.cat(ladjs, dim=1).sum(dim=1)
        if order != list(range(dim)):
            x = x[:, made.rank]
        return x, total

    def _inverse_plain(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reference inverse: ``D`` full MADE passes (what :meth:`inverse` must equal)."""
        x = torch.zeros_like(u)
        total = u.new_zeros(u.shape[0])
        weights = self.made.masked_weights()
        for i in self.made.order.tolist():
            theta = self.made(x, context, weights)[:, i : i + 1]
            xi, ladj = self.transformer.inverse(u[:, i : i + 1], theta)
            # Out of place: earlier passes saved x for backward.
            x = x.index_copy(1, torch.tensor([i], device=u.device), xi)
            total = total + ladj[:, 0]
        return x, total


class InverseAutoregressive(Inverse):
    """Inverse autoregressive flow layer (IAF): sampling in one pass, density in ``D`` passes.

    "Improved Variational Inference with Inverse Autoregressive Flow" (Kingma et al. 2016, arXiv
    1606.04934, section 4): ``x_i = tau^-1(u_i; theta(u_{<i}))``, the parameters being computed
    from the latent, so generation (``inverse``) is one MADE pass and ``forward`` (data ->
    latent) solves coordinate by coordinate.  It IS the inverse of a
    :class:`MaskedAutoregressive` built with the same arguments (held in ``self.transform``), so
    there is one implementation of both directions.

    Args: as :class:`MaskedAutoregressive`.  Shapes: ``x, u (batch, D)``; logabsdet ``(batch,)``.
    """

    transform: MaskedAutoregressive

    def __init__(
        self,
        features: int,
        transformer: Transformer,
        hidden: int = 64,
        layers: int = 2,
        order: str | Tensor | Sequence[int] = "natural",
        context_features: int | None = None,
        seed: int | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(
            MaskedAutoregressive(
                features,
                transformer,
                hidden=hidden,
                layers=layers,
                order=order,
                context_features=context_features,
                seed=seed,
                activation=activation,
            )
        )

    # Overridden only so that error messages name the argument as the caller sees it.
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data -> latent, ``D`` passes: ``x (batch, D) -> (u, logabsdet (batch,))``."""
        self.transform._check("x", x, context)
        return self.transform._inverse(x, context)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent -> data, one pass: ``u (batch, D) -> (x, logabsdet (batch,))``."""
        self.transform._check("u", u, context)
        return self.transform._forward(u, context)
