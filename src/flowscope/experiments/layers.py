"""Seed 000 Figure 1.1: flows of 1..10 layers fitted to the same 2-D data, every intermediate
output shown, with test NLL and the gap to the true density per depth.

The seed's script fitted MAF stacks of 1..10 layers to a noisy sine curve
(shared/REFERENCES.md); the true density of that curve is known exactly, so the gap
``test NLL - H(p)`` (a KL(p || q) estimate) is reported per depth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import models, plots
from ..data import toy2d
from ..report import add_figure, write_report
from ..runs import evaluate_toy
from ..train import Trainer

NAME = "layers"
SUMMARY = (
    "Seed 000 Figure 1.1: MAF of 1..10 layers on a noisy sine; every layer's output, NLL and gap"
)


def fit_depths(
    depths: list[int], steps: int, seed: int, dataset: str = "sine", hidden: int = 32
) -> list[dict]:
    """Train one MAF per depth; returns per depth the flow, its metrics and its layer outputs."""
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
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    per_seed = [fit_depths(depths, steps, seed) for seed in range(seeds)]
    metrics: dict[str, float] = {}
    for i, depth in enumerate(depths):
        for key in ("test_nll", "entropy_gap"):
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
    write_report(out, title="Seed 000 Figure 1.1: inside flows of 1..N layers")
    return metrics
