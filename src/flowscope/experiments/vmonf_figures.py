"""Seed 001's figures for the VMoNF experiments (plotting only; computing is in ``vmonf.py``).

* Figure 5.1 / 5.2 / 5.3: (a) the data (or the labeled points), (b) samples coloured by their
  component over the plane coloured by ``argmax_k q(z = k | x)``.
* Figure 5.4: one row of samples per component (MNIST), rows in the order of the matched digit.
* The normalized contingency table of the test set, clusters ordered by the best matching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plots
from ..report import add_figure


@torch.no_grad()
def _partition(m: Any, bounds: tuple[float, float, float, float], grid: int = 200) -> np.ndarray:
    x0, x1, y0, y1 = bounds
    gx, gy = np.linspace(x0, x1, grid), np.linspace(y0, y1, grid)
    mesh = torch.tensor(np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2), dtype=torch.float32)
    return torch.cat([m.predict(c) for c in mesh.split(10_000)]).reshape(grid, grid).numpy()


def _toy(out: Path, cfg: Any, keep: dict[str, Any]) -> None:
    m, split, info = keep["m"], keep["split"], keep["info"]
    b = split.bounds
    torch.manual_seed(0)
    with torch.no_grad():
        xs, zs = m.sample(3000)
    fig = plots.samples_scatter(split.x_test[:3000], split.y_test[:3000], b, "(a) data")
    add_figure(out, "01_data", fig, "(a) Test data coloured by true class.")
    part = plots.partition_scatter(_partition(m, b), xs, zs, b, "(b) samples, partition of q")
    semi = "labeled_x" in info
    if semi:  # seed 001 Figure 5.3: the labeled points on top, as black-edged markers
        lx, ly = info["labeled_x"].numpy(), info["labeled_y"].numpy()
        ax = part.axes[0]
        for c in np.unique(ly):
            sel = ly == c
            ax.scatter(lx[sel, 0], lx[sel, 1], s=40, marker="*^so"[c % 4], c="k",
                       label=f"labeled, class {c}")  # fmt: skip
        ax.legend(fontsize=7, loc="upper right")
    caption = (
        "(b) Samples from the learned mixture, each dot coloured by the component it was drawn "
        "from; background: the component with the largest posterior probability q(z|x) (seed "
        f"001 Figure {'5.3' if semi else ('5.1' if cfg.data == 'pinwheel' else '5.2')})."
    )
    if semi:
        caption += " Black markers: the labeled points (16 per circle)."
    add_figure(out, "02_partition", part, caption)


def _mnist(out: Path, cfg: Any, keep: dict[str, Any], order: list[int]) -> None:
    m = keep["m"]
    torch.manual_seed(0)
    with torch.no_grad():
        rows = m.components.sample_all(10, cfg.sample_temperature)  # (K, 10, 784)
    grid = rows[order].reshape(-1, 1, 28, 28).clamp(0, 1)
    fig = plots.image_grid(grid, nrow=10)
    add_figure(
        out, "01_samples", fig,
        f"Samples from the fitted mixture components (seed 001 Figure 5.4), one row per "
        f"component, rows in the order of the digit each component was matched to (0 at the "
        f"top); base temperature {cfg.sample_temperature}.",
    )  # fmt: skip


def draw(out: Path, cfg: Any, keep: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Every figure of one experiment, from seed 0's model (``keep``) and all seeds' ``rows``."""
    from .vmonf import table

    m, split, pred = keep["m"], keep["split"], keep["pred"]
    matrix, order = table(m, split, pred)
    if cfg.data == "mnist":
        _mnist(out, cfg, keep, order)
    else:
        _toy(out, cfg, keep)
    fig = plots.confusion_matrix(matrix, [str(i) for i in range(m.num_components)])
    fig.axes[0].set_xlabel("cluster (matched to the class of the same column)")
    fig.axes[0].set_ylabel("true class")
    add_figure(
        out, "03_contingency", fig,
        "Normalized contingency table on the test set (seed 0): row i shows how class i is "
        "spread over the clusters; columns are the clusters ordered by the best one-to-one "
        f"matching (Hungarian), so the diagonal is what the matched accuracy counts. Columns "
        f"are clusters {order}.",
    )  # fmt: skip
