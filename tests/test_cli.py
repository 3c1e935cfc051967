"""The command line end to end (tiny runs) and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowscope.cli import main

FLOWSCOPE = [sys.executable, "-m", "flowscope.cli"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        FLOWSCOPE + args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
    )


def test_train_sample_evaluate_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--model",
            "realnvp",
            "--data",
            "moons",
            "--steps",
            "30",
            "--layers",
            "2",
            "--hidden",
            "16",
            "--batch-size",
            "128",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "report.html"):
        assert (out / name).is_file(), name
    assert (out / "best").is_dir() and (out / "last").is_dir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_nll", "true_entropy", "entropy_gap", "params"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["entropy_gap"] == pytest.approx(metrics["test_nll"] - metrics["true_entropy"])

    assert main(["sample", str(out), "--n", "50", "--output", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy", allow_pickle=False).shape == (50, 2)
    assert main(["evaluate", str(out), "--json", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["test_nll"] == pytest.approx(metrics["test_nll"], rel=1e-6)
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").is_file()


def test_train_from_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: y\nmodel: maf\ndata: eight_gaussians\nmodel_options: {layers: 1, hidden: 8}\n"
        "train: {steps: 10, batch_size: 64}\nn_train: 500\nn_val: 100\nn_test: 100\n"
    )
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert "maf" in (tmp_path / "r" / "config.yaml").read_text()


def test_experiment_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.split()[0] == "layers" for line in lines)
    assert all(len(line.split(None, 1)) == 2 for line in lines)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--model", "nosuchflow", "--data", "moons"], "model: expected one of"),
        (["train", "--config", "missing.yaml"], "config: no such file"),
        (["train", "--config", "bad.yaml"], "unknown key 'stepz'"),
        (["train", "--data", "nosuchdata"], "data: expected one of"),
        (["evaluate", "no_such_run"], "no such file"),
        (["experiment", "nosuchexperiment"], "experiment: expected one of"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "bad.yaml").write_text("model: realnvp\nstepz: 10\n")
    proc = _run(args, tmp_path)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("flowscope: error:") and needle in err[0]
    assert "Traceback" not in proc.stderr


def test_the_command_line_tunes_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr("flowscope.allocator.tune_cpu_allocator", lambda: calls.append(1) or True)
    assert main(["experiment", "--list"]) == 0
    assert calls == [1]
