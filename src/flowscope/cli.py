"""The ``flowscope`` command line: train, sample, evaluate, report, experiment, demo.

Errors a user can cause (a missing file, an unknown model, a bad YAML key) end the program with
exit status 2 and ONE line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _train_config(args: argparse.Namespace):
    from .runs import RunConfig

    if args.config:
        cfg = RunConfig.from_yaml(args.config)
        raw = cfg.to_dict()
    else:
        raw = RunConfig().to_dict()
        raw["name"] = f"{args.model or raw['model']}-{args.data or raw['data']}"
    for key in ("model", "data", "seed", "root", "limit"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    train = dict(raw.get("train", {}))
    for key in ("steps", "lr", "batch_size"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    raw["train"] = train
    options = dict(raw.get("model_options", {}))
    for key in ("layers", "hidden"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    raw["model_options"] = options
    if args.name:
        raw["name"] = args.name
    return RunConfig.from_dict(raw)


def _cmd_train(args: argparse.Namespace) -> int:
    from .runs import default_out, train_run

    cfg = _train_config(args)
    out = Path(args.out) if args.out else default_out(cfg.name)
    metrics = train_run(cfg, out, progress=not args.quiet)
    _print_metrics(metrics)
    print(f"report: {out / 'report.html'}")
    return 0


def _print_metrics(metrics: dict[str, float]) -> None:
    for key in sorted(metrics):
        print(f"  {key:>22s}  {metrics[key]:.6g}")


def _cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .runs import load_run

    _, flow = load_run(args.run_dir)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        x = flow.sample(args.n, temperature=args.temperature)
    out = Path(args.output) if args.output else Path(args.run_dir) / "samples.npy"
    np.save(out, x.numpy(), allow_pickle=False)
    print(f"wrote {args.n} samples of shape {tuple(x.shape[1:])} to {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from .runs import evaluate_image, evaluate_toy, image_splits, load_run, toy_splits

    cfg, flow = load_run(args.run_dir)
    torch.manual_seed(args.seed)  # the dequantization noise draws
    if cfg.is_image:
        test = image_splits(cfg)["test"]
        metrics = evaluate_image(flow, test, importance_samples=args.importance_samples)
    else:
        metrics = evaluate_toy(flow, cfg.data, toy_splits(cfg)["test"])
    _print_metrics(metrics)
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.run_dir)
    print(f"report: {path}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from . import experiments

    if args.list or not args.name:
        for name in sorted(experiments.EXPERIMENTS):
            print(f"{name:>20s}  {experiments.get(name).SUMMARY}")
        return 0
    module = experiments.get(args.name)
    from .runs import default_out

    out = Path(args.out) if args.out else default_out(args.name)
    # --data / --root go only to experiments whose run() takes them (e.g. coherence).
    extra = {k: getattr(args, k) for k in ("data", "root") if getattr(args, k) is not None}
    unknown = sorted(set(extra) - set(inspect.signature(module.run).parameters))
    if unknown:
        raise ValueError(f"--{unknown[0]}: experiment {args.name!r} takes no such option")
    metrics = module.run(out, seeds=args.seeds, quick=args.quick, **extra)
    _print_metrics(metrics)
    print(f"report: {out / 'report.html'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .runs import RunConfig, default_out, train_run

    cfg = RunConfig(
        name="demo",
        model="nsf",
        data="pinwheel",
        model_options={"layers": 4, "hidden": 64},
        train={"steps": args.steps, "lr": 2e-3, "batch_size": 512, "eval_every": 250},
        n_train=20_000,
        n_val=5_000,
        n_test=20_000,
    )
    out = Path(args.out) if args.out else default_out("demo")
    print(
        f"flowscope demo: training a neural spline flow on pinwheel ({args.steps} steps) -> {out}"
    )
    metrics = train_run(cfg, out, progress=True)
    _print_metrics(metrics)
    print(f"report: {(out / 'report.html').resolve()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowscope", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a flow (from flags or a YAML config)")
    t.add_argument("--config", help="YAML file with RunConfig keys")
    t.add_argument("--model", help="nice | realnvp | maf | iaf | nsf | glow | realnvp_image")
    t.add_argument(
        "--data",
        help="2-D toy (pinwheel, moons, eight_gaussians, ...) or images (digits, mnist5k, "
        "fashion-mnist, mnist-idx, celeba, synthfaces)",
    )
    t.add_argument("--steps", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--layers", type=int)
    t.add_argument("--hidden", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--root", help="directory of file-based image data (fashion-mnist, celeba)")
    t.add_argument("--limit", type=int, help="use at most this many training images")
    t.add_argument("--name")
    t.add_argument("--out", help="output directory (default runs/<name>-<time>)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--output", help="a .npy file (default RUN_DIR/samples.npy)")
    s.set_defaults(func=_cmd_sample)

    e = sub.add_parser("evaluate", help="test NLL (and gap to the true entropy for toys)")
    e.add_argument("run_dir")
    e.add_argument("--json", help="also write the metrics to this file")
    e.add_argument(
        "--importance-samples",
        type=int,
        default=1,
        help="image runs: also report test_bpd_iw, the importance-weighted bound over this "
        "many dequantization draws per image",
    )
    e.add_argument("--seed", type=int, default=0, help="seed of the dequantization noise")
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("report", help="(re)write RUN_DIR/report.html")
    r.add_argument("run_dir")
    r.set_defaults(func=_cmd_report)

    x = sub.add_parser("experiment", help="run a named experiment (--list names them)")
    x.add_argument("name", nargs="?")
    x.add_argument("--list", action="store_true")
    x.add_argument("--out")
    x.add_argument("--seeds", type=int, default=1)
    x.add_argument("--quick", action="store_true", help="a much smaller run (for smoke tests)")
    x.add_argument("--data", help="data set of experiments that take one (coherence)")
    x.add_argument("--root", help="directory of file-based image data (fashion-mnist, celeba)")
    x.set_defaults(func=_cmd_experiment)

    d = sub.add_parser("demo", help="train a small flow on pinwheel and write its report")
    d.add_argument("--steps", type=int, default=4000)
    d.add_argument("--out")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The command line owns its process, so it keeps freed memory for reuse as the Trainer does
    # (flowscope.allocator): chunked inference allocates the same activations chunk after
    # chunk, and with glibc's defaults each round page-faults them in again (W1: 100k samples
    # in 0.30 s with the defaults, 0.12 s tuned, in a fresh process).
    from .allocator import tune_cpu_allocator

    tune_cpu_allocator()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, NotImplementedError) as err:
        print(f"flowscope: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
