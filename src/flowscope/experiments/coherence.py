"""Seed 000 chapters 3-5 for M_std vs M_diag, and coherence made measurable (issue 6).

Two Glow models, identical but for the base (fixed standard normal: M_std; learned diagonal
Gaussian: M_diag), are trained on the same data with the same seed through
:func:`flowscope.runs.train_run` (AdamW wd 0.1 on the transform, no decay on the base).  Then,
for both, on latents of held-out images (``val`` fits the SVMs and class fits, ``test`` scores
them, as the seed fitted on CelebA's "test" and scored on its "eval" partition):

- chapter 3: test bits/dim, the mean image with ``ln p(x)``, ``ln p(u)`` (Figs. 3.7-3.8), tempered
  samples at tau = 0.7 (Figs. 3.9-3.10); eq. 5.1's 2-sigma bound beside the typical set;
- chapter 4 / 5.1: one LinearSVC per attribute (accuracy, balanced accuracy, support vectors);
  manipulation along the attribute (eq. 4.1) with the SVM normal and Glow's mean difference; a
  pixel-space detector (PCA + logistic regression, never shown a latent) scores every decoded
  image and the fraction of images whose probability never decreases in alpha is reported;
- chapter 5.2: Normal-Gamma MAP class fits per attribute and Student-t fits for the manipulated
  one, accuracy and confusion matrices, attribute-biased samples at tau = 0.7 (Figs. 5.21-5.24);
- section 6: the coherence score of property 2 (``coherence_score`` with an ``ImageJudge``, both
  in :mod:`flowscope.analysis.coherence`) and the multimodality of each class's latents.

The judge: an image is "coherently structured" when (a) pixel classifiers of the data's
generative factors are confident about it (the mean over attributes of ``max(p, 1 - p)``, or the
top class probability where the data have class labels) -- a well-formed face commits to
glasses-or-not, smiling-or-not, while a blend or an unstructured image sits near the decision
boundaries -- and (b) its nearest real image is no farther than real images are from each other.
Both thresholds are calibrated on real images, so the same judge applied to held-out REAL
images gives the ceiling (``judge_real_score``) against which the models' scores read.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from ..analysis import classfit as cf
from ..analysis import coherence as co
from ..analysis import directions as dr
from ..data.images import ImageDataset
from ..flow import Flow
from ..report import write_report
from ..runs import RunConfig, image_splits, load_run, train_run
from .coherence_figures import figures

NAME = "coherence"
SUMMARY = "Seed 000: M_std vs M_diag Glow latents (SVM directions, class fits, coherence score)"
MODELS = (("std", "standard"), ("diag", "diagonal"))


@dataclass
class CoherenceConfig:
    """Sizes of one coherence run (see :data:`PRESETS` for the defaults per data set).

    ``data_options`` go to the image loader; ``n_analysis`` caps the fit (val) and score (test)
    splits; ``manipulate`` is the attribute of the strips, the detector and the class-fit
    figures; ``student_attributes`` get Student-t fits too (about 12 s each at 32x32x3).

    ``scale``/``clamp`` choose the Glow couplings' scale (:func:`flowscope.models.glow`).  The
    default departs from seed 000's ``sigmoid(h + 2) + 1e-3``: ``"tanh"`` with ``clamp = 0.5``
    bounds each coupling's scale in the generating direction to ``e^0.5 = 1.65`` instead of
    1000x, which keeps decodes of manipulated latents from exploding (docs/coherence.md);
    ``scale="sigmoid"`` restores the seed's Glow.
    """

    data: str = "synthfaces"
    root: str | None = None
    data_options: dict[str, Any] = field(default_factory=lambda: {"size": 32})
    limit: int | None = None
    levels: int = 3
    steps: int = 4
    hidden: int = 64
    scale: str = "tanh"
    clamp: float = 0.5
    train_steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    manipulate: str = "smiling"
    student_attributes: list[str] = field(default_factory=lambda: ["smiling"])
    n_analysis: int = 2000
    n_manip: int = 100
    n_show: int = 4
    n_samples: int = 10
    temperature: float = 0.7
    detector_n: int = 10_000
    components: int = 256
    coherence_n: int = 1000
    typical_n: int = 5000
    mm_dims: int = 32


PRESETS: dict[str, dict[str, Any]] = {
    "synthfaces": {},
    "fashion-mnist": {
        "data_options": {},
        "levels": 2,
        "manipulate": "footwear",
        "student_attributes": ["footwear"],
    },
    "celeba": {
        "data_options": {"size": 32, "limit": 22_000},
        "manipulate": "Smiling",
        "student_attributes": ["Smiling"],
    },
}
QUICK: dict[str, Any] = {
    "limit": 300,
    "n_analysis": 200,
    "levels": 2,
    "steps": 1,
    "hidden": 8,
    "train_steps": 10,
    "batch_size": 32,
    "n_manip": 6,
    "n_show": 1,
    "n_samples": 4,
    "detector_n": 250,
    "components": 16,
    "coherence_n": 60,
    "typical_n": 300,
    "mm_dims": 4,
}
QUICK_DATA = {
    "synthfaces": {"size": 16, "n": 300},
    "fashion-mnist": {},
    "celeba": {"size": 16, "limit": 400},
}


def make_config(
    data: str = "synthfaces", root: str | None = None, quick: bool = False
) -> CoherenceConfig:
    """The preset of ``data`` (full size, or the smoke-test size with ``quick``)."""
    if data not in PRESETS:
        raise ValueError(f"data: expected one of {sorted(PRESETS)}, got {data!r}")
    raw: dict[str, Any] = {"data": data, "root": root, **PRESETS[data]}
    if quick:
        raw.update(QUICK, data_options=QUICK_DATA[data])
    return CoherenceConfig(**raw)


# ------------------------------------------------------------------------------ pixel models


def _pixels(x: Tensor, levels: int) -> np.ndarray:
    """Images (integer levels as floats) -> ``(n, D)`` in [0, 1]; non-finite pixels become 0 so
    that a diverged decode is judged (badly) instead of crashing the classifier."""
    flat = torch.nan_to_num(x.detach().reshape(len(x), -1).double(), 0.0, 0.0, 0.0).cpu()
    return (flat / (levels - 1)).clamp(0, 1).numpy()


class PixelModel:
    """PCA + logistic regressions on PIXELS, independent of any flow: one binary head
    per attribute (``attr_prob``) and, where the data have class labels, a multinomial head.

    ``confidence(x)``: the top class probability of the label head, else the mean over
    attribute heads of ``max(p, 1 - p)`` (the judge's classifier term, module docstring)."""

    def __init__(self, data: ImageDataset, n: int, components: int, seed: int) -> None:
        part = data.subset(slice(0, n))
        x = _pixels(part.images.float(), data.levels)
        self.levels = data.levels
        k = max(1, min(components, x.shape[0] - 1, x.shape[1]))
        self.pca = PCA(k, random_state=seed).fit(x)
        z = self.pca.transform(x)
        self.names = list(part.attribute_names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            attrs = (
                part.attributes.numpy() if part.attributes is not None else np.zeros((len(x), 0))
            )
            self.heads = [LogisticRegression(max_iter=2000).fit(z, a) for a in attrs.T]
            self.label_head = (
                LogisticRegression(max_iter=2000).fit(z, part.labels.numpy())
                if part.labels is not None
                else None
            )

    def _z(self, x: Tensor) -> np.ndarray:
        return self.pca.transform(_pixels(x, self.levels))

    def attr_prob(self, x: Tensor, name: str) -> np.ndarray:
        return self.heads[self.names.index(name)].predict_proba(self._z(x))[:, 1]

    def confidence(self, x: Tensor) -> Tensor:
        z = self._z(x)
        if self.label_head is not None:
            conf = self.label_head.predict_proba(z).max(1)
        else:
            conf = np.mean(
                [np.maximum(p, 1 - p) for p in (h.predict_proba(z)[:, 1] for h in self.heads)], 0
            )
        return torch.as_tensor(conf)


def saturated_share(x: Tensor, levels: int) -> Tensor:
    """Per image ``(n, *shape) -> (n,)``: the share of pixels at either end of the range (0 or
    ``levels - 1``; non-finite ones count).  A decode whose flow inverse exploded lands far
    outside the logit range of real pixels and shows up as saturated noise."""
    flat = x.detach().reshape(len(x), -1).double()
    at_end = (flat <= 0) | (flat >= levels - 1) | ~torch.isfinite(flat)
    return at_end.double().mean(1)


@dataclass
class Tools:
    """Flow-independent judges built once from the data.  ``saturation``: the largest
    :func:`saturated_share` of a real ``score`` image; a decode above it is "saturated"."""

    pixel: PixelModel
    judge: co.ImageJudge
    metrics: dict[str, float]
    saturation: float


def build_tools(
    cfg: CoherenceConfig, train: ImageDataset, fit: ImageDataset, score: ImageDataset, seed: int
) -> Tools:
    """The pixel models (trained on the first ``detector_n`` training images), the detector's
    held-out accuracy on ``score``, and the judge: its confidence threshold is the 5% quantile
    of the confidence on real ``score`` images, its references the ``fit`` images."""
    if cfg.manipulate not in score.attribute_names:
        raise ValueError(
            f"manipulate: expected one of the data's attributes {score.attribute_names}, "
            f"got {cfg.manipulate!r}"
        )
    pixel = PixelModel(train, cfg.detector_n, cfg.components, seed)
    y = score.attributes[:, score.attribute_names.index(cfg.manipulate)].numpy()
    acc = float(np.mean((pixel.attr_prob(score.images.float(), cfg.manipulate) > 0.5) == y))
    real_conf = pixel.confidence(score.images.float())
    threshold = float(torch.quantile(real_conf.double(), 0.05))
    judge = co.ImageJudge(pixel.confidence, fit.images.float(), conf_threshold=threshold)
    real = float(judge(score.images.float()).double().mean())
    saturation = float(saturated_share(score.images.float(), score.levels).max())
    return Tools(
        pixel,
        judge,
        {
            "detector_accuracy": acc,
            "judge_conf_threshold": threshold,
            "judge_nn_threshold": judge.nn_threshold,
            "judge_real_score": real,
            "real_saturated_share_max": saturation,
        },
        saturation,
    )


# --------------------------------------------------------------------------------- analysis


def _valid_attributes(fit: ImageDataset) -> list[int]:
    """Attributes with at least 2 examples of each class in the fit split (SVM, class fits)."""
    a = fit.attributes
    return [j for j in range(a.shape[1]) if 2 <= int(a[:, j].sum()) <= len(a) - 2]


def analyse(
    flow: Flow,
    fit: ImageDataset,
    score: ImageDataset,
    tools: Tools,
    cfg: CoherenceConfig,
    seed: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every analysis of the module docstring for one trained flow: ``(metrics, artefacts)``."""
    m: dict[str, float] = {}
    art: dict[str, Any] = {}
    attr = cfg.manipulate
    names = score.attribute_names
    j = names.index(attr)
    valid = _valid_attributes(fit)
    if j not in valid:
        raise ValueError(f"manipulate: attribute {attr!r} has fewer than 2 examples of a class")
    enc_fit = co.encode_dataset(flow, fit.images.float(), labels=fit.attributes)
    enc = co.encode_dataset(flow, score.images.float(), labels=score.attributes)
    # Chapter 3: mean image, tempered samples; eq. 5.1 and the typical set.
    art["mean"] = co.mean_image(flow)
    m["mean_image_log_px"] = float(art["mean"].log_px[0])
    m["mean_image_log_pu"] = float(art["mean"].log_pu[0])
    art["samples"] = co.tempered_samples(flow, cfg.n_samples, cfg.temperature, seed)
    ts = co.typical_set(flow, enc, n=cfg.typical_n, seed=seed)
    art["typical"] = ts
    m.update(
        two_sigma_bound=float(ts.bound),
        typical_set_overlap=ts.data_in_band,
        typical_set_ks=ts.ks_statistic,
        typical_data_above_band=ts.data_above_band,
        typical_data_below_band=ts.data_below_band,
        typical_data_above_bound=float(ts.data_above_bound),
        data_log_pu_mean=float(ts.data_log_pu.mean()),
        base_log_pu_mean=float(ts.base_log_pu.mean()),
        test_log_px_mean=float(enc.log_px.mean()),
    )
    # Chapter 4 / 5.1: SVM directions, manipulation scored by the pixel detector.
    fa, sa = fit.attributes[:, valid], score.attributes[:, valid]
    dirs = dr.svm_directions(enc_fit.u, fa, [names[i] for i in valid], enc.u, sa)
    art["svm"] = dirs
    for d in dirs:
        m[f"svm_accuracy_{d.name}"] = d.accuracy
        m[f"svm_balanced_accuracy_{d.name}"] = d.balanced_accuracy
        m[f"svm_support_{d.name}"] = float(d.n_support)
    m["svm_mean_balanced_accuracy"] = float(np.mean([d.balanced_accuracy for d in dirs]))
    svm_dir = dirs[valid.index(j)].direction
    mean_dir = dr.mean_difference_directions(enc_fit.u, fit.attributes[:, j])[0]
    m["svm_meandiff_cosine"] = dr.cosine_similarity(svm_dir, mean_dir)
    key = "smile" if attr.lower() == "smiling" else attr.lower()
    alphas = np.linspace(-20, 20, 20)
    u0 = enc.u[: cfg.n_manip]
    for how, v in (("svm", svm_dir), ("meandiff", mean_dir)):
        moved = dr.manipulate(u0, v, alphas)
        dec = co.decode_latents(flow, moved.reshape(-1, moved.shape[-1]))
        prob = tools.pixel.attr_prob(dec.x, attr).reshape(len(u0), len(alphas))
        suffix = "" if how == "svm" else "_meandiff"
        m[f"{key}_monotonic_fraction{suffix}"] = dr.monotonic_fraction(prob)
        m[f"{key}_monotonic_fraction_tol0.02{suffix}"] = dr.monotonic_fraction(prob, tol=0.02)
        m[f"{key}_prob_gain{suffix}"] = float(np.mean(prob[:, -1] - prob[:, 0]))
        art[f"prob_{how}"] = prob
        shape = (len(u0), len(alphas))
        # Seed 000 section 5.1.1 in numbers: are the manipulated latents in a high-probability
        # region (the 95% highest-density region {ln p(u) >= q_0.05}, or eq. 5.1's), and do
        # they decode to images the judge accepts?
        good = tools.judge(dec.x).reshape(shape).double()
        # Exploded inverses: more pixels at 0 or 255 than any real test image has.
        sat = (saturated_share(dec.x, score.levels) > tools.saturation).reshape(shape).double()
        m[f"manip_saturated{suffix}"] = float(sat.mean())
        m[f"manip_saturated_ends{suffix}"] = float(sat[:, [0, -1]].mean())
        lpu = dec.log_pu.reshape(shape).double()
        hdr = lpu >= ts.band[0]
        m[f"manip_judged_coherent{suffix}"] = float(good.mean())
        m[f"manip_in_hdr95{suffix}"] = float(hdr.double().mean())
        m[f"manip_above_bound{suffix}"] = float((lpu >= ts.bound).double().mean())
        if hdr.any():
            m[f"manip_coherent_in_hdr95{suffix}"] = float(good[hdr].mean())
        # Separates the two ways to fail monotonicity: a path that breaks down (some decode
        # rejected by the judge) or a detector that wavers on well-formed images.
        whole = good.bool().all(1).numpy()
        m[f"{key}_paths_coherent{suffix}"] = float(whole.mean())
        if whole.any():
            m[f"{key}_monotonic_fraction_coherent_paths{suffix}"] = dr.monotonic_fraction(
                prob[whole]
            )
        art[f"profile_{how}"] = {
            "judged coherent": good.mean(0).numpy(),
            "saturated (exploded)": sat.mean(0).numpy(),
            "in 95% HDR": hdr.double().mean(0).numpy(),
            f"P({attr}) median": np.median(prob, 0),
        }
        art[f"strip_{how}"] = (
            dec.x.reshape(*shape, *dec.x.shape[1:])[: cfg.n_show],
            dec.log_px.reshape(shape)[: cfg.n_show],
            dec.log_pu.reshape(shape)[: cfg.n_show],
        )
    art["originals"] = (score.images[: cfg.n_show].float(), enc.log_px, enc.log_pu)
    # Chapter 5.2: class fits per attribute, Student-t for some, biased sampling.
    for i in valid:
        fits = cf.class_fit_classifier(enc_fit.u, fit.attributes[:, i])
        pred = cf.classify(fits, enc.u)
        y = score.attributes[:, i]
        m[f"classfit_accuracy_{names[i]}"] = float((pred == y).double().mean())
        if i == j:
            art["fits"] = fits
            art["cm_gaussian"] = cf.confusion_matrix(y, pred, 2)
            lp = cf.class_log_probs(fits, enc.u)
            art["class_lp"] = (lp[:, 1] - lp[:, 0], y)
    for name in cfg.student_attributes:
        if name not in names or names.index(name) not in valid:
            continue
        i = names.index(name)
        fits = cf.class_fit_classifier(enc_fit.u, fit.attributes[:, i], fit="student")
        pred = cf.classify(fits, enc.u)
        m[f"studentt_accuracy_{name}"] = float((pred == score.attributes[:, i]).double().mean())
        for c, f in enumerate(fits):
            m[f"studentt_df_{name}_class{c}"] = float(f.df.mean())
        if i == j:
            art["cm_student"] = cf.confusion_matrix(score.attributes[:, i], pred, 2)
    u_c, lp_c = cf.sample_from_fit(art["fits"][1], cfg.n_samples, cfg.temperature, seed)
    art["biased"] = (co.decode_latents(flow, u_c), lp_c)
    for c in (1, 0):
        u_many, _ = cf.sample_from_fit(art["fits"][c], 200, cfg.temperature, seed + 1)
        x = co.decode_latents(flow, u_many).x
        m[f"biased_samples_{key}_fraction_class{c}"] = float(
            np.mean(tools.pixel.attr_prob(x, attr) > 0.5)
        )
    x = co.tempered_samples(flow, 200, cfg.temperature, seed + 1).x
    m[f"tempered_samples_{key}_fraction"] = float(np.mean(tools.pixel.attr_prob(x, attr) > 0.5))
    # Section 6: coherence (property 2) and multimodality of the classes' latents.
    cs = co.coherence_score(flow, tools.judge, n=cfg.coherence_n, seed=seed)
    m.update(coherence_score=cs.score, coherence_stderr=cs.stderr, coherence_kept=float(cs.kept))
    cs = co.coherence_score(
        flow,
        tools.judge,
        n=cfg.coherence_n,
        seed=seed,
        temperature=cfg.temperature,
        band=(ts.bound, float("inf")),
    )
    m["coherence_score_eq51_tau07"] = cs.score
    y = score.attributes[:, j]
    for c, label in ((1, "pos"), (0, "neg")):
        u_c = enc.u[y == c]
        m[f"multimodality_{key}_{label}"] = cf.multimodality_gain(u_c, max_dims=cfg.mm_dims)
        m[f"non_unimodality_{key}_{label}"] = cf.non_unimodality(u_c)
    m["multimodality_all"] = cf.multimodality_gain(enc.u, max_dims=cfg.mm_dims)
    return m, art


# -------------------------------------------------------------------------------------- run


def _train(
    cfg: CoherenceConfig, tag: str, base: str, seed: int, out: Path
) -> tuple[RunConfig, Flow, dict[str, float]]:
    """Train one Glow (``base`` "standard" or "diagonal") through ``runs.train_run`` into
    ``out``, or reuse a finished run of the same configuration there."""
    run_cfg = RunConfig(
        name=f"M_{tag}",
        model="glow",
        data=cfg.data,
        root=cfg.root,
        data_options=dict(cfg.data_options),
        limit=cfg.limit,
        model_options={
            "levels": cfg.levels,
            "steps": cfg.steps,
            "hidden": cfg.hidden,
            "base": base,
            "scale": cfg.scale,
            "clamp": cfg.clamp,
        },
        train={
            "steps": cfg.train_steps,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "eval_every": max(cfg.train_steps // 5, 1),
        },
        seed=seed,
    )
    # A finished run of the same configuration is reused: re-running the experiment into the
    # same directory re-does the (cheap) analyses without retraining.
    done = out / "metrics.json"
    same = (out / "config.yaml").is_file() and (
        yaml.safe_load((out / "config.yaml").read_text()) == run_cfg.to_dict()
    )
    if done.is_file() and same and (out / "best").is_dir():
        metrics = json.loads(done.read_text())
    else:
        metrics = train_run(run_cfg, out, progress=False)
    _, flow = load_run(out)
    return run_cfg, flow, metrics


def run(
    out: Path,
    seeds: int = 1,
    quick: bool = False,
    data: str = "synthfaces",
    root: str | None = None,
) -> dict[str, float]:
    """Train M_std and M_diag on ``data`` and write the side-by-side report to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = make_config(data, root, quick)
    cpu = time.process_time()
    (out / "config.yaml").write_text(
        yaml.safe_dump(
            {"experiment": NAME, "seeds": seeds, **dataclasses.asdict(cfg)}, sort_keys=False
        )
    )
    per_seed: list[dict[str, float]] = []
    for seed in range(seeds):
        where = out if seed == 0 else out / f"seed{seed}"
        metrics: dict[str, float] = {}
        art: dict[str, dict] = {}
        for tag, base in MODELS:
            run_cfg, flow, trained = _train(cfg, tag, base, seed, where / f"M_{tag}")
            if not metrics:  # same data and seed for both models: split and judge once
                splits = image_splits(run_cfg)
                fit = splits["val"].subset(slice(0, cfg.n_analysis))
                score = splits["test"].subset(slice(0, cfg.n_analysis))
                if fit.attributes is None:
                    raise ValueError(f"data: {data!r} has no attribute table to analyse")
                tools = build_tools(cfg, splits["train"], fit, score, seed)
                metrics.update(tools.metrics)
            for k in ("test_bpd", "train_cpu_minutes", "params"):
                metrics[f"{tag}_{k}"] = float(trained[k])
            start = time.process_time()
            m, art[tag] = analyse(flow, fit, score, tools, cfg, seed)
            m["analysis_cpu_minutes"] = (time.process_time() - start) / 60
            metrics.update({f"{tag}_{k}": float(v) for k, v in m.items()})
        if seed == 0:
            figures(out, cfg, art, metrics, score.levels, [t for t, _ in MODELS])
        per_seed.append(metrics)
    keys = sorted(set().union(*per_seed))
    final = {k: float(np.mean([m[k] for m in per_seed if k in m])) for k in keys}
    # This process's CPU time (training included unless reused; threads count separately).
    final["total_cpu_minutes"] = (time.process_time() - cpu) / 60
    (out / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    write_report(out, title=f"Seed 000 chapters 3-5 on {data}: M_std vs M_diag")
    return final
