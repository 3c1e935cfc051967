"""Training-step cost of a MixtureOfFlows against its number of components K.

Pinwheel-size components (RealNVP, 8 affine couplings, conditioners 1x16: the vmonf-pinwheel
experiment's), the default posterior (1x64), batch 512, Adam; one thread.  For K = 1, 5, 10 it
times full training steps (loss, backward, optimizer step) of the batched mixture (stacked
parameters, one vmapped pass) and of the same mixture as a Python loop over K flows, and a lone
Flow for reference.  CPU time (``time.process_time``), median over the timed steps, so a loaded
machine inflates the numbers less than wall time would.

    .venv/bin/python benchmarks/mixture_scaling.py [--steps 60] [--out benchmarks/results/...]

Prints a markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from flowscope import models
from flowscope.mixture import MixtureOfFlows


def _component():
    return models.realnvp(2, layers=8, hidden=16, net_layers=1)


def time_steps(model: torch.nn.Module, x: torch.Tensor, steps: int, warmup: int = 10) -> float:
    """Median CPU seconds of one training step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + steps):
        start = time.process_time()
        opt.zero_grad(set_to_none=True)
        model.loss(x).backward()
        opt.step()
        if i >= warmup:
            times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--out", default="benchmarks/results/mixture_scaling.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 2)
    flow_ms = 1e3 * time_steps(_component(), x, args.steps)
    rows = []
    for k in (1, 5, 10):
        batched = MixtureOfFlows((_component, k), batched=True)
        looped = MixtureOfFlows((_component, k), batched=False)
        rows.append(
            {
                "K": k,
                "params": sum(p.numel() for p in batched.parameters()),
                "batched_ms": 1e3 * time_steps(batched, x, args.steps),
                "loop_ms": 1e3 * time_steps(looped, x, args.steps),
            }
        )
    base = rows[0]["batched_ms"]
    print(f"single Flow (no mixture): {flow_ms:.2f} ms/step\n")
    print("| K | parameters | batched ms/step | vs K=1 | Python loop ms/step | vs K=1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        r["batched_vs_k1"] = r["batched_ms"] / base
        r["loop_vs_k1"] = r["loop_ms"] / rows[0]["loop_ms"]
        print(
            f"| {r['K']} | {r['params']:,} | {r['batched_ms']:.2f} | {r['batched_vs_k1']:.2f}x "
            f"| {r['loop_ms']:.2f} | {r['loop_vs_k1']:.2f}x |"
        )
    result = {
        "workload": "RealNVP 8 couplings 1x16, posterior 1x64, batch "
        f"{args.batch}, Adam, 1 thread, CPU time median of {args.steps} steps",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "single_flow_ms": flow_ms,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
