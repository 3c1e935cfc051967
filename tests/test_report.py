"""The HTML run report (flowscope.report) and every plot function (flowscope.plots)."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import yaml
from matplotlib.figure import Figure

import flowscope
from flowscope import plots
from flowscope.report import PNG_SIGNATURE, Report, add_figure, read_metrics_log, write_report

BOUNDS = (-4.0, 4.0, -4.0, 4.0)
METRICS = {
    "test_nll": 2.71828,
    "val_nll": 2.80123,
    "bits_per_dim": 1.2e-5,
    "epochs": 30,
    "accuracy<&>": 0.5,
}


def ring_log_prob(x: torch.Tensor) -> torch.Tensor:
    """A ring of 8 Gaussians (sigma 0.35, radius 2.5): an analytic stand-in for a trained flow."""
    angles = torch.arange(8, dtype=x.dtype) * (2 * math.pi / 8)
    centres = 2.5 * torch.stack([angles.cos(), angles.sin()], 1)
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    s2 = 0.35**2
    return torch.logsumexp(-d2 / (2 * s2), 1) - math.log(8 * 2 * math.pi * s2)


def ring_samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 8, n)
    a = k * 2 * np.pi / 8
    return 2.5 * np.stack([np.cos(a), np.sin(a)], 1) + 0.35 * rng.standard_normal((n, 2)), k


def layer_demo(x: np.ndarray, layers: int = 3) -> list[np.ndarray]:
    """Data through alternating shears and a tanh squash: a cheap stand-in for a flow's layers."""
    steps = [x]
    for i in range(layers):
        y = steps[-1].copy()
        y[:, i % 2] += 0.6 * np.sin(y[:, (i + 1) % 2])
        steps.append(2.5 * np.tanh(y / 2.5) if i == layers - 1 else y)
    return steps


def build_run_dir(root: Path) -> Path:
    """A fake finished run: config, final metrics, a metrics log and two captioned figures."""
    run = root / "pinwheel_run"
    run.mkdir()
    config = {
        "name": "Pinwheel <demo> & co",
        "model": {"kind": "realnvp", "layers": 6},
        "train": {"lr": 5e-4, "weight_decay": 0.1, "steps": 300},
        "seed": 0,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "metrics.json").write_text(json.dumps(METRICS))
    lines = [
        json.dumps(
            {"step": s, "train_loss": 4 * math.exp(-s / 80) + 2.7, "lr": 5e-4 * 0.8 ** (s // 100)}
        )
        for s in range(0, 300, 10)
    ]
    lines += [
        json.dumps({"step": s, "val_loss": 4 * math.exp(-s / 80) + 2.8}) for s in range(0, 300, 50)
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n\n")
    x, k = ring_samples(600)
    rep = Report(run)
    rep.add_figure(
        "01_density",
        plots.density_comparison(x, ring_log_prob, BOUNDS, ring_log_prob, grid=60),
        "Data, learned density & true density",
    )
    rep.add_figure("02_layers", plots.layer_steps(layer_demo(x)), None)
    (run / "figures" / "captions.json").write_text(
        json.dumps({"02_layers": "Data through each layer"})
    )
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = build_run_dir(tmp_path_factory.mktemp("report"))
    path = write_report(run)
    return run, path.read_text(encoding="utf-8")


def test_report_is_self_contained(report: tuple[Path, str]) -> None:
    run, page = report
    assert (run / "report.html").exists()
    assert page.startswith("<!DOCTYPE html>")
    for forbidden in ("http://", "https://", 'src="file', "<link", "<script", "url("):
        assert forbidden not in page, forbidden
    imgs = re.findall(r"<img\b[^>]*>", page)
    assert len(imgs) == 3  # training curve + two figures
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert m, tag[:80]
        data = base64.b64decode(m.group(1), validate=True)
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 1000


def test_report_content(report: tuple[Path, str]) -> None:
    run, page = report
    table = re.search(r'<table id="metrics">(.*?)</table>', page, re.S)
    assert table
    for name in METRICS:
        assert (
            f"<td>{name.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</td>"
            in table.group(1)
        )
    assert (
        ">2.71828<" in table.group(1)
        and ">30<" in table.group(1)
        and ">1.2000e-05<" in table.group(1)
    )
    # Captions from a sidecar, from captions.json, and the training curve's own.
    assert "Data, learned density &amp; true density" in page
    assert "Data through each layer" in page
    assert "metrics.jsonl (36 records)" in page
    # Title from the config's name, escaped; version in the header; config as YAML in <pre>.
    assert "<h1>Pinwheel &lt;demo&gt; &amp; co</h1>" in page
    assert f"flowscope {flowscope.__version__}" in page
    pre = re.search(r"<pre>(.*?)</pre>", page, re.S)
    assert pre and "weight_decay: 0.1" in pre.group(1) and "kind: realnvp" in pre.group(1)
    # Figures in sorted order.
    assert (
        page.index('id="fig-training_curve"')
        < page.index('id="fig-01_density"')
        < page.index('id="fig-02_layers"')
    )


def test_report_is_pure_and_title_override(report: tuple[Path, str]) -> None:
    run, page = report
    assert write_report(run).read_text(encoding="utf-8") == page
    assert "<h1>Other &amp; title</h1>" in write_report(run, title="Other & title").read_text()
    write_report(run)  # leave the module fixture's page as it was


def test_report_minimal_and_errors(tmp_path: Path) -> None:
    page = write_report(tmp_path).read_text()
    assert "No metrics.json" in page and "No figures" in page and "No config.yaml" in page
    assert "<img" not in page
    with pytest.raises(FileNotFoundError, match="run_dir"):
        write_report(tmp_path / "missing")
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="metrics.json"):
        write_report(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics_log(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        write_report(tmp_path)


def test_add_figure(tmp_path: Path) -> None:
    fig = plots.samples_scatter(np.zeros((3, 2)))
    png = add_figure(tmp_path, "a", fig, "cap")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "figures" / "a.txt").read_text() == "cap"
    add_figure(tmp_path, "a", fig)  # re-saving without a caption drops the stale one
    assert not (tmp_path / "figures" / "a.txt").exists()
    for bad in ("../x", "a/b", "", "x.png"):
        with pytest.raises(ValueError, match="name"):
            add_figure(tmp_path, bad, fig)
    with pytest.raises(ValueError, match="fig"):
        add_figure(tmp_path, "b", "not a figure")  # type: ignore[arg-type]


def test_plot_functions_smoke() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 2))
    lab = rng.integers(0, 3, 50)
    mesh = np.indices((20, 20)).sum(0) % 3
    figs = [
        plots.density_comparison(x, ring_log_prob, ((-3, 3), (-3, 3)), grid=16),
        plots.samples_scatter(torch.as_tensor(x), labels=lab, bounds=BOUNDS, title="s"),
        plots.layer_steps([x, x * 2], labels=lab, titles=["a", "b"]),
        plots.layer_steps([x] * 8, max_cols=3),
        plots.training_curves(
            [{"step": 1, "loss": 3.0, "lr": 1e-3}, {"step": 2, "loss": 2.0, "val_loss": 2.5}]
        ),
        plots.image_grid(
            rng.integers(0, 255, (5, 3, 8, 8), dtype=np.uint8),
            nrow=3,
            captions=[f"ln p(x)={v:.1f}" for v in range(5)],
        ),
        plots.image_grid(torch.rand(2, 1, 8, 8), nrow=4),
        plots.histograms(
            {"a": rng.standard_normal(100), "b": rng.standard_normal(80) + 1}, "h", "ln p"
        ),
        plots.confusion_matrix(np.array([[5, 1], [0, 4]]), ["x", "y"]),
        plots.confusion_matrix(np.zeros((2, 2)), ["x", "y"], normalize=False),
        plots.line_table_plot([1, 2, 3], {"ours": [1, 2, 3], "theirs": [2, 2, 2]}, "n", "s"),
        plots.partition_scatter(mesh, x, lab, BOUNDS),
    ]
    for f in figs:
        assert isinstance(f, Figure)
        assert len(f.axes) >= 1
        buf = io.BytesIO()
        f.savefig(buf, format="png", dpi=20)  # drawing is where layout/colour errors surface
        assert buf.getvalue().startswith(PNG_SIGNATURE)
    assert plt.get_fignums() == before  # no pyplot state leaked
    assert matplotlib.get_backend().lower() == "agg"
    # Captions go under images; the density panels include the true one when given.
    assert any(t.get_text() == "ln p(x)=4.0" for a in figs[5].axes for t in a.texts)
    assert len(figs[0].axes) == 2
    assert [a.get_title() for a in figs[2].axes] == ["a", "b"]


def test_plot_partition_colours_differ_from_dots() -> None:
    x = np.zeros((5, 2))
    lab = np.arange(5)
    fig = plots.partition_scatter(np.arange(5)[None].repeat(4, 0), x, lab, BOUNDS)
    ax = fig.axes[0]
    bg = ax.images[0].get_cmap().colors
    dots = ax.collections[0].get_facecolors()[:, :3]
    # No background tint shares a hue with any dot colour (seed 001 Figure 5.1 note).
    for c in bg:
        tint_hue = (np.asarray(c[:3]) - 0.7) / 0.3
        assert np.abs(dots - tint_hue).max(1).min() > 0.05


def test_plot_errors() -> None:
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="data_xy"):
        plots.density_comparison(np.zeros((4, 3)), ring_log_prob, BOUNDS)
    with pytest.raises(ValueError, match="bounds"):
        plots.density_comparison(x, ring_log_prob, (1, 0, 0, 1))
    with pytest.raises(ValueError, match="log_prob_fn"):
        plots.density_comparison(x, lambda p: p[:, 0] * float("nan"), BOUNDS, grid=4)
    with pytest.raises(ValueError, match="log_prob_fn"):
        plots.density_comparison(x, lambda p: p, BOUNDS, grid=4)
    with pytest.raises(ValueError, match="labels"):
        plots.samples_scatter(x, labels=np.array([0.5, 1, 2, 3]))
    with pytest.raises(ValueError, match="steps"):
        plots.layer_steps([x, np.zeros((3, 2))])
    with pytest.raises(ValueError, match="records"):
        plots.training_curves([{"step": 1, "lr": 0.1}])
    with pytest.raises(ValueError, match="images"):
        plots.image_grid(np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="matrix"):
        plots.confusion_matrix(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"ys\['b'\]"):
        plots.line_table_plot([1, 2], {"b": [1, 2, 3]})
    with pytest.raises(ValueError, match="values"):
        plots.histograms({"a": [1.0, float("inf")]})
