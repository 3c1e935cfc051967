"""Reverse-KL fitting of flows to the unnormalized energies U1-U4 (Rezende & Mohamed 2015, Fig. 3).

For each energy a planar flow and a radial flow (and an NSF as a reference) are fitted by
minimizing the variational free energy ``F(q) = E_q[log q(x) + U(x)]`` through the one Trainer
(:mod:`flowscope.variational`); lower is better.  U1 is a proper density, so with its ``log Z``
(quadrature) the exact reverse KL ``KL(q || p) = F(q) + log Z >= 0`` is reported too.  U2-U4 are
flat along ``z1`` (improper on the plane: no normalizer), so for them only ``F(q)`` is meaningful
-- ``F(q) + log Z_box`` with the normalizer of the plotting box can go below 0 when q puts mass
outside the box, which is why it is not reported as a KL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import models, plots
from ..data.energies import ENERGIES, log_normalizer
from ..report import add_figure, write_report
from ..variational import fit_reverse_kl

NAME = "energies"
SUMMARY = (
    "Reverse-KL fits of planar, radial and NSF flows to the energies U1-U4 (Rezende & Mohamed)"
)

FLOWS = {
    "planar": lambda: models.planar(2, layers=32),
    "radial": lambda: models.radial(2, layers=32),
    "nsf": lambda: models.nsf(2, layers=4, hidden=32),
}


@torch.no_grad()
def free_energy(flow, energy, n: int = 20_000) -> tuple[float, float]:
    """Monte Carlo ``F(q) = E_q[log q + U]`` and its standard error from ``n`` flow samples."""
    x, log_q = flow.sample_and_log_prob(n)
    terms = (log_q + energy(x)).double()
    return float(terms.mean()), float(terms.std() / math.sqrt(n))


def run(
    out: Path, seeds: int = 1, quick: bool = False, steps: int | None = None
) -> dict[str, float]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = steps or (300 if quick else 6000)
    energies = ["u1", "u2"] if quick else list(ENERGIES)
    config = {
        "experiment": NAME,
        "flows": list(FLOWS),
        "energies": energies,
        "steps": steps,
        "batch_size": 256,
        "lr": 1e-3 if not quick else 3e-3,
        "anneal_steps": steps // 2,
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    metrics: dict[str, float] = {}
    bounds = (-4.0, 4.0, -4.0, 4.0)
    for name in energies:
        energy = ENERGIES[name]
        log_z = log_normalizer(name)
        panels = {}
        for flow_name, build in FLOWS.items():
            values = []
            for seed in range(seeds):
                torch.manual_seed(seed)
                flow = build()
                fit_reverse_kl(
                    flow,
                    lambda x, e=energy: -e(x),
                    steps=steps,
                    batch_size=256,
                    lr=config["lr"],
                    anneal_steps=config["anneal_steps"],
                    seed=seed,
                    progress=False,
                    weight_decay=0.0,
                    schedule="cosine",
                    grad_clip=10.0,
                )
                values.append(free_energy(flow, energy)[0])
            metrics[f"free_energy_{name}_{flow_name}"] = float(np.mean(values))
            if name == "u1":
                metrics[f"kl_{name}_{flow_name}"] = float(np.mean(values)) + log_z
            with torch.no_grad():
                panels[flow_name] = flow.sample(20_000).numpy()
        fig = plots.density_comparison(
            panels["nsf"][:5000],
            lambda x, e=energy, z=log_z: -e(x) - z,
            bounds,
        )
        add_figure(out, f"{name}_target", fig, f"{name.upper()}: NSF samples and exp(-U)/Z.")
        for flow_name in ("planar", "radial"):
            add_figure(
                out,
                f"{name}_{flow_name}",
                plots.samples_scatter(
                    panels[flow_name][:5000],
                    bounds=bounds,
                    title=f"{name.upper()}: {flow_name} (32 layers)",
                ),
                f"Samples of the fitted {flow_name} flow; free energy F(q) = "
                f"{metrics[f'free_energy_{name}_{flow_name}']:.3f} nats.",
            )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(out, title="Reverse-KL fits to the energies U1-U4")
    return metrics
