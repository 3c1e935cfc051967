"""flowscope.analysis.clustering on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowscope.analysis.clustering import (
    ari,
    balanced_matched_accuracy,
    best_matching,
    clustering_scores,
    contingency_table,
    matched_accuracy,
    nmi,
)


def test_contingency_table_counts_and_rows():
    true = [0, 0, 0, 1, 1, 2]
    pred = [2, 2, 1, 0, 0, 0]
    counts = contingency_table(true, pred, normalize=False)
    np.testing.assert_array_equal(counts, [[0, 1, 2], [2, 0, 0], [1, 0, 0]])
    rows = contingency_table(true, pred)
    np.testing.assert_allclose(rows, [[0, 1 / 3, 2 / 3], [1, 0, 0], [1, 0, 0]])
    # Size arguments add empty rows/columns; an empty row stays 0 (no division by zero).
    padded = contingency_table(true, pred, num_classes=4, num_clusters=5)
    assert padded.shape == (4, 5) and (padded[3] == 0).all()


def test_renamed_perfect_clustering_scores_one():
    true = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([2, 2, 0, 0, 1, 1, 1])  # a permutation of the classes
    scores = clustering_scores(true, pred)
    assert scores == pytest.approx({"accuracy": 1, "balanced_accuracy": 1, "ari": 1, "nmi": 1})
    assert best_matching(contingency_table(true, pred, normalize=False)) == {0: 2, 1: 0, 2: 1}


def test_matched_accuracy_uses_one_to_one_matching():
    # Cluster 0 holds most of classes 0 AND 1: a many-to-one map would score 5/6, but only one
    # class can have it; the best one-to-one matching scores 4/6.
    true = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 0, 0, 0, 1]
    assert matched_accuracy(true, pred) == pytest.approx(4 / 6)


def test_balanced_accuracy_weighs_classes_equally():
    # Class 0: 8 points all right; class 1: 2 points, 1 right.
    true = [0] * 8 + [1, 1]
    pred = [0] * 8 + [1, 0]
    assert matched_accuracy(true, pred) == pytest.approx(9 / 10)
    assert balanced_matched_accuracy(true, pred) == pytest.approx((1 + 0.5) / 2)


def test_seed_001_published_table_gives_0_754():
    # Seed 001's MNIST 0-4 normalized contingency table has been read as 0.754 after matching
    # (shared/REFERENCES.md); here a table of that structure: rows are classes.
    table = np.array(
        [
            [0.95, 0.01, 0.02, 0.01, 0.01],
            [0.00, 0.97, 0.01, 0.01, 0.01],
            [0.03, 0.05, 0.85, 0.04, 0.03],
            [0.02, 0.30, 0.30, 0.33, 0.05],
            [0.01, 0.02, 0.02, 0.30, 0.65],
        ]
    )
    true, pred = [], []
    for i, row in enumerate(table):
        for j, frac in enumerate(row):
            true += [i] * int(round(frac * 100))
            pred += [j] * int(round(frac * 100))
    expected = (0.95 + 0.97 + 0.85 + 0.33 + 0.65) / 5
    assert balanced_matched_accuracy(true, pred) == pytest.approx(expected)


def test_ari_and_nmi_hand_values():
    assert ari([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert nmi([0, 0, 1, 1], [0, 0, 0, 0]) == pytest.approx(0.0, abs=1e-12)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="pred: expected 3 labels"):
        matched_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="true: expected labels >= 0"):
        ari([-1, 0], [0, 0])
    with pytest.raises(ValueError, match="pred: expected integer labels"):
        nmi([0, 1], [0.5, 1.0])
    with pytest.raises(ValueError, match="true: expected a 1-D array"):
        contingency_table(np.zeros((2, 2), dtype=int), [0, 1])
    with pytest.raises(ValueError, match="true: expected at least one"):
        matched_accuracy([], [])
