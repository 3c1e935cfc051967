"""Where a training step goes: forward, forward + backward, and the full fused-Adam step.

    taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/step_anatomy.py W1 [--allocator tuned]

Builds the workload's model in every installed library (workloads.py), then times, interleaved
over 5 rounds (CPU time, median), ``log_prob(x).mean()``, the same with ``backward()``, and the
full step with torch's fused Adam (the benchmark's optimizer), in ms per step.
``--allocator tuned`` fixes glibc's malloc thresholds first, as ``run.py --allocator tuned``
(the latest table's setting) does: without it the peers page-fault more and the ratios come out
higher (W1b in stop 20: 1.59x without, 1.52x with).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as wl  # noqa: E402


def main(workload: str = "W1") -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    shape = {"W1": (2,), "W1b": (2,), "W2": (784,)}[workload]
    batch, n = (100, 20) if workload == "W2" else (512, 200)
    xs = [torch.randn(batch, *shape) for _ in range(8)]
    built = {}
    for lib in wl.LIBRARIES:
        if not wl.available(lib):
            continue
        torch.manual_seed(0)
        b = wl.builder(workload, lib)()
        b.module.train()
        built[lib] = (b, torch.optim.Adam(b.module.parameters(), lr=1e-4, fused=True))

    def forward(b, opt) -> None:  # noqa: ANN001
        for i in range(n):
            b.log_prob(xs[i % 8]).mean()

    def backward(b, opt) -> None:  # noqa: ANN001
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            (-b.log_prob(xs[i % 8]).mean()).backward()

    def step(b, opt) -> None:  # noqa: ANN001
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            (-b.log_prob(xs[i % 8]).mean()).backward()
            opt.step()

    parts = {"forward": forward, "forward+backward": backward, "full step": step}
    times: dict = {lib: {k: [] for k in parts} for lib in built}
    for lib in built:
        step(*built[lib])  # warm-up
    for _ in range(5):
        for lib, pair in built.items():
            for name, fn in parts.items():
                c = time.process_time()
                fn(*pair)
                times[lib][name].append(1e3 * (time.process_time() - c) / n)
    for lib, t in times.items():
        med = {k: sorted(v)[len(v) // 2] for k, v in t.items()}
        print(f"{workload} {lib:10s} " + "  ".join(f"{k} {v:.3f} ms" for k, v in med.items()))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[1:3] == ["--allocator", "tuned"]:
        from flowscope.allocator import tune_cpu_allocator

        tune_cpu_allocator()
    elif args[1:]:
        sys.exit(f"usage: step_anatomy.py W1|W1b|W2 [--allocator tuned]; got {args}")
    main(*args[:1])
