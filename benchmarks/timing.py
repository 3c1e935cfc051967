"""Interleaved timers: every library is timed in turn, round after round, in one process.

On a shared machine the load drifts over seconds; timing library A for a minute and then
library B would charge B (or A) for the drift.  Interleaving the repeats (A, B, C, B, C, A,
C, A, B, ...) spreads the drift over all of them, and the median over rounds discards the
rounds a burst of load hit.  The order turns by one place each round, so that no library
always runs first (after the warm-up, or after the same neighbour, whose memory traffic leaves
the caches in a state of its own).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor
from workloads import Built

# A warm-up call longer than this is kept as the measurement and not repeated (peers' D-pass
# MAF sampling takes tens of seconds a call; one call is then a precise enough number).
LONG_CALL_S = 5.0


# Which clock the medians use: "wall" (time.perf_counter) or "cpu" (time.process_time: the
# CPU time of this process, which excludes the time other processes hold the cores -- on a
# loaded shared machine with --threads 1 it is the steadier measure of the work itself).
CLOCK = {"name": "wall"}


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def interleaved(
    tasks: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    budget_s: float = 60.0,
    cpu_out: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each task, ``repeats`` rounds over all tasks after ``warmup`` calls.

    Returns the seconds of the clock chosen in ``CLOCK``; the other clock's go to ``cpu_out``
    (when given) as ``{"wall": ..., "cpu": ...}`` lists per task.  A task stops being
    repeated once ``budget_s`` wall seconds of timed calls are spent on it (it always gets at
    least one), so that one slow library cannot blow the run's budget.
    """
    walls: dict[str, list[float]] = {name: [] for name in tasks}
    cpus: dict[str, list[float]] = {name: [] for name in tasks}
    for name, fn in tasks.items():
        for _ in range(warmup):
            w, c = _timed(fn)
            if w > LONG_CALL_S:
                walls[name].append(w)
                cpus[name].append(c)
                break
    spent = {name: sum(s) for name, s in walls.items()}
    names = list(tasks)
    for r in range(repeats):
        for name in rotated(names, r):
            fn = tasks[name]
            if walls[name] and (spent[name] > budget_s or walls[name][0] > LONG_CALL_S):
                continue
            w, c = _timed(fn)
            walls[name].append(w)
            cpus[name].append(c)
            spent[name] += w
    if cpu_out is not None:
        for name in tasks:
            cpu_out[name] = {"wall": walls[name], "cpu": cpus[name]}  # type: ignore[assignment]
    return cpus if CLOCK["name"] == "cpu" else walls


def rotated(names: list[str], r: int) -> list[str]:
    """``names`` turned by ``r`` places: round ``r`` starts with ``names[r % len(names)]``."""
    k = r % len(names)
    return names[k:] + names[:k]


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(fast: list[float], slow: list[float]) -> float | None:
    """Median over rounds of ``slow[r] / fast[r]`` (seconds of the same round), or None.

    Rounds are adjacent in time, so a drift of the machine's speed that spans a round cancels
    in its ratio, where it would move one library's median and not the other's.  None with
    fewer than 3 rounds measured for both (a long call timed once).  Entry ``r`` of each list
    is round ``r``: a task the time budget stops early is skipped in every later round.
    """
    pairs = [s / f for f, s in zip(fast, slow) if f > 0]
    return statistics.median(pairs) if len(pairs) >= 3 else None


def train_task(
    built: Built,
    batches: list[Tensor],
    steps: int,
    lr: float = 1e-4,
    loss: Callable[[Tensor], Tensor] | None = None,
) -> Callable:
    """``steps`` training steps: ``-log_prob(x).mean()``, backward, fused ``Adam`` step.

    The optimizer is the same for every library: torch's ``Adam`` with ``fused=True`` (one
    kernel per parameter tensor; torch's default on CPU is a Python loop of about 10 ops per
    tensor, 1.3 ms per step on W1 against 0.24 ms fused), so the step time differs only by the
    model's forward and backward passes.  ``loss``: the loss of a batch, by default
    ``-built.log_prob(x).mean()`` (the compiled row passes its compiled loss).
    """
    opt = torch.optim.Adam(built.module.parameters(), lr=lr, fused=True)
    state = {"i": 0}
    loss_of = loss if loss is not None else (lambda x: -built.log_prob(x).mean())

    def run() -> None:
        for _ in range(steps):
            x = batches[state["i"] % len(batches)]
            state["i"] += 1
            opt.zero_grad(set_to_none=True)
            loss_of(x).backward()
            opt.step()

    return run


def log_prob_task(built: Built, x: Tensor) -> Callable:
    """One ``log_prob`` call on all of ``x`` without autograd (throughput mode)."""

    def run() -> None:
        with torch.no_grad():
            built.log_prob(x)

    return run


def sample_task(built: Built, n: int) -> Callable:
    """One ``sample(n)`` call without autograd."""
    assert built.sample is not None

    def run() -> None:
        with torch.no_grad():
            built.sample(n)

    return run
