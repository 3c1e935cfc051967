"""Linear bijections: the LU-parameterized linear layer and fixed permutations.

``LULinear`` is the dense invertible linear map of Glow's 1x1 convolution written for flat data
(seed 001 section 3.4.1; "Glow: Generative Flow with Invertible 1x1 Convolutions", Kingma &
Dhariwal, 2018, arXiv:1807.03039, eq. 10): its log-det costs O(D) and its inverse two
triangular solves.  Permutations mix coordinates between coupling or autoregressive layers at no
cost (log-det 0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import _tracing, check_event_shape, check_int
from .base import Transform

__all__ = ["LULinear", "Permutation", "ReversePermutation", "RandomPermutation"]


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def lu_factors(module: nn.Module) -> tuple[Tensor, Tensor]:
    """``(L, U + diag(sign * exp(log_s)))``, each ``(D, D)``, differentiable in the parameters,
    from the LU parameters of ``module`` (:class:`LULinear`, ``InvertibleConv1x1``): ``lower``
    and ``upper`` hold the entries below / above the diagonal at ``(_rows, _cols)`` /
    ``(_cols, _rows)`` (``torch.tril_indices(D, D, -1)``), ``log_s`` and ``sign`` the diagonal.
    """
    log_s = module.log_s
    eye = torch.eye(log_s.shape[0], dtype=log_s.dtype, device=log_s.device)
    lower = eye.index_put((module._rows, module._cols), module.lower)
    upper = torch.diag(module.sign * log_s.exp()).index_put(
        (module._cols, module._rows), module.upper
    )
    return lower, upper


class LULinear(Transform):
    """Invertible linear layer ``u = x W^T + b`` with ``W = P L (U + diag(s))``.

    Seed 001 section 3.4.1; Kingma & Dhariwal 2018 (arXiv:1807.03039), eq. 10.  ``P`` is a fixed
    permutation matrix (a buffer), ``L`` unit lower-triangular, ``U`` strictly upper-triangular
    and ``s = sign * exp(log_s)`` with a fixed ``sign`` buffer, so ``s`` can never reach 0 and
    the layer is invertible for every parameter value.  Then

        ``log|det J| = log|det W| = sum(log_s)``            (O(D), independent of ``x``),

    the forward (data -> latent) direction applies ``W``, and the inverse
    ``x = W^{-1}(u - b)`` is two triangular solves (``torch.linalg.solve_triangular``) and an
    index permutation -- never a general matrix inverse.

    Initialization:
        * ``identity_init=True`` (default): ``P = L = I``, ``U = 0``, ``s = 1``, ``b = 0``: the
          layer starts as the identity (mix coordinates with a ``RandomPermutation`` if wanted).
        * ``identity_init=False``: Glow's recipe (section 3.2): draw a random rotation ``W``
          (QR of a Gaussian matrix, seeded by ``seed``), take its LU decomposition
          ``W = P L U`` and keep ``P`` fixed, ``L``, ``U`` and ``s = diag(U)`` as parameters.

    Speed: in eval mode, when no gradient is being recorded, ``W`` and ``W^{-T}`` (the latter
    built column by column with the same triangular solves) are assembled once and cached; the
    cache is keyed on the version counters, storage and dtype of every parameter and buffer, so
    an optimizer step, ``load_state_dict`` or ``.to(...)`` invalidates it automatically.

    Args:
        features: ``D``, the size of the flat event.
        identity_init: start at the identity (True) or at a random rotation (False).
        seed: seed of the random rotation (ignored when ``identity_init=True``).

    Shapes: ``x``: ``(batch, D)`` -> ``u``: ``(batch, D)``, ``logabsdet``: ``(batch,)``.
    """

    def __init__(self, features: int, identity_init: bool = True, seed: int | None = None) -> None:
        super().__init__()
        d = self.features = check_int("features", features)
        generator = _generator(seed)
        rows, cols = torch.tril_indices(d, d, offset=-1)
        # Index buffers are derived from D alone, so they stay out of the state dict.
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        if identity_init:
            perm = torch.arange(d)
            lower = torch.zeros(d * (d - 1) // 2)
            upper = torch.zeros(d * (d - 1) // 2)
            diag = torch.ones(d)
        else:
            gaussian = torch.randn(d, d, generator=generator, dtype=torch.float64)
            rotation = torch.linalg.qr(gaussian)[0]
            p_mat, l_mat, u_mat = torch.linalg.lu(rotation)
            # W = P_mat M means row i of W is row perm[i] of M.
            perm = p_mat.argmax(dim=1)
            lower = l_mat[rows, cols].float()
            upper = u_mat[cols, rows].float()
            diag = torch.diagonal(u_mat).float()
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))
        self.register_buffer("sign", torch.sign(diag))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(upper)
        self.log_s = nn.Parameter(diag.abs().log())
        self.bias = nn.Parameter(torch.zeros(d))
        self._cache: tuple[tuple, Tensor, Tensor] | None = None

    # --- assembling the factors -------------------------------------------------------------

    def _factors(self) -> tuple[Tensor, Tensor]:
        """``(L, U + diag(s))``, each ``(D, D)``, differentiable in the parameters."""
        return lu_factors(self)

    def weight(self) -> Tensor:
        """The assembled matrix ``W = P L (U + diag(s))``: ``(D, D)``."""
        lower, upper = self._factors()
        return (lower @ upper)[self.perm]

    def _solve(self, z: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """``x`` with ``x W^T = z`` for ``z`` of shape ``(batch, D)``, by triangular solves.

        ``x W^T = z`` is ``x (U')^T L^T = z P``; ``z P`` is the column gather ``z[:, inv_perm]``.
        """
        v = z[:, self.inv_perm]
        a = torch.linalg.solve_triangular(lower.mT, v, upper=True, left=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper.mT, a, upper=False, left=False)

    def _cache_key(self) -> tuple:
        # A cache filled under inference_mode holds inference tensors, which autograd refuses to
        # save (a frozen model differentiated w.r.t. its input): the mode is part of the key.
        return (torch.is_inference_mode_enabled(),) + tuple(
            (t._version, t.data_ptr(), t.dtype, t.device)
            for t in (self.lower, self.upper, self.log_s, self.sign, self.perm)
        )

    def _cached(self) -> tuple[Tensor, Tensor] | None:
        """``(W, W^{-T})`` when the cache may be used (eval mode, no graph to record), else None."""
        if (
            self.training
            or (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))
            or _tracing(self.log_s)  # compiled or vmapped: no storage to key a cache on
        ):
            return None
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                lower, upper = self._factors()
                weight = (lower @ upper)[self.perm]
                eye = torch.eye(self.features, dtype=weight.dtype, device=weight.device)
                self._cache = (key, weight, self._solve(eye, lower, upper))
        return self._cache[1], self._cache[2]

    def train(self, mode: bool = True) -> LULinear:
        self._cache = None
        return super().train(mode)

    # --- the transform ----------------------------------------------------------------------

    def _logabsdet(self, z: Tensor) -> Tensor:
        return self.log_s.sum().reshape(1).repeat(z.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("x", x, (self.features,))
        cached = self._cached()
        weight = cached[0] if cached is not None else self.weight()
        return F.linear(x, weight, self.bias), self._logabsdet(x)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape("u", u, (self.features,))
        cached = self._cached()
        if cached is not None:
            # (u - b) W^{-T} as one matrix product: the cached W^{-T} came from triangular solves.
            x = torch.addmm(-(self.bias @ cached[1]), u, cached[1])
        else:
            x = self._solve(u - self.bias, *self._factors())
        return x, -self._logabsdet(u)

    def extra_repr(self) -> str:
        return f"features={self.features}"


class Permutation(Transform):
    """A fixed permutation of axis 1: ``u[:, i] = x[:, permutation[i]]``; ``log|det J| = 0``.

    Axis 1 is the feature axis of flat data ``(batch, D)`` and the channel axis of images
    ``(batch, C, H, W)``, so the same layer reorders features or channels.

    Args:
        permutation: 1-D integer tensor holding each of ``0 .. D-1`` exactly once.

    Shapes: ``x``: ``(batch, D, ...)`` -> ``u``: same shape; ``logabsdet``: ``(batch,)`` zeros.
    """

    def __init__(self, permutation: Tensor) -> None:
        super().__init__()
        if not isinstance(permutation, Tensor):
            raise ValueError(
                f"permutation: expected a 1-D integer tensor, got {type(permutation).__name__}"
            )
        if permutation.dim() != 1 or permutation.numel() < 1 or permutation.is_floating_point():
            raise ValueError(
                "permutation: expected a non-empty 1-D integer tensor, got "
                f"dtype {permutation.dtype} and shape {tuple(permutation.shape)}"
            )
        d = permutation.numel()
        perm = permutation.detach().to(torch.long).cpu()
        if not torch.equal(torch.sort(perm).values, torch.arange(d)):
            raise ValueError(
                f"permutation: expected each of 0..{d - 1} exactly once, got {perm.tolist()}"
            )
        self.features = d
        self.register_buffer("permutation", perm)
        self.register_buffer("inv_permutation", torch.argsort(perm))
        # A reversal (MAF's order flip between layers) is a `flip`: a plain strided copy, several
        # times faster than the general gather.  Derived from the buffer, refreshed on load.
        self._reverse = torch.equal(perm, torch.arange(d - 1, -1, -1))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        d = self.features
        self._reverse = torch.equal(self.permutation.cpu(), torch.arange(d - 1, -1, -1))

    def _permute(self, name: str, z: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        if z.dim() < 2 or z.shape[1] != self.features:
            raise ValueError(
                f"{name}: expected shape (batch, {self.features}, ...), got {tuple(z.shape)}"
            )
        out = z.flip(1) if self._reverse else z.index_select(1, index)
        return out, z.new_zeros(z.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._permute("x", x, self.permutation)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._permute("u", u, self.inv_permutation)

    def extra_repr(self) -> str:
        return f"features={self.features}"


class ReversePermutation(Permutation):
    """Reverse the order of the features, ``D-1, ..., 0`` (as between RealNVP/MAF layers).

    Args:
        features: ``D``.
    """

    def __init__(self, features: int) -> None:
        super().__init__(torch.arange(check_int("features", features) - 1, -1, -1))


class RandomPermutation(Permutation):
    """A uniformly random, then fixed, permutation of the features.

    The permutation is a buffer, so it is saved in and restored from the state dict even when
    ``seed`` is None.

    Args:
        features: ``D``.
        seed: seed of the draw (None: torch's global generator).
    """

    def __init__(self, features: int, seed: int | None = None) -> None:
        super().__init__(
            torch.randperm(check_int("features", features), generator=_generator(seed))
        )
