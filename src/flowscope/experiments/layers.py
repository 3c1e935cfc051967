"""Seed 000 Figure 1.1: flows of 1..10 layers fitted to the same 2-D data, every intermediate
output shown, with test NLL and the gap to the true density per depth.

The seed's script fitted MAF stacks of 1..10 layers to a noisy sine curve
(shared/REFERENCES.md); the true density of that curve is known exactly, so the gap
``test NLL - H(p)`` (a KL(p || q) estimate) is reported per depth.

Coherence per depth (seed 000 section 2.5, issue 6): the coherence score of property 2 -- base
samples from the typical set (5-95% quantiles of ``ln p(u)``), decoded, judged good when their
TRUE density is inside the data's 99% highest-density region (``density_judge``) -- and the
multimodality of the encoded test data (``multimodality_gain``, 0 for a unimodal latent) beside
the thesis' ``non_unimodality`` (Student-t vs MAP Gaussian: a tail-weight measure).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from .. import models, plots
from ..analysis import classfit
from ..analysis import coherence as co
from ..data import toy2d
from ..report import add_figure, write_report
from ..runs import evaluate_toy
from ..train import Trainer

NAME = "layers"
SUMMARY = (
    "Seed 000 Figure 1.1: MAF of 1..10 layers on a noisy sine; every layer's output, NLL and gap"
)


def coherence_metrics(flow, data: toy2d.Toy2D, x_test: Tensor, n: int, seed: int) -> dict:
    """Coherence score (property 2, judged by the true density's 99% highest-density region) and
    the (non-)unimodality of the encoded test data of one trained 2-D flow."""
    judge = co.density_judge(data.log_prob, co.density_threshold(data.log_prob, x_test, 0.99))
    score = co.coherence_score(flow, judge, n=n, seed=seed)
    u = co.encode_dataset(flow, x_test).u
    return {
        "coherence": score.score,
        "coherence_stderr": score.stderr,
        "multimodality": classfit.multimodality_gain(u),
        "non_unimodality": classfit.non_unimodality(u),
    }


def fit_depths(
    depths: list[int],
    steps: int,
    seed: int,
    dataset: str = "sine",
    hidden: int = 32,
    coherence_n: int = 2000,
) -> list[dict]:
    """Train one MAF per depth; returns per depth the flow, its metrics (test NLL, gap,
    coherence, multimodality) and its layer outputs."""
    data = toy2d.get(dataset)
    x_train = data.sample(10_000, seed=1000 * seed + 1)[0]
    x_val = data.sample(2_000, seed=1000 * seed + 2)[0]
    x_test = data.sample(10_000, seed=1000 * seed + 3)[0]
    out = []
    for depth in depths:
        torch.manual_seed(seed)
        flow = models.maf(2, layers=depth, hidden=hidden)
        Trainer(
            flow,
            x_train,
            x_val,
            steps=steps,
            batch_size=256,
            lr=3e-3,
            weight_decay=0.0,
            schedule="cosine",
            eval_every=max(steps // 4, 1),
            seed=seed,
            progress=False,
        ).fit()
        flow.eval()
        metrics = evaluate_toy(flow, dataset, x_test)
        metrics.update(coherence_metrics(flow, data, x_test, coherence_n, seed))
        with torch.no_grad():
            steps_out = [s[0].numpy() for s in flow.transform.forward_steps(x_test[:2000])]
        # ReversePermutation layers only swap the axes: keep the MAF layers' outputs.
        names = [type(t).__name__ for t in flow.transform.transforms]
        kept = [steps_out[0]] + [
            a for a, n in zip(steps_out[1:], names) if n != "ReversePermutation"
        ]
        out.append({"depth": depth, "flow": flow, "metrics": metrics, "steps": kept})
    return out


def run(out: Path, seeds: int = 1, quick: bool = False) -> dict[str, float]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    depths = [1, 2, 3] if quick else list(range(1, 11))
    steps = 150 if quick else 1500
    config = {
        "experiment": NAME,
        "dataset": "sine",
        "model": "maf",
        "hidden": 32,
        "depths": depths,
        "steps": steps,
        "seeds": seeds,
        "batch_size": 256,
        "lr": 3e-3,
        "coherence_n": 500 if quick else 2000,
    }
    coherence_n = config["coherence_n"]
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    per_seed = [fit_depths(depths, steps, seed, coherence_n=coherence_n) for seed in range(seeds)]
    metrics: dict[str, float] = {}
    keys = ("test_nll", "entropy_gap", "coherence", "coherence_stderr")
    keys += ("multimodality", "non_unimodality")
    for i, depth in enumerate(depths):
        for key in keys:
            values = np.array([runs[i]["metrics"][key] for runs in per_seed])
            metrics[f"{key}_depth{depth}"] = float(values.mean())
    metrics["true_entropy"] = per_seed[0][0]["metrics"]["true_entropy"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    first = per_seed[0]
    add_figure(
        out,
        "fig1_1_layers",
        plots.layer_steps_grid(
            [r["steps"] for r in first], [f"{r['depth']} layer(s)" for r in first]
        ),
        "Seed 000 Figure 1.1: the test data (first column) pushed through each MAF layer of "
        "flows with 1..N layers (rows).  Colour = the point's first coordinate in the data.",
    )
    add_figure(
        out,
        "nll_per_depth",
        plots.line_table_plot(
            depths,
            {
                "test NLL": [metrics[f"test_nll_depth{d}"] for d in depths],
                "true entropy": [metrics["true_entropy"]] * len(depths),
            },
            xlabel="layers",
            ylabel="nats",
        ),
        "Test NLL per depth against the entropy of the true density (the floor).",
    )
    rows = [
        [d]
        + [metrics[f"{k}_depth{d}"] for k in ("test_nll", "entropy_gap", "coherence")]
        + [metrics[f"{k}_depth{d}"] for k in ("coherence_stderr", "multimodality")]
        + [metrics[f"non_unimodality_depth{d}"]]
        for d in depths
    ]
    add_figure(
        out,
        "per_depth_table",
        plots.table_figure(
            ["layers", "test NLL", "gap", "coherence", "+- se", "multimodality", "non-unimod."],
            rows,
        ),
        "Per depth: test NLL and its gap to the true entropy (nats); coherence score = fraction "
        "of decoded typical-set base samples inside the data's 99% highest-density region; "
        "multimodality gain of the encoded test data (nats/example, 0 = unimodal); the thesis' "
        "non-unimodality (Student-t minus Gaussian fit, nats/dim: tail weight).",
    )
    add_figure(
        out,
        "coherence_per_depth",
        plots.metric_panels(
            depths,
            {
                "test NLL (nats)": {
                    "test NLL": [metrics[f"test_nll_depth{d}"] for d in depths],
                    "true entropy": [metrics["true_entropy"]] * len(depths),
                },
                "coherence score": {
                    "property 2": [metrics[f"coherence_depth{d}"] for d in depths],
                },
                "latent (non-)unimodality": {
                    "multimodality gain": [metrics[f"multimodality_depth{d}"] for d in depths],
                    "non-unimodality (thesis)": [
                        metrics[f"non_unimodality_depth{d}"] for d in depths
                    ],
                },
            },
            xlabel="layers",
        ),
        "Coherence and latent multimodality per depth beside the test NLL.",
    )
    write_report(out, title="Seed 000 Figure 1.1: inside flows of 1..N layers")
    return metrics
