"""Helper process for the SIGKILL/resume test of tests/test_train.py (not a test module).

Trains a tiny 2-D flow whose loss draws from every global RNG the trainer must restore: dropout
and batch-norm inside a coupling layer (torch), dequantization-like noise (torch), and a noise
scale drawn from Python's ``random`` and numpy.  Usage::

    python tests/_resume_worker.py OUT_DIR [--resume] [--sleep SECONDS] [--reference REF_DIR]

writes ``OUT_DIR/final.safetensors`` (the final state dict) when training completes; with
``--reference`` the same process then trains a fresh, uninterrupted run into ``REF_DIR``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from flowscope import Flow
from flowscope.distributions import StandardNormal
from flowscope.train import Trainer
from flowscope.transforms import Affine, Compose, Transform

STEPS, CHECKPOINT_EVERY = 40, 10


class DropoutCoupling(Transform):
    """``u2 = x2 * exp(tanh(s(x1))) + t(x1)`` with dropout and batch norm in the conditioner.

    In train mode the map is stochastic (dropout): fine here, the point is to consume the RNG.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2)
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, t = self.net(x[:, :1]).chunk(2, dim=1)
        log_s = torch.tanh(s)
        return torch.cat([x[:, :1], x[:, 1:] * log_s.exp() + t], 1), log_s.sum(1)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, t = self.net(u[:, :1]).chunk(2, dim=1)
        log_s = torch.tanh(s)
        return torch.cat([u[:, :1], (u[:, 1:] - t) * (-log_s).exp()], 1), -log_s.sum(1)


class NoisyFlow(nn.Module):
    """A flow whose loss adds noise drawn from torch, ``random`` and numpy."""

    def __init__(self, sleep: float = 0.0) -> None:
        super().__init__()
        self.flow = Flow(Compose(Affine(2), DropoutCoupling(), Affine(2)), StandardNormal(2))
        self.sleep = sleep

    def loss(self, batch: Tensor) -> Tensor:
        if self.sleep:
            time.sleep(self.sleep)  # slows the killed run down so that the kill lands mid-run
        scale = 0.01 * (1.0 + random.random() + float(np.random.rand()))  # noqa: NPY002
        return self.flow.loss(batch + scale * torch.randn_like(batch))


def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(300, 2, generator=g) * torch.tensor([1.0, 0.5]) + torch.tensor([0.5, -1.0])
    return x[:250], x[250:]


def train(
    out_dir: Path, resume: bool = False, sleep: float = 0.0, ema: float | None = None
) -> dict[str, Tensor]:
    torch.manual_seed(0)  # the model's initialization
    model = NoisyFlow(sleep)
    train_x, val_x = data()
    trainer = Trainer(
        model, train_x, val_x, out_dir=out_dir, resume=resume, progress=False,
        steps=STEPS, batch_size=32, lr=2e-2, schedule="plateau", patience=1, eval_every=5,
        checkpoint_every=CHECKPOINT_EVERY, grad_clip=1.0, seed=7, tensorboard=False, ema=ema,
    )  # fmt: skip
    trainer.fit()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_file(state, str(Path(out_dir) / "final.safetensors"))
    return state


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--reference", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same as tests/conftest.py: bit-exact comparisons
    train(args.out_dir, resume=args.resume, sleep=args.sleep)
    if args.reference is not None:
        train(args.reference)


if __name__ == "__main__":
    main(sys.argv[1:])
