"""Unnormalized 2-D target densities exp(-U(z)) for reverse-KL (variational) fitting.

The energies U1-U4 are Table 1 of "Variational Inference with Normalizing Flows" (Rezende &
Mohamed, 2015, arXiv:1505.05770); ``log_normalizer`` integrates ``exp(-U)`` over the paper's
plotting box [-4, 4]^2 (U2-U4 are flat along ``z1`` and have no normalizer on the whole plane).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_event_shape
from .toy2d import _F64, _TWO_PI, _legendre

__all__ = ["energy_u1", "energy_u2", "energy_u3", "energy_u4", "ENERGIES", "log_normalizer"]


# --- Rezende & Mohamed (2015), Table 1: unnormalized target densities exp(-U(z)) ---------------


def _z(z: Tensor) -> tuple[Tensor, Tensor]:
    # Shape only: these sit inside reverse-KL training, where a non-finite sample of the flow must
    # reach the loss (and the trainer's NaN guard) rather than raise here.
    check_event_shape("z", z, (2,))
    return z[:, 0], z[:, 1]


def _w1(z1: Tensor) -> Tensor:
    return torch.sin(_TWO_PI * z1 / 4)


def energy_u1(z: Tensor) -> Tensor:
    """``U1 = 1/2 ((|z| - 2)/0.4)^2 - log(e^{-1/2 ((z1 - 2)/0.6)^2} + e^{-1/2 ((z1 + 2)/0.6)^2})``,
    shape ``(n, 2) -> (n,)`` (a ring split in two)."""
    z1, _ = _z(z)
    ring = 0.5 * ((torch.linalg.vector_norm(z, dim=1) - 2) / 0.4) ** 2
    return ring - torch.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)


def energy_u2(z: Tensor) -> Tensor:
    """``U2 = 1/2 ((z2 - w1(z)) / 0.4)^2`` with ``w1 = sin(2 pi z1 / 4)``: ``(n, 2) -> (n,)``."""
    z1, z2 = _z(z)
    return 0.5 * ((z2 - _w1(z1)) / 0.4) ** 2


def energy_u3(z: Tensor) -> Tensor:
    """``U3 = -log(e^{-1/2 ((z2 - w1)/0.35)^2} + e^{-1/2 ((z2 - w1 + w2)/0.35)^2})``,
    ``w2 = 3 e^{-1/2 ((z1 - 1)/0.6)^2}``: ``(n, 2) -> (n,)``."""
    z1, z2 = _z(z)
    d, w2 = z2 - _w1(z1), 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    return -torch.logaddexp(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + w2) / 0.35) ** 2)


def energy_u4(z: Tensor) -> Tensor:
    """``U4 = -log(e^{-1/2 ((z2 - w1)/0.4)^2} + e^{-1/2 ((z2 - w1 + w3)/0.35)^2})``,
    ``w3 = 3 sigmoid((z1 - 1) / 0.3)``: ``(n, 2) -> (n,)``."""
    z1, z2 = _z(z)
    d, w3 = z2 - _w1(z1), 3 * torch.sigmoid((z1 - 1) / 0.3)
    return -torch.logaddexp(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + w3) / 0.35) ** 2)


ENERGIES: dict[str, Callable[[Tensor], Tensor]] = {
    "u1": energy_u1,
    "u2": energy_u2,
    "u3": energy_u3,
    "u4": energy_u4,
}


def log_normalizer(
    energy: str | Callable[[Tensor], Tensor],
    bounds: tuple[float, float, float, float] = (-4.0, 4.0, -4.0, 4.0),
    panels: int = 64,
) -> float:
    """``log Z = log int_box exp(-U(z)) dz`` by tensor-product composite Gauss-Legendre (8 nodes
    per panel, ``panels`` panels per axis; for U1-U4, 32 and 128 panels agree to 1e-14).

    The box defaults to the paper's plotting range: U2-U4 do not confine ``z1`` and are not
    normalizable on the plane, so the targets are the box-restricted densities.  With
    ``Z``, ``KL(q || p) = E_q[log q + U] + log Z``, the reverse-KL gap of a fitted flow.
    """
    fn = ENERGIES.get(energy) if isinstance(energy, str) else energy
    if fn is None:
        raise ValueError(
            f"energy: expected one of {sorted(ENERGIES)} or a callable, got {energy!r}"
        )
    x0, x1, y0, y1 = (float(b) for b in bounds)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"bounds: expected (xmin, xmax, ymin, ymax) with min < max, got {bounds}")
    gx, wx = (torch.as_tensor(a, dtype=_F64) for a in _legendre(x0, x1, panels))
    gy, wy = (torch.as_tensor(a, dtype=_F64) for a in _legendre(y0, y1, panels))
    logw = (wx[:, None].log() + wy[None, :].log()).reshape(-1)
    pts = torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        vals = torch.cat([fn(c) for c in pts.split(1 << 18)])
    return float(torch.logsumexp(logw - vals.to(_F64), 0))
