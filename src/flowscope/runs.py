"""One training run, end to end: config -> data -> model -> Trainer -> metrics, figures, report.

This is the layer under ``flowscope train`` / ``demo`` and the experiments.  A run directory
holds ``config.yaml``, ``last/`` and ``best/`` checkpoints (safetensors + JSON), ``metrics.jsonl``
(training log), ``metrics.json`` (flat name -> number), ``figures/*.png`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from . import models, plots
from .checkpoint import load_checkpoint
from .data import toy2d
from .flow import Flow
from .report import add_figure, write_report
from .train import TrainConfig, Trainer

__all__ = [
    "RunConfig",
    "TOY_MODELS",
    "build_flow",
    "toy_splits",
    "train_run",
    "load_run",
    "evaluate_toy",
    "toy_figures",
    "default_out",
]

# Constructors usable on vectors (2-D toys): name -> function(features, **options) -> Flow.
TOY_MODELS = {
    "nice": models.nice,
    "realnvp": models.realnvp,
    "maf": models.maf,
    "iaf": models.iaf,
    "nsf": models.nsf,
}


@dataclass
class RunConfig:
    """Everything a run needs; loaded from YAML by :meth:`from_yaml` (unknown keys are errors).

    Attributes:
        name: run name (default output directory ``runs/<name>-<time>``).
        model: constructor in :mod:`flowscope.models` (``TOY_MODELS`` for 2-D data).
        data: dataset name (a 2-D toy of :mod:`flowscope.data.toy2d`).
        model_options: keyword arguments of the constructor (e.g. ``{"layers": 8}``).
        train: :class:`~flowscope.train.TrainConfig` fields (e.g. ``{"lr": 1e-3}``).
        n_train, n_val, n_test: split sizes drawn from the toy generator with distinct seeds.
        seed: seeds the model initialization, the data draws and the trainer.
    """

    name: str = "run"
    model: str = "realnvp"
    data: str = "pinwheel"
    model_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    n_train: int = 20_000
    n_val: int = 5_000
    n_test: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in TOY_MODELS:
            raise ValueError(f"model: expected one of {sorted(TOY_MODELS)}, got {self.model!r}")
        if self.data not in toy2d.DATASETS:
            raise ValueError(f"data: expected one of {sorted(toy2d.DATASETS)}, got {self.data!r}")
        for key in ("n_train", "n_val", "n_test"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}: expected a positive int, got {value!r}")
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.train) - fields)
        if unknown:
            raise ValueError(
                f"train.{unknown[0]}: not a training option; expected one of {sorted(fields)}"
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a mapping of options, got {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown key {unknown[0]!r}; expected one of {sorted(known)}"
            )
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config: no such file {str(path)!r}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(
                f"config: {path} is not valid YAML ({err.__class__.__name__})"
            ) from None
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_out(name: str) -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / f"{name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def build_flow(cfg: RunConfig) -> Flow:
    """The model of a run, initialized from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    try:
        return TOY_MODELS[cfg.model](2, **cfg.model_options)
    except TypeError as err:  # an option the constructor does not take
        raise ValueError(f"model_options: {err}") from None


def toy_splits(cfg: RunConfig) -> dict[str, Tensor]:
    """Train / val / test draws from the toy generator (distinct seeds derived from cfg.seed)."""
    data = toy2d.get(cfg.data)
    base = 1000 * cfg.seed
    return {
        "train": data.sample(cfg.n_train, seed=base + 1)[0],
        "val": data.sample(cfg.n_val, seed=base + 2)[0],
        "test": data.sample(cfg.n_test, seed=base + 3)[0],
    }


@torch.no_grad()
def evaluate_toy(flow: Flow, dataset: str, x_test: Tensor) -> dict[str, float]:
    """Test NLL (nats) and, where the density is known, the gap to the true entropy.

    ``entropy_gap = test_nll - H(p)`` with ``H`` from deterministic quadrature; the paired
    estimate ``mean(log p - log q)`` (a KL(p||q) estimate on the same points) and its standard
    error are reported beside it.
    """
    flow.eval()
    log_q = torch.cat([flow.log_prob(chunk) for chunk in x_test.split(8192)]).double()
    out = {
        "test_nll": float(-log_q.mean()),
        "test_nll_se": float(log_q.std() / math.sqrt(len(log_q))),
    }
    data = toy2d.get(dataset)
    if data.has_density:
        log_p = data.log_prob(x_test.double())
        diff = log_p - log_q
        out["true_entropy"] = data.entropy()
        out["entropy_gap"] = out["test_nll"] - out["true_entropy"]
        out["kl_estimate"] = float(diff.mean())
        out["kl_estimate_se"] = float(diff.std() / math.sqrt(len(diff)))
    return out


@torch.no_grad()
def toy_figures(
    run_dir: Path, flow: Flow, dataset: str, x: Tensor, labels: Tensor | None = None
) -> None:
    """Data vs learned (vs true) density, samples, and seed 000 Figure 1.1 for a 2-D flow."""
    flow.eval()
    data = toy2d.get(dataset)
    bounds = data.bounds
    true_lp = data.log_prob if data.has_density else None
    add_figure(
        run_dir,
        "density",
        plots.density_comparison(x[:5000].numpy(), flow.log_prob, bounds, true_log_prob=true_lp),
        "Data, learned density and (where known) the true density.",
    )
    add_figure(
        run_dir,
        "samples",
        plots.samples_scatter(flow.sample(5000).numpy(), bounds=bounds, title="flow samples"),
        "5,000 samples from the trained flow (temperature 1).",
    )
    transform = flow.transform
    if hasattr(transform, "forward_steps"):
        steps = transform.forward_steps(x[:3000])
        pts = [s[0].numpy() for s in steps]
        names = ["data"] + [type(t).__name__ for t in transform.transforms]
        add_figure(
            run_dir,
            "layers",
            plots.layer_steps(
                pts, labels=None if labels is None else labels[:3000].numpy(), titles=names
            ),
            "Seed 000 Figure 1.1: the data pushed through each transform in turn (last panel: "
            "the latent, which should look like the base distribution).",
        )


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def train_run(
    cfg: RunConfig, out: str | Path | None = None, progress: bool = True
) -> dict[str, float]:
    """Train one run and write its directory (see module docstring); returns ``metrics.json``."""
    run_dir = Path(out) if out is not None else default_out(cfg.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    splits = toy_splits(cfg)
    flow = build_flow(cfg)
    options = {"seed": cfg.seed, **cfg.train}
    options.setdefault("weight_decay", 0.0)
    options.setdefault("schedule", "cosine")
    options.setdefault("batch_size", 512)
    trainer = Trainer(
        flow,
        splits["train"],
        splits["val"],
        out_dir=run_dir,
        progress=progress,
        model_config=cfg.to_dict(),
        **options,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    summary = trainer.fit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if (run_dir / "best").is_dir():
        load_checkpoint(run_dir / "best", flow)
    metrics = evaluate_toy(flow, cfg.data, splits["test"])
    metrics.update(
        {
            "params": float(sum(p.numel() for p in flow.parameters())),
            "steps": float(summary["step"]),
            "best_val_nll": float(summary["best_loss"] if summary["best_loss"] is not None else "nan"),
            "train_wall_minutes": wall / 60,
            "train_cpu_minutes": cpu / 60,
        }
    )
    _write_json(run_dir / "metrics.json", metrics)
    labels = toy2d.get(cfg.data).sample(cfg.n_test, seed=1000 * cfg.seed + 3)[1]
    toy_figures(run_dir, flow, cfg.data, splits["test"], labels)
    write_report(run_dir, title=f"{cfg.name}: {cfg.model} on {cfg.data}")
    return metrics


def load_run(run_dir: str | Path, which: str = "best") -> tuple[RunConfig, Flow]:
    """Rebuild a run's model from ``config.yaml`` and load its ``best`` (or ``last``) weights."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    flow = build_flow(cfg)
    ckpt = run_dir / which
    if not ckpt.is_dir():
        ckpt = run_dir / "last"
    if not ckpt.is_dir():
        raise FileNotFoundError(
            f"run_dir: no checkpoint in {str(run_dir)!r} (expected best/ or last/)"
        )
    load_checkpoint(ckpt, flow)
    flow.eval()
    return cfg, flow
