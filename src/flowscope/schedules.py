"""Learning-rate schedules of the trainer: seed 000's plateau schedule, cosine, constant.

Each schedule is a small state machine: ``lrs_at(step)`` gives the learning rate of every
parameter group, ``observe(loss)`` feeds an evaluation result (only the plateau schedule reacts),
and ``state_dict``/``load_state_dict`` make a resumed run exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["PlateauSchedule", "CosineSchedule", "ConstantSchedule"]


class PlateauSchedule:
    """Seed 000's plateau schedule (thesis section 3.3).

    At each check (an evaluation), a loss that is not below the best so far counts as a bad
    check; after ``patience`` bad checks in a row every learning rate is multiplied by
    ``factor`` (never below ``min_lr``; a rate already at or below it is left alone) and
    ``patience`` by ``growth``.  The thesis: ``N_c = 24``, factor 0.8, growth 1.3, min lr 1e-5.
    (The seed's code inverted the floor test, so its first decay dropped the rate to 1e-5.)

    Args:
        lrs: initial learning rate of each parameter group.
        patience: ``N_c``, bad checks before a decay (may become fractional after growth: a
            decay happens once the count reaches it, i.e. after ``ceil(N_c)`` bad checks).
        threshold: relative improvement needed to count as better (0: any decrease).
    """

    def __init__(
        self,
        lrs: Sequence[float],
        patience: float = 24,
        factor: float = 0.8,
        growth: float = 1.3,
        min_lr: float = 1e-5,
        threshold: float = 0.0,
    ) -> None:
        for name, v, ok in (
            ("patience", patience, patience > 0),
            ("factor", factor, 0 < factor < 1),
            ("growth", growth, growth >= 1),
            ("min_lr", min_lr, min_lr >= 0),
            ("threshold", threshold, 0 <= threshold < 1),
        ):
            if not ok:
                raise ValueError(f"{name}: got {v!r}, outside its valid range")
        self.lrs = [float(lr) for lr in lrs]
        self.patience, self.factor, self.growth = float(patience), factor, growth
        self.min_lr, self.threshold = min_lr, threshold
        self.best, self.bad, self.decays = math.inf, 0, 0

    def lrs_at(self, step: int) -> list[float]:
        return list(self.lrs)

    def observe(self, loss: float) -> bool:
        """Record one check; returns True when it decayed the learning rates."""
        target = (
            self.best - self.threshold * abs(self.best) if math.isfinite(self.best) else math.inf
        )
        if math.isfinite(loss) and loss < target:
            self.best, self.bad = loss, 0
            return False
        self.bad += 1
        if self.bad < self.patience:
            return False
        self.lrs = [
            max(lr * self.factor, self.min_lr) if lr > self.min_lr else lr for lr in self.lrs
        ]
        self.patience *= self.growth
        self.bad, self.decays = 0, self.decays + 1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("lrs", "patience", "best", "bad", "decays")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if k == "lrs" else v)


class CosineSchedule:
    """Cosine annealing from each group's rate to ``min_lr`` over ``steps`` updates.

    ``lr_t = min_lr + (lr_0 - min_lr) (1 + cos(pi t / T)) / 2``, the closed form of torch's
    ``CosineAnnealingLR`` ("SGDR: Stochastic Gradient Descent with Warm Restarts", Loshchilov &
    Hutter 2017, arXiv:1608.03983, eq. 5, without restarts); after a linear warmup of ``warmup``
    updates, ``t`` counts from the end of the warmup and ``T = steps - warmup``.  Closed form, so
    resuming at any step gives the same rates bit for bit and ``lr_T`` is exactly ``min_lr``.
    """

    def __init__(
        self, lrs: Sequence[float], steps: int, min_lr: float = 0.0, warmup: int = 0
    ) -> None:
        self.lrs, self.steps, self.min_lr, self.warmup = (
            [float(x) for x in lrs],
            steps,
            min_lr,
            warmup,
        )

    def lrs_at(self, step: int) -> list[float]:
        span = max(self.steps - self.warmup, 1)
        c = 0.5 * (1 + math.cos(math.pi * min(max(step - self.warmup, 0) / span, 1.0)))
        return [min(self.min_lr, lr) + (lr - min(self.min_lr, lr)) * c for lr in self.lrs]

    def observe(self, loss: float) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ConstantSchedule(CosineSchedule):
    def lrs_at(self, step: int) -> list[float]:
        return list(self.lrs)
