"""Packed against unpacked parameters: the same flowscope model, one training step, one process.

    taskset -c 0 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/packing.py --rounds 9

For W1 (RealNVP, 8 couplings 2x64) and W1b (MAF, 5 layers 2x64), builds the benchmark's
flowscope model twice from one seed: as built (``Compose`` packs each fused run's layers into
one flat tensor, ``transforms/packing.py``) and rebuilt with ``Compose(..., pack=False)`` (one
tensor per weight and bias, 48 on W1 and 30 on W1b).  Times full training steps (loss,
backward, fused Adam, ``zero_grad``) in interleaved rounds, CPU time, and prints the median
step of each and the median of the within-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as wl  # noqa: E402

from flowscope.allocator import tune_cpu_allocator  # noqa: E402
from flowscope.transforms import Compose  # noqa: E402
from flowscope.transforms.packing import unpack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed call")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    tune_cpu_allocator()
    for workload in ("W1", "W1b"):
        xs = [torch.randn(512, 2) for _ in range(4)]
        tasks = {}
        for packed in (True, False):
            torch.manual_seed(0)
            flow = wl.builder(workload, "flowscope")().module
            if not packed:
                flow.transform = Compose(list(unpack(flow.transform).transforms), pack=False)
            flow.train()
            opt = torch.optim.Adam(flow.parameters(), lr=1e-4, fused=True)
            tasks["packed" if packed else "unpacked"] = (flow, opt)
        counts = {k: len(list(f.parameters())) for k, (f, _) in tasks.items()}

        def run(flow, opt, n: int, xs: list = xs) -> None:  # noqa: ANN001
            for i in range(n):
                opt.zero_grad(set_to_none=True)
                flow.loss(xs[i % 4]).backward()
                opt.step()

        for flow, opt in tasks.values():
            run(flow, opt, 50)
        times: dict[str, list[float]] = {k: [] for k in tasks}
        for r in range(args.rounds):
            order = list(tasks) if r % 2 == 0 else list(tasks)[::-1]
            for k in order:
                start = time.process_time()
                run(*tasks[k], args.steps)
                times[k].append(1e3 * (time.process_time() - start) / args.steps)
        ratios = [u / p for u, p in zip(times["unpacked"], times["packed"])]
        print(
            f"{workload}: packed ({counts['packed']} tensor) "
            f"{statistics.median(times['packed']):.3f} ms/step, unpacked "
            f"({counts['unpacked']} tensors) {statistics.median(times['unpacked']):.3f} ms/step; "
            f"unpacked/packed per round: median {statistics.median(ratios):.3f} "
            f"(range {min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
