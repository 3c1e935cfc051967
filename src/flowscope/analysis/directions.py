"""Attribute directions in latent space and manipulation along them (seed 000 sections 4.1, 5.1).

Seed 000 (after "Interpreting the Latent Space of GANs for Semantic Face Editing", Shen et al.
2020, arXiv:1907.10786) trains one scikit-learn ``LinearSVC`` per binary attribute on the latents,
"used out of the box", and edits a latent along the normal ``v`` of the separating hyperplane::

    u_mod = u + alpha v / ||v||,   alpha in linspace(-20, 20, 20)             (eq. 4.1)

The Glow paper ("Glow: Generative Flow with Invertible 1x1 Convolutions", Kingma & Dhariwal 2018,
arXiv:1807.03039, section 5) uses the difference of class means instead,
``mean u(attr) - mean u(not attr)``: :func:`mean_difference_directions`.

Example::

    >>> g = np.random.default_rng(0)
    >>> u = g.normal(size=(400, 8)); attr = (u[:, :1] > 0).astype(int)
    >>> (d,) = svm_directions(u, attr, ["first"])
    >>> bool(abs(d.unit[0]) > 0.9)
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.svm import LinearSVC
from torch import Tensor

from .classfit import as_matrix

__all__ = [
    "AttributeDirection",
    "svm_directions",
    "mean_difference_directions",
    "cosine_similarity",
    "manipulate",
    "monotonic_fraction",
]


@dataclass(frozen=True, eq=False)
class AttributeDirection:
    """One attribute's linear classifier in latent space.

    Attributes:
        name: attribute name.
        direction: the hyperplane normal ``w`` ``(D,)`` (float64 numpy), pointing to the
            positive class; ``unit`` is ``w / ||w||``; ``intercept`` is ``b`` in ``w.u + b``.
        accuracy, balanced_accuracy: on the test split when one was given, else on the training
            data (``split`` says which); balanced accuracy is the mean per-class recall, the
            honest number for CelebA's unbalanced attributes (seed 000 section 5.1).
        train_accuracy: on the training data.
        n_support: training points with margin ``y f(u) <= 1`` (labels ``y = +-1``), see
            :func:`svm_directions`.
        n_train, n_positive: training set size and its positives.
        converged: whether liblinear converged within ``max_iter``.
    """

    name: str
    direction: np.ndarray
    intercept: float
    accuracy: float
    balanced_accuracy: float
    train_accuracy: float
    split: str
    n_support: int
    n_train: int
    n_positive: int
    converged: bool

    @property
    def unit(self) -> np.ndarray:
        return self.direction / np.linalg.norm(self.direction)


def _numpy_matrix(name: str, x: Any) -> np.ndarray:
    return as_matrix(name, x).cpu().numpy()


def _attributes(name: str, a: Any, n: int) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n}, A) of 0/1 labels, got {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name}: expected 0/1 labels (map CelebA's -1 to 0), got other values")
    return arr.astype(np.int64)


def svm_directions(
    u: Any,
    attributes: Any,
    names: Sequence[str],
    u_test: Any = None,
    attr_test: Any = None,
    C: float = 1.0,
    max_iter: int = 1000,
    **svc_kwargs: Any,
) -> list[AttributeDirection]:
    """One ``LinearSVC`` per attribute on the latents (seed 000 section 4.1).

    scikit-learn's defaults are kept (L2 penalty, squared hinge loss, ``C = 1``, intercept,
    ``max_iter = 1000``) as in the seed; extra ``svc_kwargs`` go to ``LinearSVC``.  A
    non-converged fit is recorded in ``converged`` instead of warning.

    Support vectors: ``LinearSVC`` (liblinear) exposes no ``support_`` (the seed says it could
    not report them "because of technicalities").  For the squared-hinge dual, training point
    ``i`` has a nonzero dual coefficient exactly when it is on or inside the margin,
    ``y_i f(u_i) <= 1`` with ``y = +-1`` and ``f(u) = w.u + b``; those points are counted (at
    liblinear's tolerance, so the count is approximate by the points lying on the margin).

    Args:
        u: training latents ``(N, D)``.
        attributes: ``(N, A)`` 0/1 labels (a 1-D array for one attribute).
        names: ``A`` attribute names.
        u_test, attr_test: optional held-out split, scored instead of the training data.
    """
    x = _numpy_matrix("u", u)
    a = _attributes("attributes", attributes, len(x))
    if len(names) != a.shape[1]:
        raise ValueError(f"names: expected {a.shape[1]} names, got {len(names)}")
    if (u_test is None) != (attr_test is None):
        raise ValueError("u_test: expected u_test and attr_test together (both or neither)")
    if u_test is not None:
        xt = _numpy_matrix("u_test", u_test)
        if xt.shape[1] != x.shape[1]:
            raise ValueError(f"u_test: expected {x.shape[1]} columns like u, got {xt.shape[1]}")
        at = _attributes("attr_test", attr_test, len(xt))
        if at.shape[1] != a.shape[1]:
            raise ValueError(f"attr_test: expected {a.shape[1]} attributes, got {at.shape[1]}")
    out = []
    for j, name in enumerate(names):
        y = a[:, j]
        if y.min() == y.max():
            raise ValueError(f"attributes: attribute {name!r} has one class only in training")
        svc = LinearSVC(C=C, max_iter=max_iter, **svc_kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svc.fit(x, y)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        margin = (2 * y - 1) * svc.decision_function(x)
        train_acc = accuracy_score(y, svc.predict(x))
        if u_test is not None:
            ys, pred, split = at[:, j], svc.predict(xt), "test"
        else:
            ys, pred, split = y, svc.predict(x), "train"
        with warnings.catch_warnings():
            # A test split holding one class only: balanced accuracy is then the recall of it.
            warnings.simplefilter("ignore", UserWarning)
            bal = balanced_accuracy_score(ys, pred)
        out.append(
            AttributeDirection(
                name=str(name),
                direction=svc.coef_[0].astype(np.float64),
                intercept=float(svc.intercept_[0]),
                accuracy=float(accuracy_score(ys, pred)),
                balanced_accuracy=float(bal),
                train_accuracy=float(train_acc),
                split=split,
                n_support=int(np.sum(margin <= 1.0 + 1e-8)),
                n_train=len(y),
                n_positive=int(y.sum()),
                converged=converged,
            )
        )
    return out


def mean_difference_directions(u: Any, attributes: Any) -> np.ndarray:
    """Glow's attribute directions (Kingma & Dhariwal 2018, section 5):
    ``mean u(attr = 1) - mean u(attr = 0)`` per attribute: ``(N, D), (N, A) -> (A, D)`` float64
    (unnormalized; :func:`manipulate` normalizes)."""
    x = _numpy_matrix("u", u)
    a = _attributes("attributes", attributes, len(x))
    pos, neg = a.sum(0), len(a) - a.sum(0)
    if (pos == 0).any() or (neg == 0).any():
        raise ValueError("attributes: every attribute needs positive and negative examples")
    return (a.T @ x) / pos[:, None] - ((1 - a).T @ x) / neg[:, None]


def cosine_similarity(a: Any, b: Any) -> float:
    """``a.b / (||a|| ||b||)`` of two directions ``(D,)`` (e.g. SVM vs mean difference)."""
    va, vb = (np.asarray(v, dtype=np.float64).ravel() for v in (a, b))
    if va.shape != vb.shape:
        raise ValueError(f"b: expected shape {va.shape} like a, got {vb.shape}")
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0 or nb == 0:
        raise ValueError("a: expected nonzero directions")
    return float(va @ vb / (na * nb))


def manipulate(u: Tensor, direction: Any, alphas: Any = None) -> Tensor:
    """Seed 000 eq. 4.1: ``u + alpha v / ||v||`` for every ``alpha``.

    Args:
        u: one latent ``(D,)`` or several ``(N, D)``.
        direction: ``v`` ``(D,)`` (tensor or array; normalized here).
        alphas: 1-D steps; default ``np.linspace(-20, 20, 20)`` as the seed (alpha = 0 is not
            among them: 20 points over [-20, 20]).

    Returns:
        ``(len(alphas), D)`` for one latent, ``(N, len(alphas), D)`` for several, in ``u``'s
        dtype and device.
    """
    if not isinstance(u, Tensor) or u.dim() not in (1, 2):
        raise ValueError(
            f"u: expected a Tensor of shape (D,) or (N, D), got {getattr(u, 'shape', u)!r}"
        )
    v = torch.as_tensor(
        np.asarray(direction, dtype=np.float64) if not isinstance(direction, Tensor) else direction
    )
    v = v.to(device=u.device, dtype=u.dtype).reshape(-1)
    if v.shape[0] != u.shape[-1]:
        raise ValueError(f"direction: expected {u.shape[-1]} entries like u, got {v.shape[0]}")
    norm = v.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("direction: expected a finite nonzero vector")
    a = np.linspace(-20.0, 20.0, 20) if alphas is None else np.asarray(alphas, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(
            f"alphas: expected a non-empty 1-D array of finite steps, got shape {a.shape}"
        )
    steps = torch.as_tensor(a, dtype=u.dtype, device=u.device)[:, None] * (v / norm)
    return u.unsqueeze(-2) + steps


def monotonic_fraction(scores: Any, tol: float = 0.0) -> float:
    """Fraction of rows of ``scores (N, len(alphas))`` that never decrease by more than ``tol``
    from one alpha to the next (e.g. a smile detector's probability along the smiling
    direction: the issue asks for >= 80% of images)."""
    s = as_matrix("scores", scores).cpu().numpy()
    if s.shape[1] < 2:
        raise ValueError(f"scores: expected at least 2 columns (alphas), got {s.shape[1]}")
    if not (tol >= 0):
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    return float(np.mean(np.all(np.diff(s, axis=1) >= -tol, axis=1)))
