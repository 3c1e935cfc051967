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
from ._checks import check_int
from .checkpoint import load_checkpoint, read_checkpoint
from .data import images, toy2d
from .flow import Flow
from .metrics import bits_per_dim, importance_weighted_log_prob
from .report import add_figure, write_report
from .train import TrainConfig, Trainer
from .transforms import Compose

__all__ = [
    "RunConfig",
    "TOY_MODELS",
    "build_flow",
    "toy_splits",
    "train_run",
    "load_run",
    "evaluate_toy",
    "toy_figures",
    "image_splits",
    "evaluate_image",
    "image_figures",
    "IMAGE_MODELS",
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
# Constructors of image flows: name -> function(shape, quanta=..., **options) -> Flow.
IMAGE_MODELS = {"glow": models.glow, "realnvp_image": models.realnvp_image}


@dataclass
class RunConfig:
    """Everything a run needs; loaded from YAML by :meth:`from_yaml` (unknown keys are errors).

    Attributes:
        name: run name (default output directory ``runs/<name>-<time>``).
        model: constructor in :mod:`flowscope.models` (``TOY_MODELS`` for 2-D toys,
            ``IMAGE_MODELS`` for image data sets).
        data: a 2-D toy of :mod:`flowscope.data.toy2d` or an image data set of
            :mod:`flowscope.data.images` (digits, mnist5k, fashion-mnist, mnist-idx, celeba,
            synthfaces).
        root: directory of file-based image data sets (fashion-mnist, mnist-idx, celeba).
        data_options: keyword arguments of the image loader (e.g. ``{"size": 32}``).
        limit: use at most this many training images (None: all).
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
    root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None

    @property
    def is_image(self) -> bool:
        return self.data in images.DATASETS

    def __post_init__(self) -> None:
        datasets = sorted(toy2d.DATASETS) + list(images.DATASETS)
        if self.data not in datasets:
            raise ValueError(f"data: expected one of {datasets}, got {self.data!r}")
        allowed = IMAGE_MODELS if self.is_image else TOY_MODELS
        if self.model not in allowed:
            kind = "image" if self.is_image else "2-D"
            raise ValueError(
                f"model: expected one of {sorted(allowed)} for the {kind} data set "
                f"{self.data!r}, got {self.model!r}"
            )
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


def build_flow(cfg: RunConfig, shape: tuple[int, ...] | None = None, quanta: int = 256) -> Flow:
    """The model of a run, initialized from ``cfg.seed`` (image models need the data's
    ``shape`` ``(C, H, W)`` and number of ``quanta``)."""
    torch.manual_seed(cfg.seed)
    try:
        if cfg.is_image:
            if shape is None:
                raise ValueError("shape: an image model needs the data's (C, H, W), got None")
            return IMAGE_MODELS[cfg.model](tuple(shape), quanta=quanta, **cfg.model_options)
        return TOY_MODELS[cfg.model](2, **cfg.model_options)
    except TypeError as err:  # an option the constructor does not take
        raise ValueError(f"model_options: {err}") from None


def image_splits(cfg: RunConfig) -> dict[str, images.ImageDataset]:
    """Train / val / test of an image data set; val is a seeded 10% carved out of train."""
    kw = dict(cfg.data_options)
    train = images.load(cfg.data, root=cfg.root, split="train", **kw)
    test = images.load(cfg.data, root=cfg.root, split="test", **kw)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, len(train) // 10)
    val, rest = train.subset(perm[:n_val]), train.subset(perm[n_val:])
    if cfg.limit is not None:
        rest = rest.subset(slice(0, cfg.limit))
    return {"train": rest, "val": val, "test": test}


@torch.no_grad()
def evaluate_image(
    flow: Flow, data: images.ImageDataset, batch_size: int = 256, importance_samples: int = 1
) -> dict[str, float]:
    """Test bits/dim of the discrete data (the dequantization bound, one noise draw per image)
    and the inversion error of the continuous part of the flow on the same images.

    ``importance_samples = K > 1`` adds ``test_bpd_iw`` (and its standard error): the
    importance-weighted bound over K draws per image
    (:func:`~flowscope.metrics.importance_weighted_log_prob`), tighter than ``test_bpd``.
    """
    check_int("importance_samples", importance_samples, 1)
    flow.eval()
    x = data.images.float()
    log_px = torch.cat([flow.log_prob(chunk) for chunk in x.split(batch_size)])
    bpd = bits_per_dim(log_px, data.num_dims)
    out = {"test_bpd": float(bpd.mean()), "test_bpd_se": float(bpd.std() / math.sqrt(len(bpd)))}
    if importance_samples != 1:
        iw = torch.cat(
            [importance_weighted_log_prob(flow, c, importance_samples) for c in x.split(batch_size)]
        )
        bpd_iw = bits_per_dim(iw, data.num_dims)
        out["test_bpd_iw"] = float(bpd_iw.mean())
        out["test_bpd_iw_se"] = float(bpd_iw.std() / math.sqrt(len(bpd_iw)))
        out["importance_samples"] = importance_samples
    # Inversion: everything after the dequantization layer is a bijection of reals; measure
    # max |T^-1(T(y)) - y| on the dequantized images y in [0, 1) (the continuous input of the
    # flow), also in pixel units (x levels), and the full round trip on the integer images.
    steps = flow.transform.transforms
    deq, rest = steps[0], Compose(*steps[1:])
    worst = worst_full = 0.0
    for chunk in x[:1000].split(batch_size):
        y, _ = deq(chunk)
        back, _ = rest.inverse(rest(y)[0])
        worst = max(worst, float((back - y).abs().max()))
        worst_full = max(
            worst_full, float((flow.decode(flow.encode(chunk)[0]) - chunk).abs().max())
        )
    out["inversion_max_abs_error"] = worst
    out["inversion_max_abs_error_pixels"] = worst * data.levels
    out["reconstruction_max_abs_error"] = worst_full
    return out


@torch.no_grad()
def image_figures(run_dir: Path, flow: Flow, test: images.ImageDataset, seed: int = 0) -> None:
    """Tempered sample grids (tau = 1.0, 0.7), reconstructions and a latent interpolation."""
    flow.eval()
    levels = test.levels
    for tau in (1.0, 0.7):
        torch.manual_seed(seed)
        x = flow.sample(64, temperature=tau)
        add_figure(
            run_dir,
            f"samples_tau{tau:.1f}".replace(".", "_"),
            plots.image_grid((x / (levels - 1)).clamp(0, 1), nrow=8),
            f"64 samples at temperature tau = {tau} (seed 000 uses 0.7).",
        )
    real = test.images[:16].float()
    torch.manual_seed(seed)
    u, _ = flow.encode(real)
    recon = flow.decode(u)
    add_figure(
        run_dir,
        "reconstructions",
        plots.image_grid(torch.cat([real, recon]) / (levels - 1), nrow=16),
        "Top: 16 test images; bottom: decode(encode(x)).",
    )
    pairs = u[:4].reshape(2, 2, -1)
    weights = torch.linspace(0, 1, 8)
    path = (
        torch.cat([(1 - w) * pairs[:, 0] + w * pairs[:, 1] for w in weights])
        .reshape(8, 2, -1)
        .transpose(0, 1)
        .reshape(16, -1)
    )
    add_figure(
        run_dir,
        "interpolation",
        plots.image_grid(flow.decode(path).clamp(0, levels - 1) / (levels - 1), nrow=8),
        "Linear interpolation in latent space between two pairs of test images (one per row).",
    )


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
    if cfg.is_image:
        splits = image_splits(cfg)
        shape, quanta = splits["train"].shape, splits["train"].levels
        flow = build_flow(cfg, shape, quanta)
        train_x, val_x = splits["train"].images.float(), splits["val"].images.float()
        # Seed 000 trains the transform with AdamW (weight decay 0.1) and the base with Adam.
        groups = [{"params": list(flow.base.parameters()), "weight_decay": 0.0}]
        groups = groups if groups[0]["params"] else None
        defaults = {
            "weight_decay": 0.1,
            "schedule": "cosine",
            "batch_size": 64,
            "lr": 1e-3,
            "grad_clip": 50.0,
        }
    else:
        splits = toy_splits(cfg)
        shape, quanta = (2,), 0
        flow = build_flow(cfg)
        train_x, val_x, groups = splits["train"], splits["val"], None
        defaults = {"weight_decay": 0.0, "schedule": "cosine", "batch_size": 512}
    options = {"seed": cfg.seed, **defaults, **cfg.train}
    trainer = Trainer(
        flow,
        train_x,
        val_x,
        out_dir=run_dir,
        progress=progress,
        param_groups=groups,
        model_config={**cfg.to_dict(), "shape": list(shape), "quanta": quanta},
        **options,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    summary = trainer.fit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if (run_dir / "best").is_dir():
        load_checkpoint(run_dir / "best", flow)
    if cfg.is_image:
        metrics = evaluate_image(flow, splits["test"])
    else:
        metrics = evaluate_toy(flow, cfg.data, splits["test"])
    best = summary["best_loss"]
    metrics.update(
        {
            "params": float(sum(p.numel() for p in flow.parameters())),
            "steps": float(summary["step"]),
            "best_val_loss": float(best) if best is not None else float("nan"),
            "train_wall_minutes": wall / 60,
            "train_cpu_minutes": cpu / 60,
        }
    )
    _write_json(run_dir / "metrics.json", metrics)
    if cfg.is_image:
        image_figures(run_dir, flow, splits["test"], cfg.seed)
    else:
        labels = toy2d.get(cfg.data).sample(cfg.n_test, seed=1000 * cfg.seed + 3)[1]
        toy_figures(run_dir, flow, cfg.data, splits["test"], labels)
    write_report(run_dir, title=f"{cfg.name}: {cfg.model} on {cfg.data}")
    return metrics


def load_run(run_dir: str | Path, which: str = "best") -> tuple[RunConfig, Flow]:
    """Rebuild a run's model from ``config.yaml`` and load its ``best`` (or ``last``) weights."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    ckpt = run_dir / which
    if not ckpt.is_dir():
        ckpt = run_dir / "last"
    if not ckpt.is_dir():
        raise FileNotFoundError(
            f"run_dir: no checkpoint in {str(run_dir)!r} (expected best/ or last/)"
        )
    model = read_checkpoint(ckpt).get("config", {}).get("model") or {}
    flow = build_flow(cfg, tuple(model.get("shape", (2,))), int(model.get("quanta", 256)))
    load_checkpoint(ckpt, flow)
    flow.eval()
    return cfg, flow
