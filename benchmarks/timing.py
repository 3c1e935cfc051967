"""Timers: warm up, then the median over repeats of a rate, all in the calling process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from workloads import Built


def median_rate(
    fn: Callable[[], object], work: float, repeats: int, warmup: int, budget_s: float = 60.0
) -> tuple[float, list[float]]:
    """Median of ``work / seconds(fn())`` over ``repeats`` calls, after ``warmup`` calls.

    Stops early (with at least one timed call) once ``budget_s`` seconds of timed calls are
    spent, so that a slow peer cannot blow the run's wall-clock budget.
    """
    for _ in range(warmup):
        fn()
    rates, spent = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        rates.append(work / dt)
        spent += dt
        if spent > budget_s:
            break
    return statistics.median(rates), rates


def train_rate(
    built: Built,
    batches: list[Tensor],
    steps: int,
    repeats: int,
    warmup: int,
    budget_s: float = 60.0,
) -> float:
    """Training steps per second: ``-log_prob(x).mean()``, backward, Adam step."""
    module = built.module
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    state = {"i": 0}

    def step() -> None:
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = -built.log_prob(x).mean()
        loss.backward()
        opt.step()

    def window() -> None:
        for _ in range(steps):
            step()

    for _ in range(warmup):
        step()
    rate, _ = median_rate(window, steps, repeats, 0, budget_s)
    return rate


def log_prob_rate(
    built: Built, x: Tensor, repeats: int, warmup: int, budget_s: float = 60.0
) -> float:
    """Points per second of ``log_prob`` on ``x`` in one call, eval mode, no autograd."""
    built.module.eval()
    with torch.no_grad():
        rate, _ = median_rate(lambda: built.log_prob(x), x.shape[0], repeats, warmup, budget_s)
    return rate


def sample_seconds(
    built: Built, n: int, repeats: int, warmup: int, budget_s: float = 60.0
) -> float:
    """Median seconds of one ``sample(n)`` call, eval mode, no autograd."""
    assert built.sample is not None
    built.module.eval()
    with torch.no_grad():
        rate, _ = median_rate(lambda: built.sample(n), 1.0, repeats, warmup, budget_s)
    return 1.0 / rate
