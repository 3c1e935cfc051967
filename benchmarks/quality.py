"""W4: test negative log-likelihood on two moons after a fixed number of training steps.

Data: ``sklearn.datasets.make_moons(noise=0.05)`` in its raw coordinates (x in about [-1, 2],
y in about [-0.5, 1]), a pool of 50,000 training points and 10,000 test points drawn with
different seeds.  Every library trains the W1 architecture (RealNVP, 8 affine couplings, MLP
2x64) with ``torch.optim.Adam(lr=1e-3)`` on minibatches of 512 drawn from the pool by a seeded
generator: the same seeds give every library the same data, the same batches and the same
``torch.manual_seed`` before building its model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor
from workloads import Built

NOISE = 0.05
N_TRAIN = 50_000
N_TEST = 10_000
BATCH = 512
LR = 1e-3


def two_moons(n: int, seed: int) -> Tensor:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_samples=n, noise=NOISE, random_state=seed)
    return torch.as_tensor(x, dtype=torch.float32)


def test_nll(factory: Callable[[], Built], seed: int, steps: int) -> dict[str, float]:
    """Train a fresh model for ``steps`` steps; return its test NLL (nats) and the wall time."""
    train = two_moons(N_TRAIN, seed)
    test = two_moons(N_TEST, 100_000 + seed)
    torch.manual_seed(seed)
    built = factory()
    built.module.train()
    opt = torch.optim.Adam(built.module.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        x = train[torch.randint(N_TRAIN, (BATCH,), generator=gen)]
        opt.zero_grad(set_to_none=True)
        loss = -built.log_prob(x).mean()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    built.module.eval()
    with torch.no_grad():
        nll = -built.log_prob(test).mean().item()
    return {"nll": nll if math.isfinite(nll) else float("nan"), "train_seconds": seconds}
