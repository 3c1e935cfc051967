"""CPU cost of the Fashion-MNIST Glow's training step with the variational-dequantization noise
flow at full resolution or on the squeezed image (docs/image-flows.md).

    taskset -c 0 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/noise_flow_step.py full 64
    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/noise_flow_step.py sq 64

Builds the model of ``configs/glow-fashion-mnist.yaml`` with ``squeeze`` off (``full``) or on
(``sq``), times training steps (``model.loss(x).backward()`` and an Adam step) and the
dequantization layer's forward and backward alone on one random batch, in process CPU time.
"""

from __future__ import annotations

import sys
import time

import torch

from flowscope.allocator import tune_cpu_allocator
from flowscope.models import glow


def main(mode: str, batch: int) -> None:
    torch.set_num_threads(1)
    tune_cpu_allocator()
    torch.manual_seed(0)
    deq = {"kind": "variational", "squeeze": mode == "sq"}
    model = glow((1, 28, 28), levels=2, steps=8, hidden=64, scale="tanh", clamp=1.0,
                 dequantization=deq)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, 1, 28, 28)).float()
    n = max(40, 2560 // batch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(x).backward()
        opt.step()

    def noise() -> None:
        y, ladj = model.transform[0](x)
        (y.sum() + ladj.sum()).backward()

    out = {}
    for name, fn in (("step", step), ("noise flow fwd+bwd", noise)):
        for _ in range(5):
            fn()
        start = time.process_time()
        for _ in range(n):
            fn()
        out[name] = (time.process_time() - start) / n
    cells = ", ".join(f"{k} {v:.4f} CPU s" for k, v in out.items())
    print(f"noise flow {mode}, batch {batch}: {cells}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sq", int(sys.argv[2]) if len(sys.argv) > 2 else 64)
