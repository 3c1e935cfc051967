"""One self-contained HTML page per run: header, metrics, figures with captions, config.

A run directory holds what a run produced::

    run_dir/
      config.yaml          the run's configuration (shown as YAML)
      metrics.json         flat {name: number} final metrics (the metrics table)
      metrics.jsonl        optional: one JSON record per logged step (the training curve)
      figures/*.png        figures, shown in sorted order
      figures/<name>.txt   optional caption of figures/<name>.png
      figures/captions.json  optional {name or file name: caption} (a .txt sidecar wins)

:func:`write_report` turns it into ``run_dir/report.html``: figures are embedded as base64
``data:`` URIs and the style is inline, so the page opens anywhere, offline, with no JavaScript.
The page is a pure function of the directory (its date is the newest input's modification time),
so ``flowscope report DIR`` regenerates it. Code that makes figures saves them with
:func:`add_figure` (or a :class:`Report`), which writes the PNG and its caption sidecar.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
from collections.abc import Iterator, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from . import plots
from .checkpoint import atomic_write

__all__ = ["Report", "add_figure", "write_report", "read_metrics_log", "REPORT_NAME"]

REPORT_NAME = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; background:#fff; color:var(--ink); line-height:1.5;
  font:15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, "Liberation Sans", sans-serif; }
main { max-width:1080px; margin:0 auto; padding:28px 32px 48px; }
header { border-bottom:2px solid var(--ink); padding-bottom:12px; margin-bottom:8px; }
h1 { font-size:26px; margin:0 0 6px; font-weight:600; }
h2 { font-size:19px; margin:30px 0 12px; padding-bottom:6px; border-bottom:1px solid var(--line); }
.meta { color:var(--muted); font-size:13px; margin:0; }
.meta span + span::before { content:"\\00b7"; margin:0 8px; }
nav { font-size:13px; margin:10px 0 0; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; }
table { border-collapse:collapse; font-size:14px; min-width:360px; }
th, td { text-align:left; padding:6px 14px; border-bottom:1px solid var(--line); }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-family:ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
tbody tr:nth-child(even) { background:#fbfcfd; }
figure { margin:0 0 22px; padding:14px; border:1px solid var(--line); border-radius:6px; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figcaption { margin-top:10px; color:var(--muted); font-size:14px; }
figcaption b { color:var(--ink); font-weight:600; margin-right:6px; }
pre { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:14px;
  overflow-x:auto; font:13px/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
.empty { color:var(--muted); font-style:italic; }
footer { margin-top:36px; color:var(--muted); font-size:12px; }
"""


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".png"):
        raise ValueError(
            "name: expected a file stem of letters, digits, '_', '-', '.' (no extension, no path),"
            f" got {name!r}"
        )


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    if getattr(fig.canvas, "manager", None) is not None:
        # A pyplot-managed figure: pyplot is already imported, so closing it costs nothing and
        # stops figures piling up in pyplot's registry.
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


def add_figure(run_dir: str | Path, name: str, fig: Figure, caption: str | None = None) -> Path:
    """Save ``fig`` as ``run_dir/figures/<name>.png`` (dpi 100, tight) and its caption sidecar.

    Args:
        run_dir: the run directory (created if missing).
        name: file stem, e.g. ``"density"``; figures appear in the report sorted by name, so a
            numeric prefix (``"01_density"``) fixes the order.
        fig: a matplotlib Figure (pyplot-managed figures are closed after saving).
        caption: text shown under the figure; written to ``figures/<name>.txt``.

    Returns:
        The path of the PNG.
    """
    _check_name(name)
    if not isinstance(fig, Figure):
        raise ValueError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
    folder = Path(run_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    _atomic_write(png, _png_bytes(fig))
    sidecar = folder / f"{name}.txt"
    if caption is not None:
        _atomic_write(sidecar, caption.encode("utf-8"))
    elif sidecar.exists():
        sidecar.unlink()  # a stale caption from an earlier figure of the same name would mislead
    return png


class Report:
    """A run directory seen as a report under construction.

    Example::

        rep = Report("runs/pinwheel")
        fig = plots.density_comparison(x, flow.log_prob, bounds)
        rep.add_figure("01_density", fig, "Learned density")
        rep.write(title="Pinwheel")
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def add_figure(self, name: str, fig: Figure, caption: str | None = None) -> Path:
        """See :func:`add_figure`."""
        return add_figure(self.run_dir, name, fig, caption)

    def write(self, title: str | None = None) -> Path:
        """See :func:`write_report`."""
        return write_report(self.run_dir, title)


# ----------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: expected valid JSON, got a parse error: {e}") from e


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def read_metrics_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (one JSON object per non-blank line)."""
    path = Path(path)
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: line {i}: expected a JSON object, got a parse error: {e}"
            ) from e
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: line {i}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return records


def _captions(folder: Path) -> dict[str, str]:
    path = folder / "captions.json"
    if not path.exists():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object name -> caption, got {type(data).__name__}"
        )
    return {Path(str(k)).stem: str(v) for k, v in data.items()}


def _figures(run_dir: Path) -> list[tuple[str, bytes, str | None]]:
    """``(name, png bytes, caption)`` for every PNG in ``run_dir/figures``, sorted by file name."""
    folder = run_dir / "figures"
    if not folder.is_dir():
        return []
    captions = _captions(folder)
    out = []
    for png in sorted(folder.glob("*.png")):
        data = png.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            raise ValueError(
                f"{png}: expected a PNG file (signature {PNG_SIGNATURE!r}), got {data[:8]!r}"
            )
        sidecar = png.with_suffix(".txt")
        caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else None
        out.append((png.stem, data, caption if caption is not None else captions.get(png.stem)))
    return out


# ---------------------------------------------------------------------------------- rendering


def _fmt(v: Any) -> tuple[str, bool]:
    """Display text of a metric value and whether it is a number (right-aligned)."""
    if isinstance(v, bool) or v is None or not isinstance(v, (int, float)):
        return ("" if v is None else str(v)), False
    if isinstance(v, int):
        return str(v), True
    if not math.isfinite(v):
        return str(v), True
    return (f"{v:.6g}" if v == 0 or 1e-4 <= abs(v) < 1e6 else f"{v:.4e}"), True


def _img(name: str, data: bytes, caption: str | None) -> str:
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    alt = html.escape(caption or name)
    cap = f"<b>{html.escape(name)}</b>" + (html.escape(caption) if caption else "")
    return (
        f'<figure id="fig-{html.escape(name)}"><img src="{src}" alt="{alt}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def _metrics_table(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return '<p class="empty">No metrics.json in this run.</p>'
    rows = []
    for k, v in _flatten(metrics):
        text, num = _fmt(v)
        cls = ' class="num"' if num else ""
        rows.append(f"<tr><td>{html.escape(k)}</td><td{cls}>{html.escape(text)}</td></tr>")
    return (
        '<table id="metrics"><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def _version() -> str:
    try:
        from . import __version__

        return __version__
    except ImportError:  # the package __init__ may be mid-refactor; the report still renders
        return "unknown"


def write_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` from the run directory's contents (see module docstring).

    Args:
        run_dir: an existing run directory.
        title: page title (default: the config's ``name``, else the directory name).

    Returns:
        The path of the written report.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
        ValueError: an input file is malformed (the message names it).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run_dir: expected an existing run directory, got {str(run_dir)!r}"
        )
    inputs = [
        p
        for p in (run_dir / "config.yaml", run_dir / "metrics.json", run_dir / "metrics.jsonl")
        if p.exists()
    ]

    config: Any = None
    if (run_dir / "config.yaml").exists():
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{run_dir / 'config.yaml'}: expected valid YAML, got: {e}") from e
    metrics = _read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else None
    if metrics is not None and not isinstance(metrics, dict):
        raise ValueError(
            f"{run_dir / 'metrics.json'}: expected a JSON object name -> number, "
            f"got {type(metrics).__name__}"
        )

    figures = []
    if (run_dir / "metrics.jsonl").exists():
        records = read_metrics_log(run_dir / "metrics.jsonl")
        if any(k in r for r in records for k in ("train_loss", "loss", "val_loss")):
            png = _png_bytes(plots.training_curves(records))
            figures.append(
                (
                    "training_curve",
                    png,
                    f"Loss per step from metrics.jsonl ({len(records)} records).",
                )
            )
    figures += _figures(run_dir)
    inputs += sorted((run_dir / "figures").glob("*")) if (run_dir / "figures").is_dir() else []

    if title is None:
        name = config.get("name") if isinstance(config, dict) else None
        title = str(name) if name else run_dir.resolve().name
    # The newest input's mtime, not "now": regenerating an unchanged run gives the same page.
    stamp = max((p.stat().st_mtime for p in inputs), default=run_dir.stat().st_mtime)
    date = _dt.datetime.fromtimestamp(stamp, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    config_text = (
        yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)
        if config is not None
        else None
    )
    page = _page(title, run_dir.resolve().name, date, metrics, figures, config_text)
    out = run_dir / REPORT_NAME
    _atomic_write(out, page.encode("utf-8"))
    return out


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
<header>
<h1>{title}</h1>
<p class="meta"><span>run: {run}</span><span>{date}</span><span>flowscope {version}</span></p>
<nav><a href="#sec-metrics">Metrics</a><a href="#sec-figures">Figures ({n_figures})</a>\
<a href="#sec-config">Config</a></nav>
</header>
<section id="sec-metrics"><h2>Metrics</h2>{metrics}</section>
<section id="sec-figures"><h2>Figures</h2>{figures}</section>
<section id="sec-config"><h2>Config</h2>{config}</section>
<footer>Generated by flowscope from {run}/; regenerate with <code>flowscope report DIR</code>.\
</footer>
</main>
</body>
</html>
"""


def _page(
    title: str,
    run: str,
    date: str,
    metrics: Mapping[str, Any] | None,
    figures: list[tuple[str, bytes, str | None]],
    config_text: str | None,
) -> str:
    """The HTML page; every piece of text from the run is escaped here or in the helpers."""
    empty = '<p class="empty">No {} in this run.</p>'
    return _PAGE.format(
        title=html.escape(title),
        css=_CSS,
        run=html.escape(run),
        date=html.escape(date),
        version=html.escape(_version()),
        n_figures=len(figures),
        metrics=_metrics_table(metrics),
        figures="".join(_img(*f) for f in figures) or empty.format("figures"),
        config=f"<pre>{html.escape(config_text)}</pre>"
        if config_text
        else empty.format("config.yaml"),
    )
