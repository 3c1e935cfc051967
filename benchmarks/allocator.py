"""Training steps with glibc's malloc defaults against flowscope's tuned thresholds.

    taskset -c 0 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/allocator.py [--rounds 2]

The malloc settings are process-wide and cannot be undone, so every measurement runs in a fresh
child process, alternating default / tuned ``--rounds`` times.  Each child builds one workload,
makes 5 warm-up calls (training steps, or log_prob calls) and then times 30 (CPU time of the
process, ``time.process_time``, which includes the kernel time that page faults cost) and
counts the minor page faults
(``resource.getrusage``).  Prints a markdown table (one cell per run) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = {
    "glow-fmnist": "training step: Glow of configs/glow-fashion-mnist.yaml (1x28x28), batch 64",
    "mixture-k5": "training step: MixtureOfFlows, K = 5 W1 RealNVPs (benchmark W5), batch 512",
    "mixture-k10": "training step: the same, K = 10",
    "w1-logprob-flowscope": "W1 log_prob of 100k points, flowscope (chunked)",
    "w1-logprob-normflows": "W1 log_prob of 100k points, normflows (one pass)",
    "w1-logprob-nflows": "W1 log_prob of 100k points, nflows (one pass)",
}


def _build(name: str):  # noqa: ANN202 - (model, batch, optimizer)
    import torch

    from flowscope import models
    from flowscope.mixture import MixtureOfFlows

    torch.manual_seed(0)
    if name == "glow-fmnist":
        model = models.glow(
            (1, 28, 28), levels=2, steps=8, hidden=64, scale="tanh", clamp=1.0,
            dequantization="variational",
        )  # fmt: skip
        batch = torch.randint(0, 256, (64, 1, 28, 28)).float()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    else:
        k = int(name.removeprefix("mixture-k"))
        model = MixtureOfFlows((lambda: models.realnvp(2, layers=8, hidden=64, net_layers=2), k))
        batch = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    return model, batch, opt


def _log_prob_task(lib: str):  # noqa: ANN202 - a no-argument callable
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import workloads as wl

    torch.manual_seed(0)
    built = wl.builder("W1", lib)()
    built.module.eval()
    x = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(0))

    def call() -> None:
        with torch.no_grad():
            built.log_prob(x)

    return call


def child(name: str, mode: str) -> dict:
    import torch

    torch.set_num_threads(1)
    if mode == "tuned":
        from flowscope.allocator import tune_cpu_allocator

        if not tune_cpu_allocator():
            raise SystemExit("not glibc: nothing to compare")
    if name.startswith("w1-logprob-"):
        step = _log_prob_task(name.removeprefix("w1-logprob-"))
    else:
        model, batch, opt = _build(name)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            model.loss(batch).backward()
            opt.step()

    for _ in range(5):
        step()
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    for _ in range(30):
        step()
    return {
        "cpu_ms_per_step": 1e3 * (time.process_time() - start) / 30,
        "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", default="benchmarks/results/allocator.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    results: dict = {}
    for name in args.workloads.split(","):
        results[name] = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            for mode in ("default", "tuned"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", name, mode],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                results[name][mode].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def cell(runs: list[dict]) -> str:
        ms = " / ".join(f"{r['cpu_ms_per_step']:.1f}" for r in runs)
        faults = " / ".join(f"{r['faults_per_step']:,.0f}" for r in runs)
        return f"{ms} ms, {faults} faults"

    head = "| workload (CPU ms, page faults per call; a cell per run) | glibc defaults | tuned |"
    lines = [head]
    lines.append("|---|---|---|")
    for name, res in results.items():
        lines.append(f"| {WORKLOADS[name]} | {cell(res['default'])} | {cell(res['tuned'])} |")
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": sys.argv, "results": results}, indent=1))


if __name__ == "__main__":
    main()
