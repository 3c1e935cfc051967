"""Gap to the true entropy on held-out samples, by 2-D dataset, for RealNVP and NSF.

For each (dataset, model) one run is trained with :func:`flowscope.runs.train_run` (<= 100k
parameters); its test NLL is compared with the dataset's exact entropy ``H(p)``:
``gap = NLL_test - H(p)``, a held-out estimate of KL(p || q) >= 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from .. import plots
from ..report import add_figure, write_report
from ..runs import RunConfig, train_run

NAME = "toy-gap"
SUMMARY = (
    "Gap between test NLL and the true entropy for realnvp and nsf on 2-D toys (<=100k params)"
)

DATASETS = ("eight_gaussians", "pinwheel", "two_circles", "checkerboard")
# Constructor options of each row.  The realnvp row stays affine couplings on alternating
# halves; ActNorm before each coupling (Glow's, see models.realnvp), deeper and narrower
# conditioners and a higher learning rate cut its pinwheel gap (docs/training.md lists the
# probes).
MODELS = {
    "realnvp": {"layers": 20, "hidden": 32, "actnorm": True},
    "nsf": {"layers": 6, "hidden": 64, "bins": 10, "bound": 4.0},
}
# Optimizer steps, learning rate and gradient-norm clipping per model (AdamW, cosine, batch
# 512); each stays under 5 CPU minutes on one thread.  Clipping at 25 (about twice the median
# gradient norm of the realnvp row) keeps its rare loss spikes from undoing training, which
# made its pinwheel gap vary 0.044-0.062 over seeds without it (docs/training.md).
TRAINING = {
    "realnvp": {"steps": 14_000, "lr": 3e-3, "grad_clip": 25.0},
    "nsf": {"steps": 7_000, "lr": 2e-3, "grad_clip": None},
}
BATCH_SIZE = 512


def run(
    out: Path, seeds: int = 1, quick: bool = False, steps: int | None = None
) -> dict[str, float]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # ``steps`` (or ``quick``: 200) overrides every model's step count.
    override = steps or (200 if quick else None)
    training = {
        model: {**options, "steps": override or options["steps"]}
        for model, options in TRAINING.items()
    }
    datasets = DATASETS[:2] if quick else DATASETS
    config = {
        "experiment": NAME,
        "datasets": list(datasets),
        "models": MODELS,
        "training": training,
        "seeds": seeds,
        "batch_size": BATCH_SIZE,
        "schedule": "cosine",
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    metrics: dict[str, float] = {}
    rows = []
    for dataset in datasets:
        for model, options in MODELS.items():
            gaps, minutes = [], []
            for seed in range(seeds):
                cfg = RunConfig(
                    name=f"{model}-{dataset}",
                    model=model,
                    data=dataset,
                    model_options=options,
                    train={
                        "steps": training[model]["steps"],
                        "lr": training[model]["lr"],
                        "grad_clip": training[model]["grad_clip"],
                        "batch_size": BATCH_SIZE,
                        "eval_every": max(training[model]["steps"] // 10, 1),
                    },
                    n_train=50_000,
                    n_val=10_000,
                    n_test=50_000,
                    seed=seed,
                )
                m = train_run(cfg, out / "runs" / f"{model}-{dataset}-s{seed}", progress=False)
                gaps.append(m["entropy_gap"])
                minutes.append(m["train_cpu_minutes"])
            key = f"{model}_{dataset}"
            metrics[f"gap_{key}"] = float(np.mean(gaps))
            metrics[f"cpu_minutes_{key}"] = float(np.mean(minutes))
            metrics[f"params_{key}"] = m["params"]
            metrics[f"steps_{key}"] = m["steps"]
            metrics[f"test_nll_{key}"] = m["test_nll"]
            metrics[f"true_entropy_{dataset}"] = m["true_entropy"]
            rows.append(
                (dataset, model, float(np.mean(gaps)), m["params"], float(np.mean(minutes)))
            )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    fig = plots.line_table_plot(
        list(range(len(datasets))),
        {model: [metrics[f"gap_{model}_{d}"] for d in datasets] for model in MODELS},
        xlabel=" / ".join(f"{i}={d}" for i, d in enumerate(datasets)),
        ylabel="test NLL - H(p)  [nats]",
    )
    add_figure(
        out, "gaps", fig, "Gap to the true entropy per dataset (lower is better; 0 = exact)."
    )
    write_report(out, title="Gap to the true entropy on 2-D toys")
    return metrics
