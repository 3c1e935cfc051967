"""Seed 000's figures for the coherence experiment (plotting only; computing is in
``coherence.py``), named ``c<chapter>_<figure>`` so that the report shows them in the thesis'
order, each figure holding M_std and M_diag side by side (or one figure per model, adjacent).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .. import plots
from ..report import add_figure

if TYPE_CHECKING:
    from .coherence import CoherenceConfig

__all__ = ["figures"]


def _cap(log_px: float, log_pu: float, log_pc: float | None = None) -> str:
    text = f"ln p(x)={log_px:.3g}\nln p(u)={log_pu:.3g}"
    return text if log_pc is None else text + f"\nln p(c)={log_pc:.3g}"


def _img(x: Tensor, levels: int) -> Tensor:
    return (torch.nan_to_num(x.float(), 0.0) / (levels - 1)).clamp(0, 1)


def figures(
    out: Path,
    cfg: CoherenceConfig,
    art: dict[str, dict],
    metrics: dict[str, float],
    levels: int,
    tags: list[str],
) -> None:
    """The report's figures, seed 000's order (c3: chapter 3, c4: 4 / 5.1, c5: 5.2, c6: 6).

    ``art[tag]`` holds :func:`~flowscope.experiments.coherence.analyse`'s artefacts of model
    ``tag`` (``"std"``, ``"diag"``); ``metrics`` the run's flat metrics (``<tag>_`` prefixes).
    """
    label = {t: f"M_{t}" for t in tags}
    attr = cfg.manipulate
    key = "smile" if attr.lower() == "smiling" else attr.lower()
    rows = [
        ("test bits/dim", "test_bpd"),
        ("ln p(u) of the mean image", "mean_image_log_pu"),
        ("ln p(x) of the mean image", "mean_image_log_px"),
        ("eq. 5.1 bound ln p(mu + 2 sigma)", "two_sigma_bound"),
        ("typical-set overlap (test data in band)", "typical_set_overlap"),
        ("KS(base ln p(u), data ln p(u))", "typical_set_ks"),
        ("SVM mean balanced accuracy", "svm_mean_balanced_accuracy"),
        (f"{key} monotonic fraction (SVM)", f"{key}_monotonic_fraction"),
        (f"{key} monotonic fraction (mean diff.)", f"{key}_monotonic_fraction_meandiff"),
        (f"{key} monotonic fraction (SVM, tol 0.02)", f"{key}_monotonic_fraction_tol0.02"),
        ("paths judged coherent at every alpha (SVM)", f"{key}_paths_coherent"),
        (f"  {key} monotonic fraction among those", f"{key}_monotonic_fraction_coherent_paths"),
        ("manipulated images judged coherent (SVM)", "manip_judged_coherent"),
        ("manipulated images saturated (SVM)", "manip_saturated"),
        ("  at |alpha| = 20", "manip_saturated_ends"),
        ("  those with latent in the 95% HDR", "manip_coherent_in_hdr95"),
        (f"class-fit accuracy {attr} (Gaussian)", f"classfit_accuracy_{attr}"),
        (f"class-fit accuracy {attr} (Student-t)", f"studentt_accuracy_{attr}"),
        ("coherence score (typical set, tau=1)", "coherence_score"),
        ("coherence score (eq. 5.1 region, tau=0.7)", "coherence_score_eq51_tau07"),
        (f"multimodality gain, {attr}", f"multimodality_{key}_pos"),
        (f"multimodality gain, not {attr}", f"multimodality_{key}_neg"),
    ]
    table = [[name] + [metrics.get(f"{t}_{k}", float("nan")) for t in tags] for name, k in rows]
    add_figure(
        out,
        "c0_summary",
        plots.table_figure(["metric"] + [label[t] for t in tags], table),
        "M_std vs M_diag at a glance. Real held-out images score "
        f"{metrics['judge_real_score']:.3f} with the same judge (the coherence ceiling).",
    )
    mean = [art[t]["mean"] for t in tags]
    add_figure(
        out,
        "c3_07_mean_images",
        plots.image_grid(
            torch.cat([_img(d.x, levels) for d in mean]),
            nrow=2,
            captions=[
                f"{label[t]}\n" + _cap(float(d.log_px[0]), float(d.log_pu[0]))
                for t, d in zip(tags, mean)
            ],
        ),
        "Seed 000 Figs. 3.7-3.8: the base mean decoded (left M_std, right M_diag).",
    )
    samples = [art[t]["samples"] for t in tags]
    add_figure(
        out,
        "c3_09_tempered_samples",
        plots.image_grid(
            torch.cat([_img(s.x, levels) for s in samples]),
            nrow=cfg.n_samples,
            captions=[
                _cap(float(a), float(b)) for s in samples for a, b in zip(s.log_px, s.log_pu)
            ],
        ),
        f"Seed 000 Figs. 3.9-3.10: samples at tau = {cfg.temperature} (top M_std, bottom M_diag); "
        "ln p(x), ln p(u) untempered.",
    )
    add_figure(
        out,
        "c3_12_typical_set",
        plots.typical_set_figure({label[t]: art[t]["typical"] for t in tags}),
        "What is a high-probability region? ln p(u) of base samples and of encoded test images, "
        "with the typical-set band (5-95% of base samples), eq. 5.1's 2-sigma bound and the mode.",
    )
    names = [d.name for d in art[tags[0]]["svm"]]
    add_figure(
        out,
        "c4_01_svm_balanced_accuracy",
        plots.grouped_bars(
            names,
            {label[t]: [d.balanced_accuracy for d in art[t]["svm"]] for t in tags},
            ylabel="balanced accuracy",
            reference=0.5,
            reference_label="chance",
        ),
        "Seed 000 Figs. 5.3-5.4: one LinearSVC per attribute on the latents (fit on val, scored "
        "on test), balanced accuracy (mean per-class recall).",
    )
    add_figure(
        out,
        "c4_02_svm_support_vectors",
        plots.grouped_bars(
            names,
            {label[t]: [d.n_support for d in art[t]["svm"]] for t in tags},
            ylabel="points on or inside the margin",
            reference=art[tags[0]]["svm"][0].n_train,
            reference_label="training points",
        ),
        "Support vectors per SVM (points with y f(u) <= 1; the seed could not report them).",
    )
    alphas = np.linspace(-20, 20, 20)
    for t in tags:
        x0, lpx0, lpu0 = art[t]["originals"]
        for how, title in (("svm", "SVM normal"), ("meandiff", "mean difference (Glow)")):
            xs, lpx, lpu = art[t][f"strip_{how}"]
            n = xs.shape[0]
            grid = torch.cat(
                [torch.cat([_img(x0[i : i + 1], levels), _img(xs[i], levels)]) for i in range(n)]
            )
            caps = []
            for i in range(n):
                caps.append("original\n" + _cap(float(lpx0[i]), float(lpu0[i])))
                caps += [_cap(float(a), float(b)) for a, b in zip(lpx[i], lpu[i])]
            add_figure(
                out,
                f"c4_1{'1' if how == 'svm' else '2'}_manipulation_{how}_{t}",
                plots.image_montage(grid, nrow=len(alphas) + 1, captions=caps),
                f"Seed 000 Figs. 5.5-5.6, {label[t]}: u + alpha v/||v|| along '{attr}' ({title}), "
                "alpha = linspace(-20, 20, 20); leftmost: the original test image.",
            )
    panels = {
        f"{label[t]}, {how} (monotonic {metrics[f'{t}_{key}_monotonic_fraction' + sfx]:.2f})": art[
            t
        ][f"prob_{how}"]
        for how, sfx in (("svm", ""), ("meandiff", "_meandiff"))
        for t in tags
    }
    add_figure(
        out,
        "c4_20_detector_curves",
        plots.score_curves(
            alphas, panels, xlabel="alpha", ylabel=f"P({attr}) by the pixel detector"
        ),
        f"The pixel-space detector's P({attr}) of every manipulated image (faint) and the median "
        f"(bold); held-out detector accuracy {metrics['detector_accuracy']:.3f}.",
    )
    add_figure(
        out,
        "c4_21_manipulation_profile",
        plots.metric_panels(
            alphas,
            {
                f"{label[t]}, {how}": art[t][f"profile_{how}"]
                for how in ("svm", "meandiff")
                for t in tags
            },
            xlabel="alpha",
        ),
        "Per alpha, over the manipulated test images: the fraction the judge accepts, the fraction "
        "saturated (more pixels at either end of the range than any real test image: an exploded "
        "inverse), the "
        f"fraction whose latent lies in the base's 95% highest-density region, and the median "
        f"P({attr}). "
        "Decodes that fail inside the region are property-2 violations (seed 000 section 5.1.1).",
    )
    add_figure(
        out,
        "c5_01_classfit_accuracy",
        plots.grouped_bars(
            names,
            {label[t]: [metrics[f"{t}_classfit_accuracy_{a}"] for a in names] for t in tags},
            ylabel="accuracy",
            reference=0.8,
            reference_label="seed 000, Smiling (~0.80)",
        ),
        "Seed 000 section 5.2.2: classify by the larger MAP Gaussian class log-probability.",
    )
    for t in tags:
        for fit in ("gaussian", "student"):
            if f"cm_{fit}" in art[t]:
                add_figure(
                    out,
                    f"c5_02_confusion_{fit}_{t}",
                    plots.confusion_matrix(art[t][f"cm_{fit}"], [f"not {attr}", attr]),
                    f"Seed 000 Figs. 5.19-5.20, {label[t]}: '{attr}' by {fit} class fits.",
                )
        diff, y = art[t]["class_lp"]
        add_figure(
            out,
            f"c5_03_class_log_probs_{t}",
            plots.histograms(
                {f"true {attr}": diff[y == 1].numpy(), f"true not {attr}": diff[y == 0].numpy()},
                title=label[t],
                xlabel=f"ln p(u | {attr}) - ln p(u | not {attr})",
            ),
            f"Seed 000 Figs. 5.15-5.18 as one difference: positive means classified '{attr}'.",
        )
    biased = [art[t]["biased"] for t in tags]
    add_figure(
        out,
        "c5_21_biased_samples",
        plots.image_grid(
            torch.cat([_img(d.x, levels) for d, _ in biased]),
            nrow=cfg.n_samples,
            captions=[
                _cap(float(a), float(b), float(c))
                for d, lpc in biased
                for a, b, c in zip(d.log_px, d.log_pu, lpc)
            ],
        ),
        f"Seed 000 Figs. 5.21-5.22: samples of the '{attr}' class fit at tau = {cfg.temperature} "
        f"(top M_std, bottom M_diag). Detector-judged '{attr}' among 200 such samples: "
        + ", ".join(
            f"{label[t]} {metrics[f'{t}_biased_samples_{key}_fraction_class1']:.2f}" for t in tags
        )
        + " (plain tempered samples: "
        + ", ".join(f"{metrics[f'{t}_tempered_samples_{key}_fraction']:.2f}" for t in tags)
        + ").",
    )
    add_figure(
        out,
        "c6_01_coherence",
        plots.grouped_bars(
            ["typical set, tau=1", "eq. 5.1 region, tau=0.7"],
            {
                **{
                    label[t]: [
                        metrics[f"{t}_coherence_score"],
                        metrics[f"{t}_coherence_score_eq51_tau07"],
                    ]
                    for t in tags
                },
                "real test images": [metrics["judge_real_score"]] * 2,
            },
            ylabel="fraction judged coherent",
        ),
        "Property 2 as a number: base samples from the region, decoded, judged by the pixel "
        "classifiers' confidence AND the nearest-neighbour distance to real images.",
    )
    add_figure(
        out,
        "c6_02_multimodality",
        plots.grouped_bars(
            [attr, f"not {attr}", "all test"],
            {
                label[t]: [metrics[f"{t}_multimodality_{key}_{s}"] for s in ("pos", "neg")]
                + [metrics[f"{t}_multimodality_all"]]
                for t in tags
            },
            ylabel="multimodality gain (nats/example)",
        ),
        f"Evidence of several modes in each class's latents (leading {cfg.mm_dims} principal axes; "
        "0 = unimodal).  The thesis' non_unimodality (tail weight) is in metrics.json.",
    )
