"""Image bijections: squeeze, invertible 1x1 convolution, Glow steps and the multi-scale composite.

* ``Squeeze`` trades space for channels, ``(C, H, W) -> (C f^2, H/f, W/f)`` ("Density estimation
  using Real NVP", Dinh, Sohl-Dickstein & Bengio, 2017, arXiv:1605.08803, section 3.6).
* ``InvertibleConv1x1`` is Glow's learned channel mixing ("Glow: Generative Flow with Invertible
  1x1 Convolutions", Kingma & Dhariwal, 2018, arXiv:1807.03039, section 3.2, eqs. 9-10).
* ``glow_step`` is one step of flow, ``Compose(ActNorm, InvertibleConv1x1, affine Coupling)``
  (Glow section 3, Table 1) -- no new class, the composite IS the step.
* ``MultiScale`` is the multi-scale architecture (RealNVP section 3.6; Glow figure 2b): after
  each level half of the channels is factored out, and the latent is ONE flat vector per image.
* ``ConvNet`` / ``image_coupling`` build the coupling conditioners of seed 000's Glow
  (conv3x3-ReLU-conv1x1-ReLU-conv3x3, last layer zero-initialized).

Images are ``(batch, C, H, W)``; every ``logabsdet`` is ``(batch,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import _tracing, check_event_shape, check_image_shape
from .base import Compose, Transform
from .coupling import Coupling, _ChannelCoupling, _ChannelSelect, alternating_mask
from .linear import lu_factors
from .normalization import ActNorm
from .transformers import AffineTransformer, Transformer

__all__ = [
    "Squeeze",
    "InvertibleConv1x1",
    "ConvNet",
    "image_coupling",
    "glow_step",
    "MultiScale",
    "output_shape",
]

Shape = tuple[int, int, int]


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def output_shape(transform: Transform, shape: Sequence[int]) -> tuple[int, ...]:
    """Event shape of ``transform``'s forward output for inputs of event shape ``shape``.

    Transforms that change the shape (``Squeeze``, ``MultiScale``) define ``output_shape``;
    ``Compose`` folds over its members; every other transform keeps the shape.
    """
    if hasattr(transform, "output_shape"):
        return transform.output_shape(shape)
    if isinstance(transform, Compose):
        for t in transform.transforms:
            shape = output_shape(t, shape)
    return tuple(shape)


class Squeeze(Transform):
    """Space-to-channel reshaping ``(C, H, W) -> (C f^2, H/f, W/f)`` (RealNVP section 3.6).

    Each ``f x f`` block of pixels becomes ``f^2`` channels: output channel ``c f^2 + i f + j``
    holds input pixel ``(c, f h' + i, f w' + j)`` (``torch.nn.functional.pixel_unshuffle``
    order).  A permutation of the coordinates, so ``log|det J| = 0``.

    Args:
        factor: ``f``, an int >= 2.
        shape: optional input event shape ``(C, H, W)``; when given, sizes are checked now and
            inputs at every call.  Without it any ``(batch, C, H, W)`` with ``H`` and ``W``
            divisible by ``f`` is accepted.

    Shapes: ``x``: ``(batch, C, H, W)`` -> ``u``: ``(batch, C f^2, H/f, W/f)``.
    """

    def __init__(self, factor: int = 2, shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.factor = _count("factor", factor, 2)
        self.shape = None if shape is None else check_image_shape("shape", shape)
        if self.shape is not None:
            self.output_shape(self.shape)

    def output_shape(self, shape: Sequence[int], name: str = "shape") -> Shape:
        """The squeezed event shape; raises when ``H`` or ``W`` is not divisible by ``factor``."""
        c, h, w = check_image_shape(name, shape)
        f = self.factor
        if h % f or w % f:
            raise ValueError(
                f"{name}: Squeeze(factor={f}) needs H and W divisible by {f}, got (C, H, W) = "
                f"{(c, h, w)}; crop or pad the images, or use fewer squeezes"
            )
        return (c * f * f, h // f, w // f)

    def _check(self, name: str, z: Tensor, squeezed: bool) -> None:
        if self.shape is not None:
            expected = self.output_shape(self.shape) if squeezed else self.shape
            check_event_shape(name, z, expected)
        elif z.dim() != 4:
            raise ValueError(f"{name}: expected shape (batch, C, H, W), got {tuple(z.shape)}")
        elif not squeezed:
            self.output_shape(tuple(z.shape[1:]), name)
        elif z.shape[1] % (self.factor**2):
            raise ValueError(
                f"{name}: expected a channel count divisible by {self.factor**2}, got "
                f"{tuple(z.shape)}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check("x", x, squeezed=False)
        return F.pixel_unshuffle(x, self.factor), x.new_zeros(x.shape[0])

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check("u", u, squeezed=True)
        return F.pixel_shuffle(u, self.factor), u.new_zeros(u.shape[0])

    def extra_repr(self) -> str:
        return f"factor={self.factor}, shape={self.shape}"


class InvertibleConv1x1(Transform):
    """Invertible 1x1 convolution ``u[:, :, h, w] = W x[:, :, h, w]`` (Glow section 3.2).

    With ``lu=True`` (Glow eq. 10) ``W = P L (U + diag(sign * exp(log_s)))``: ``P`` a fixed
    permutation (buffer), ``L`` unit lower-triangular, ``U`` strictly upper-triangular and a fixed
    ``sign`` buffer, so ``W`` is invertible for every parameter value and

        ``log|det J| = H * W * sum(log_s)``                         (O(C)).

    With ``lu=False`` ``W`` is a free ``(C, C)`` parameter and ``log|det J| = H W log|det W|``
    (Glow eq. 9, O(C^3) via ``slogdet``); it can become singular in training.

    The inverse convolves with ``W^{-1}``, built from two triangular solves of the factors
    (``lu=True``) or ``torch.linalg.inv`` (``lu=False``).  In eval mode with no graph to record,
    ``W``, ``W^{-1}`` and ``log|det W|`` are assembled once and cached, keyed on the version
    counters, storage and dtype of the parameters and buffers: an optimizer step,
    ``load_state_dict`` or ``.to(...)`` invalidates the cache, and ``train()``/``eval()`` clear it.

    Args:
        channels: ``C``.
        lu: LU parameterization (True) or a plain weight (False).
        init: ``"permutation"`` (seed 000's code: a fixed random channel permutation ``P`` with
            ``L = I``, ``U = 0``, ``s = 1``), ``"identity"`` (``W = I``) or ``"rotation"`` (Glow:
            a random rotation, LU-decomposed).
        seed: seed of the random permutation/rotation (None: torch's global generator).

    Shapes: ``x``: ``(batch, C, H, W)`` -> ``u``: same, ``logabsdet``: ``(batch,)``.
    """

    INITS = ("permutation", "identity", "rotation")

    def __init__(
        self, channels: int, lu: bool = True, init: str = "permutation", seed: int | None = None
    ) -> None:
        super().__init__()
        c = self.channels = _count("channels", channels, 1)
        if init not in self.INITS:
            raise ValueError(f"init: expected one of {self.INITS}, got {init!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: expected an int or None, got {seed!r}")
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        if init == "identity":
            w0 = torch.eye(c, dtype=torch.float64)
        elif init == "permutation":
            w0 = torch.eye(c, dtype=torch.float64)[torch.randperm(c, generator=gen)]
        else:
            w0 = torch.linalg.qr(torch.randn(c, c, generator=gen, dtype=torch.float64))[0]
        self.lu = bool(lu)
        if self.lu:
            p_mat, l_mat, u_mat = torch.linalg.lu(w0)
            rows, cols = torch.tril_indices(c, c, offset=-1)
            self.register_buffer("_rows", rows, persistent=False)
            self.register_buffer("_cols", cols, persistent=False)
            # W = P_mat M means row i of W is row perm[i] of M = L (U + diag s).
            self.register_buffer("perm", p_mat.argmax(dim=1))
            diag = torch.diagonal(u_mat)
            self.register_buffer("sign", torch.sign(diag).float())
            self.lower = nn.Parameter(l_mat[rows, cols].float())
            self.upper = nn.Parameter(u_mat[cols, rows].float())
            self.log_s = nn.Parameter(diag.abs().log().float())
        else:
            self.weight = nn.Parameter(w0.float())
        self._cache: tuple[tuple, Tensor, Tensor, Tensor] | None = None

    def _factors(self) -> tuple[Tensor, Tensor]:
        """``(L, U + diag(s))``, each ``(C, C)``, differentiable in the parameters."""
        return lu_factors(self)

    def _assemble(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W, W^{-1}, log|det W|)`` from the current parameters."""
        if not self.lu:
            return self.weight, torch.linalg.inv(self.weight), torch.linalg.slogdet(self.weight)[1]
        lower, upper = self._factors()
        weight = (lower @ upper)[self.perm]
        eye = torch.eye(self.channels, dtype=lower.dtype, device=lower.device)
        # M^{-1} = U'^{-1} L^{-1} by two triangular solves; W^{-1} = M^{-1} P^T = M^{-1}[:, perm].
        m_inv = torch.linalg.solve_triangular(
            upper,
            torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True),
            upper=True,
        )
        return weight, m_inv[:, self.perm], self.log_s.sum()

    def _uncached(self) -> bool:
        return (
            self.training
            or (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))
            or _tracing(next(self.parameters()))  # compiled or vmapped: no storage to key on
        )

    def _weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W, W^{-1}, log|det W|)``, cached in eval mode when no graph is recorded."""
        if self._uncached():
            return self._assemble()
        tensors = list(self.parameters()) + [b for b in self.buffers() if b is not None]
        # A cache filled under inference_mode holds inference tensors, which autograd cannot save.
        key = (torch.is_inference_mode_enabled(),) + tuple(
            (t._version, t.data_ptr(), t.dtype, t.device) for t in tensors
        )
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, *self._assemble())
        return self._cache[1], self._cache[2], self._cache[3]

    def train(self, mode: bool = True) -> InvertibleConv1x1:
        self._cache = None
        return super().train(mode)

    def _check(self, name: str, z: Tensor) -> None:
        if z.dim() != 4 or z.shape[1] != self.channels:
            raise ValueError(
                f"{name}: expected shape (batch, {self.channels}, H, W), got {tuple(z.shape)}"
            )

    def _mix(self, z: Tensor, matrix: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        # A 1x1 convolution is ONE (C, C) x (C, B H W) product: on Glow's C = 12-48 channels
        # the product with its two layout copies, forward and backward, is 1.6-2.4x faster
        # than oneDNN's convolution (181 against 373 us at (16, 12, 16, 16)), and the W3
        # training step 1.034x (stop 17; a batched matmul over B was 1.017x).
        b, c, h, w = z.shape
        flat = z.transpose(0, 1).reshape(c, b * h * w)
        out = (matrix @ flat).reshape(c, b, h, w).transpose(0, 1).contiguous()
        return out, (logdet * (h * w)).reshape(1).repeat(b)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check("x", x)
        if self._uncached() and self.lu:
            # Training needs W only: skip the two triangular solves that build W^{-1}.
            lower, upper = self._factors()
            return self._mix(x, (lower @ upper)[self.perm], self.log_s.sum())
        weight, _, logdet = self._weights()
        return self._mix(x, weight, logdet)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check("u", u)
        _, weight_inv, logdet = self._weights()
        return self._mix(u, weight_inv, -logdet)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lu={self.lu}"


class ConvNet(nn.Sequential):
    """Coupling conditioner of seed 000's Glow: conv3x3 - ReLU - conv1x1 - ReLU - conv3x3.

    The last convolution is zero-initialized so that a coupling starts as the identity (Glow
    section 3.3).  ``(batch, in_channels, H, W) -> (batch, out_channels, H, W)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        hidden: channels of the two hidden layers.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 128) -> None:
        _count("in_channels", in_channels, 1)
        _count("out_channels", out_channels, 1)
        _count("hidden", hidden, 1)
        last = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        # In-place ReLUs act on fresh convolution outputs (a convolution's backward needs its
        # input and weight, never its output): one feature map less to allocate and write.
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            last,
        )
        # Channels-last weights: oneDNN's CPU convolutions run 1.3-2x faster (forward and
        # backward) on NHWC than on NCHW at Glow's sizes (few input channels, 128 hidden).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - (batch, in, H, W) -> (batch, out, H, W)
        # The input follows the weights' layout (a copy of the small input, once per call); the
        # output stays channels-last, which every consumer reads through views.
        return super().forward(x.contiguous(memory_format=torch.channels_last))


def image_coupling(
    mask: Tensor,
    transformer: Transformer,
    hidden: int = 128,
    context_features: int | None = None,
    body: nn.Module | None = None,
) -> Coupling:
    """A ``Coupling`` on images with a ``ConvNet`` conditioner.

    For a channel mask (constant over each channel) the net sees only the identity channels and
    outputs only the transformed channels' parameters (see ``_ChannelSelect``); for a spatial
    mask (checkerboard) it sees all ``C`` channels with the transformed entries zeroed (RealNVP's
    ``b * x``) and outputs ``C * P`` channels.

    Args:
        mask: ``(C, H, W)`` bool, True = identity entry (``coupling.checkerboard_mask``, ...).
        transformer: the elementwise map (e.g. ``AffineTransformer(scale="sigmoid")``).
        hidden: hidden channels of the ``ConvNet``.
        context_features: size of a context vector, broadcast over space as extra channels.
        body: replaces the ``ConvNet`` (channel masks: ``(n_A + c) -> n_B * P`` channels).
    """
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 3:
        raise ValueError(f"mask: expected a (C, H, W) bool tensor, got {mask!r:.80}")
    c = mask.shape[0]
    p = transformer.params_per_dim
    extra = context_features or 0
    per_channel = mask.reshape(c, -1)
    if bool((per_channel.all(1) == per_channel.any(1)).all()):
        identity = per_channel[:, 0].nonzero().squeeze(-1)
        transformed = (~per_channel[:, 0]).nonzero().squeeze(-1)
        if body is None:
            body = ConvNet(identity.numel() + extra, transformed.numel() * p, hidden)
        select = _ChannelSelect(body, identity, transformed, p, extra)
        return _ChannelCoupling(mask, transformer, select, context_features)
    net = body if body is not None else ConvNet(c + extra, c * p, hidden)
    return Coupling(mask, transformer, net=net, context_features=context_features)


def glow_step(
    shape: Sequence[int],
    hidden: int = 128,
    flip: bool = False,
    init: str = "permutation",
    lu: bool = True,
    context_features: int | None = None,
    scale: str = "sigmoid",
    clamp: float = 3.0,
) -> Compose:
    """One Glow step of flow: ``Compose(ActNorm, InvertibleConv1x1, affine Coupling)``.

    Glow (Kingma & Dhariwal 2018) section 3 and Table 1, as in seed 000's code: the coupling mask
    interleaves channels (even/odd, ``flip`` swaps the roles; alternate it between steps), the
    scale is ``sigmoid(h + 2) + 1e-3`` (``AffineTransformer(scale="sigmoid")``) and the
    conditioner is a ``ConvNet`` on the identity channels.

    The sigmoid scale lies in ``(1e-3, 1 + 1e-3)``: the normalizing direction only contracts,
    so the generating direction (the inverse) may amplify by up to 1000x per coupling, and a
    latent off the data's manifold can drive every coupling there at once ("Understanding and
    Mitigating Exploding Inverses in Invertible Neural Networks", Behrmann et al. 2021,
    arXiv:2006.09347).  ``scale="tanh"`` bounds the log-scale softly to ``(-clamp, clamp)``
    (``log s = clamp * tanh(h / clamp)``), so that the coupling's scale amplifies by at most
    ``exp(clamp)`` in either direction (the shift ``t`` stays unbounded).

    Args:
        shape: ``(C, H, W)`` with ``C >= 2``.
        hidden: conditioner width.
        flip: swap the coupling mask's roles.
        init, lu: passed to ``InvertibleConv1x1``.
        context_features: optional context size for the coupling.
        scale: ``"sigmoid"`` (Glow's code, seed 000) or ``"tanh"`` (soft-clamped log-scale).
        clamp: the bound ``c`` of ``scale="tanh"``, a number > 0 (unused by ``"sigmoid"``).
    """
    c, h, w = check_image_shape("shape", shape)
    if c < 2:
        raise ValueError(f"shape: a Glow step needs C >= 2 channels (squeeze first), got {shape!r}")
    mask = alternating_mask(c, flip=flip)[:, None, None].expand(c, h, w).clone()
    transformer = AffineTransformer(scale=scale, clamp=clamp)  # validates both
    coupling = image_coupling(mask, transformer, hidden, context_features)
    return Compose(ActNorm((c, h, w)), InvertibleConv1x1(c, lu=lu, init=init), coupling)


class _Flatten(Transform):
    """``(batch, *shape) -> (batch, prod(shape))``; the first member of ``MultiScale``."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0])

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return u.reshape(u.shape[0], *self.shape), u.new_zeros(u.shape[0])


class _Level(Transform):
    """One level of ``MultiScale`` acting on the flat vector ``(batch, D)``.

    The last ``prod(in_shape)`` entries are the image still being transformed; the entries before
    them are latents factored out by earlier levels and pass through unchanged.  ``transform``
    maps the image ``in_shape -> out_shape``; then, when ``keep`` is set, channels ``keep:`` are
    factored out and the tail becomes ``[factored (flat), kept (flat)]``.  The log-det is the
    inner transform's, returned as is (summation happens in ``Compose`` only).
    """

    def __init__(self, transform: Transform, in_shape: Shape, out_shape: Shape, keep: int | None):
        super().__init__()
        self.transform = transform
        self.context_features = transform.context_features
        self.in_shape, self.out_shape, self.keep = in_shape, out_shape, keep
        self.size = math.prod(in_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, n = x.shape[0], x.shape[1] - self.size
        # A private member of MultiScale, whose door validated the input: the unchecked path.
        h, ladj = self.transform._forward(x[:, n:].reshape(b, *self.in_shape), context)
        if self.keep is not None:
            h = torch.cat([h[:, self.keep :].reshape(b, -1), h[:, : self.keep].reshape(b, -1)], 1)
        return torch.cat([x[:, :n], h.reshape(b, -1)], dim=1), ladj

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, n = u.shape[0], u.shape[1] - self.size
        c, hh, ww = self.out_shape
        tail = u[:, n:]
        if self.keep is None:
            h = tail.reshape(b, c, hh, ww)
        else:
            split = (c - self.keep) * hh * ww
            z = tail[:, :split].reshape(b, c - self.keep, hh, ww)
            h = torch.cat([tail[:, split:].reshape(b, self.keep, hh, ww), z], dim=1)
        x, ladj = self.transform._inverse(h, context)
        return torch.cat([u[:, :n], x.reshape(b, -1)], dim=1), ladj


def _split_prior(shape: Shape, keep: int, context_features: int | None) -> Coupling:
    """Glow's learned prior on the factored-out channels, as a standardizing coupling.

    ``z`` (channels ``keep:``) given the kept half ``h`` is ``N(mu(h), sigma(h)^2)``; the coupling
    maps it to ``eps = z * s(h) + t(h)`` with ``s = 1 / sigma``, ``t = -mu / sigma``, log-det
    ``-sum log sigma``.  ``(s, t)`` come from one zero-initialized conv3x3 of ``h`` (Glow's
    ``Conv2dZeros``), so the prior starts as N(0, I); the log-scale is soft-clamped to (-3, 3).
    """
    c, h, w = shape
    mask = (torch.arange(c) < keep)[:, None, None].expand(c, h, w).clone()
    transformer = AffineTransformer(scale="tanh")
    conv = nn.Conv2d(
        keep + (context_features or 0), (c - keep) * transformer.params_per_dim, 3, padding=1
    )
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return image_coupling(mask, transformer, context_features=context_features, body=conv)


class MultiScale(Compose):
    """Multi-scale architecture with factored-out latents (RealNVP section 3.6; Glow fig. 2b).

    Level ``i`` applies ``levels[i]`` (an image transform, typically starting with ``Squeeze``);
    after every level but the last, the channels ``keep = C - C // 2`` onwards (the second half)
    are factored out: they go to the latent unchanged and the next level sees the first ``keep``
    channels.  The latent is ONE flat vector per image (DESIGN.md, "latent is flat"):

        ``u = [z_0 (flat), z_1 (flat), ..., h_final (flat)]``,   shape ``(batch, C H W)``,

    so one base distribution over ``(D,)`` models all scales.  ``latent_shapes`` gives the
    shape of each piece and ``unflatten`` cuts ``u`` back into them.

    Implementation: a ``Compose`` of a flattening step and one wrapper per level that works on
    the tail of the flat vector, so log-dets are summed by ``Compose`` alone.

    Learned split prior (``split_prior=True``; Glow's ``split2d`` prior, absent in seed 000):
    instead of a standard normal, each factored-out ``z`` gets ``N(mu(h), sigma(h)^2)`` from a
    zero-initialized conv of the kept half ``h``.  It is implemented as a TRANSFORM inside the
    level -- a coupling mapping ``z`` to ``eps = (z - mu(h)) / sigma(h)`` with log-det
    ``-sum log sigma`` -- so the latent stays flat and the base stays one distribution: a
    standard normal on ``eps`` is exactly the conditional Gaussian on ``z``.  Tempered sampling
    then scales ``eps``, i.e. ``sigma(h)``, as in Glow.

    Args:
        levels: one image transform per level; level ``i``'s input shape is the previous
            level's kept shape, its output shape is derived with ``output_shape``.
        shape: the input image shape ``(C, H, W)``.
        split_prior: add the learned split prior after every level but the last.

    Shapes: ``x``: ``(batch, C, H, W)`` -> ``u``: ``(batch, C H W)``; ``logabsdet``: ``(batch,)``.
    """

    def __init__(
        self, levels: Sequence[Transform], shape: Sequence[int], split_prior: bool = False
    ) -> None:
        shape = check_image_shape("shape", shape)
        levels = list(levels) if isinstance(levels, (list, tuple)) else [levels]
        if not levels or not all(isinstance(t, Transform) for t in levels):
            raise ValueError(f"levels: expected a non-empty list of Transforms, got {levels!r:.80}")
        context = {t.context_features for t in levels} - {None}
        ctx = context.pop() if len(context) == 1 else None
        parts: list[Transform] = [_Flatten(shape)]
        latent: list[Shape] = []
        in_shape = shape
        for i, level in enumerate(levels):
            out = output_shape(level, in_shape)
            if len(out) != 3 or math.prod(out) != math.prod(in_shape):
                raise ValueError(
                    f"levels[{i}]: expected an image transform keeping the size of its input "
                    f"{in_shape}, got output shape {out}"
                )
            if i == len(levels) - 1:
                parts.append(_Level(level, in_shape, out, None))
                latent.append(out)
                break
            c, h, w = out
            if c < 2:
                raise ValueError(
                    f"levels[{i}]: expected >= 2 output channels to factor half out, got {out}"
                )
            keep = c - c // 2
            inner = Compose(level, _split_prior(out, keep, ctx)) if split_prior else level
            parts.append(_Level(inner, in_shape, out, keep))
            latent.append((c - keep, h, w))
            in_shape = (keep, h, w)
        super().__init__(*parts)
        self.shape, self.split_prior = shape, bool(split_prior)
        self.features = math.prod(shape)
        self.latent_shapes: list[Shape] = latent

    @property
    def levels(self) -> list[Transform]:
        """The per-level transforms given to the constructor (without split priors)."""
        parts = self.transforms[1:]
        return [
            t.transform[0] if self.split_prior and t.keep is not None else t.transform
            for t in parts
        ]

    def output_shape(self, shape: Sequence[int]) -> tuple[int]:
        if tuple(shape) != self.shape:
            raise ValueError(f"shape: this MultiScale was built for {self.shape}, got {shape!r}")
        return (self.features,)

    def unflatten(self, u: Tensor) -> list[Tensor]:
        """Cut a flat latent ``(batch, D)`` into its per-scale pieces (``latent_shapes``)."""
        check_event_shape("u", u, (self.features,))
        sizes = [math.prod(s) for s in self.latent_shapes]
        return [p.reshape(u.shape[0], *s) for p, s in zip(u.split(sizes, 1), self.latent_shapes)]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, self.shape)
        return super().forward(x, context)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, (self.features,))
        return super().inverse(u, context)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, latent_shapes={self.latent_shapes}"
