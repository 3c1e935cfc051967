"""Normalization layers as bijections: RealNVP's batch normalization and Glow's ActNorm.

Both are elementwise affine maps whose scale and shift come from data statistics: the batch's
(``BatchNorm`` in training mode), running averages (``BatchNorm`` in eval mode) or one
initialization batch (``ActNorm``).  Their log-dets are constant over the examples of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_event_shape
from .base import Transform
from .elementwise import event_shape

__all__ = ["BatchNorm", "ActNorm"]


class BatchNorm(Transform):
    """Batch normalization flow layer (RealNVP).

    "Density estimation using Real NVP" (Dinh et al., 2017, arXiv:1605.08803), section 3.7;
    seed 001 section 3.4.3, eqs. 3.16-3.17, with a learnable scale and shift on top:

        ``u = (x - mu) / sqrt(var + eps) * exp(log_gamma) + beta``,
        ``log|det J| = sum_i log_gamma_i - 1/2 log(var_i + eps)``      (per example).

    * Training mode: ``mu`` and ``var`` are the batch mean and (biased) variance, and the
      running averages are updated, ``r <- (1 - momentum) r + momentum * batch_stat``.  As in the
      paper the statistics are treated as constants of the map, so the log-det is eq. 3.17 with
      the batch variance (the dependence of ``mu``, ``var`` on the other examples is ignored).
      A batch of one example has no variance: that raises a ``ValueError``.
    * Eval mode: ``mu`` and ``var`` are the running averages; the layer is then an ordinary
      per-example affine bijection.
    * ``inverse`` ALWAYS uses the running averages, in either mode (a latent batch carries no
      data statistics).  In eval mode it therefore inverts ``forward`` exactly; in training mode
      it inverts the eval-mode forward, not the batch-statistics one.

    Args:
        features: ``D``, the size of the flat event.
        momentum: weight of the new batch in the running averages, in (0, 1].
        eps: variance floor, a number > 0.

    Shapes: ``x``: ``(batch, D)`` -> ``u``: ``(batch, D)``, ``logabsdet``: ``(batch,)``.
    """

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features: expected an int >= 1, got {features!r}")
        if not (isinstance(momentum, (int, float)) and 0.0 < momentum <= 1.0):
            raise ValueError(f"momentum: expected a number in (0, 1], got {momentum!r}")
        if not (isinstance(eps, (int, float)) and 0.0 < eps < math.inf):
            raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
        self.features, self.momentum, self.eps = features, float(momentum), float(eps)
        self.log_gamma = nn.Parameter(torch.zeros(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def _log_scale(self, var: Tensor) -> Tensor:
        """Per-feature log of the total scale ``exp(log_gamma) / sqrt(var + eps)``: ``(D,)``."""
        return self.log_gamma - 0.5 * torch.log(var + self.eps)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, (self.features,))
        if self.training:
            if x.shape[0] < 2:
                raise ValueError(
                    f"x: batch norm in training mode needs a batch of at least 2 examples, got "
                    f"shape {tuple(x.shape)} (call .eval() to use the running averages)"
                )
            var, mean = torch.var_mean(x, dim=0, correction=0)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        log_scale = self._log_scale(var)
        u = torch.addcmul(self.beta, x - mean, log_scale.exp())
        return u, log_scale.sum().reshape(1).repeat(x.shape[0])

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, (self.features,))
        log_scale = self._log_scale(self.running_var)
        x = torch.addcmul(self.running_mean, u - self.beta, torch.exp(-log_scale))
        return x, -log_scale.sum().reshape(1).repeat(u.shape[0])

    def extra_repr(self) -> str:
        return f"features={self.features}, momentum={self.momentum}, eps={self.eps}"


class ActNorm(Transform):
    """Activation normalization with data-dependent initialization (Glow).

    "Glow: Generative Flow with Invertible 1x1 Convolutions" (Kingma & Dhariwal, 2018,
    arXiv:1807.03039), section 3.1 and Table 1:

        ``u = x * exp(log_scale) + shift``, one ``(log_scale, shift)`` per channel,
        ``log|det J| = (H * W) * sum_c log_scale_c``.

    "Channel" is the first event axis: for flat data ``(D,)`` every feature has its own pair; for
    images ``(C, H, W)`` (or any ``(C, ...)``) the pair of channel ``c`` is shared by all its
    positions and the log-det is multiplied by the number of positions.

    Initialization: the first ``forward`` call in training mode sets ``shift`` and ``log_scale``
    so that that batch's output has zero mean and unit variance per channel; afterwards the
    parameters are free.  Whether that happened is the boolean buffer ``initialized``, part of
    the state dict, so a model restored from a checkpoint never re-initializes.  Eval-mode
    calls and ``inverse`` never initialize (before initialization the layer is the identity).

    Args:
        shape: event shape, ``D`` or ``(C, H, W)``.
        eps: added to the standard deviation at initialization (guards constant channels).

    Shapes: ``x``: ``(batch, *shape)`` -> ``u``: ``(batch, *shape)``, ``logabsdet``: ``(batch,)``.
    """

    def __init__(self, shape: int | Sequence[int], eps: float = 1e-6) -> None:
        super().__init__()
        self.shape = event_shape("shape", shape)
        if not (isinstance(eps, (int, float)) and 0.0 < eps < math.inf):
            raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
        self.eps = float(eps)
        # (C, 1, 1, ...) broadcasts over the positions of each channel.
        param_shape = (self.shape[0],) + (1,) * (len(self.shape) - 1)
        self.positions = math.prod(self.shape[1:])
        self.log_scale = nn.Parameter(torch.zeros(param_shape))
        self.shift = nn.Parameter(torch.zeros(param_shape))
        self.register_buffer("initialized", torch.tensor(False))
        # Python mirror of the buffer: reading a tensor's value forces a device sync, so it is
        # read once (and again after a state-dict load), not at every training step.
        self._known_initialized = False

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        # Statistics over the batch and every position of a channel: move channels last.
        per_channel = x.transpose(0, 1).reshape(self.shape[0], -1)
        if per_channel.shape[1] < 2:
            raise ValueError(
                f"x: ActNorm's data-dependent initialization needs at least 2 values per channel, "
                f"got shape {tuple(x.shape)} (initialize on a batch of 2 or more examples)"
            )
        std, mean = torch.std_mean(per_channel, dim=1, correction=0)
        log_scale = -torch.log(std + self.eps)
        self.log_scale.copy_(log_scale.reshape(self.log_scale.shape))
        self.shift.copy_((-mean * log_scale.exp()).reshape(self.shift.shape))
        self.initialized.fill_(True)

    def _logabsdet(self, z: Tensor) -> Tensor:
        return (self.log_scale.sum() * self.positions).reshape(1).repeat(z.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, self.shape)
        if self.training and not self._known_initialized:
            if not bool(self.initialized):
                self._initialize(x)
            self._known_initialized = True
        return torch.addcmul(self.shift, x, self.log_scale.exp()), self._logabsdet(x)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, self.shape)
        return (u - self.shift) * torch.exp(-self.log_scale), -self._logabsdet(u)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
