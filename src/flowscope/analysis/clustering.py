"""Scoring a clustering against true classes: contingency table, matched accuracy, ARI, NMI.

Cluster indices carry no meaning (seed 001 section 5.2: "the cluster indices induced by the
model have no semantic meaning"), so accuracy is taken after the best one-to-one matching of
clusters to classes: the assignment problem on the contingency table, solved exactly by the
Hungarian method ("The Hungarian method for the assignment problem", Kuhn 1955; scipy's
``linear_sum_assignment``).  With as many clusters as classes every class gets a cluster;
with fewer clusters the unmatched classes count as errors, with more the unmatched clusters'
points do.

All functions are stateless: integer label arrays in (numpy arrays, lists or tensors of shape
``(n,)``), numbers or arrays out.

Example::

    >>> true = [0, 0, 1, 1, 2, 2]
    >>> pred = [1, 1, 0, 0, 2, 0]   # clusters renamed, one point wrong
    >>> round(matched_accuracy(true, pred), 4)
    0.8333
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "contingency_table",
    "best_matching",
    "matched_accuracy",
    "balanced_matched_accuracy",
    "ari",
    "nmi",
    "clustering_scores",
]


def _labels(name: str, labels: Any) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of integer labels, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.mod(a, 1) == 0)):
            raise ValueError(f"{name}: expected integer labels, got dtype {a.dtype}")
        a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name}: expected labels >= 0, got a minimum of {int(a.min())}")
    return a.astype(np.int64)


def _pair(true: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels("true", true), _labels("pred", pred)
    if t.shape != p.shape:
        raise ValueError(f"pred: expected {t.shape[0]} labels to match true, got {p.shape[0]}")
    if t.size == 0:
        raise ValueError("true: expected at least one labeled point, got none")
    return t, p


def contingency_table(
    true: Any,
    pred: Any,
    normalize: bool = True,
    num_classes: int | None = None,
    num_clusters: int | None = None,
) -> np.ndarray:
    """``C[i, j]`` = number of points of class ``i`` put in cluster ``j``: ``(classes, clusters)``.

    With ``normalize`` every row is divided by its sum (the fraction of class ``i`` in each
    cluster; seed 001's "normalized contingency table"); an empty row stays 0.

    Args:
        true, pred: ``(n,)`` integer labels >= 0.
        num_classes, num_clusters: table size (default: ``max label + 1``), so that classes or
            clusters that received no point still get a row or column.
    """
    t, p = _pair(true, pred)
    rows = max(int(t.max()) + 1, num_classes or 0)
    cols = max(int(p.max()) + 1, num_clusters or 0)
    table = np.zeros((rows, cols), dtype=np.float64)
    np.add.at(table, (t, p), 1.0)
    if normalize:
        sums = table.sum(axis=1, keepdims=True)
        table = np.divide(table, sums, out=np.zeros_like(table), where=sums > 0)
    return table


def best_matching(table: np.ndarray) -> dict[int, int]:
    """The one-to-one ``{class: cluster}`` maximizing the matched mass of ``table`` (Hungarian)."""
    rows, cols = linear_sum_assignment(np.asarray(table, dtype=np.float64), maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def matched_accuracy(true: Any, pred: Any) -> float:
    """Fraction of points whose cluster is matched to their class (best one-to-one matching).

    ``max_sigma (1/n) sum_i [sigma(pred_i) = true_i]`` over injective maps from clusters to
    classes; 1 for a perfect clustering up to renaming.
    """
    t, p = _pair(true, pred)
    table = contingency_table(t, p, normalize=False)
    match = best_matching(table)
    return float(sum(table[r, c] for r, c in match.items()) / t.size)


def balanced_matched_accuracy(true: Any, pred: Any) -> float:
    """Mean over classes of the fraction of each class in its matched cluster.

    The matching maximizes this same quantity (Hungarian on the row-normalized table), so every
    class weighs the same whatever its size; seed 001's published MNIST 0-4 table reads 0.754.
    """
    t, p = _pair(true, pred)
    table = contingency_table(t, p, normalize=True)
    present = np.bincount(t, minlength=table.shape[0]) > 0
    match = best_matching(table)
    return float(sum(table[r, c] for r, c in match.items()) / present.sum())


def ari(true: Any, pred: Any) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): 1 perfect, about 0 at chance."""
    t, p = _pair(true, pred)
    return float(adjusted_rand_score(t, p))


def nmi(true: Any, pred: Any) -> float:
    """Normalized mutual information (arithmetic normalization, sklearn's default), in [0, 1]."""
    t, p = _pair(true, pred)
    return float(normalized_mutual_info_score(t, p))


def clustering_scores(true: Any, pred: Any) -> dict[str, float]:
    """All four numbers at once: ``accuracy``, ``balanced_accuracy``, ``ari``, ``nmi``."""
    return {
        "accuracy": matched_accuracy(true, pred),
        "balanced_accuracy": balanced_matched_accuracy(true, pred),
        "ari": ari(true, pred),
        "nmi": nmi(true, pred),
    }
