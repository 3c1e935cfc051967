"""flowscope against nflows, normflows and zuko: speed and quality, side by side, in ONE process.

    python benchmarks/run.py                      # everything (about 10 minutes on 1 thread)
    python benchmarks/run.py --workloads W1,W2    # a subset
    python benchmarks/run.py --quick              # a smoke run: fewer repeats, smaller inputs
    python benchmarks/run.py --profile            # + where flowscope's training step goes
    python benchmarks/run.py --compile none       # without the "flowscope (compiled)" rows

Workloads (issue 7):
  W1   2-D RealNVP, 8 affine couplings, conditioner MLP 2x64, batch 512:
       train steps/s, log_prob points/s on 100k points, samples/s on 100k
  W1b  the same with MAF: 5 MADE layers 2x64, order reversed between layers
  W2   784-D MAF, 5 layers, MADE 1x512, batch 100: train steps/s, log_prob points/s,
       seconds to sample 100
  W3   Glow on 3x32x32, 3 levels x 8 steps, hidden 128, batch 16: train steps/s,
       seconds to sample 16 (zuko has no image layers: n/a)
  W4   quality: test NLL on two moons after 2000 steps, same seeds (see quality.py)
  W5   flowscope MixtureOfFlows, K = 1, 5, 10 RealNVP components (W1's): train step times,
       and K = 5 as a loop over five flows (what batching the components saves)

Every library builds the same architecture (parameter counts are printed and must agree within
2%), is timed in the same process with the same thread count, with warm-up calls and the median
over repeats interleaved across libraries (timing.py).  The table gives flowscope / fastest peer
for every metric (> 1: flowscope is faster); results go to JSON (``--out``).

The process runs with glibc's malloc defaults (``--allocator default``, the default) or with
the thresholds flowscope's Trainer sets on CPU (``--allocator tuned``, flowscope.allocator); the
setting is process-wide, so it applies to every library in the run alike.

Training uses the same optimizer in every library and in W5 (fused Adam, see
timing.train_task).  Beside the eager numbers, flowscope's training step is also timed compiled
(``torch.compile`` of ``Flow.loss``, what ``TrainConfig(compile=True)`` does) as a SEPARATE
row, with its compile time; the eager row is never replaced by it.  Compilation starts from an
empty Inductor cache.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep torch.profiler's start/stop lines quiet
# Compile times are reported cold (an empty Inductor cache) and on one compile thread: the
# C++ compiler runs as waited-for child processes, so their CPU time can be counted.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _CACHE = os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="fs-bench-inductor-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality  # noqa: E402
import timing  # noqa: E402
import workloads as wl  # noqa: E402

SPEED = ("W1", "W1b", "W2", "W3")
ALL = SPEED + ("W4", "W5")
# Training steps per timed call are chosen so that a call takes about 0.3-1 s: with 20 steps
# (50-100 ms windows, runs 1-4) a burst of load on this 2-core VM could slow two or three of
# the five rounds of one library and not the others' (docs/benchmarks.md, run 5).
W5_STEPS = 40
COMPILED = "flowscope (compiled)"

# Per workload: event shape, training batch, log_prob points, samples, and how sampling is
# reported ("rate": samples/s, "seconds": seconds for the whole draw).
SPECS: dict[str, dict] = {
    "W1": {
        "title": "2-D RealNVP, 8 affine couplings, MLP 2x64",
        "shape": (2,),
        "batch": 512,
        "steps": 100,
        "log_prob_n": 100_000,
        "sample_n": 100_000,
        "sample_as": "rate",
    },
    "W1b": {
        "title": "2-D MAF, 5 MADE layers 2x64",
        "shape": (2,),
        "batch": 512,
        "steps": 100,
        "log_prob_n": 100_000,
        "sample_n": 100_000,
        "sample_as": "rate",
    },
    "W2": {
        "title": "784-D MAF, 5 layers, MADE 1x512",
        "shape": (784,),
        "batch": 100,
        "steps": 10,
        "log_prob_n": 5_000,
        "sample_n": 100,
        "sample_as": "seconds",
    },
    "W3": {
        "title": "Glow 3x32x32, 3 levels x 8 steps, hidden 128",
        "shape": (3, 32, 32),
        "batch": 16,
        "steps": 2,
        "log_prob_n": None,
        "sample_n": 16,
        "sample_as": "seconds",
    },
}
QUICK = {"W1": 20_000, "W1b": 20_000, "W2": 1_000}  # log_prob points in --quick mode

TARGETS = {"train": 1.5, "log_prob": 1.5, "sample": 1.5, "sample_W2": 20.0}
NLL_MARGIN = 0.02
W5_TARGET = 2.0


# ----------------------------------------------------------------------------------- helpers


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def fmt(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "seconds":
        return f"{value:.3g} s"
    if kind == "nll":
        return f"{value:.3f}"
    if value >= 1e4:
        return f"{value / 1e3:,.0f}k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------ speed: W1-W3


def build_all(workload: str, libs: list[str], seed: int = 0) -> dict[str, wl.Built]:
    built = {}
    for lib in libs:
        factory = wl.builder(workload, lib)
        if factory is None:
            continue
        torch.manual_seed(seed)
        built[lib] = factory()
    return built


def check_params(workload: str, built: dict[str, wl.Built]) -> dict:
    # The architecture's size (every layer's full weight matrix) is what must match; what each
    # library stores and how many numbers can reach the output (a masked layer's ones) differ.
    counts = {lib: wl.parameter_count(b.module) for lib, b in built.items()}
    ref = counts.get("flowscope")
    report = {}
    for lib, n in counts.items():
        module = built[lib].module
        stored, free = wl.stored_parameter_count(module), wl.free_parameter_count(module)
        diff = (n - ref) / ref if ref else 0.0
        report[lib] = {
            "params": n,
            "stored": stored,
            "free": free,
            "relative_to_flowscope": diff,
            "note": built[lib].note,
        }
        flag = "" if abs(diff) <= 0.02 else "  MISMATCH > 2%"
        note = f"  ({built[lib].note})" if built[lib].note else ""
        extra = f"  (stored {stored:,d}, free {free:,d})" if (stored, free) != (n, n) else ""
        log(f"  params {lib:10s} {n:>10,d}  {diff:+.2%}{flag}{extra}{note}")
    return report


def speed(workload: str, libs: list[str], args: argparse.Namespace) -> dict:
    spec = SPECS[workload]
    log(f"\n[{workload}] {spec['title']}")
    built = build_all(workload, libs)
    out: dict = {"title": spec["title"], "params": check_params(workload, built), "metrics": {}}
    repeats = 3 if args.quick else args.repeats
    gen = torch.Generator().manual_seed(0)
    shape, batch = spec["shape"], spec["batch"]

    # Training steps/s: `steps` steps per timed call.
    batches = [torch.randn(batch, *shape, generator=gen) for _ in range(8)]
    for b in built.values():
        b.module.train()
    tasks = {lib: timing.train_task(b, batches, spec["steps"]) for lib, b in built.items()}
    if workload in args.compile and "flowscope" in built:
        tasks[COMPILED], out["compile"] = compiled_train_task(workload, batches, spec["steps"])
    _measure(out, "train_steps_per_s", tasks, repeats, 2, args, lambda s: spec["steps"] / s)
    log("  train steps/s   " + _row(out["metrics"]["train_steps_per_s"], "rate"))

    for b in built.values():
        b.module.eval()
    n_lp = spec["log_prob_n"]
    if n_lp is not None:
        n_lp = QUICK.get(workload, n_lp) if args.quick else n_lp
        x = torch.randn(n_lp, *shape, generator=gen)
        tasks = {lib: timing.log_prob_task(b, x) for lib, b in built.items()}
        _measure(out, "log_prob_points_per_s", tasks, repeats, 1, args, lambda s: n_lp / s)
        out["log_prob_points"] = n_lp
        log("  log_prob pts/s  " + _row(out["metrics"]["log_prob_points_per_s"], "rate"))

    n_s = spec["sample_n"]
    sampled = dict(built)
    if args.quick and workload == "W2":
        # Peers sample a 784-D MAF with 784 full network passes per layer (tens of seconds).
        sampled = {k: v for k, v in built.items() if k == "flowscope"}
        out["skipped"] = "peers' W2 sampling skipped in --quick mode"
    tasks = {lib: timing.sample_task(b, n_s) for lib, b in sampled.items()}
    if spec["sample_as"] == "rate":
        _measure(out, "samples_per_s", tasks, repeats, 1, args, lambda s: n_s / s)
        log("  samples/s       " + _row(out["metrics"]["samples_per_s"], "rate"))
    else:
        key = f"seconds_to_sample_{n_s}"
        _measure(out, key, tasks, repeats, 1, args, lambda s: s)
        log(f"  s to sample {n_s:<4d}" + _row(out["metrics"][key], "seconds"))

    if args.profile:
        out["profile"] = profile_step(built, batches, spec["steps"])
    return out


def compiled_train_task(workload: str, batches: list, steps: int):
    """Flowscope's training step with ``torch.compile(flow.loss)`` (``TrainConfig(compile=True)``).

    A separate model built with the same seed; the first call (``steps`` steps) compiles the
    forward and backward graphs, and its wall and CPU time (this process plus the C++
    compiler's child processes) is returned as the compile time.
    """
    torch.manual_seed(0)
    built = wl.builder(workload, "flowscope")()
    built.module.train()
    task = timing.train_task(built, batches, steps, loss=torch.compile(built.module.loss))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0, c0 = time.perf_counter(), time.process_time()
    task()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (
        time.process_time()
        - c0
        + (after.ru_utime + after.ru_stime)
        - (children.ru_utime + children.ru_stime)
    )
    info = {"compile_wall_s": time.perf_counter() - w0, "compile_cpu_s": cpu, "cache": "cold"}
    log(
        f"  compiled flowscope: first {steps} steps (compilation) took "
        f"{info['compile_wall_s']:.1f} s wall, {cpu:.1f} s CPU"
    )
    return task, info


def _measure(
    out: dict, metric: str, tasks: dict, repeats: int, warmup: int, args: argparse.Namespace, value
) -> None:
    """Time ``tasks`` interleaved; store ``value(median seconds)`` per library for both clocks.

    ``out["metrics"]`` holds the clock chosen by ``--clock``; ``metrics_wall``/``metrics_cpu``
    both, and ``seconds`` every timed call.
    """
    raw: dict = {}
    timing.interleaved(tasks, repeats, warmup=warmup, budget_s=args.budget, cpu_out=raw)
    for clock in ("wall", "cpu"):
        out.setdefault(f"metrics_{clock}", {})[metric] = {
            lib: value(timing.median(r[clock])) for lib, r in raw.items()
        }
    out.setdefault("seconds", {})[metric] = raw
    out["metrics"][metric] = out[f"metrics_{args.clock}"][metric]


def _row(values: dict[str, float], kind: str) -> str:
    return "  ".join(f"{lib} {fmt(v, kind)}" for lib, v in values.items())


def profile_step(built: dict[str, wl.Built], batches: list, steps: int) -> dict:
    """Where a training step's time goes, for flowscope and every peer (torch.profiler).

    ``kernels``: self time of the matrix/convolution kernels (BLAS, oneDNN: identical work in
    every library for the same architecture); ``optimizer``: ``Adam.step`` (same optimizer,
    same parameter count); ``rest``: elementwise kernels, autograd engine, dispatcher and
    Python -- the only part a library's code controls.
    """
    from torch.profiler import ProfilerActivity, profile

    heavy = {
        "aten::mm",
        "aten::addmm",
        "aten::addmm_",  # flowscope's blockwise MADE backward (_StaircaseLinear)
        "aten::bmm",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
        "aten::linalg_solve_triangular",
    }
    result = {}
    for lib, b in built.items():
        b.module.train()
        task = timing.train_task(b, batches, steps)
        task()
        windows = 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                for _ in range(windows):
                    task()
                wall = time.perf_counter() - t0
        steps_done = steps * windows
        events = prof.key_averages()
        kernels = sum(e.self_cpu_time_total for e in events if e.key in heavy) / 1e6
        optim = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step")) / 1e6
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
        result[lib] = {
            "step_ms": 1e3 * wall / steps_done,
            "kernels_ms": 1e3 * kernels / steps_done,
            "optimizer_ms": 1e3 * optim / steps_done,
            "rest_ms": 1e3 * (wall - kernels - optim) / steps_done,
            "top_ops": [(e.key, round(e.self_cpu_time_total / 1e3 / steps_done, 3)) for e in top],
        }
        r = result[lib]
        share = {k: 100 * r[f"{k}_ms"] / r["step_ms"] for k in ("kernels", "optimizer", "rest")}
        log(
            f"  profile {lib:10s} step {r['step_ms']:.2f} ms = matmul/conv kernels "
            f"{r['kernels_ms']:.2f} ({share['kernels']:.0f}%) + Adam {r['optimizer_ms']:.2f} "
            f"({share['optimizer']:.0f}%) + rest {r['rest_ms']:.2f} ({share['rest']:.0f}%)"
        )
    return result


# -------------------------------------------------------------------------------- W4 and W5


def quality_run(libs: list[str], args: argparse.Namespace) -> dict:
    steps = 300 if args.quick else 2000
    seeds = [0] if args.quick else list(range(args.seeds))
    log(f"\n[W4] two moons (noise {quality.NOISE}), test NLL after {steps} steps, seeds {seeds}")
    out: dict = {
        "steps": steps,
        "seeds": seeds,
        "data": f"sklearn make_moons(noise={quality.NOISE}), raw coordinates, "
        f"{quality.N_TRAIN} train / {quality.N_TEST} test points, batch {quality.BATCH}, "
        f"Adam lr {quality.LR}",
        "nll": {},
        "per_seed": {},
        "train_seconds": {},
    }
    for lib in libs:
        factory = wl.builder("W4", lib)
        if factory is None:
            continue
        runs = [quality.test_nll(factory, seed, steps) for seed in seeds]
        nlls = [r["nll"] for r in runs]
        finite = [v for v in nlls if not math.isnan(v)]
        out["per_seed"][lib] = nlls
        out["nll"][lib] = sum(finite) / len(finite) if finite else float("nan")
        out["train_seconds"][lib] = sum(r["train_seconds"] for r in runs) / len(runs)
        log(
            f"  {lib:10s} test NLL {fmt(out['nll'][lib], 'nll')}  per seed "
            f"{[round(v, 3) for v in nlls]}  ({out['train_seconds'][lib]:.1f} s per run)"
        )
    return out


def mixture_run(args: argparse.Namespace) -> dict:
    log("\n[W5] MixtureOfFlows of K RealNVP components (W1's architecture), batch 512")
    try:
        from flowscope.mixture import MixtureOfFlows
    except ImportError as err:
        log(f"  TODO: flowscope.mixture is not available ({err}); W5 not measured")
        return {"todo": f"flowscope.mixture not available: {err}"}
    from flowscope import models

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(512, 2, generator=gen) for _ in range(8)]
    tasks, banks = {}, {}
    # K = 1, 5, 10 as one batched computation (what MixtureOfFlows builds), and K = 5 as a
    # Python loop over five flows (``batched=False``): what batching the components saves.
    for name, k, batched in (
        ("K=1", 1, None),
        ("K=5", 5, None),
        ("K=10", 10, None),
        ("K=5 loop", 5, False),
    ):
        torch.manual_seed(0)
        mix = MixtureOfFlows(
            (lambda: models.realnvp(2, layers=8, hidden=64, net_layers=2), k), batched=batched
        )
        mix.train()
        banks[name] = type(mix.components).__name__
        # The optimizer of W1-W3 and of flowscope's Trainer (fused Adam); until run 23 W5
        # used torch's default (a Python loop over the tensors), whose per-tensor cost, the
        # same at every K, made K = 1 look dearer (docs/benchmarks.md, W5).
        opt = torch.optim.Adam(mix.parameters(), lr=1e-4, fused=True)

        def run(mix=mix, opt=opt) -> None:
            for i in range(W5_STEPS):
                opt.zero_grad(set_to_none=True)
                mix.loss(batches[i % len(batches)]).backward()
                opt.step()

        tasks[name] = run
    repeats = 3 if args.quick else args.repeats
    secs = timing.interleaved(tasks, repeats, warmup=1, budget_s=args.budget)
    step_ms = {name: 1e3 * timing.median(s) / W5_STEPS for name, s in secs.items()}
    # (the clock chosen by --clock)
    out = {
        "step_ms": step_ms,
        "components": banks,
        "k5_over_k1": step_ms["K=5"] / step_ms["K=1"],
        "k10_over_k1": step_ms["K=10"] / step_ms["K=1"],
        "k5_over_loop": step_ms["K=5"] / step_ms["K=5 loop"],
    }
    for name, ms in step_ms.items():
        log(f"  {name:5s} {ms:.2f} ms/step ({1e3 / ms:.1f} steps/s)")
    return out


# ------------------------------------------------------------------------------------ table


def table(results: dict) -> str:
    """Markdown: one row per metric, ratios against the FASTEST peer."""
    peers = [p for p in wl.PEERS if p in results["libraries"]]
    other = "wall" if results.get("clock", "wall") == "cpu" else "cpu"
    head = [
        "workload",
        "metric",
        "flowscope",
        *peers,
        "flowscope / fastest peer",
        f"(same, {other} clock)",
        "(per-round median)",
        "target",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ratio_of(values: dict, seconds: bool) -> float | None:
        peer_vals = {p: values[p] for p in peers if p in values}
        fs = values.get("flowscope")
        if not peer_vals or not fs:
            return None
        best = min(peer_vals.values()) if seconds else max(peer_vals.values())
        return best / fs if seconds else fs / best

    def paired(res: dict, metric: str, seconds: bool, lib: str = "flowscope") -> str:
        """The median of per-round ratios against the fastest peer (by median), table clock."""
        values, raw = res["metrics"][metric], res.get("seconds", {}).get(metric, {})
        peer_vals = {p: values[p] for p in peers if p in values}
        if not peer_vals or lib not in raw:
            return "n/a"
        best = (min if seconds else max)(peer_vals, key=peer_vals.get)
        clock = results.get("clock", "wall")
        r = timing.paired_ratio(raw[lib][clock], raw[best][clock]) if best in raw else None
        return "n/a" if r is None else f"{r:.2f}x"

    for workload in SPEED:
        res = results["workloads"].get(workload)
        if not res:
            continue
        for metric, values in res["metrics"].items():
            seconds = metric.startswith("seconds")
            kind = "seconds" if seconds else "rate"
            fs = values.get("flowscope")
            ratio = ratio_of(values, seconds)
            ratio_s = "n/a" if ratio is None else f"**{ratio:.2f}x**"
            alt = ratio_of(res.get(f"metrics_{other}", {}).get(metric, {}), seconds)
            alt_s = "n/a" if alt is None else f"{alt:.2f}x"
            short = metric.split("_")[0]
            target = (
                TARGETS["sample_W2"]
                if (workload == "W2" and seconds)
                else TARGETS.get("sample" if seconds or short == "samples" else short, 1.5)
            )
            met = "" if ratio is None else (" met" if ratio >= target else " missed")
            cells = [fmt(values.get(p), kind) for p in peers]
            lines.append(
                f"| {workload} | {metric} | {fmt(fs, kind)} | "
                + " | ".join(cells)
                + f" | {ratio_s} | {alt_s} | {paired(res, metric, seconds)} | >= {target:g}x{met} |"
            )
            if COMPILED in values:  # the compiled row, beside (never instead of) the eager one
                alt_values = res.get(f"metrics_{other}", {}).get(metric, {})
                ratio = ratio_of({**values, "flowscope": values[COMPILED]}, seconds)
                alt = ratio_of({**alt_values, "flowscope": alt_values.get(COMPILED)}, seconds)
                comp = res.get("compile", {})
                label = (
                    f"{metric}, {COMPILED}: compile {comp.get('compile_wall_s', math.nan):.0f} s "
                    f"wall / {comp.get('compile_cpu_s', math.nan):.0f} s CPU, "
                    f"{values[COMPILED] / fs:.2f}x eager flowscope"
                )
                lines.append(
                    f"| {workload} | {label} | {fmt(values[COMPILED], kind)} | "
                    + " | ".join(cells)
                    + f" | {'n/a' if ratio is None else f'**{ratio:.2f}x**'} | "
                    + f"{'n/a' if alt is None else f'{alt:.2f}x'} | "
                    + f"{paired(res, metric, seconds, COMPILED)} | (compiled: no target) |"
                )
    q = results["workloads"].get("W4")
    if q:
        peer_nll = {p: q["nll"][p] for p in peers if p in q["nll"] and not math.isnan(q["nll"][p])}
        fs = q["nll"].get("flowscope")
        cells = [fmt(q["nll"].get(p), "nll") for p in peers]
        if peer_nll and fs is not None:
            gap = fs - min(peer_nll.values())
            verdict = "met" if gap <= NLL_MARGIN else "missed"
            gap_s = f"**{gap:+.3f} nats** vs best peer"
        else:
            gap_s, verdict = "n/a", ""
        lines.append(
            f"| W4 | test NLL (nats, lower is better) | {fmt(fs, 'nll')} | "
            + " | ".join(cells)
            + f" | {gap_s} | | | <= +{NLL_MARGIN} {verdict} |"
        )
    m = results["workloads"].get("W5")
    if m and "step_ms" in m:
        steps = ", ".join(f"{k}: {v:.1f} ms" for k, v in m["step_ms"].items())
        verdict = "met" if m["k5_over_k1"] <= W5_TARGET else "missed"
        lines.append(
            f"| W5 | MixtureOfFlows step time ({steps}) | K=5 / K=1 = {m['k5_over_k1']:.2f}"
            + (f"; K=5 / K=5 loop = {m['k5_over_loop']:.2f}" if "k5_over_loop" in m else "")
            + " | "
            + " | ".join("n/a" for _ in peers)
            + f" | (no peer has mixtures) | | | <= {W5_TARGET:g} {verdict} |"
        )
    elif m:
        lines.append(f"| W5 | TODO | {m.get('todo')} |" + " |" * (len(head) - 3))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(ALL), help="comma list of " + ",".join(ALL))
    parser.add_argument("--libs", default=",".join(wl.LIBRARIES), help="libraries to compare")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer/smaller repeats")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per metric")
    parser.add_argument("--seeds", type=int, default=3, help="W4 seeds (default 3)")
    parser.add_argument("--budget", type=float, default=40.0, help="max timed s per lib/metric")
    parser.add_argument("--profile", action="store_true", help="profile one training window")
    parser.add_argument(
        "--compile",
        default="W1,W1b,W2",
        help="workloads that also get a 'flowscope (compiled)' training row, or 'none'",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="clock of the table: wall time, or this process's CPU time (steadier on a loaded "
        "machine with --threads 1); the JSON holds both",
    )
    parser.add_argument(
        "--allocator",
        choices=("default", "tuned"),
        default="default",
        help="glibc malloc thresholds for the WHOLE process, every library alike: 'tuned' as "
        "flowscope's Trainer sets them on CPU (flowscope.allocator), or glibc's defaults",
    )
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)

    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        parser.error(f"--workloads: unknown {unknown}; choose from {','.join(ALL)}")
    args.compile = set() if args.compile == "none" else set(args.compile.split(","))
    timing.CLOCK["name"] = args.clock
    if args.allocator == "tuned":
        from flowscope.allocator import tune_cpu_allocator

        tuned = tune_cpu_allocator()
    else:
        tuned = False
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    warnings.filterwarnings("ignore", category=UserWarning)  # peers' deprecation chatter

    libs = [lib for lib in args.libs.split(",") if lib]
    missing = [lib for lib in libs if not wl.available(lib)]
    libs = [lib for lib in libs if lib not in missing]
    started = time.perf_counter()
    results: dict = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "allocator": "tuned" if tuned else "default",
        "quick": args.quick,
        "machine": machine(),
        "load_before": load(),
        "versions": {lib: wl.version(lib) for lib in ("torch", *libs)},
        "libraries": libs,
        "missing": missing,
        "workloads": {},
    }
    log(
        f"flowscope benchmark  threads={results['threads']}  clock={args.clock}  "
        f"allocator={results['allocator']}  load={results['load_before']}"
    )
    log(f"  {results['machine']['cpu']}, {results['machine']['cores']} cores")
    log("  versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
    if missing:
        log(f"  not installed (pip install '.[bench]'): {', '.join(missing)}")

    for workload in chosen:
        if workload in SPEED:
            results["workloads"][workload] = speed(workload, libs, args)
        elif workload == "W4":
            results["workloads"]["W4"] = quality_run(libs, args)
        elif workload == "W5":
            results["workloads"]["W5"] = mixture_run(args)

    results["load_after"] = load()
    results["wall_seconds"] = time.perf_counter() - started
    results["table"] = table(results)
    log("\n" + results["table"])
    log(
        f"\nwall {results['wall_seconds']:.0f} s, load before {results['load_before']} "
        f"after {results['load_after']}"
    )

    out = (
        Path(args.out)
        if args.out
        else HERE
        / "results"
        / (f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    log(f"results: {out}")
    return results


if __name__ == "__main__":
    main()
