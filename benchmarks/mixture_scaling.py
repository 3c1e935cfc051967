"""Training-step cost of a MixtureOfFlows against its number of components K.

For K = 1, 5, 10 it times full training steps (loss, backward, optimizer step) of the batched
mixture (``StackedFlows``: stacked parameters; RealNVP components run as ONE fused run on the
stacked parameters, ``transforms/fused.py``), of the same batched mixture forced onto the
generic path (every layer under ``torch.func.vmap``, what other architectures take), and of the
mixture as a Python loop over K flows, plus a lone Flow for reference.  Components:

* ``--component pinwheel`` (default): RealNVP, 8 affine couplings, conditioners 1x16 (the
  vmonf-pinwheel experiment's);
* ``--component w5``: RealNVP, 8 couplings, conditioners 2x64 (benchmark workload W5).

The default posterior (1x64), batch 512, Adam, one thread.  The models are timed in
interleaved rounds of 10 steps (the order turned by one place each round, as in timing.py);
CPU time (``time.process_time``), median step over all rounds, so a loaded machine inflates
the numbers less than wall time would.

    .venv/bin/python benchmarks/mixture_scaling.py [--component w5] [--rounds 8] [--out ...]

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
from flowscope.allocator import tune_cpu_allocator
from flowscope.mixture import MixtureOfFlows

COMPONENTS = {
    "pinwheel": dict(layers=8, hidden=16, net_layers=1),
    "w5": dict(layers=8, hidden=64, net_layers=2),
}
STEPS_PER_ROUND = 10


def _generic(mixture: MixtureOfFlows) -> MixtureOfFlows:
    """The batched mixture on the generic (vmap) path: the fused one switched off."""
    mixture.components._fused_log_prob = lambda xs: None  # type: ignore[method-assign]
    return mixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--component", choices=sorted(COMPONENTS), default="pinwheel")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of 10 steps per model")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--out", default=None, help="JSON (default results/mixture_scaling*.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tune_cpu_allocator()  # what the Trainer sets: freed activations stay in the heap
    torch.manual_seed(0)
    x = torch.randn(args.batch, 2)
    size = COMPONENTS[args.component]

    def component():  # noqa: ANN202
        return models.realnvp(2, **size)

    tasks: dict[str, torch.nn.Module] = {"flow": component()}
    for k in (1, 5, 10):
        tasks[f"batched K={k}"] = MixtureOfFlows((component, k), batched=True)
        tasks[f"vmap K={k}"] = _generic(MixtureOfFlows((component, k), batched=True))
        tasks[f"loop K={k}"] = MixtureOfFlows((component, k), batched=False)
    opts = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in tasks.items()}
    times: dict[str, list[float]] = {name: [] for name in tasks}

    def steps(name: str, n: int, record: bool) -> None:
        model, opt = tasks[name], opts[name]
        for _ in range(n):
            start = time.process_time()
            opt.zero_grad(set_to_none=True)
            model.loss(x).backward()
            opt.step()
            if record:
                times[name].append(time.process_time() - start)

    names = list(tasks)
    for name in names:
        steps(name, STEPS_PER_ROUND, record=False)  # warm-up
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            steps(name, STEPS_PER_ROUND, record=True)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}

    rows = []
    for k in (1, 5, 10):
        row = {"K": k, "params": sum(p.numel() for p in tasks[f"batched K={k}"].parameters())}
        for path in ("batched", "vmap", "loop"):
            row[f"{path}_ms"] = ms[f"{path} K={k}"]
            row[f"{path}_vs_k1"] = ms[f"{path} K={k}"] / ms[f"{path} K=1"]
        rows.append(row)
    print(f"component: {args.component} {size}")
    print(f"single Flow (no mixture): {ms['flow']:.2f} ms/step\n")
    print(
        "| K | parameters | batched (fused) ms/step | vs K=1 | batched, vmap path | vs K=1 "
        "| Python loop | vs K=1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['K']} | {r['params']:,} | {r['batched_ms']:.2f} | {r['batched_vs_k1']:.2f}x "
            f"| {r['vmap_ms']:.2f} | {r['vmap_vs_k1']:.2f}x "
            f"| {r['loop_ms']:.2f} | {r['loop_vs_k1']:.2f}x |"
        )
    result = {
        "workload": f"RealNVP {size}, posterior 1x64, batch {args.batch}, Adam, 1 thread, CPU "
        f"time, median step of {args.rounds} interleaved rounds of {STEPS_PER_ROUND} steps",
        "component": args.component,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "single_flow_ms": ms["flow"],
        "rows": rows,
    }
    suffix = "" if args.component == "pinwheel" else f"_{args.component}"
    out = Path(args.out or f"benchmarks/results/mixture_scaling{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
