"""The benchmark's interleaved timer: round order and the per-round ratio (benchmarks/timing.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import timing  # noqa: E402


def test_rotated_turns_by_one_place_per_round() -> None:
    names = ["a", "b", "c"]
    assert [timing.rotated(names, r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_interleaved_runs_every_task_first_in_some_round() -> None:
    calls: list[str] = []
    tasks = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    out = timing.interleaved(tasks, repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # the warm-up calls
    rounds = [calls[3 + 3 * r : 6 + 3 * r] for r in range(3)]
    assert [r[0] for r in rounds] == ["a", "b", "c"]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert {name: len(s) for name, s in out.items()} == {"a": 3, "b": 3, "c": 3}


def test_paired_ratio_cancels_a_drift_that_moves_the_medians() -> None:
    # The machine halves its speed during round 2, between the two libraries' calls; in every
    # other round one library is 1.5x faster.  The medians compare a slow-phase call with a
    # fast-phase one (2.0 against 1.5 s: 0.75x); the per-round ratios keep 1.5x.
    fast = [1.0, 1.0, 2.0, 2.0, 2.0]
    slow = [1.5, 1.5, 1.5, 3.0, 3.0]
    assert timing.median(slow) / timing.median(fast) == pytest.approx(0.75)
    assert timing.paired_ratio(fast, slow) == pytest.approx(1.5)
    assert timing.paired_ratio([1.0, 2.0], [1.5, 3.0]) is None  # too few rounds
    assert timing.paired_ratio([1.0], [30.0, 31.0, 32.0]) is None  # a long call timed once


def test_w5_row_reports_the_loop_ratio_and_judges_k5_over_k1() -> None:
    # The row shows what batching saves (K = 5 batched against a loop of five flows), but the
    # verdict stays on the target, K = 5 against K = 1 (<= 2): a good loop ratio must
    # not turn a missed target into a met one.
    import run

    step_ms = {"K=1": 4.0, "K=5": 12.0, "K=10": 22.0, "K=5 loop": 16.0}
    w5 = {
        "step_ms": step_ms,
        "k5_over_k1": 3.0,
        "k10_over_k1": 5.5,
        "k5_over_loop": 0.75,
    }
    row = run.table({"libraries": ["flowscope"], "workloads": {"W5": w5}}).splitlines()[-1]
    assert "K=5 / K=1 = 3.00; K=5 / K=5 loop = 0.75" in row
    assert "K=5 loop: 16.0 ms" in row
    assert row.endswith("<= 2 missed |")
    met = run.table(
        {"libraries": ["flowscope"], "workloads": {"W5": {**w5, "k5_over_k1": 1.9}}}
    ).splitlines()[-1]
    assert met.endswith("<= 2 met |")
