"""W2's MAF with and without two of its speed paths: the same model, one process, interleaved.

    taskset -c 0 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/w2_parts.py --rounds 15

Builds the benchmark's flowscope W2 model (784-D MAF, 5 layers, MADE 1x512) three times from
one seed: as built; with the staircase blocks on unaligned edges (``staircase_blocks(...,
align=1)``, the blocks before stop 17); and with ``AffineTransformer``'s generic graph instead
of its large-tensor autograd node.  Times training steps (batch 100, fused Adam) and, with
``--log-prob``, log_prob of 5,000 points, in interleaved rounds (CPU time), and prints each
variant's median and the median of its within-round ratio to the model as built.
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
from flowscope.transforms import MaskedAutoregressive  # noqa: E402
from flowscope.transforms.autoregressive import _MaskedLinear  # noqa: E402
from flowscope.transforms.staircase import Staircase, staircase_blocks  # noqa: E402


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = wl.builder("W2", "flowscope")().module
    for m in flow.modules():
        if variant == "unaligned blocks" and isinstance(m, _MaskedLinear) and m.blocks:
            # re-packs the weight for the other blocks (a new parameter; optimizers come later)
            m._relayout(Staircase(staircase_blocks(m.mask, align=1), m.in_features))
        if variant == "generic affine" and isinstance(m, MaskedAutoregressive):
            m.transformer.forward = m.transformer._generic  # the instance's own attribute
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed call")
    parser.add_argument("--log-prob", action="store_true", help="also time log_prob(5,000)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    tune_cpu_allocator()
    variants = ("as built", "unaligned blocks", "generic affine")
    flows = {v: build(v) for v in variants}
    xs = [torch.randn(100, 784) for _ in range(4)]
    opts = {v: torch.optim.Adam(f.parameters(), lr=1e-4, fused=True) for v, f in flows.items()}

    def train(v: str) -> None:
        for i in range(args.steps):
            opts[v].zero_grad(set_to_none=True)
            flows[v].loss(xs[i % 4]).backward()
            opts[v].step()

    points = torch.randn(5000, 784)

    def log_prob(v: str) -> None:
        with torch.no_grad():
            flows[v].log_prob(points)

    tasks = [("train step", train, args.steps)]
    if args.log_prob:
        tasks.append(("log_prob 5,000", log_prob, 1))
    for name, task, per_call in tasks:
        for v in variants:
            flows[v].train(name == "train step")
            task(v)  # warm-up
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.rounds):
            order = variants[r % 3 :] + variants[: r % 3]
            for v in order:
                t0 = time.process_time()
                task(v)
                times[v].append((time.process_time() - t0) / per_call * 1e3)
        print(f"{name} (ms, median of {args.rounds} rounds; ratio = variant / as built):")
        for v in variants:
            ratio = statistics.median(a / b for a, b in zip(times[v], times["as built"]))
            print(f"  {v:17s} {statistics.median(times[v]):8.2f}   per-round ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
