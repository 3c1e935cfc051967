"""Figures for flows: density maps, per-layer pictures, sample grids, curves, histograms.

Every function builds a fresh ``matplotlib.figure.Figure`` (never ``pyplot``), so calling them
leaves no global figure state behind and works under any backend; save the result with
``fig.savefig(...)`` or :func:`flowscope.report.add_figure`. Plotting computes nothing about a
model beyond calling the function it is handed (``log_prob_fn``): the numbers come from the caller.

Arrays may be numpy arrays or torch tensors (detached and moved to the CPU here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "density_comparison",
    "samples_scatter",
    "layer_steps",
    "training_curves",
    "image_grid",
    "histograms",
    "confusion_matrix",
    "line_table_plot",
    "partition_scatter",
]

Bounds = tuple[float, float, float, float]
#: Strong, distinct colours for points (one per class or component).
_DOTS = colormaps["tab10"].colors


def _array(name: str, x: Any, ndim: int | None = None, last: int | None = None) -> np.ndarray:
    """``x`` as a float numpy array, checked for rank, trailing size and finiteness."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    if last is not None and a.shape[-1] != last:
        raise ValueError(f"{name}: expected shape (n, {last}), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(
            f"{name}: expected finite values, got {int((~np.isfinite(a)).sum())} NaN/inf"
        )
    return a


def _labels(name: str, labels: Any, n: int) -> np.ndarray:
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels)
    if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer) or (lab < 0).any():
        raise ValueError(
            f"{name}: expected {n} non-negative integer labels of shape ({n},), "
            f"got dtype {lab.dtype} shape {lab.shape}"
        )
    return lab


def _bounds(bounds: Any) -> Bounds:
    """Accept ``(xmin, xmax, ymin, ymax)`` or ``((xmin, xmax), (ymin, ymax))``."""
    flat = np.asarray(bounds, dtype=np.float64).reshape(-1)
    if (
        flat.shape != (4,)
        or not np.isfinite(flat).all()
        or flat[0] >= flat[1]
        or flat[2] >= flat[3]
    ):
        raise ValueError(
            "bounds: expected (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax, "
            f"got {bounds!r}"
        )
    return tuple(float(v) for v in flat)  # type: ignore[return-value]


def _square(ax: Axes, b: Bounds | None, title: str) -> None:
    if b is not None:
        ax.set_xlim(b[0], b[1])
        ax.set_ylim(b[2], b[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def _dot_colours(labels: np.ndarray) -> np.ndarray:
    return np.asarray([_DOTS[k % len(_DOTS)] for k in labels])


def _eval_density(name: str, fn: Callable[[Tensor], Any], b: Bounds, grid: int) -> np.ndarray:
    """``exp(fn(points))`` on a ``grid x grid`` mesh over ``b``, rows along y (for imshow)."""
    xs = np.linspace(b[0], b[1], grid)
    ys = np.linspace(b[2], b[3], grid)
    mx, my = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([mx.ravel(), my.ravel()], 1), dtype=torch.get_default_dtype())
    with torch.no_grad():
        out = fn(pts)
    lp = out.detach().cpu().numpy() if isinstance(out, Tensor) else np.asarray(out)
    lp = lp.astype(np.float64)
    if lp.shape != (grid * grid,):
        raise ValueError(f"{name}: expected an output of shape ({grid * grid},), got {lp.shape}")
    if np.isnan(lp).any():
        raise ValueError(
            f"{name}: returned {int(np.isnan(lp).sum())} NaN log-densities on the grid"
        )
    # -inf is a legitimate log-density (zero mass); exp maps it to 0.
    return np.exp(lp).reshape(grid, grid)


def density_comparison(
    data_xy: Any,
    log_prob_fn: Callable[[Tensor], Tensor],
    bounds: Any,
    true_log_prob: Callable[[Tensor], Tensor] | None = None,
    grid: int = 200,
) -> Figure:
    """Data histogram, learned density and (when known) true density, side by side.

    Args:
        data_xy: data points, shape ``(n, 2)``.
        log_prob_fn: maps points ``(m, 2)`` (CPU, default dtype) to ``ln p`` of shape ``(m,)``;
            called once, under ``torch.no_grad``, on a ``grid x grid`` mesh.
        bounds: ``(xmin, xmax, ymin, ymax)`` of the plotted square.
        true_log_prob: the data's true log-density, same signature (toy data sets know it).
        grid: mesh points per axis.
    """
    x = _array("data_xy", data_xy, ndim=2, last=2)
    b = _bounds(bounds)
    if not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid: expected an integer >= 2, got {grid!r}")
    panels = [("learned density", _eval_density("log_prob_fn", log_prob_fn, b, grid))]
    if true_log_prob is not None:
        panels.append(("true density", _eval_density("true_log_prob", true_log_prob, b, grid)))
    fig = Figure(figsize=(3.2 * (1 + len(panels)), 3.4), layout="constrained")
    axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
    axes[0].hist2d(x[:, 0], x[:, 1], bins=min(grid, 100), range=[b[:2], b[2:]], cmap="viridis")
    _square(axes[0], b, f"data (n={len(x)})")
    for ax, (title, dens) in zip(axes[1:], panels):
        ax.imshow(dens, origin="lower", extent=b, cmap="viridis", aspect="auto")
        _square(ax, b, title)
    return fig


def samples_scatter(
    x: Any, labels: Any = None, bounds: Any = None, title: str = "samples"
) -> Figure:
    """Scatter of 2-D points ``x (n, 2)``, coloured by integer ``labels (n,)`` when given."""
    a = _array("x", x, ndim=2, last=2)
    b = _bounds(bounds) if bounds is not None else None
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    if labels is not None:
        colour = {"c": _dot_colours(_labels("labels", labels, len(a)))}
    else:
        colour = {"color": _DOTS[0]}
    ax.scatter(a[:, 0], a[:, 1], s=4, alpha=0.7, linewidths=0, **colour)
    _square(ax, b, title)
    return fig


def layer_steps(
    steps: Sequence[Any],
    labels: Any = None,
    titles: Sequence[str] | None = None,
    max_cols: int = 6,
) -> Figure:
    """Data pushed through each transform in turn: one panel per intermediate output.

    The picture of seed 000 Figure 1.1 ("Inside a simple NF model"): ``steps[0]`` is the data,
    ``steps[i]`` the output of the i-th transform. Points keep one colour across panels so you
    can follow them: by ``labels`` when given, otherwise by their angle around the data's mean
    in ``steps[0]`` (a cyclic colour map), which shows how each layer tears or folds the plane.

    Args:
        steps: list of arrays, each ``(n, 2)`` with the same ``n``.
        labels: optional integer labels ``(n,)``.
        titles: optional panel titles, one per step (default "data", "layer 1", ...).
        max_cols: panels per row before wrapping.
    """
    if len(steps) == 0:
        raise ValueError("steps: expected at least one (n, 2) array, got an empty list")
    arrs = [_array(f"steps[{i}]", s, ndim=2, last=2) for i, s in enumerate(steps)]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError(
            f"steps: expected every array to hold {n} points, got {[len(a) for a in arrs]}"
        )
    if titles is not None and len(titles) != len(arrs):
        raise ValueError(f"titles: expected {len(arrs)} titles, got {len(titles)}")
    titles = (
        list(titles)
        if titles is not None
        else ["data"] + [f"layer {i}" for i in range(1, len(arrs))]
    )
    if labels is not None:
        colour: Any = _dot_colours(_labels("labels", labels, n))
        cmap = None
    else:
        centred = arrs[0] - arrs[0].mean(0)
        colour, cmap = np.arctan2(centred[:, 1], centred[:, 0]), "hsv"
    cols = min(len(arrs), max_cols)
    rows = math.ceil(len(arrs) / cols)
    fig = Figure(figsize=(2.4 * cols, 2.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, a, title in zip(axes, arrs, titles):
        ax.scatter(a[:, 0], a[:, 1], s=2, c=colour, cmap=cmap, linewidths=0)
        _square(ax, None, title)
    for ax in axes[len(arrs) :]:
        ax.set_axis_off()
    return fig


def training_curves(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Train and validation loss against step, learning rate on a twin axis.

    Args:
        records: one dict per logged step (the lines of ``metrics.jsonl``), with ``step``
            (or ``epoch``; else the record index), ``train_loss`` (or ``loss``), ``val_loss``,
            ``lr``; any key may be missing from any record (validation is logged less often).
    """

    def series(key: str, alias: str | None = None) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for i, r in enumerate(records):
            v = r.get(key, r.get(alias) if alias else None)
            if isinstance(v, (int, float)) and math.isfinite(v):
                xs.append(float(r.get("step", r.get("epoch", i))))
                ys.append(float(v))
        return xs, ys

    train, val, lr = series("train_loss", "loss"), series("val_loss"), series("lr")
    if not train[0] and not val[0]:
        raise ValueError(
            "records: expected records with 'train_loss' (or 'loss') or 'val_loss', got none"
        )
    xlabel = (
        "step"
        if any("step" in r for r in records)
        else "epoch"
        if any("epoch" in r for r in records)
        else "record"
    )
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    if train[0]:
        ax.plot(*train, color=_DOTS[0], lw=1.2, label="train loss")
    if val[0]:
        ax.plot(*val, color=_DOTS[1], lw=1.6, marker="o", ms=3, label="val loss")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats)")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if lr[0]:
        ax2 = ax.twinx()
        ax2.plot(*lr, color="0.45", lw=1, ls="--", label="learning rate")
        if min(lr[1]) > 0:
            ax2.set_yscale("log")
        ax2.set_ylabel("learning rate")
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    # Above the axes: inside them it would hide a curve on one of the two y scales.
    fig.legend(
        handles, names, loc="outside upper center", ncols=len(handles), fontsize=8, frameon=False
    )
    return fig


def _images(images: Any, nrow: int, captions: Sequence[str] | None) -> np.ndarray:
    """The checked inputs of :func:`image_grid` / :func:`image_montage` as floats in [0, 1]."""
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[1] not in (1, 3) or len(imgs) == 0:
        raise ValueError(f"images: expected shape (n >= 1, C in {{1, 3}}, H, W), got {imgs.shape}")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow: expected an integer >= 1, got {nrow!r}")
    if captions is not None and len(captions) != len(imgs):
        raise ValueError(f"captions: expected {len(imgs)} captions, got {len(captions)}")
    imgs = imgs.astype(np.float64) / 255.0 if imgs.dtype == np.uint8 else _array("images", imgs)
    return np.clip(imgs, 0.0, 1.0)


def image_grid(images: Any, nrow: int = 8, captions: Sequence[str] | None = None) -> Figure:
    """Images on a grid, each with an optional caption under it.

    Seed 000 prints ``ln p(x)`` and ``ln p(u)`` under each image; pass them as ``captions``.

    Args:
        images: ``(n, C, H, W)`` with ``C`` 1 or 3; uint8 in [0, 255] or float in [0, 1]
            (floats are clipped to it).
        nrow: images per row (the torchvision ``make_grid`` convention).
        captions: ``n`` strings.
    """
    imgs = _images(images, nrow, captions)
    cols = min(nrow, len(imgs))
    rows = math.ceil(len(imgs) / cols)
    extra = 0.35 if captions is not None else 0.0
    fig = Figure(figsize=(1.5 * cols, (1.5 + extra) * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= len(imgs):
            continue
        img = imgs[i].transpose(1, 2, 0)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        if captions is not None:
            # Axis is off, so the caption goes in as text below the image instead of an xlabel.
            ax.text(
                0.5, -0.04, captions[i], transform=ax.transAxes, ha="center", va="top", fontsize=7
            )
    return fig


def histograms(
    values: Mapping[str, Any], title: str = "", xlabel: str = "", bins: int = 40
) -> Figure:
    """Overlaid, density-normalised histograms of several named 1-D samples on shared bins."""
    if not values:
        raise ValueError("values: expected at least one name -> array entry, got an empty mapping")
    arrs = {k: _array(f"values[{k!r}]", v).ravel() for k, v in values.items()}
    both = np.concatenate(list(arrs.values()))
    edges = np.histogram_bin_edges(both, bins=bins)
    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, a) in enumerate(arrs.items()):
        ax.hist(
            a,
            bins=edges,
            density=True,
            alpha=0.45,
            color=_DOTS[i % 10],
            label=f"{name} (n={a.size})",
        )
        ax.hist(a, bins=edges, density=True, histtype="step", color=_DOTS[i % 10], lw=1.2)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def confusion_matrix(matrix: Any, class_names: Sequence[str], normalize: bool = True) -> Figure:
    """A ``(K, K)`` contingency table (rows: true class, columns: predicted), cells annotated.

    With ``normalize`` each row is divided by its sum, so cells read as per-class recall.
    """
    m = _array("matrix", matrix, ndim=2)
    k = len(class_names)
    if m.shape != (k, k):
        raise ValueError(f"matrix: expected shape ({k}, {k}) to match class_names, got {m.shape}")
    if normalize:
        sums = m.sum(1, keepdims=True)
        m = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    fig = Figure(figsize=(1.1 + 0.55 * k, 0.9 + 0.55 * k), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    # White text only on the dark end of the colour map, where black would be hard to read.
    threshold = 0.6 * (1.0 if normalize else max(float(m.max()), 1e-12))
    for i in range(k):
        for j in range(k):
            txt = f"{m[i, j]:.2f}" if normalize else f"{m[i, j]:g}"
            ax.text(
                j,
                i,
                txt,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if m[i, j] > threshold else "black",
            )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def line_table_plot(x: Any, ys: Mapping[str, Any], xlabel: str = "", ylabel: str = "") -> Figure:
    """Several named series against a shared ``x`` (shape ``(n,)``), one line each."""
    xa = _array("x", x, ndim=1)
    if not ys:
        raise ValueError("ys: expected at least one name -> series entry, got an empty mapping")
    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, y) in enumerate(ys.items()):
        ya = _array(f"ys[{name!r}]", y, ndim=1)
        if ya.shape != xa.shape:
            raise ValueError(f"ys[{name!r}]: expected shape {xa.shape} to match x, got {ya.shape}")
        ax.plot(xa, ya, marker="o", ms=3, color=_DOTS[i % 10], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _background_colours(k: int) -> ListedColormap:
    """Pale tints for ``k`` regions, each a hue no dot colour uses (seed 001, Figure 5.1 note).

    Dots use tab10 colours ``0..k-1``; region ``i`` gets a tint of tab10 colour ``(i + 5) % 10``,
    so for ``k <= 5`` no region shares a hue with any dot; beyond that hues repeat across
    components (never within one).
    """
    tints = []
    for i in range(k):
        rgb = np.asarray(to_rgb(_DOTS[(i + 5) % 10]))
        tints.append(0.3 * rgb + 0.7)  # mix with white: pale, so every dot stays visible
    return ListedColormap(tints)


def partition_scatter(
    grid_labels: Any,
    samples: Any,
    sample_labels: Any,
    bounds: Any,
    title: str = "samples and posterior partition",
) -> Figure:
    """Mixture-of-flows picture (seed 001 Figure 5.1b): posterior regions behind sampled dots.

    Args:
        grid_labels: ``(G_y, G_x)`` integer array, ``argmax_k q(z=k | x)`` on a regular mesh
            over ``bounds`` (row ``i`` at the i-th y value, as ``np.meshgrid`` lays it out).
        samples: ``(n, 2)`` points sampled from the mixture.
        sample_labels: ``(n,)`` the component each sample came from.
        bounds: ``(xmin, xmax, ymin, ymax)`` the mesh spans.
    """
    if isinstance(grid_labels, Tensor):
        grid_labels = grid_labels.detach().cpu().numpy()
    g = np.asarray(grid_labels)
    if g.ndim != 2 or not np.issubdtype(g.dtype, np.integer) or (g < 0).any():
        raise ValueError(
            f"grid_labels: expected a 2-D array of non-negative ints, got {g.dtype} {g.shape}"
        )
    s = _array("samples", samples, ndim=2, last=2)
    lab = _labels("sample_labels", sample_labels, len(s))
    b = _bounds(bounds)
    k = int(max(g.max(), lab.max() if lab.size else 0)) + 1
    fig = Figure(figsize=(4.4, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.imshow(
        g,
        origin="lower",
        extent=b,
        cmap=_background_colours(k),
        vmin=-0.5,
        vmax=k - 0.5,
        interpolation="nearest",
        aspect="auto",
    )
    ax.scatter(s[:, 0], s[:, 1], s=5, c=_dot_colours(lab), linewidths=0)
    _square(ax, b, title)
    return fig


def layer_steps_grid(rows: Sequence[Sequence[Any]], row_titles: Sequence[str]) -> Figure:
    """Seed 000 Figure 1.1 for several depths: row ``r`` shows the data and the output of each of
    the ``r``-th flow's transforms, in turn.

    Points keep one colour in every panel (their first coordinate in the data, on a continuous
    map), so one can follow how each layer moves the plane.

    Args:
        rows: ``rows[r][i]`` is an ``(n, 2)`` array: the data (``i = 0``) or the output of the
            ``i``-th transform of flow ``r``; all rows hold the same ``n`` data points.
        row_titles: one label per row (e.g. "1 layer").
    """
    if not rows or len(row_titles) != len(rows):
        raise ValueError(f"row_titles: expected {len(rows)} titles, got {len(row_titles)}")
    arrs = [
        [_array(f"rows[{r}][{i}]", a, ndim=2, last=2) for i, a in enumerate(row)]
        for r, row in enumerate(rows)
    ]
    cols = max(len(row) for row in arrs)
    colour = arrs[0][0][:, 0]
    fig = Figure(figsize=(1.6 * cols, 1.6 * len(arrs)), layout="constrained")
    axes = fig.subplots(len(arrs), cols, squeeze=False)
    for r, row in enumerate(arrs):
        for i in range(cols):
            ax = axes[r, i]
            if i >= len(row):
                ax.set_axis_off()
                continue
            a = row[i]
            ax.scatter(a[:, 0], a[:, 1], s=1, c=colour, cmap="viridis", linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 or i == 0:
                ax.set_title("data" if i == 0 else f"layer {i}", fontsize=8)
            if i == 0:
                ax.set_ylabel(row_titles[r], fontsize=8)
    return fig


# ------------------------------------------------------------------ latent coherence (seed 000)

__all__ += [
    "typical_set_figure",
    "grouped_bars",
    "score_curves",
    "metric_panels",
    "table_figure",
    "image_montage",
]


def _vline(ax: Axes, x: float | None, colour: str, style: str, label: str) -> None:
    if x is not None and math.isfinite(x):
        ax.axvline(x, color=colour, ls=style, lw=1.2, label=label)


def typical_set_figure(panels: Mapping[str, Any], bins: int = 50) -> Figure:
    """Two readings of "high-probability region" (seed 000 section 6.2), one column per model.

    Each value of ``panels`` (e.g. ``{"M_std": ts, "M_diag": ts}``) is a
    :class:`flowscope.analysis.coherence.TypicalSet` (or anything with its attributes
    ``base_log_pu``, ``data_log_pu``, ``band``, ``bound``, ``mode_log_pu``): histograms of
    ``ln p(u)`` for base samples and encoded data with vertical lines at the typical-set band
    edges, eq. 5.1's 2-sigma bound and the mode's ``ln p(u)``.  Top row: the full range, where
    the mode and the bound sit far from every sample in high dimension; bottom row: zoomed on
    the central 99% of the two samples.
    """
    if not panels:
        raise ValueError("panels: expected at least one name -> TypicalSet entry, got none")
    fig = Figure(figsize=(5.2 * len(panels), 6.4), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    for col, (name, ts) in enumerate(panels.items()):
        base = _array(f"panels[{name!r}].base_log_pu", ts.base_log_pu).ravel()
        data = _array(f"panels[{name!r}].data_log_pu", ts.data_log_pu).ravel()
        lo, hi = (float(v) for v in ts.band)
        for row, ax in enumerate(axes[:, col]):
            both = np.concatenate([base, data])
            if row == 0:
                marks = [v for v in (ts.bound, ts.mode_log_pu) if v is not None]
                span = (min([both.min(), *marks]), max([both.max(), *marks]))
            else:  # the central 99% of both samples: a few far outliers would flatten it
                span = tuple(np.quantile(both, [0.005, 0.995]))
            edges = np.linspace(span[0], span[1], bins + 1) if span[1] > span[0] else bins
            for j, (sample, label) in enumerate(((base, "base samples"), (data, "encoded data"))):
                ax.hist(sample, bins=edges, density=True, alpha=0.45, color=_DOTS[j], label=label)
            _vline(ax, lo, "black", "--", "typical-set band")
            _vline(ax, hi, "black", "--", "_band_high")  # a leading "_" keeps it out of legends
            if row == 0:
                _vline(ax, ts.bound, _DOTS[3], ":", "eq. 5.1 bound (2 sigma)")
                _vline(ax, ts.mode_log_pu, _DOTS[2], "-", "mode")
            ax.set_xlabel("ln p(u)")
            ax.set_yticks([])
            ax.set_title(f"{name}: {'full range' if row == 0 else 'zoom'}", fontsize=10)
        axes[0, col].legend(fontsize=7, loc="upper left")
    return fig


def grouped_bars(
    groups: Sequence[str],
    series: Mapping[str, Any],
    ylabel: str = "",
    title: str = "",
    reference: float | None = None,
    reference_label: str = "",
) -> Figure:
    """Bars of several named series side by side for each group (e.g. per-attribute SVM balanced
    accuracy for M_std and M_diag); ``reference`` draws a horizontal line (e.g. chance, 0.5)."""
    if not series:
        raise ValueError("series: expected at least one name -> values entry, got none")
    k, n = len(series), len(groups)
    fig = Figure(figsize=(max(4.0, 0.55 * n * max(k, 2) + 1.5), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / k
    for i, (name, values) in enumerate(series.items()):
        v = _array(f"series[{name!r}]", values, ndim=1)
        if v.shape != (n,):
            raise ValueError(
                f"series[{name!r}]: expected {n} values (one per group), got {v.shape}"
            )
        ax.bar(np.arange(n) + (i - (k - 1) / 2) * width, v, width, color=_DOTS[i % 10], label=name)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", lw=1, label=reference_label or None)
    ax.set_xticks(range(n), list(groups), rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def score_curves(
    x: Any, panels: Mapping[str, Any], xlabel: str = "", ylabel: str = "", ylim: Any = (0, 1)
) -> Figure:
    """One panel per name: every row of ``panels[name]`` (``(m, len(x))``, e.g. a detector's
    smile probability of one manipulated image per alpha) as a faint line, the median bold."""
    xa = _array("x", x, ndim=1)
    if not panels:
        raise ValueError("panels: expected at least one name -> (m, n) array entry, got none")
    fig = Figure(figsize=(3.4 * len(panels), 3.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, values) in zip(axes, panels.items()):
        v = _array(f"panels[{name!r}]", values, ndim=2)
        if v.shape[1] != xa.shape[0]:
            raise ValueError(
                f"panels[{name!r}]: expected {xa.shape[0]} columns to match x, got {v.shape[1]}"
            )
        for row in v:
            ax.plot(xa, row, color=_DOTS[0], alpha=0.15, lw=0.8)
        ax.plot(xa, np.median(v, 0), color="black", lw=2, label="median")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    return fig


def metric_panels(x: Any, panels: Mapping[str, Mapping[str, Any]], xlabel: str = "") -> Figure:
    """Side-by-side panels, each with its own y axis, of several series against a shared ``x``:
    ``panels[title][series] = (n,)`` (e.g. test NLL, coherence score and multimodality per
    depth, whose scales differ)."""
    xa = _array("x", x, ndim=1)
    if not panels:
        raise ValueError("panels: expected at least one title -> series mapping, got none")
    fig = Figure(figsize=(3.6 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, ys) in zip(axes, panels.items()):
        for i, (name, y) in enumerate(ys.items()):
            ya = _array(f"panels[{title!r}][{name!r}]", y, ndim=1)
            if ya.shape != xa.shape:
                raise ValueError(
                    f"panels[{title!r}][{name!r}]: expected shape {xa.shape}, got {ya.shape}"
                )
            ax.plot(xa, ya, marker="o", ms=3, color=_DOTS[i % 10], label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def table_figure(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> Figure:
    """A table drawn as a figure (the report shows figures and a flat metrics list; this puts a
    side-by-side comparison on the page).  Numbers are printed with 4 significant digits."""
    if not columns:
        raise ValueError("columns: expected at least one column name, got none")
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"rows[{i}]: expected {len(columns)} cells, got {len(row)}")

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return f"{v:.4g}" if math.isfinite(v) else str(v)
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    # Column widths follow the longest entry, so long row labels are not cut off.
    chars = [max([len(str(c))] + [len(r[j]) for r in text]) + 2 for j, c in enumerate(columns)]
    width = min(0.075 * sum(chars) + 0.4, 16.0)
    fig = Figure(figsize=(width, 0.5 + 0.25 * (len(rows) + 1)))
    ax = fig.subplots()
    ax.set_axis_off()
    if text:
        table = ax.table(
            cellText=text,
            colLabels=list(columns),
            colWidths=[c / sum(chars) for c in chars],
            loc="center",
            cellLoc="right",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1.0, 1.2)
        for (row, col), c in table.get_celld().items():
            if col == 0 and row > 0:  # row labels read better left-aligned
                c.get_text().set_horizontalalignment("left")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def image_montage(
    images: Any, nrow: int = 8, captions: Sequence[str] | None = None, pad: int = 2
) -> Figure:
    """Like :func:`image_grid` (same inputs), drawn as ONE picture with the captions as text
    under each tile: one Axes instead of one per image, so long manipulation strips (seed 000
    Figs. 5.5-5.8: rows of 21 images) render several times faster."""
    imgs = _images(images, nrow, captions)
    n, c, h, w = imgs.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    scale = 1.5 / w  # inches per montage pixel: tiles as large as image_grid's
    # Caption space below each tile: its lines of 7-point text (9 points of leading) in pixels.
    lines = max((s.count("\n") + 1 for s in captions), default=0) if captions else 0
    cap = math.ceil(lines * 9 / 72 / scale) + 2 if lines else 0
    canvas = np.ones((rows * (h + cap + pad) + pad, cols * (w + pad) + pad, 3))
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + cap + pad), pad + k * (w + pad)
        canvas[y : y + h, x : x + w] = (
            imgs[i].transpose(1, 2, 0) if c == 3 else imgs[i][0][..., None]
        )
    fig = Figure(figsize=(canvas.shape[1] * scale, canvas.shape[0] * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    if captions is not None:
        for i, text in enumerate(captions):
            r, k = divmod(i, cols)
            y, x = pad + r * (h + cap + pad) + h + 1, pad + k * (w + pad) + w / 2
            ax.text(x, y, text, ha="center", va="top", fontsize=7)
    return fig
