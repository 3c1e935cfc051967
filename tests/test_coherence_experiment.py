"""Smoke tests of the coherence experiment and of the layers experiment's coherence columns
(``--quick`` sizes, in-process through the CLI), plus the new plot helpers' argument checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from flowscope import plots
from flowscope.cli import main
from flowscope.experiments.coherence import saturated_share


def _metrics(out: Path) -> dict[str, float]:
    assert (out / "report.html").is_file()
    return json.loads((out / "metrics.json").read_text())


def test_coherence_quick_writes_both_models_metrics(tmp_path: Path) -> None:
    out = tmp_path / "coherence"
    assert (
        main(["experiment", "coherence", "--quick", "--data", "synthfaces", "--out", str(out)]) == 0
    )
    m = _metrics(out)
    for p in ("std", "diag"):
        for key in (
            "test_bpd",
            "svm_balanced_accuracy_smiling",
            "svm_balanced_accuracy_glasses",
            "svm_support_smiling",
            "smile_monotonic_fraction",
            "smile_monotonic_fraction_meandiff",
            "classfit_accuracy_smiling",
            "studentt_accuracy_smiling",
            "mean_image_log_pu",
            "coherence_score",
            "typical_set_overlap",
            "manip_saturated",
            "manip_saturated_ends",
            "multimodality_smile_pos",
            "non_unimodality_smile_pos",
        ):
            assert f"{p}_{key}" in m, f"{p}_{key}"
            assert math.isfinite(m[f"{p}_{key}"]), f"{p}_{key}"
        for key in (
            "smile_monotonic_fraction",
            "coherence_score",
            "typical_set_overlap",
            "manip_saturated",
        ):
            assert 0.0 <= m[f"{p}_{key}"] <= 1.0
        assert m[f"{p}_multimodality_smile_pos"] >= 0.0
        # The mode of a Gaussian base is its most probable point: no sample can beat it.
        assert m[f"{p}_mean_image_log_pu"] >= m[f"{p}_base_log_pu_mean"]
    # Same architecture and seed, different base: M_diag has the base's extra 2 D parameters.
    dims = 3 * 16 * 16
    assert m["diag_params"] - m["std_params"] == 2 * dims
    assert 0.0 <= m["judge_real_score"] <= 1.0
    assert 0.0 <= m["real_saturated_share_max"] < 1.0
    # The experiment's Glows use the bounded (tanh) coupling scale, a documented departure.
    for tag in ("std", "diag"):
        options = yaml.safe_load((out / f"M_{tag}" / "config.yaml").read_text())["model_options"]
        assert (options["scale"], options["clamp"]) == ("tanh", 0.5)
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {
        "c0_summary",
        "c3_12_typical_set",
        "c4_20_detector_curves",
        "c6_01_coherence",
    } <= figures
    assert (out / "M_std" / "report.html").is_file() and (out / "M_diag" / "best").is_dir()


def test_layers_quick_has_coherence_per_depth(tmp_path: Path) -> None:
    out = tmp_path / "layers"
    assert main(["experiment", "layers", "--quick", "--out", str(out)]) == 0
    m = _metrics(out)
    for d in (1, 2, 3):
        for key in ("test_nll", "coherence", "multimodality", "non_unimodality"):
            assert math.isfinite(m[f"{key}_depth{d}"]), f"{key}_depth{d}"
        assert 0.0 <= m[f"coherence_depth{d}"] <= 1.0
        assert m[f"multimodality_depth{d}"] >= 0.0
    assert (out / "figures" / "per_depth_table.png").is_file()


def test_experiment_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "layers", "--data", "synthfaces", "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["experiment", "coherence", "--data", "cifar", "--out", str(tmp_path)]) == 2
    assert "data: expected one of" in capsys.readouterr().err


def test_new_plots_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="rows\\[0\\]"):
        plots.table_figure(["a", "b"], [[1.0]])
    with pytest.raises(ValueError, match="series"):
        plots.grouped_bars(["x", "y"], {"m": [1.0]})
    with pytest.raises(ValueError, match="columns"):
        plots.score_curves([0.0, 1.0], {"m": [[0.1, 0.2, 0.3]]})
    with pytest.raises(ValueError, match="panels"):
        plots.typical_set_figure({})
    with pytest.raises(ValueError, match="captions"):
        plots.image_montage(torch.zeros(3, 1, 4, 4), captions=["a"])


def test_saturated_share_counts_pixels_at_the_ends_of_the_range() -> None:
    x = torch.full((3, 1, 2, 2), 7.0)
    x[1, 0, 0, 0] = 0.0  # one pixel at the bottom of the range
    x[2] = torch.tensor([[255.0, 300.0], [float("nan"), 3.0]])  # top, beyond, non-finite
    assert saturated_share(x, 256).tolist() == [0.0, 0.25, 0.75]
