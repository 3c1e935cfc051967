"""The one trainer: schedules, evaluation, NaN guard, checkpoints, exact resume, reverse KL."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import flowscope.train as train_module
from flowscope import Flow
from flowscope.checkpoint import load_checkpoint, read_checkpoint
from flowscope.distributions import DiagonalNormal, StandardNormal
from flowscope.schedules import CosineSchedule, PlateauSchedule
from flowscope.train import TrainConfig, Trainer, TrainingDiverged
from flowscope.transforms import Affine, Compose
from flowscope.variational import ReverseKL, fit_reverse_kl

WORKER = Path(__file__).with_name("_resume_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("_resume_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flow(dim: int = 2) -> Flow:
    return Flow(Compose(Affine(dim)), DiagonalNormal(dim))


class Constant(nn.Module):
    """Loss = a constant (gradients zero): the plateau schedule never sees an improvement."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(3))
        self.batches: list = []

    def loss(self, batch):
        self.batches.append(batch)
        return (self.p * 0).sum() + 1.0


# ----------------------------------------------------------------------------- schedules


def test_plateau_schedule_decays_exactly_as_seed_000_specifies():
    s = PlateauSchedule([1e-3, 2e-3], patience=24, factor=0.8, growth=1.3, min_lr=1e-5)
    assert s.observe(1.0) is False  # first check: an improvement over +inf
    decays = [i for i in range(1, 200) if s.observe(1.0)]
    # N_c = 24, then 24*1.3 = 31.2 (32 bad checks), 40.56 (41), 52.728 (53)
    assert decays == [24, 24 + 32, 24 + 32 + 41, 24 + 32 + 41 + 53]
    assert s.lrs == pytest.approx([1e-3 * 0.8**4, 2e-3 * 0.8**4], rel=1e-12)
    assert s.patience == pytest.approx(24 * 1.3**4)

    # An improvement resets the count of bad checks.
    s = PlateauSchedule([1e-3], patience=3)
    assert [s.observe(v) for v in (5.0, 6.0, 6.0, 4.0, 6.0, 6.0, 6.0)] == [False] * 6 + [True]


def test_plateau_schedule_floor_is_min_lr_and_not_inverted():
    # The seed's inverted test made the FIRST decay drop 1e-3 straight to 1e-5.
    s = PlateauSchedule([1e-3, 1.2e-5, 5e-6], patience=1, growth=1.0, min_lr=1e-5)
    s.observe(1.0)
    assert s.observe(1.0)
    assert s.lrs == pytest.approx([8e-4, 1e-5, 5e-6])  # 9.6e-6 floors to 1e-5; 5e-6 untouched
    for _ in range(100):
        s.observe(1.0)
    assert s.lrs[0] == pytest.approx(1e-5) and min(s.lrs[:2]) >= 1e-5 and s.lrs[2] == 5e-6


def test_plateau_schedule_state_round_trip():
    a = PlateauSchedule([1e-3], patience=2)
    for v in (1.0, 2.0, 2.0, 2.0):
        a.observe(v)
    b = PlateauSchedule([1e-3], patience=2)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert [a.observe(3.0) for _ in range(5)] == [b.observe(3.0) for _ in range(5)]
    assert a.lrs == b.lrs


def test_cosine_schedule_reaches_min_lr_exactly():
    s = CosineSchedule([1e-2, 1e-3], steps=100, min_lr=1e-4)
    assert s.lrs_at(0) == [1e-2, 1e-3]
    assert s.lrs_at(100) == [1e-4, 1e-4] and s.lrs_at(150) == [1e-4, 1e-4]
    assert s.lrs_at(50)[0] == pytest.approx(1e-4 + (1e-2 - 1e-4) / 2)
    lrs = [s.lrs_at(t)[0] for t in range(101)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_trainer_cosine_with_warmup_ends_at_min_lr():
    model, seen = Constant(), []
    trainer = Trainer(model, torch.zeros(8, 1), schedule="cosine", steps=20, batch_size=4, lr=0.1,
                      min_lr=1e-3, warmup_steps=4, progress=False)  # fmt: skip
    original = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return original(*args, **kwargs)

    trainer.optimizer.step = record
    metrics = trainer.fit()
    assert seen[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # linear warmup
    assert seen[4] == pytest.approx(0.1) and all(a > b for a, b in zip(seen[4:], seen[5:]))
    assert metrics["lr"] == 1e-3 == trainer.optimizer.param_groups[0]["lr"]


def test_trainer_plateau_decays_on_full_evaluations():
    trainer = Trainer(Constant(), torch.zeros(8, 1), torch.zeros(5, 1), steps=6, batch_size=4,
                      eval_every=1, patience=2, lr=1e-3, progress=False)  # fmt: skip
    trainer.fit()
    # checks 1..6: improve, bad, bad -> decay (N_c 2 -> 2.6), bad, bad, bad -> decay
    assert trainer.schedule.decays == 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.8**2)


# ----------------------------------------------------------------------------- evaluation, data


def test_evaluate_is_the_mean_over_the_full_split_and_restores_modes():
    torch.manual_seed(1)
    flow = _flow()
    with torch.no_grad():
        flow.transform[0].shift.copy_(torch.tensor([0.3, -0.2]))
    x = torch.randn(103, 2) * 1.5
    trainer = Trainer(flow, x[:10], progress=False, eval_batch_size=10)
    flow.train()
    flow.base.eval()  # a submodule deliberately in eval mode stays so
    got = trainer.evaluate(x)
    with torch.no_grad():
        expected = -flow.log_prob(x).double().mean().item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert flow.training and flow.transform.training and not flow.base.training


def test_every_example_once_per_epoch_and_reshuffled_deterministically():
    def run():
        model = Constant()
        Trainer(model, torch.arange(12.0).unsqueeze(1), steps=6, batch_size=4, seed=3,
                progress=False).fit()  # fmt: skip
        return [b.squeeze(1).tolist() for b in model.batches]

    batches = run()
    epoch0, epoch1 = sum(batches[:3], []), sum(batches[3:], [])
    assert sorted(epoch0) == sorted(epoch1) == list(range(12))
    assert epoch0 != epoch1  # reshuffled
    assert run() == batches  # deterministic


def test_data_forms_tuple_and_dataset():
    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.full((2,), float(i)), i

    for data in ((torch.zeros(6, 2), torch.arange(6)), Pairs()):
        model = Constant()
        Trainer(model, data, steps=2, batch_size=3, progress=False).fit()
        x, labels = model.batches[0]
        assert x.shape == (3, 2) and labels.shape == (3,)


def test_bad_arguments_raise_value_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="model: expected an nn.Module with a loss"):
        Trainer(nn.Linear(2, 2), x)
    with pytest.raises(ValueError, match="stepz: not a training option"):
        Trainer(_flow(), x, stepz=3)
    with pytest.raises(ValueError, match="lr: expected a finite number > 0, got -1"):
        Trainer(_flow(), x, lr=-1)
    with pytest.raises(
        ValueError, match="schedule: expected 'plateau', 'cosine' or 'constant', got 'linear'"
    ):
        TrainConfig(schedule="linear")
    for bad in ({"grad_clip": 0.0}, {"seed": -1}, {"decay_factor": 1.5}, {"eval_every": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}: expected"):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="train_data: expected tensors of equal length"):
        Trainer(_flow(), (x, torch.zeros(3)))
    with pytest.raises(ValueError, match="train_data: expected a Tensor"):
        Trainer(_flow(), [[1.0, 2.0]])
    with pytest.raises(ValueError, match="param_groups\\[0\\]: holds a tensor .* not a trainable"):
        Trainer(_flow(), x, param_groups=[{"params": [nn.Parameter(torch.zeros(2))]}])
    with pytest.raises(ValueError, match="resume: True resumes from out_dir/last"):
        Trainer(_flow(), x, resume=True)


def test_param_groups_put_the_base_under_plain_adam():
    flow = _flow()
    groups = [{"params": flow.base.parameters(), "weight_decay": 0.0}]
    trainer = Trainer(flow, torch.zeros(4, 2), weight_decay=0.1, param_groups=groups)
    base, rest = trainer.optimizer.param_groups
    assert base["weight_decay"] == 0.0 and rest["weight_decay"] == 0.1
    assert {id(p) for p in base["params"]} == {id(p) for p in flow.base.parameters()}
    assert {id(p) for p in rest["params"]} == {id(p) for p in flow.transform.parameters()}


# ----------------------------------------------------------------------------- NaN guard


class Fragile(nn.Module):
    """Finite loss except on the calls listed in ``nan_loss`` / ``nan_grad`` (1-based)."""

    def __init__(self, nan_loss=(), nan_grad=()) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor([1.0, -2.0]))
        self.calls, self.nan_loss, self.nan_grad = 0, set(nan_loss), set(nan_grad)

    def loss(self, batch):
        self.calls += 1
        p = self.p * 1.0
        if self.calls in self.nan_grad:
            p.register_hook(lambda g: g * math.inf)  # finite loss, infinite gradient
        out = (p - batch.mean(0)).pow(2).sum()
        return out * math.nan if self.calls in self.nan_loss else out


def _snapshot(trainer):
    params = [p.detach().clone() for p in trainer.model.parameters()]
    state = {k: {n: t.clone() for n, t in s.items()} for k, s in trainer.optimizer.state.items()}
    return params, state


def test_non_finite_steps_are_skipped_and_logged(caplog):
    trainer = Trainer(Fragile(nan_loss={3}, nan_grad={4}), torch.randn(8, 2), batch_size=4,
                      steps=10, progress=False)  # fmt: skip
    for _ in range(2):
        trainer._train_step()
    params, state = _snapshot(trainer)
    with caplog.at_level(logging.WARNING, logger="flowscope.train"):
        trainer._train_step()
        trainer._train_step()
    after_params, after_state = _snapshot(trainer)
    assert all(torch.equal(a, b) for a, b in zip(params, after_params))
    for k in state:
        assert all(torch.equal(state[k][n], after_state[k][n]) for n in state[k])
    messages = [r.getMessage() for r in caplog.records]
    assert "step 3: the loss is nan; skipped this update (1 consecutive)" in messages
    grad_message = "step 4: the gradient norm is inf (first non-finite: p); skipped this update"
    assert f"{grad_message} (2 consecutive)" in messages
    trainer._train_step()  # a good step resets the count and moves the parameters
    assert trainer.bad_run == 0 and trainer.bad_total == 2
    assert not torch.equal(params[0], trainer.model.p.detach())


def test_consecutive_non_finite_steps_raise_training_diverged(tmp_path):
    model = Fragile(nan_loss=set(range(3, 100)))
    trainer = Trainer(model, torch.randn(8, 2), batch_size=4, steps=50, max_bad_steps=4,
                      checkpoint_every=1, out_dir=tmp_path, progress=False)  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"4 consecutive steps \(up to step 6\).*lower "
                       r"learning rate.*grad_clip.*last good checkpoint"):  # fmt: skip
        trainer.fit()
    assert isinstance(TrainingDiverged("x"), RuntimeError)


def test_gradient_clipping_bounds_the_global_norm():
    def grad_norm(clip):
        model = Fragile()
        trainer = Trainer(model, torch.full((4, 2), 100.0), batch_size=4, grad_clip=clip,
                          progress=False)  # fmt: skip
        trainer._train_step()
        return torch.linalg.vector_norm(model.p.grad).item()

    assert grad_norm(None) > 100
    assert grad_norm(0.5) == pytest.approx(0.5, rel=1e-5)


# ----------------------------------------------------------------------------- logs, checkpoints


def test_metrics_log_best_and_last(tmp_path, capsys):
    torch.manual_seed(0)
    x = torch.randn(64, 2) * 2 + 1
    trainer = Trainer(_flow(), x[:48], x[48:], out_dir=tmp_path, steps=12, batch_size=8, lr=0.05,
                      eval_every=4, log_every=3, progress=True)  # fmt: skip
    metrics = trainer.fit()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [3, 4, 6, 8, 9, 12]
    assert all({"step", "train_loss", "lr", "examples_per_s", "time"} <= set(m) for m in lines)
    evaluated = [m for m in lines if "val_loss" in m]
    assert [m["step"] for m in evaluated] == [4, 8, 12]
    assert metrics["val_loss"] == evaluated[-1]["val_loss"]
    assert metrics["best_loss"] == min(m["val_loss"] for m in evaluated)
    best = load_checkpoint(tmp_path / "best")["extra"]["trainer"]
    assert best["best"] == metrics["best_loss"]
    assert load_checkpoint(tmp_path / "last")["extra"]["trainer"]["step"] == 12
    err = capsys.readouterr().err
    assert "12/12" in err and "ex_s" in err and "lr" in err  # the progress bar
    Trainer(_flow(), x, steps=2, batch_size=8, progress=False).fit()
    assert capsys.readouterr().err == ""


def test_tensorboard_is_used_when_it_imports(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (an optional extra)
        def __init__(self, log_dir, purge_step=None):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def close(self):
            calls.append(("close", None))

    fake = type(sys)("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    x = torch.randn(16, 2)
    Trainer(_flow(), x, x, out_dir=tmp_path, steps=4, batch_size=8, eval_every=2, log_every=2,
            progress=False).fit()  # fmt: skip
    assert calls[0] == ("init", str(tmp_path / "tb")) and calls[-1] == ("close", None)
    assert ("val_loss", 4) in calls and ("train_loss", 2) in calls


def _state_dicts_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_after_a_crash_is_exact_and_needs_the_rng_states(tmp_path, monkeypatch, ema):
    worker = _worker()
    monkeypatch.setattr(worker, "STEPS", 30)
    monkeypatch.setattr(worker, "train", functools.partial(worker.train, ema=ema))
    reference = worker.train(tmp_path / "ref")

    class Crash(Exception):
        pass

    def crash_after(n):
        calls = iter(range(n))
        original = worker.NoisyFlow.loss

        def loss(self, batch):
            if next(calls, None) is None:
                raise Crash
            return original(self, batch)

        return loss

    with monkeypatch.context() as m:
        m.setattr(worker.NoisyFlow, "loss", crash_after(27))  # a few steps after step 20
        with pytest.raises(Crash):
            worker.train(tmp_path / "run")
    assert read_checkpoint(tmp_path / "run" / "last")["extra"]["trainer"]["step"] == 20
    shutil.copytree(tmp_path / "run", tmp_path / "run2")
    assert _state_dicts_equal(worker.train(tmp_path / "run", resume=True), reference)
    # Without restoring the RNG states (dropout, noise), the resumed run drifts away.
    monkeypatch.setattr(train_module, "restore_rng_state", lambda state: None)
    assert not _state_dicts_equal(worker.train(tmp_path / "run2", resume=True), reference)
    steps = [
        json.loads(s)["step"] for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(set(steps))  # the crashed run's tail was not logged twice


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker_steps = _worker().STEPS
    run = tmp_path / "run"
    killed = subprocess.Popen([sys.executable, str(WORKER), str(run), "--sleep", "0.08"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    manifest = run / "last" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not manifest.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert killed.poll() is None, killed.stderr.read().decode()[-2000:]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    killed.stderr.close()
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "final.safetensors").exists()  # it really died before the end
    step = json.loads(manifest.read_text())["extra"]["trainer"]["step"]
    assert 0 < step < worker_steps

    subprocess.run([sys.executable, str(WORKER), str(run), "--resume", "--reference",
                    str(tmp_path / "ref")], env=env, check=True, timeout=300)  # fmt: skip
    resumed = load_file(str(run / "final.safetensors"))
    reference = load_file(str(tmp_path / "ref" / "final.safetensors"))
    assert _state_dicts_equal(resumed, reference)


def test_ema_is_the_polyak_average_of_the_iterates_and_is_what_evaluation_sees(tmp_path):
    x = torch.randn(256, 2) * 2 + 1

    def trainer(**options):
        torch.manual_seed(0)
        return Trainer(_flow(), x, x[:64], progress=False, batch_size=32, lr=0.05,
                       schedule="constant", eval_every=1000, seed=3, tensorboard=False,
                       **options)  # fmt: skip

    # The raw trajectory, one step at a time (the average must not change it).
    plain, iterates = trainer(steps=1), []
    for k in range(1, 13):
        plain.config.steps = k
        plain.fit()
        iterates.append(torch.cat([p.detach().flatten() for p in plain._params()]))
    expected = iterates[0].clone()
    for n, p in enumerate(iterates[1:], start=1):
        decay = min(0.8, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * p
    averaged = trainer(steps=12, ema=0.8, out_dir=tmp_path / "run")
    averaged.fit()
    final = torch.cat([p.detach().flatten() for p in averaged._params()])
    torch.testing.assert_close(final, expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(final, iterates[-1])  # the average is not the last iterate
    # best/ holds the averaged weights; last/ the raw ones and the average for resuming.
    best, last = _flow(), _flow()
    load_checkpoint(tmp_path / "run" / "best", best)
    meta = load_checkpoint(tmp_path / "run" / "last", last)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    torch.testing.assert_close(flat(best), expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(flat(last), iterates[-1], rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([t.flatten() for t in meta["extra"]["ema"]]), expected,
                               rtol=1e-6, atol=1e-7)  # fmt: skip
    assert averaged.evaluate() == pytest.approx(averaged.model.loss(x[:64]).item(), rel=1e-6)
    # A further fit() continues the raw trajectory: 6 + 6 steps end where 12 steps do, and a
    # save() in between still writes the raw weights.
    twice = trainer(steps=6, ema=0.8)
    twice.fit()
    twice.save(tmp_path / "between")
    between = _flow()
    load_checkpoint(tmp_path / "between", between)
    torch.testing.assert_close(flat(between), iterates[5], rtol=0, atol=0)
    twice.config.steps = 12
    twice.fit()
    again = torch.cat([p.detach().flatten() for p in twice._params()])
    torch.testing.assert_close(again, expected, rtol=1e-6, atol=1e-7)
    # Loading a checkpoint after an averaged fit continues from the LOADED raw weights.
    early = trainer(steps=3, ema=0.8, out_dir=tmp_path / "early")
    early.fit()
    reloaded = trainer(steps=6, ema=0.8)
    reloaded.fit()
    reloaded.load(tmp_path / "early" / "last")
    reloaded.config.steps = 12
    reloaded.fit()
    after = torch.cat([p.detach().flatten() for p in reloaded._params()])
    torch.testing.assert_close(after, expected, rtol=1e-6, atol=1e-7)
    assert read_checkpoint(tmp_path / "run" / "best")["extra"]["ema"] is None  # weights are it
    with pytest.raises(ValueError, match="ema: expected None or a number in"):
        TrainConfig(ema=1.0)


# ----------------------------------------------------------------------------- reverse KL


def test_reverse_kl_recovers_an_unnormalized_gaussian():
    torch.manual_seed(0)
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])

    def log_density(x):  # N(mean, std^2) times e^7: unnormalized
        return -0.5 * ((x - mean) / std).pow(2).sum(1) + 7.0

    flow = Flow(Affine(2), StandardNormal(2))
    metrics = fit_reverse_kl(flow, log_density, steps=400, batch_size=128, lr=0.05, progress=False)
    # x = (u - shift) exp(-log_scale): mean -shift exp(-log_scale), std exp(-log_scale).
    affine = flow.transform
    with torch.no_grad():
        got_std = torch.exp(-affine.log_scale)
        got_mean = -affine.shift * got_std
    assert got_mean == pytest.approx(mean.tolist(), abs=0.1)
    assert got_std == pytest.approx(std.tolist(), rel=0.1)
    # At the optimum the loss is KL - ln Z = -(7 + ln(2 pi * 0.5 * 2)).
    assert metrics["train_loss"] == pytest.approx(-(7 + math.log(2 * math.pi)), abs=0.1)


def test_reverse_kl_annealing_and_arguments():
    flow = Flow(Affine(2), StandardNormal(2))
    objective = ReverseKL(flow, lambda x: -x.pow(2).sum(1), anneal_steps=100)
    assert objective.beta == pytest.approx(0.01)
    for _ in range(3):
        objective.loss(4)
    assert objective.beta == pytest.approx(0.04) and int(objective.t) == 3
    objective.eval()
    objective.loss(4)  # evaluation does not advance the schedule
    assert int(objective.t) == 3 and "t" in objective.state_dict()
    target = nn.Linear(2, 1)  # a module as the density: never trained by the objective
    owned = {id(p) for p in ReverseKL(flow, lambda x: target(x)[:, 0]).parameters()}
    owned |= {id(p) for p in ReverseKL(flow, target).parameters()}
    assert not owned & {id(p) for p in target.parameters()}
    with pytest.raises(ValueError, match="log_density: expected a tensor of shape \\(4,\\)"):
        ReverseKL(flow, lambda x: x).loss(4)
    with pytest.raises(ValueError, match="batch: expected the number of samples"):
        objective.loss(torch.zeros(3, 2))


# ----------------------------------------------------------------------------- speed options


def test_the_optimizer_is_fused_adamw_and_updates_as_the_reference_loop():
    """The fused kernel (one pass per tensor) gives the same updates as torch's loop AdamW."""
    data = torch.randn(64, 2) * 2 + 1

    def run(reference: bool) -> Flow:
        torch.manual_seed(0)
        flow = _flow()
        trainer = Trainer(flow, data, steps=30, batch_size=16, lr=0.05, schedule="constant",
                          progress=False)  # fmt: skip
        assert trainer.optimizer.defaults["fused"] is True
        if reference:
            trainer.optimizer = torch.optim.AdamW(
                trainer.optimizer.param_groups, foreach=False, fused=False
            )
        trainer.fit()
        return flow

    fused, loop = run(False), run(True)
    moved = [not torch.equal(p, q) for p, q in zip(fused.parameters(), _flow().parameters())]
    assert all(moved)
    for p, q in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compile_option_trains_the_same_model_and_still_refuses_nan():
    from flowscope import models

    torch._dynamo.reset()
    data = torch.randn(96, 2)

    def run(compile_: bool | str) -> Trainer:
        torch.manual_seed(0)
        flow = models.realnvp(2, layers=2, hidden=8)
        trainer = Trainer(flow, data, steps=6, batch_size=32, schedule="constant", lr=0.01,
                          progress=False, compile=compile_)  # fmt: skip
        trainer.fit()
        return trainer

    frames = torch._dynamo.utils.counters["frames"]["ok"]
    # "aot_eager" traces forward AND backward (AOTAutograd) without generating C++: seconds.
    compiled, eager = run("aot_eager"), run(False)
    assert torch._dynamo.utils.counters["frames"]["ok"] > frames  # the loss really compiled
    torch.manual_seed(0)
    start = models.realnvp(2, layers=2, hidden=8)
    pairs = list(zip(compiled.model.parameters(), start.parameters()))
    assert all(not torch.equal(p, q) for p, q in pairs)  # every parameter trained
    for p, q in zip(compiled.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # Checks inside compiled code are skipped; the trainer scans the batch before the call.
    bad = data.clone()
    bad[5, 1] = float("nan")
    with pytest.raises(ValueError, match="batch: expected finite values"):
        Trainer(compiled.model, bad, steps=3, batch_size=96, progress=False,
                compile="aot_eager").fit()  # fmt: skip
    with pytest.raises(ValueError, match="compile: expected True, False or a torch.compile"):
        TrainConfig(compile="")
