"""A real browser opens a generated report: every figure loads and the metrics table is there.

Headless Chromium (Debian package ``chromium``) loads a copy of the report with a tiny inline
script that, after ``window.load``, counts the images that decoded (``complete && naturalWidth >
0``) and writes the count into the DOM; ``--dump-dom`` prints the DOM, which we parse. A control
copy with one deliberately broken image proves the check can fail.

With ``FLOWSCOPE_UPDATE_SCREENSHOT=1`` the test also refreshes docs/figures/report_screenshot.png
(off by default, so running the suite never dirties the tree).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_report import METRICS, build_run_dir

from flowscope.report import PNG_SIGNATURE, write_report

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "report_screenshot.png"
TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless browser test needs Chromium at /usr/bin/chromium (apt-get install chromium)",
)

CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.dataset.imagesOk = ok + '/' + imgs.length;
  var m = document.createElement('div');
  m.id = 'flowscope-check';
  m.textContent = 'loaded';
  document.body.appendChild(m);
});
</script>"""
BROKEN_IMG = '<img src="data:image/png;base64,iVBORw0KGgoAAAAN" alt="broken on purpose">'


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``args`` with an isolated profile and no network side traffic."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def _with_check(page: str, extra: str = "") -> str:
    assert page.count("</body>") == 1
    return page.replace("</body>", extra + CHECK_SCRIPT + "</body>")


def _dump(tmp: Path, name: str, page: str) -> str:
    path = tmp / name
    path.write_text(page, encoding="utf-8")
    # Virtual time lets the load event fire before the DOM is dumped, without a real wait.
    proc = _chromium(tmp, "--virtual-time-budget=5000", "--dump-dom", path.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _images_ok(dom: str) -> tuple[int, int]:
    assert 'id="flowscope-check"' in dom, "the load handler never ran"
    m = re.search(r'<body[^>]*\bdata-images-ok="(\d+)/(\d+)"', dom)
    assert m, dom[:500]
    return int(m.group(1)), int(m.group(2))


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    page = write_report(run).read_text(encoding="utf-8")
    n_img = page.count("<img ")
    assert n_img == 3

    dom = _dump(tmp_path, "checked.html", _with_check(page))
    assert _images_ok(dom) == (n_img, n_img)
    table = re.search(r'<table id="metrics">(.*?)</table>', dom, re.S)
    assert table, "metrics table missing from the rendered DOM"
    assert len(re.findall(r"<tr>", table.group(1))) == len(METRICS) + 1  # header + one per metric

    # Control: the same check reports a broken image as not loaded.
    dom_bad = _dump(tmp_path, "broken.html", _with_check(page, BROKEN_IMG))
    assert _images_ok(dom_bad) == (n_img, n_img + 1)


def test_report_screenshot(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path)
    report = write_report(run)
    shot = tmp_path / "shot.png"
    # No virtual time here: with it Chromium 156 captured the lower part of the viewport blank;
    # --screenshot already waits for the page to load.
    proc = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])  # IHDR: the first chunk after the signature
    assert (width, height) == (1200, 1600)
    assert len(data) > 50_000  # a blank page compresses to a few kB; a rendered report does not
    if os.environ.get("FLOWSCOPE_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
