"""Checkpoints: exact round trips, no pickle anywhere, atomic writes, clear mismatch errors."""

from __future__ import annotations

import json
import math
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from flowscope import Flow, checkpoint
from flowscope.checkpoint import (
    atomic_write,
    capture_rng_state,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from flowscope.distributions import DiagonalNormal
from flowscope.transforms import Affine, Compose


def _flow(dim: int = 3) -> Flow:
    return Flow(Compose(Affine(dim), Affine(dim)), DiagonalNormal(dim))


def _trained(dim: int = 3) -> tuple[Flow, torch.optim.Optimizer]:
    flow = _flow(dim)
    opt = torch.optim.AdamW(flow.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        flow.loss(torch.randn(16, dim) * 2 + 1).backward()
        opt.step()
    return flow, opt


def _files(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_round_trip_is_exact(tmp_path):
    flow, opt = _trained()
    extra = {
        "step": 3,
        "best": math.inf,
        "pair": (1, 2.5),
        "by_int": {0: torch.arange(4), 7: "seven"},
        "nested": {"t": torch.randn(2, 2, dtype=torch.float64), "xs": [1, None, True]},
        "arr": np.arange(3, dtype=np.int16),
    }
    config = {"model": "affine", "dim": 3}
    save_checkpoint(tmp_path / "ck", flow, opt, extra=extra, config=config)

    fresh = _flow()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1.0, weight_decay=0.0)
    meta = load_checkpoint(tmp_path / "ck", fresh, fresh_opt)

    for (k, a), b in zip(flow.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]  # lr 1e-2, wd 0.1, betas tuple
    for i, state in saved["state"].items():
        for name, t in state.items():
            assert torch.equal(loaded["state"][i][name], t), (i, name)
    got = meta["extra"]
    assert got["step"] == 3 and got["best"] == math.inf and got["pair"] == (1, 2.5)
    assert torch.equal(got["by_int"][0], torch.arange(4)) and got["by_int"][7] == "seven"
    assert torch.equal(got["nested"]["t"], extra["nested"]["t"])
    assert got["nested"]["xs"] == [1, None, True]
    assert got["arr"].dtype == np.int16 and got["arr"].tolist() == [0, 1, 2]
    assert meta["config"] == config and meta["model_class"] == "flowscope.flow.Flow"
    # The weights alone, e.g. for a command-line tool that only samples.
    assert torch.equal(load_weights(tmp_path / "ck")["base.loc"], flow.base.loc.detach())
    # The manifest is plain JSON, readable without flowscope.
    assert read_checkpoint(tmp_path / "ck")["config"] == config


def test_directory_holds_no_pickle_and_loading_never_unpickles(tmp_path, monkeypatch):
    flow, opt = _trained()
    save_checkpoint(tmp_path / "ck", flow, opt, extra={"rng": capture_rng_state()})
    names = _files(tmp_path / "ck")
    assert len(names) == 3 and "checkpoint.json" in names
    assert all(n == "checkpoint.json" or n.endswith(".safetensors") for n in names)
    for name in names:
        head = (tmp_path / "ck" / name).read_bytes()[:2]
        assert head[:1] != b"\x80", f"{name} starts like a pickle stream"
    json.loads((tmp_path / "ck" / "checkpoint.json").read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load tried to unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    fresh = _flow()
    load_checkpoint(tmp_path / "ck", fresh, torch.optim.AdamW(fresh.parameters()))


def test_atomic_writes_leave_no_temp_files_and_replace_old_generations(tmp_path):
    flow, opt = _trained()
    path = tmp_path / "ck"
    save_checkpoint(path, flow, opt)
    first = _files(path)
    save_checkpoint(path, flow, opt)
    second = _files(path)
    assert len(second) == 3 and set(first) & set(second) == {"checkpoint.json"}
    assert not [n for n in second if "tmp" in n]
    # Files are created under the umask like any other file (safetensors alone makes 0600).
    modes = {(path / n).stat().st_mode & 0o777 for n in second}
    assert len(modes) == 1


def test_a_save_killed_before_its_manifest_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    flow, opt = _trained()
    path = tmp_path / "ck"
    save_checkpoint(path, flow, opt, extra={"step": 1})
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with torch.no_grad():
        flow.base.loc.add_(100.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the manifest")

    monkeypatch.setattr(checkpoint, "_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, flow, opt, extra={"step": 2})
    assert len(_files(path)) == 5  # the new tensor files exist but nothing points at them
    monkeypatch.undo()

    fresh = _flow()
    assert load_checkpoint(path, fresh)["extra"] == {"step": 1}
    assert torch.equal(fresh.base.loc, before["base.loc"])
    save_checkpoint(path, flow, opt, extra={"step": 3})
    assert len(_files(path)) == 3  # the orphans of the interrupted save are gone


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def half_write(tmp):
        tmp.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, half_write)
    assert target.read_text() == "old" and _files(tmp_path) == ["f.txt"]


def test_other_architecture_raises_a_clear_value_error(tmp_path):
    flow, opt = _trained(dim=3)
    save_checkpoint(tmp_path / "ck", flow, opt)
    with pytest.raises(
        ValueError, match=r"shape mismatches \(6\): .*checkpoint \(3,\) vs model \(4,\)"
    ):
        load_checkpoint(tmp_path / "ck", _flow(dim=4))
    other = Flow(Compose(Affine(3)), DiagonalNormal(3))
    with pytest.raises(
        ValueError, match=r"unexpected keys \(2\): transform\.transforms\.1\.log_scale"
    ):
        load_checkpoint(tmp_path / "ck", other)
    with pytest.raises(
        ValueError,
        match=r"different architecture.*missing keys \(2\): 0.weight, 0.bias; unexpected keys "
        r"\(6\): base.loc, .*, \.\.\. and 1 more",
    ):
        load_checkpoint(tmp_path / "ck", nn.Sequential(nn.Linear(3, 3)))


def test_optimizer_mismatch_and_missing_state_raise(tmp_path):
    flow, opt = _trained()
    save_checkpoint(tmp_path / "with", flow, opt)
    save_checkpoint(tmp_path / "without", flow)
    fresh = _flow()
    two_groups = torch.optim.AdamW(
        [{"params": fresh.transform.parameters()}, {"params": fresh.base.parameters()}]
    )
    with pytest.raises(ValueError, match=r"optimizer: .*groups of sizes \[6\], .* \[4, 2\]"):
        load_checkpoint(tmp_path / "with", fresh, two_groups)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "without", fresh, torch.optim.AdamW(fresh.parameters()))


def test_bad_paths_and_values(tmp_path):
    with pytest.raises(FileNotFoundError, match="path_dir: .*no such directory"):
        load_checkpoint(tmp_path / "nope", _flow())
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "checkpoint.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a flowscope-checkpoint manifest"):
        read_checkpoint(tmp_path / "fake")
    with pytest.raises(ValueError, match="extra/when: expected JSON-able data"):
        save_checkpoint(tmp_path / "ck", _flow(), extra={"when": object()})


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002 - the global generator is what a model's code may use
    torch.randn(3), random.random(), np.random.rand()  # noqa: NPY002
    save_checkpoint(tmp_path / "ck", _flow(), extra={"rng": capture_rng_state()})
    expected = (torch.randn(4), random.random(), np.random.rand(2))  # noqa: NPY002
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)  # noqa: NPY002
    restore_rng_state(load_checkpoint(tmp_path / "ck")["extra"]["rng"])
    got = (torch.randn(4), random.random(), np.random.rand(2))  # noqa: NPY002
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]
    assert np.array_equal(got[2], expected[2])


def test_tied_weights_are_saved(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    model[1].weight = model[0].weight  # shared storage: safetensors alone refuses this
    save_checkpoint(tmp_path / "ck", model)
    fresh = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    load_checkpoint(tmp_path / "ck", fresh)
    assert torch.equal(fresh[1].weight, model[0].weight)
