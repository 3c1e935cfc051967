"""Coupling layers, generic over the elementwise transformer, and their masks.

A coupling layer splits the input with a binary mask into a part that passes through unchanged
and a part transformed elementwise with parameters computed from the unchanged part (and an
optional context):

    x_A = x[mask],  x_B = x[~mask]:   u_A = x_A,   u_B = tau(x_B; theta(x_A, context))

Its Jacobian is block-triangular, so ``log|det J| = sum_i log|tau'(x_B,i)|`` and the inverse only
needs ``tau^-1`` (the identity part gives back the same ``theta``).  One class covers the family:

* ``AdditiveTransformer`` -> NICE additive coupling (Dinh, Krueger & Bengio, 2015, "NICE:
  Non-linear Independent Components Estimation", arXiv:1410.8516, eq. 7);
* ``AffineTransformer`` -> RealNVP / Glow affine coupling (Dinh, Sohl-Dickstein & Bengio, 2017,
  "Density estimation using Real NVP", arXiv:1605.08803, eqs. 7-9; Kingma & Dhariwal, 2018,
  "Glow", arXiv:1807.03039, table 1);
* ``RationalQuadraticSpline`` -> NSF coupling (Durkan et al., 2019, "Neural Spline Flows",
  arXiv:1906.04032, section 3.2).

Mask convention (as RealNVP's ``b`` in eq. 9): ``mask[i] = True`` marks an IDENTITY
(conditioning) entry, ``False`` a TRANSFORMED entry.  Every mask helper takes ``flip`` to swap the
two roles; alternate ``flip`` between consecutive layers so every entry is transformed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_context, check_event_shape, check_image_shape, check_int
from ..nets import MLP
from .base import Transform
from .splines import RationalQuadraticSpline
from .transformers import AdditiveTransformer, AffineTransformer, Transformer

__all__ = [
    "Coupling",
    "half_mask",
    "alternating_mask",
    "checkerboard_mask",
    "channel_mask",
    "additive_coupling",
    "affine_coupling",
    "spline_coupling",
]


def _contiguous_blocks(flat: Tensor) -> tuple[bool, int] | None:
    """``(identity_first, n_identity)`` if the 1-D mask is one block of True and one of False."""
    n_identity = int(flat.sum())
    if n_identity in (0, flat.numel()):
        return None
    if bool(flat[:n_identity].all()):
        return True, n_identity
    if bool(flat[flat.numel() - n_identity :].all()):
        return False, n_identity
    return None


def half_mask(features: int, flip: bool = False) -> Tensor:
    """Split a vector into halves: ``(features,)`` bool, True = identity.

    ``flip=False`` TRANSFORMS the first ``features // 2`` entries (False) and conditions on the
    remaining ``features - features // 2`` (True); ``flip=True`` swaps the roles.
    """
    check_int("features", features, 2)
    mask = torch.arange(features) >= features // 2
    return ~mask if flip else mask


def alternating_mask(features: int, flip: bool = False) -> Tensor:
    """Interleave even and odd entries: ``(features,)`` bool, True = identity.

    ``flip=False`` TRANSFORMS the even indices (0, 2, ...) and conditions on the odd ones;
    ``flip=True`` swaps the roles.
    """
    check_int("features", features, 2)
    mask = torch.arange(features) % 2 == 1
    return ~mask if flip else mask


def checkerboard_mask(shape: Sequence[int], flip: bool = False) -> Tensor:
    """Spatial checkerboard of RealNVP (Dinh et al. 2017, section 3.4): ``(C, H, W)`` bool.

    ``flip=False`` TRANSFORMS the pixels with ``(h + w)`` even (in every channel) and conditions
    on those with ``(h + w)`` odd (True); ``flip=True`` swaps the roles.
    """
    c, h, w = check_image_shape("shape", shape)
    if h * w < 2:
        raise ValueError(f"shape: a checkerboard needs H * W >= 2, got {(c, h, w)}")
    parity = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 1
    mask = parity.expand(c, h, w).clone()
    return ~mask if flip else mask


def channel_mask(shape: Sequence[int], flip: bool = False) -> Tensor:
    """Channel-wise mask of RealNVP (Dinh et al. 2017, section 3.4): ``(C, H, W)`` bool.

    ``flip=False`` TRANSFORMS the first ``C // 2`` channels and conditions on the remaining
    ``C - C // 2`` (True); ``flip=True`` swaps the roles.
    """
    c, h, w = check_image_shape("shape", shape)
    if c < 2:
        raise ValueError(f"shape: a channel mask needs C >= 2 channels, got {(c, h, w)}")
    mask = (torch.arange(c) >= c // 2)[:, None, None].expand(c, h, w).clone()
    return ~mask if flip else mask


class Coupling(Transform):
    """Coupling layer ``u_A = x_A, u_B = tau(x_B; net(x_A[, context]))`` (see the module docstring).

    Args:
        mask: bool tensor of the event shape, True = identity (conditioning) entry, False =
            transformed entry; the event shape is ``(D,)`` (vectors) or ``(C, H, W)`` (images).
        transformer: the elementwise bijection ``tau`` (``AdditiveTransformer``,
            ``AffineTransformer``, ``RationalQuadraticSpline``, ...).
        net: conditioner network; None builds the default (vectors only, see below).
        hidden: width of the default MLP's hidden layers.
        layers: number of hidden layers of the default MLP.
        context_features: size of the context vector (None: unconditional).

    Conditioner contracts (``P = transformer.params_per_dim``, ``n_A``/``n_B`` = number of
    identity/transformed entries, ``c`` = ``context_features`` or 0):

    * Vectors ``(D,)``: ``net`` maps ``(batch, n_A + c)`` -- the identity entries in increasing
      index order, then the context -- to ``(batch, n_B * P)``, read as ``(batch, n_B, P)``: the
      ``P`` parameters of the j-th transformed entry (increasing index order) are contiguous.  The
      default is ``MLP(n_A + c, n_B * P, hidden, layers)`` with a zero last layer, so the layer
      starts as the identity; no compute is spent on the transformed entries' inputs or on
      parameters for identity entries.
    * Images ``(C, H, W)``: ``net`` is required and maps ``(batch, C + c, H, W)`` -- the input
      with its transformed entries set to 0 (RealNVP's ``b * x``), followed by the context
      broadcast over space as ``c`` extra channels -- to ``(batch, C * P, H, W)``, where output
      channel ``i * P + k`` holds parameter ``k`` for input channel ``i`` (Glow's interleaved
      ``h[:, 0::2], h[:, 1::2]`` layout for ``P = 2``).  Only the parameters at transformed
      entries are used.  Zero-initialize the net's last layer to start at the identity.

    Shapes: ``x`` ``(batch, *mask.shape)``, ``context`` ``(batch, context_features)``,
    ``logabsdet`` ``(batch,)``.
    """

    def __init__(
        self,
        mask: Tensor,
        transformer: Transformer,
        net: nn.Module | None = None,
        hidden: int = 64,
        layers: int = 2,
        context_features: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = f"{mask.dtype} tensor" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected a bool tensor of the event shape, got a {got}")
        if mask.dim() not in (1, 3):
            raise ValueError(
                f"mask: expected an event shape (D,) or (C, H, W), got shape {tuple(mask.shape)}"
            )
        if not isinstance(transformer, Transformer):
            raise ValueError(
                f"transformer: expected a flowscope Transformer, got {type(transformer).__name__}"
            )
        if context_features is not None:
            check_int("context_features", context_features, 1)
        n_identity = int(mask.sum())
        n_transformed = mask.numel() - n_identity
        if n_transformed == 0:
            raise ValueError("mask: expected at least one False (transformed) entry, got all True")
        if n_identity == 0 and context_features is None:
            raise ValueError(
                "mask: expected at least one True (identity) entry for the conditioner to see, "
                "got all False and no context"
            )
        if net is not None and not isinstance(net, nn.Module):
            raise ValueError(f"net: expected a torch nn.Module or None, got {type(net).__name__}")

        self.event_shape = tuple(mask.shape)
        self.image = mask.dim() == 3
        self.transformer = transformer
        self.context_features = context_features
        params = transformer.params_per_dim
        if net is None:
            if self.image:
                raise ValueError(
                    f"net: an image event shape {self.event_shape} needs a conditioner network "
                    f"mapping (batch, C + context, H, W) to (batch, C * {params}, H, W), got None"
                )
            check_int("hidden", hidden, 1)
            check_int("layers", layers, 0)
            net = MLP(n_identity + (context_features or 0), n_transformed * params, hidden, layers)
        self.net = net
        # Architecture, not weights: derived from the constructor arguments, so kept out of the
        # state dict (a checkpoint cannot silently change which entries are transformed).
        flat = mask.reshape(-1)
        self.register_buffer("mask", mask.clone(), persistent=False)
        self.register_buffer("identity_index", flat.nonzero().squeeze(-1), persistent=False)
        self.register_buffer("transform_index", (~flat).nonzero().squeeze(-1), persistent=False)
        # Vectors split into two contiguous blocks (``half_mask``): slices and one ``cat``
        # replace the gather/scatter pair (``index_select``/``index_copy``, whose backward passes
        # are scatters too).  None: a general mask, served by the index path.
        self._blocks = _contiguous_blocks(flat) if not self.image else None

    def extra_repr(self) -> str:
        return (
            f"event_shape={self.event_shape}, transformed={self.transform_index.numel()}, "
            f"transformer={self.transformer!r}, context_features={self.context_features}"
        )

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        """Transformer parameters for the transformed entries: ``(batch, n_B, P)``."""
        batch, p = x.shape[0], self.transformer.params_per_dim
        n = self.transform_index.numel()
        if self.image:
            c, h, w = self.event_shape
            inp = x * self.mask
            if context is not None:
                inp = torch.cat([inp, context[:, :, None, None].expand(-1, -1, h, w)], dim=1)
            out = self.net(inp)
            expected = (batch, c * p, h, w)
        else:
            inp = x.index_select(1, self.identity_index)
            if context is not None:
                inp = torch.cat([inp, context], dim=1)
            out = self.net(inp)
            expected = (batch, n * p)
        if tuple(out.shape) != expected:
            raise ValueError(
                f"net: expected the conditioner to output shape {expected}, got {tuple(out.shape)}"
            )
        if self.image:
            # (batch, C*P, H, W) -> (batch, C*H*W, P), entries in the order of mask.reshape(-1).
            out = out.view(batch, c, p, h, w).permute(0, 1, 3, 4, 2).reshape(batch, -1, p)
            return out.index_select(1, self.transform_index)
        return out.view(batch, n, p)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        name = "u" if inverse else "x"
        check_event_shape(name, x, self.event_shape)
        check_context("context", context, self.context_features, x.shape[0])
        if self._blocks is not None:
            return self._couple_blocks(x, context, inverse)
        params = self._params(x, context)
        flat = x.reshape(x.shape[0], -1)
        part = flat.index_select(1, self.transform_index)
        step = self.transformer.inverse if inverse else self.transformer.forward
        part, logabsdet = step(part, params)
        out = flat.index_copy(1, self.transform_index, part).view_as(x)
        return out, logabsdet.sum(dim=1)

    def _couple_blocks(
        self, x: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        """``_couple`` for a vector mask made of two contiguous blocks (see ``_blocks``)."""
        identity_first, n_identity = self._blocks  # type: ignore[misc]
        batch, p = x.shape[0], self.transformer.params_per_dim
        if identity_first:
            x_a, x_b = x[:, :n_identity], x[:, n_identity:]
        else:
            x_b, x_a = x[:, : x.shape[1] - n_identity], x[:, x.shape[1] - n_identity :]
        inp = x_a if context is None else torch.cat([x_a, context], dim=1)
        out = self.net(inp)
        n = x_b.shape[1]
        if tuple(out.shape) != (batch, n * p):
            raise ValueError(
                f"net: expected the conditioner to output shape {(batch, n * p)}, got "
                f"{tuple(out.shape)}"
            )
        step = self.transformer.inverse if inverse else self.transformer.forward
        y_b, logabsdet = step(x_b, out.view(batch, n, p))
        y = torch.cat([x_a, y_b] if identity_first else [y_b, x_a], dim=1)
        # One transformed entry (2-D data): a view instead of a reduction kernel.
        return y, (logabsdet.squeeze(1) if n == 1 else logabsdet.sum(dim=1))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to latent: ``x (batch, *event_shape)`` -> ``(u, logabsdet (batch,))``."""
        return self._couple(x, context, inverse=False)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent to data: ``u (batch, *event_shape)`` -> ``(x, logabsdet (batch,))``."""
        return self._couple(u, context, inverse=True)


def additive_coupling(
    mask: Tensor,
    net: nn.Module | None = None,
    hidden: int = 64,
    layers: int = 2,
    context_features: int | None = None,
) -> Coupling:
    """NICE additive coupling (Dinh et al. 2015, eq. 7): ``Coupling`` with ``AdditiveTransformer``.

    Volume preserving (log-det 0).  Arguments as in ``Coupling``.
    """
    return Coupling(mask, AdditiveTransformer(), net, hidden, layers, context_features)


def affine_coupling(
    mask: Tensor,
    scale: str = "tanh",
    clamp: float = 3.0,
    net: nn.Module | None = None,
    hidden: int = 64,
    layers: int = 2,
    context_features: int | None = None,
) -> Coupling:
    """RealNVP/Glow affine coupling (Dinh et al. 2017, eq. 7): ``Coupling``, ``AffineTransformer``.

    ``scale`` and ``clamp`` choose the bounded scale of ``AffineTransformer``; the other arguments
    are as in ``Coupling``.
    """
    transformer = AffineTransformer(scale=scale, clamp=clamp)
    return Coupling(mask, transformer, net, hidden, layers, context_features)


def spline_coupling(
    mask: Tensor,
    bins: int = 8,
    bound: float = 3.0,
    net: nn.Module | None = None,
    hidden: int = 64,
    layers: int = 2,
    context_features: int | None = None,
) -> Coupling:
    """NSF rational-quadratic spline coupling (Durkan et al. 2019, section 3.2).

    ``Coupling`` with ``RationalQuadraticSpline(bins, bound)`` (identity tails outside
    ``[-bound, bound]``); the other arguments are as in ``Coupling``.
    """
    transformer = RationalQuadraticSpline(bins=bins, bound=bound)
    return Coupling(mask, transformer, net, hidden, layers, context_features)


# --- channel masks on images: the conditioner sees only the identity channels -------------


class _ChannelSelect(nn.Module):
    """Adapts a net that sees only the identity channels to ``Coupling``'s image contract.

    For a CHANNEL mask (every pixel of a channel has the same role), the transformed channels of
    the coupling input are zeros and their parameters are the only ones used: ``body`` maps the
    ``n_A`` identity channels (plus the context channels) to ``n_B * P`` channels, which are
    scattered into the ``(batch, C * P, H, W)`` layout ``Coupling`` reads (channel ``i P + k``).
    This halves the first and last convolutions and matches the parameter count of seed 000's
    nflows-based Glow, whose conditioner sees only the identity half.
    """

    def __init__(
        self, body: nn.Module, identity: Tensor, transformed: Tensor, params: int, extra: int
    ) -> None:
        super().__init__()
        self.body = body
        self.params = params
        self.channels = c = identity.numel() + transformed.numel()
        # Identity channels, then the ``extra`` context channels Coupling appends after the C.
        inputs = torch.cat([identity, torch.arange(c, c + extra)])
        self.register_buffer("inputs", inputs, persistent=False)
        self.register_buffer("transformed", transformed, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c, p = self.channels, self.params
        y = self.body(x.index_select(1, self.inputs))
        b, _, h, w = y.shape
        out = y.new_zeros(b, c, p, h, w)
        out = out.index_copy(1, self.transformed, y.view(b, -1, p, h, w))
        return out.view(b, c * p, h, w)


def _slice_of(index: Tensor) -> slice | None:
    """``index`` (sorted, 1-D) as a slice when it is an arithmetic progression, else None."""
    values = index.tolist()
    if not values:
        return None
    step = values[1] - values[0] if len(values) > 1 else 1
    if step < 1 or values != list(range(values[0], values[0] + step * len(values), step)):
        return None
    return slice(values[0], values[-1] + 1, step)


class _ChannelCoupling(Coupling):
    """``Coupling`` for a CHANNEL mask whose net sees only the identity channels.

    The same map and parameters as ``Coupling`` with the ``_ChannelSelect`` net that
    ``image_coupling`` builds, evaluated without the generic image path's full-size work: no
    ``x * mask``, no scattering of the net's output into all ``C * P`` channels and no gathers
    and scatters over all ``C H W`` entries.  The identity and transformed channels are read as
    slices (strided for Glow's interleaved mask), the net's output is read in place as
    ``(batch, n_B, H, W, P)`` and the two halves are put back with one ``stack``/``cat``.
    """

    net: _ChannelSelect

    def __init__(
        self,
        mask: Tensor,
        transformer: Transformer,
        net: _ChannelSelect,
        context_features: int | None,
    ) -> None:
        super().__init__(mask, transformer, net=net, context_features=context_features)
        c = self.event_shape[0]
        identity = net.inputs[: c - net.transformed.numel()]
        self._identity = _slice_of(identity)
        self._transformed = _slice_of(net.transformed)
        # How the halves are put back: "interleave" (even/odd channels, as many of each), "cat"
        # (two blocks) or None (any other split: one gather with the inverse permutation).
        steps = (getattr(self._identity, "step", None), getattr(self._transformed, "step", None))
        self._layout: str | None = None
        if steps == (2, 2) and 2 * identity.numel() == c:
            self._layout = "interleave"
        elif steps == (1, 1):
            self._layout = "cat"
        self._first_identity = int(identity[0]) == 0
        order = torch.cat([identity, net.transformed])
        self.register_buffer("_unpermute", torch.argsort(order), persistent=False)
        self.register_buffer("_identity_index", identity, persistent=False)

    def _pick(self, x: Tensor, where: slice | None, index: Tensor) -> Tensor:
        return x[:, where] if where is not None else x.index_select(1, index)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        check_event_shape("u" if inverse else "x", x, self.event_shape)
        check_context("context", context, self.context_features, x.shape[0])
        x_a = self._pick(x, self._identity, self._identity_index)
        x_b = self._pick(x, self._transformed, self.net.transformed)
        batch, _, h, w = x.shape
        inp = x_a
        if context is not None:
            inp = torch.cat([x_a, context[:, :, None, None].expand(-1, -1, h, w)], dim=1)
        p = self.net.params
        out = self.net.body(inp)
        expected = (batch, x_b.shape[1] * p, h, w)
        if tuple(out.shape) != expected:
            raise ValueError(
                f"net: expected the conditioner body to output shape {expected}, got "
                f"{tuple(out.shape)}"
            )
        # Channel j * P + k holds parameter k of transformed channel j: a view, any layout.
        params = out.unflatten(1, (x_b.shape[1], p)).movedim(2, -1)
        step = self.transformer.inverse if inverse else self.transformer.forward
        y_b, logabsdet = step(x_b, params)
        halves = [x_a, y_b] if self._first_identity else [y_b, x_a]
        if self._layout == "interleave":
            y = torch.stack(halves, dim=2).flatten(1, 2)
        elif self._layout == "cat":
            y = torch.cat(halves, dim=1)
        else:
            y = torch.cat([x_a, y_b], dim=1).index_select(1, self._unpermute)
        return y, logabsdet.sum(dim=(1, 2, 3))
