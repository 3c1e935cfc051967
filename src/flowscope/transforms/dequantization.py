"""Dequantization: from discrete pixels to a continuous density that bounds their likelihood.

A density ``p`` on ``y in [0, 1)^D`` gives discrete data ``x in {0..L-1}^D`` (``L`` = ``levels``)
the probability ``P(x) = integral over the cell [0, 1)^D of p((x + u) / L) L^-D du``; for any
noise density ``q(u | x)`` on that cell, Jensen's inequality gives the variational bound

    ``log P(x) >= E_{u ~ q}[ log p((x + u) / L) - D log L - log q(u | x) ]``

("A note on the evaluation of generative models", Theis, van den Oord & Bethge, 2016,
arXiv:1511.01844, section 3.1; "Flow++", Ho, Chen, Srinivas, Duan & Abbeel, 2019,
arXiv:1902.00275, section 3.1, eq. 12).  A dequantization layer's ``forward`` therefore returns
``y = (x + u) / L`` and the "log-det" ``-D log L - log q(u | x)``, so that the ``Flow``'s
``log_prob`` of integer data is a one-sample estimate of that bound, i.e. of the log-PMF of the
discrete data (use ``flowscope.metrics.bits_per_dim`` on it directly).

Both layers are stochastic: noise is drawn at every ``forward`` call, in eval mode too (the bound
is an expectation over it).  ``seed=`` instead fixes ONE noise image, drawn from that seed and
shared by every example of every call (common random numbers): each example's estimate is still
a one-sample estimate of its bound, but it is reproducible and independent of the batch it is in
-- for evaluation and exact tests, never for training.

The inverse is ``x = floor(y L)`` clamped to ``[0, L-1]``: exact whenever ``y`` came from
``forward`` (up to float rounding within about ``1e-5 L`` of a cell edge in float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import _tracing, check_event_shape, check_finite, check_image_shape
from .base import Compose, Transform, sum_except_batch
from .coupling import Coupling, checkerboard_mask
from .image import ConvNet, image_coupling
from .transformers import AffineTransformer

__all__ = ["UniformDequantization", "VariationalDequantization"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(
            f"levels: expected an int >= 2 (e.g. 256 for 8-bit images), got {levels!r}"
        )
    return levels


def _check_seed(seed: int | None) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed: expected an int or None, got {seed!r}")
    return seed


def _check_quantized(x: Tensor, levels: int) -> None:
    """Raise unless every entry of ``x`` is one of the integers ``0 .. levels - 1``."""
    if _tracing(x):  # data-dependent Python: skipped under torch.compile / vmap (see _checks)
        return
    check_finite("x", x)
    bad = (x != torch.floor(x)) | (x < 0) | (x > levels - 1)
    if bad.any():
        value = x[bad].flatten()[0].item()
        raise ValueError(
            f"x: expected integer pixel values in 0..{levels - 1} (levels={levels}), got "
            f"{int(bad.sum())} other values (e.g. {value:.6g}); pass the raw quantized images "
            f"as floats (e.g. dataset.images.float()), not images rescaled to [0, 1]"
        )


def _noise(shape: torch.Size, like: Tensor, seed: int | None, normal: bool) -> Tensor:
    """Fresh noise of ``shape`` or, with a seed, ONE seeded noise event broadcast over the batch."""
    draw = torch.randn if normal else torch.rand
    if seed is None:
        return draw(shape, dtype=like.dtype, device=like.device)
    # Shared by every example, so an example's noise does not depend on its batch or position.
    gen = torch.Generator(device=like.device).manual_seed(seed)
    event = draw((1, *shape[1:]), generator=gen, dtype=like.dtype, device=like.device)
    return event.expand(shape)


def _open_unit(y: Tensor) -> Tensor:
    """Keep ``y`` inside (0, 1): ``x + u`` can round up to ``x + 1`` in float32 (``u`` near 1)."""
    info = torch.finfo(y.dtype)
    # 1 - eps / 2 is the largest number below 1 in the dtype.
    return y.clamp(min=info.tiny, max=1.0 - info.eps / 2)


class UniformDequantization(Transform):
    """Uniform dequantization ``y = (x + u) / levels``, ``u ~ U[0, 1)^D`` (Theis et al. 2016).

    ``log q(u | x) = 0`` on the cell, so the returned log-det ``-D log(levels)`` is both the bound
    term of the module docstring and the exact log|det| of ``x -> (x + u) / levels`` for fixed
    ``u`` (which is what the property test checks: the noise does not depend on ``x``).

    Args:
        levels: number of quantization levels ``L`` (256 for 8-bit images, 17 for digits).
        seed: None (fresh noise per example and call) or an int (one fixed noise image shared by
            all examples and calls, see the module docstring; never train with it).

    Shapes: ``x``: ``(batch, ...)`` integer-valued floats in ``0..L-1`` -> ``y``: same shape in
    (0, 1); ``logabsdet``: ``(batch,)``.  ``forward`` raises a ``ValueError`` for anything else.
    """

    def __init__(self, levels: int = 256, seed: int | None = None) -> None:
        super().__init__()
        self.levels = _check_levels(levels)
        self.seed = _check_seed(seed)
        self._log_levels = math.log(self.levels)

    def _logdet(self, z: Tensor) -> Tensor:
        return z.new_full((z.shape[0],), -self._log_levels * z[0].numel())

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_quantized(x, self.levels)
        u = _noise(x.shape, x, self.seed, normal=False)
        return _open_unit((x + u) / self.levels), self._logdet(x)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_finite("u", u)
        x = torch.floor(u * self.levels).clamp(0, self.levels - 1)
        return x, -self._logdet(u)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, seed={self.seed}"


class VariationalDequantization(Transform):
    """Variational dequantization with a learned noise flow (Flow++, Ho et al. 2019, section 3.1).

    The noise ``u in (0, 1)^D`` given the image ``x`` is ``u = sigmoid(v)``, ``v = g_x^{-1}(eps)``,
    ``eps ~ N(0, I)``, where ``g_x`` (``noise_flow``) is a stack of affine couplings with
    alternating checkerboard masks whose conv conditioners also see ``x``.  Then

        ``log q(u | x) = log N(eps) + log|det dg_x/dv| - sum log sigmoid'(v)``,

    ``forward`` returns ``y = (x + u) / L`` and ``-D log L - log q(u | x)`` (the bound term of the
    module docstring, differentiable in the noise flow's parameters by reparameterization), and
    ``inverse`` recovers ``x = floor(y L)``, ``u = y L - x`` and returns ``D log L + log q(u|x)``.

    This "log-det" is a log density ratio, NOT the log|det| of the Jacobian of ``x -> y``: the map
    is a stochastic surjection, not a bijection.  The bijective part, ``noise_flow``, acts on the
    joint image ``[features(x), v]`` of shape ``(2C, H, W)``, maps it to ``[features(x), eps]``
    with the ``x`` channels always identity (so its log-det is ``log|det dg_x/dv|``), and is what
    the property test checks; the density of ``q`` is tested separately (it integrates to 1).

    Args:
        shape: image event shape ``(C, H, W)`` (``H W >= 2`` for the checkerboard).
        levels: quantization levels ``L``.
        steps: number of couplings in the noise flow.
        hidden: hidden channels of their ``ConvNet`` conditioners.
        seed: None (fresh ``eps`` per example and call) or an int (one fixed ``eps`` image shared
            by all examples and calls, see the module docstring; never train with it).
        squeeze: run the noise flow on the space-to-channel squeezed image ``(4C, H/2, W/2)``
            (``H``, ``W`` even).  The couplings split the pixels as the checkerboard does (in
            the squeezed layout a checkerboard is a channel mask), but each conditioner runs
            at a quarter of the positions, sees only the identity channels and outputs only the
            transformed ones (about 3x fewer multiply-adds at ``hidden=32``), and its 3x3
            kernels cover 6x6 pixels instead of 3x3.

    The joint image the noise flow acts on is ``(2C, H, W)``, or ``(8C, H/2, W/2)`` squeezed
    (the ``x`` features first, then ``v``).

    Shapes: ``x``: ``(batch, C, H, W)`` integers in ``0..L-1`` -> ``y``: same shape in (0, 1);
    ``logabsdet``: ``(batch,)``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        levels: int = 256,
        steps: int = 4,
        hidden: int = 32,
        seed: int | None = None,
        squeeze: bool = False,
    ) -> None:
        super().__init__()
        shape = check_image_shape("shape", shape)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        if not isinstance(squeeze, bool):
            raise ValueError(f"squeeze: expected True or False, got {squeeze!r}")
        c, h, w = shape
        if squeeze and (h % 2 or w % 2):
            raise ValueError(f"shape: squeeze=True needs an even height and width, got {shape}")
        self.shape = shape
        self.levels = _check_levels(levels)
        self.seed = _check_seed(seed)
        self.squeeze = squeeze
        self._log_levels = math.log(self.levels)
        couplings = []
        for k in range(steps):
            # The x channels are identity in every coupling: they condition, never change.
            board = checkerboard_mask(shape, flip=k % 2 == 1)
            if squeeze:
                board = F.pixel_unshuffle(board[None].float(), 2)[0].bool()
            mask = torch.cat([torch.ones_like(board), board])
            transformer = AffineTransformer(scale="tanh")
            if squeeze:  # a channel mask: the conditioner sees and emits only what it needs
                couplings.append(image_coupling(mask, transformer, hidden))
            else:
                net = ConvNet(2 * c, 2 * c * 2, hidden)
                couplings.append(Coupling(mask, transformer, net=net))
        self.noise_flow = Compose(*couplings)

    def _joint(self, features: Tensor, v: Tensor) -> Tensor:
        """``[features, v]`` in the noise flow's layout (squeezed or not)."""
        joint = torch.cat([features, v], dim=1)
        return F.pixel_unshuffle(joint, 2) if self.squeeze else joint

    def _noise_part(self, joint: Tensor) -> Tensor:
        """The ``v`` (or ``eps``) channels of a joint image, back in the ``(C, H, W)`` layout."""
        if self.squeeze:  # the squeezed v channels are the last 4C: unsqueeze only those
            return F.pixel_shuffle(joint[:, 4 * self.shape[0] :], 2)
        return joint[:, self.shape[0] :]

    def _features(self, x: Tensor) -> Tensor:
        """The conditioning channels: ``x`` rescaled to [-1, 1]."""
        return x * (2.0 / (self.levels - 1)) - 1.0

    def _log_q(self, eps: Tensor, v: Tensor, logdet_forward: Tensor) -> Tensor:
        log_normal = -0.5 * sum_except_batch(eps.pow(2) + _LOG_2PI)
        log_sigmoid_derivative = -F.softplus(v) - F.softplus(-v)
        return log_normal + logdet_forward - sum_except_batch(log_sigmoid_derivative)

    def log_noise_density(self, x: Tensor, u: Tensor) -> Tensor:
        """``log q(u | x)`` for integer images ``x`` and noise ``u`` in (0, 1): ``(batch,)``."""
        check_event_shape("x", x, self.shape)
        check_event_shape("u", u, self.shape)
        _check_quantized(x, self.levels)
        v = torch.logit(u)
        check_finite("u", v)
        joint, logdet = self.noise_flow(self._joint(self._features(x), v))
        return self._log_q(self._noise_part(joint), v, logdet)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, self.shape)
        _check_quantized(x, self.levels)
        eps = _noise(x.shape, x, self.seed, normal=True)
        joint, logdet_inverse = self.noise_flow.inverse(self._joint(self._features(x), eps))
        v = self._noise_part(joint)
        log_q = self._log_q(eps, v, -logdet_inverse)
        y = _open_unit((x + torch.sigmoid(v)) / self.levels)
        return y, -self._log_levels * x[0].numel() - log_q

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, self.shape)
        check_finite("u", u)
        scaled = u * self.levels
        x = torch.floor(scaled).clamp(0, self.levels - 1)
        # Keep the noise strictly inside the cell so that its logit is finite.
        info = torch.finfo(u.dtype)
        noise = (scaled - x).clamp(info.eps, 1.0 - info.eps)
        v = torch.logit(noise)
        joint, logdet = self.noise_flow(self._joint(self._features(x), v))
        log_q = self._log_q(self._noise_part(joint), v, logdet)
        return x, self._log_levels * x[0].numel() + log_q

    def extra_repr(self) -> str:
        return f"shape={self.shape}, levels={self.levels}, seed={self.seed}, squeeze={self.squeeze}"
