"""The one trainer: anything with ``loss(batch) -> scalar`` trains through :class:`Trainer`.

Flows, image flows, mixtures and the reverse-KL wrapper :class:`ReverseKL` share this loop; it
owns the optimizer (AdamW), the learning-rate schedule (seed 000's plateau schedule, cosine or
constant), gradient clipping, a NaN/inf guard, full-split evaluation, checkpoints (``last/`` and
``best/`` in ``out_dir``, see :mod:`flowscope.checkpoint`), exact resume, a progress bar and a
metrics log (``metrics.jsonl``, plus TensorBoard when it is installed).

Exact resume: the data order is a pure function of ``(seed, epoch)`` and a checkpoint holds the
position in the epoch, the optimizer and schedule states and every global RNG state (dropout,
sampling), so a run killed at any point and resumed from its last checkpoint ends bit-identical
(on CPU) to a run that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from ._checks import check_finite
from .allocator import tune_cpu_allocator
from .checkpoint import (
    atomic_write,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .schedules import ConstantSchedule, CosineSchedule, PlateauSchedule
from .transforms.packing import unpacked_grads

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "PlateauSchedule",
    "CosineSchedule",
]

log = logging.getLogger(__name__)
# The trainer's attributes that a checkpoint holds (with the optimizer, schedule and RNG states).
_STATE_KEYS = ("step", "epoch", "position", "bad_run", "bad_total", "best", "eval_window",
               "log_window", "elapsed", "last_val", "last_train", "ema_updates")  # fmt: skip
Batch = Tensor | tuple


class TrainingDiverged(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive steps with a non-finite loss or gradient."""


# ----------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Hyperparameters of a run (defaults: seed 000's recipe, thesis section 3.3).

    Attributes:
        steps: total optimizer steps (a resumed run continues up to this count).
        batch_size: examples per step (seed 000: 16).  Without training data (reverse KL) the
            model's ``loss`` receives this int as its batch: the number of samples to draw.
        eval_batch_size: batch size of evaluation (None: ``max(batch_size, 256)``).
        lr: initial learning rate (the seed's code: 1e-3; its thesis: 5e-4).
        weight_decay: decoupled weight decay of AdamW (seed 000: 0.1); use ``param_groups`` to
            exempt parameters (seed 000 trains the learned base with plain Adam).
        optimizer: ``"adamw"`` (decoupled decay) or ``"adam"`` (L2 penalty).
        betas: Adam's moment decay rates.
        schedule: ``"plateau"`` (seed 000), ``"cosine"`` or ``"constant"``.
        patience, decay_factor, patience_growth: the plateau schedule's ``N_c = 24``, 0.8, 1.3.
        min_lr: floor of the plateau schedule, end point of the cosine one (seed 000: 1e-5).
        warmup_steps: linear warmup of the learning rate (any schedule).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        eval_every: evaluate every this many steps (None: every 8,192 examples as in seed 000).
            Evaluation is on the FULL validation split (the seed used one batch); without
            validation data the plateau schedule and ``best/`` use the mean training loss since
            the previous evaluation.
        checkpoint_every: write ``out_dir/last`` every this many steps (None: at each evaluation).
        log_every: append a line to ``metrics.jsonl`` every this many steps.
        seed: seeds the data order and, at the start of a fresh run, the global torch / numpy /
            random generators (dropout, sampling).  Seed the model's initialization yourself.
        max_bad_steps: consecutive non-finite steps tolerated before :class:`TrainingDiverged`.
        compile: compile the training loss, forward and backward, with ``torch.compile``:
            True uses its default backend (Inductor), a string names another backend (e.g.
            ``"aot_eager"``: traced, not code-generated).  Opt-in: the first step pays the
            compilation (about a minute on a 2-core CPU for the 2-D benchmark flows) and later
            steps are 1.4-1.5x faster there (docs/benchmarks.md); a 784-D MAF is slower
            compiled (its eager blockwise MADE kernel is not used under a compiler).
            Evaluation stays eager.  Batches are checked for NaN/inf before the compiled call,
            since the models' checks inside compiled code are skipped.
        ema: decay of an exponential moving average of the trainable parameters (Polyak
            averaging; e.g. 0.999), or None.  The average starts as the weights after the
            first update; the k-th update after that uses the decay
            ``min(ema, (1 + k) / (10 + k))``, so early iterates are forgotten quickly.
            Evaluation, ``best/`` and the model after :meth:`fit` use the averaged weights
            (a further ``fit`` continues from the raw ones); ``last/`` keeps the raw weights
            and the average, so a resumed run is still exact.
            Buffers (ActNorm's flag, BatchNorm statistics) are not averaged.
        tune_allocator: on CPU, :meth:`Trainer.fit` first fixes glibc's ``malloc`` thresholds
            (:func:`flowscope.allocator.tune_cpu_allocator`), so that the memory a step frees
            is reused by the next one instead of being returned and page-faulted in again
            (process-wide; measured 20-25% off a MixtureOfFlows step, docs/benchmarks.md).
            No effect on a GPU or where the C library is not glibc.
    """

    steps: int = 10_000
    batch_size: int = 16
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.1
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "plateau"
    patience: int = 24
    decay_factor: float = 0.8
    patience_growth: float = 1.3
    min_lr: float = 1e-5
    warmup_steps: int = 0
    grad_clip: float | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    log_every: int = 50
    seed: int = 0
    max_bad_steps: int = 10
    compile: bool | str = False
    ema: float | None = None
    tune_allocator: bool = True

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        rules: list[tuple[tuple[str, ...], Callable[[Any], bool], str]] = [
            (("steps", "batch_size", "patience", "log_every", "max_bad_steps"),
             lambda v: is_int(v) and v >= 1, "a positive int"),
            (("eval_batch_size", "eval_every", "checkpoint_every"),
             lambda v: v is None or (is_int(v) and v >= 1), "None or a positive int"),
            (("lr",), lambda v: is_num(v) and v > 0, "a finite number > 0"),
            (("grad_clip",), lambda v: v is None or (is_num(v) and v > 0),
             "None or a finite number > 0"),
            (("decay_factor",), lambda v: is_num(v) and 0 < v < 1, "a number in (0, 1)"),
            (("patience_growth",), lambda v: is_num(v) and v >= 1, "a number >= 1"),
            (("weight_decay", "min_lr"), lambda v: is_num(v) and v >= 0, "a finite number >= 0"),
            (("warmup_steps", "seed"), lambda v: is_int(v) and v >= 0, "an int >= 0"),
            (("optimizer",), lambda v: v in ("adamw", "adam"), "'adamw' or 'adam'"),
            (("schedule",), lambda v: v in ("plateau", "cosine", "constant"),
             "'plateau', 'cosine' or 'constant'"),
            (("compile",), lambda v: isinstance(v, bool) or (isinstance(v, str) and v != ""),
             "True, False or a torch.compile backend name"),
            (("ema",), lambda v: v is None or (is_num(v) and 0 < v < 1),
             "None or a number in (0, 1)"),
            (("tune_allocator",), lambda v: isinstance(v, bool), "True or False"),
        ]  # fmt: skip
        for names, ok, expected in rules:
            for name in names:
                if not ok(getattr(self, name)):
                    raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
        self.betas = tuple(self.betas)
        if self.compile and not hasattr(torch, "compile"):
            raise ValueError(
                f"compile: True needs torch.compile (torch >= 2.0), got torch {torch.__version__}"
            )


# ----------------------------------------------------------------------------- data


class _Source:
    """A Tensor, a tuple of equally long tensors, or a Dataset, indexed by batches."""

    def __init__(self, name: str, data: Any) -> None:
        if isinstance(data, TensorDataset):
            data = tuple(data.tensors)
        if isinstance(data, Tensor):
            self.tensors, self.dataset = (data,), None
        elif isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
            self.tensors, self.dataset = tuple(data), None
            lengths = [len(t) for t in data]
            if len(set(lengths)) > 1:
                raise ValueError(f"{name}: expected tensors of equal length, got lengths {lengths}")
        elif isinstance(data, Dataset) and hasattr(data, "__len__"):
            self.tensors, self.dataset = None, data
        else:
            raise ValueError(
                f"{name}: expected a Tensor, a tuple of tensors (x, labels[, context]) or a "
                f"torch Dataset with __len__, got {type(data).__name__}"
            )
        self.single = isinstance(data, Tensor)
        self.n = len(self.tensors[0]) if self.tensors is not None else len(self.dataset)
        if self.n == 0:
            raise ValueError(f"{name}: expected at least one example, got an empty dataset")

    def take(self, idx: Tensor) -> Batch:
        if self.tensors is not None:
            return self.tensors[0][idx] if self.single else tuple(t[idx] for t in self.tensors)
        return _collate([self.dataset[i] for i in idx.tolist()])


def _collate(items: list) -> Batch:
    first = items[0]
    if isinstance(first, Tensor):
        return torch.stack(items)
    if isinstance(first, (tuple, list)):
        return tuple(_collate(list(col)) for col in zip(*items))
    return torch.as_tensor(items)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple):
        return tuple(_to(b, device) for b in batch)
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, int):
        return batch
    return len(batch if isinstance(batch, Tensor) else batch[0])


def _total_norm(grads: list[Tensor]) -> Tensor:
    """Euclidean norm of all gradients together (torch's fused version where it exists)."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _check_batch(batch: Any) -> None:
    """NaN/inf scan of a batch's floating-point tensors, before a compiled loss (inside it the
    models' own checks are skipped: ``flowscope._checks._tracing``)."""
    items = batch if isinstance(batch, tuple) else (batch,)
    for i, t in enumerate(items):
        if isinstance(t, Tensor) and t.is_floating_point():
            check_finite("batch" if len(items) == 1 else f"batch[{i}]", t)


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of epoch ``epoch``: a function of ``(seed, epoch)`` only, so resume needs no
    generator state (SeedSequence mixes the pair into a well-spread 63-bit seed)."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]) >> 1
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed))


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Train ``model`` by minimizing ``model.loss(batch)`` (maximum likelihood for a Flow).

    Args:
        model: an ``nn.Module`` with ``loss(batch) -> scalar tensor``.
        train_data: a Tensor ``(N, ...)``, a tuple ``(x, labels[, context])`` of tensors, a
            torch Dataset, or None for data-free objectives (then each batch is the int
            ``batch_size``; see :class:`ReverseKL`).  Batches are drawn without replacement from
            an order reshuffled each epoch; an incomplete last batch is dropped.
        val_data: same forms; evaluated on the full split every ``eval_every`` steps.
        config: a :class:`TrainConfig`; keyword ``overrides`` replace its fields
            (``Trainer(flow, x, steps=500, lr=3e-3)``).
        out_dir: where ``last/``, ``best/``, ``metrics.jsonl`` (and ``tb/``) go; None keeps
            nothing on disk.
        param_groups: torch-style groups (``[{"params": base.parameters(), "weight_decay":
            0.0}]``); trainable parameters left out join a default group.
        resume: True continues from ``out_dir/last`` when it exists (fresh start otherwise); a
            path continues from that checkpoint.
        progress: show a tqdm bar (loss, lr, examples/s) on stderr.
        model_config: JSON-able description of the model, stored in checkpoints so that a
            command-line tool can rebuild the model before loading.
        tensorboard: also log to ``out_dir/tb`` when ``torch.utils.tensorboard`` imports.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Any,
        val_data: Any = None,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        param_groups: Sequence[dict[str, Any]] | None = None,
        resume: bool | str | Path = False,
        progress: bool = True,
        model_config: dict[str, Any] | None = None,
        tensorboard: bool = True,
        **overrides: Any,
    ) -> None:
        if not isinstance(model, nn.Module) or not callable(getattr(model, "loss", None)):
            got = type(model).__name__
            raise ValueError(f"model: expected an nn.Module with a loss(batch) method, got {got}")
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"{unknown[0]}: not a training option; expected one of {sorted(fields)}"
            )
        self.config = cfg = dataclasses.replace(config or TrainConfig(), **overrides)
        self.model = model
        self.train_source = _Source("train_data", train_data) if train_data is not None else None
        self.val_source = _Source("val_data", val_data) if val_data is not None else None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume, self.progress, self.tensorboard = resume, progress, tensorboard
        self.model_config = model_config
        if resume is True and self.out_dir is None:
            raise ValueError("resume: True resumes from out_dir/last, but out_dir is None")
        self.eval_every = cfg.eval_every or max(1, 8192 // cfg.batch_size)
        self.checkpoint_every = cfg.checkpoint_every or self.eval_every
        self.optimizer = self._make_optimizer(param_groups)
        # The compiled loss (forward and the backward graph AOTAutograd derives from it),
        # compiled lazily at the first step; ``evaluate`` keeps the eager loss.
        self._compiled_loss: Callable[[Any], Tensor] | None = None
        if cfg.compile:
            backend = cfg.compile if isinstance(cfg.compile, str) else "inductor"
            self._compiled_loss = torch.compile(model.loss, backend=backend)
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if cfg.schedule == "plateau":
            self.schedule = PlateauSchedule(
                lrs, cfg.patience, cfg.decay_factor, cfg.patience_growth, cfg.min_lr
            )
        elif cfg.schedule == "cosine":
            self.schedule = CosineSchedule(lrs, cfg.steps, cfg.min_lr, cfg.warmup_steps)
        else:
            self.schedule = ConstantSchedule(lrs, cfg.steps)
        # Training state: everything a checkpoint must hold for an exact resume.
        self.step = self.epoch = self.position = self.bad_run = self.bad_total = 0
        self.best = math.inf
        self.eval_window = [0.0, 0]  # loss sum and count since the last evaluation
        self.log_window = [0.0, 0, 0]  # ... since the last log line, plus examples
        self.elapsed = 0.0
        self.last_val: float | None = None
        self.last_train: float | None = None
        self._writer: Any = None
        self._tb: Any = None
        self._perm, self._perm_epoch = torch.empty(0, dtype=torch.long), -1
        # The parameter average (``config.ema``), in the optimizer's parameter order; created
        # at the first update so that data-dependent initializations (ActNorm) are in it.
        self._ema: list[Tensor] | None = None
        self.ema_updates = 0
        self._raw: list[Tensor] | None = None  # the raw weights while the model holds the average

    def _make_optimizer(
        self, param_groups: Sequence[dict[str, Any]] | None
    ) -> torch.optim.Optimizer:
        cfg = self.config
        owned = {id(p): p for p in self.model.parameters() if p.requires_grad}
        groups, taken = [], set()
        for i, group in enumerate(param_groups or []):
            if not isinstance(group, dict) or "params" not in group:
                raise ValueError(f"param_groups[{i}]: expected a dict with 'params', got {group!r}")
            params = (
                [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
            )
            for p in params:
                if id(p) not in owned:
                    raise ValueError(
                        f"param_groups[{i}]: holds a tensor of shape {tuple(p.shape)} that is not "
                        "a trainable parameter of the model"
                    )
                taken.add(id(p))
            groups.append({**group, "params": params})
        rest = [p for k, p in owned.items() if k not in taken]
        if rest:
            groups.append({"params": rest})
        if not groups:
            raise ValueError("model: expected trainable parameters, found none")
        kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        options = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
        # The fused kernel updates each parameter tensor in ONE pass (moments, bias correction,
        # step); torch's default on CPU is a Python loop of about 10 ops per tensor.  On the
        # benchmark flows: 0.24 ms against 1.3 ms per step for 48 small tensors (2-D RealNVP),
        # 4.8 ms against 12 ms for 6M parameters (784-D MAF).  Parameters on a device without
        # fused kernels fall back to the multi-tensor (foreach) implementation.
        try:
            return kind(groups, fused=True, **options)
        except (RuntimeError, ValueError):
            return kind(groups, foreach=True, **options)

    # ------------------------------------------------------------------ evaluation

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters())).device

    @torch.no_grad()
    def evaluate(self, data: Any = None, batch_size: int | None = None) -> float:
        """Mean loss over the FULL ``data`` (default: the validation split), in eval mode.

        Batches are weighted by their size, so with a per-example-mean loss this is exactly the
        mean over all examples.  Every module's train/eval mode is restored afterwards.
        """
        source = self.val_source if data is None else _Source("data", data)
        if source is None:
            raise ValueError(
                "data: expected data to evaluate (this trainer has no val_data), got None"
            )
        size = batch_size or self.config.eval_batch_size or max(self.config.batch_size, 256)
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        total = 0.0
        try:
            with self.averaged():
                for idx in torch.arange(source.n).split(size):
                    total += float(self.model.loss(_to(source.take(idx), self.device))) * len(idx)
        finally:
            for m, mode in modes:
                m.training = mode
        return total / source.n

    # ------------------------------------------------------------------ parameter average

    def _params(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @torch.no_grad()
    def _update_average(self) -> None:
        """Polyak averaging: ``avg <- d * avg + (1 - d) * param`` after each good update."""
        params = self._params()
        if self._ema is None:
            self._ema = [p.detach().clone() for p in params]
        else:
            # A short memory at first (1/10, 2/11, ...): the average of a few early iterates
            # would otherwise pull the weights back toward the initialization for ~1/(1-d)
            # steps.
            n = self.ema_updates
            decay = min(self.config.ema, (1 + n) / (10 + n))
            torch._foreach_lerp_(self._ema, params, 1.0 - decay)
        self.ema_updates += 1

    @torch.no_grad()
    def _hold(self, weights: list[Tensor]) -> list[Tensor]:
        """Copy ``weights`` into the parameters (in place); returns copies of the old values."""
        params = self._params()
        old = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, weights)
        return old

    @contextmanager
    def _holding(self, weights: list[Tensor] | None) -> Iterator[None]:
        """Within the block, the parameters hold ``weights`` (no-op for None)."""
        if weights is None:
            yield
            return
        old = self._hold(weights)
        try:
            yield
        finally:
            self._hold(old)

    def averaged(self) -> AbstractContextManager[None]:
        """Within the block, the model holds the averaged weights (no-op without ``ema``)."""
        return self._holding(self._ema)

    # ------------------------------------------------------------------ checkpoints

    def _state(self, resumable: bool = True) -> dict[str, Any]:
        # The average is only needed to resume; best/ already holds it as its weights.
        average = list(self._ema) if self._ema is not None and resumable else None
        return {
            "trainer": {k: getattr(self, k) for k in _STATE_KEYS},
            "schedule": self.schedule.state_dict(),
            "rng": capture_rng_state(),
            "ema": average,
        }

    def _config_json(self) -> dict[str, Any]:
        return {"train": dataclasses.asdict(self.config), "model": self.model_config}

    def save(self, path: str | Path, optimizer: bool = True) -> Path:
        """Checkpoint the model, optimizer and training state to the directory ``path``.

        After an averaged :meth:`fit` the model holds the average; the checkpoint still gets
        the raw weights (and the average), so that it resumes exactly.
        """
        with self._holding(self._raw):
            return save_checkpoint(
                path,
                self.model,
                self.optimizer if optimizer else None,
                extra=self._state(resumable=optimizer),
                config=self._config_json(),
            )

    def load(self, path: str | Path) -> None:
        """Restore the model, optimizer, schedule, position and RNG states from ``path``."""
        meta = load_checkpoint(path, self.model, self.optimizer)
        state = meta["extra"]
        for k in _STATE_KEYS:
            if k in state["trainer"]:
                setattr(self, k, state["trainer"][k])
        self._perm_epoch = -1
        self._raw = None  # the loaded weights are the raw ones now
        average = state.get("ema")
        self._ema = [t.to(p.device) for t, p in zip(average, self._params())] if average else None
        self.schedule.load_state_dict(state["schedule"])
        restore_rng_state(state["rng"])
        saved = (meta.get("config") or {}).get("train") or {}
        now = dataclasses.asdict(self.config)
        changed = [
            f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now if k in saved and saved[k] != now[k]
        ]
        if changed:
            log.warning("resuming %s with changed options (%s)", path, "; ".join(changed))

    # ------------------------------------------------------------------ the loop

    def _next_batch(self) -> Any:
        if self.train_source is None:
            return self.config.batch_size
        n, size = self.train_source.n, self.config.batch_size
        per_epoch = max(n // size, 1)
        if self.position >= per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        if self._perm_epoch != self.epoch:
            self._perm = _epoch_permutation(n, self.config.seed, self.epoch)
            self._perm_epoch = self.epoch
        idx = self._perm[self.position * size : (self.position + 1) * size]
        self.position += 1
        return _to(self.train_source.take(idx), self.device)

    def _set_lr(self, step: int) -> None:
        warm = min(1.0, (step + 1) / self.config.warmup_steps) if self.config.warmup_steps else 1.0
        for group, lr in zip(self.optimizer.param_groups, self.schedule.lrs_at(step)):
            group["lr"] = lr * warm

    def _train_step(self) -> tuple[float, int]:
        """One update; returns (loss, batch length).  A non-finite loss or gradient skips it."""
        batch = self._next_batch()
        self._set_lr(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        if self._compiled_loss is not None:
            _check_batch(batch)
            loss = self._compiled_loss(batch)
        else:
            loss = self.model.loss(batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"model.loss(batch): expected a scalar tensor, got {loss!r:.80}")
        value = loss.detach().item()
        problem = f"the loss is {value}" if not math.isfinite(value) else self._backward(loss)
        if problem is None:
            self.optimizer.step()
            self.bad_run = 0
            if self.config.ema is not None:
                self._update_average()
        else:  # no parameter or optimizer-state change
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_run, self.bad_total = self.bad_run + 1, self.bad_total + 1
            log.warning("step %d: %s; skipped this update (%d consecutive)", self.step + 1,
                        problem, self.bad_run)  # fmt: skip
            if self.bad_run >= self.config.max_bad_steps:
                where = (
                    f"; the last good checkpoint is {self.out_dir / 'last'}" if self.out_dir else ""
                )
                raise TrainingDiverged(
                    f"training diverged: {self.bad_run} consecutive steps (up to step "
                    f"{self.step + 1}) had a non-finite loss or gradient (last: {problem}). "
                    f"Try a lower learning rate (lr={self.config.lr:g}), gradient clipping "
                    f"(grad_clip=1.0), or check the data for outliers/NaN{where}"
                )
        self.step += 1
        return value, _batch_len(batch)

    def _backward(self, loss: Tensor) -> str | None:
        """Backpropagate and clip the global gradient norm; returns what was non-finite."""
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            return None
        norm = _total_norm(grads)
        if not torch.isfinite(norm):
            # Per layer: a packed run's flat tensor is named by the layer slot that failed.
            bad = (
                n
                for n, g in unpacked_grads(self.model).items()
                if g is not None and not g.isfinite().all()
            )
            outside = ("?" for p in params if not p.grad.isfinite().all())  # not in the model
            first = next(bad, next(outside, "none, the norm overflowed"))
            return f"the gradient norm is {float(norm)} (first non-finite: {first})"
        if self.config.grad_clip is not None:
            scale = (self.config.grad_clip / (norm + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(scale.to(g.device))
        return None

    def fit(self) -> dict[str, Any]:
        """Train up to ``config.steps`` steps; returns the final metrics.

        Returns:
            ``{"step", "epoch", "train_loss", "val_loss", "best_loss", "lr", "skipped_steps",
            "examples_per_s"}``; ``train_loss`` is the mean over the last logging window.
        """
        cfg = self.config
        if cfg.tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()
        if self._raw is not None:  # ... and a further fit() continues from the raw ones
            self._hold(self._raw)
            self._raw = None
        if self.resume:
            self._resume_from(self.out_dir / "last" if self.resume is True else Path(self.resume))
        if self.step == 0:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
            np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 - the global generator
        self._writer, self._tb = self._open_logs()
        bar = self._bar()
        self.model.train()
        start, before, examples = time.perf_counter(), self.elapsed, 0
        self._window_t = start
        try:
            while self.step < cfg.steps:
                value, n = self._train_step()
                examples += n
                self.elapsed = before + time.perf_counter() - start
                self._after_step(value, n)
                if bar is not None:
                    rate = examples / max(self.elapsed - before, 1e-9)
                    lr = self.optimizer.param_groups[0]["lr"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4g}", lr=f"{lr:.2e}", ex_s=f"{rate:.0f}",
                                    refresh=False)  # fmt: skip
        finally:
            for handle in (bar, self._writer, self._tb):
                if handle is not None:
                    handle.close()
            self._writer = self._tb = None
        self._set_lr(self.step)  # the rate the schedule ends at (cosine: exactly min_lr)
        if self._ema is not None:  # the model leaves with the averaged weights ...
            self._raw = self._hold(self._ema)
        wall = time.perf_counter() - start
        return {
            "step": self.step,
            "epoch": self.epoch,
            "train_loss": self.last_train,
            "val_loss": self.last_val,
            "best_loss": self.best if math.isfinite(self.best) else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "skipped_steps": self.bad_total,
            "examples_per_s": examples / wall if wall > 0 and examples else None,
        }

    def _resume_from(self, path: Path) -> None:
        if self.resume is True and not (path / "checkpoint.json").exists():
            log.info("no checkpoint in %s: starting a fresh run", path)
            return
        self.load(path)
        self._truncate_metrics()
        log.info("resumed from %s at step %d", path, self.step)

    def _after_step(self, value: float, n: int) -> None:
        """Bookkeeping after an update: windows, evaluation, log line, checkpoint."""
        if math.isfinite(value):
            for w in (self.eval_window, self.log_window):
                w[0], w[1] = w[0] + value, w[1] + 1
        self.log_window[2] += n
        last = self.step == self.config.steps
        on_cadence = self.step % self.eval_every == 0
        line = self._evaluate_and_keep_best(on_cadence) if on_cadence or last else {}
        if line or last or self.step % self.config.log_every == 0:
            now = time.perf_counter()
            line = {"step": self.step, "epoch": self.epoch, **self._log_line(now - self._window_t),
                    **line}  # fmt: skip
            self._window_t, self.last_train = now, line["train_loss"]
            self._write(line)
        if self.out_dir is not None and (self.step % self.checkpoint_every == 0 or last):
            self.save(self.out_dir / "last")

    @staticmethod
    def _window_mean(window: list) -> float | None:
        return window[0] / window[1] if window[1] else None

    def _evaluate_and_keep_best(self, on_cadence: bool) -> dict[str, Any]:
        """Full-split evaluation (or the training window's mean), schedule check, best/.

        The schedule only sees checks on the ``eval_every`` cadence (not the extra evaluation
        at the last step), so that extending ``steps`` later does not change the trajectory.
        """
        out: dict[str, Any] = {}
        if self.val_source is not None:
            metric = self.last_val = self.evaluate()
            out["val_loss"] = metric
        else:
            metric = self._window_mean(self.eval_window)
            metric = math.nan if metric is None else metric
        if on_cadence:
            self.eval_window = [0.0, 0]
            if self.schedule.observe(metric):
                log.info(
                    "step %d: no improvement in a while; learning rates now %s",
                    self.step,
                    self.schedule.lrs_at(self.step),
                )
        if math.isfinite(metric) and metric < self.best:
            self.best = metric
            if self.out_dir is not None:
                with self.averaged():
                    self.save(self.out_dir / "best", optimizer=False)
        return out

    def _log_line(self, seconds: float) -> dict[str, Any]:
        loss_sum, count, examples = self.log_window
        self.log_window = [0.0, 0, 0]
        return {
            "train_loss": loss_sum / count if count else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "examples_per_s": examples / seconds if seconds > 0 else None,
            "time": round(self.elapsed, 3),
        }

    # ------------------------------------------------------------------ logging

    def _bar(self) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.config.steps,
            initial=self.step,
            file=sys.stderr,
            unit="step",
            desc="train",
            dynamic_ncols=True,
        )

    def _open_logs(self) -> tuple[Any, Any]:
        if self.out_dir is None:
            return None, None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        writer = open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        tb = None
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step or None)
            except Exception:  # tensorboard is an optional extra: skip silently
                tb = None
        return writer, tb

    def _write(self, line: dict[str, Any]) -> None:
        clean = {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in line.items()
        }
        if self._writer is not None:
            self._writer.write(json.dumps(clean, allow_nan=False) + "\n")
            self._writer.flush()
        if self._tb is not None:
            for k in ("train_loss", "val_loss", "lr", "examples_per_s"):
                if clean.get(k) is not None:
                    self._tb.add_scalar(k, clean[k], self.step)

    def _truncate_metrics(self) -> None:
        """Drop log lines written after the checkpoint we resume from (the killed run's tail)."""
        path = self.out_dir / "metrics.jsonl" if self.out_dir else None
        if path is None or not path.exists():
            return
        kept = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(raw)["step"] <= self.step:
                    kept.append(raw)
            except (ValueError, KeyError, TypeError):  # a line cut short by the kill
                continue
        atomic_write(
            path, lambda tmp: tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        )
