"""One function per CLI mode; each wires config to the Python API and prints results."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .config import Config, from_dict, load_config, parse_override

log = logging.getLogger("maskcls")


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(getattr(args, "config", None), args.overrides)
    if args.quiet:
        cfg.train.progress = False
    return cfg


def _run_config(state_config: dict, overrides: list[str]) -> Config:
    cfg = from_dict(state_config)
    return load_config(None, {**cfg.to_dict(), **dict(parse_override(o) for o in overrides)})


def train(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .engine import fit

    if args.resume:
        state = load_checkpoint(args.resume, "last")
        cfg = _run_config(state["config"], args.overrides)
        result = fit(cfg, resume=args.resume)
    else:
        result = fit(_config(args))
    print(f"run: {result['run_dir']}  best val F1: {result['best_f1']:.4f}  weights: {result['best']}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_run

    m, out = evaluate_run(args.run, answers=args.answers, images=args.images, out=args.out, overrides=args.overrides,
                          progress=not args.quiet)
    from .metrics import summary_text

    print(summary_text(m, "evaluation"))
    print(f"written: {out}")
    from .report import write_report

    print(f"report: {write_report(args.run, metrics=out)}")
    return 0


def _split_runs(args: argparse.Namespace) -> None:
    """Both RUNS and key=value are positional: move the overrides out of ``runs``."""
    args.overrides = [*[r for r in args.runs if "=" in r], *args.overrides]
    args.runs = [r for r in args.runs if "=" not in r]
    if not args.runs:
        from .config import ConfigError

        raise ConfigError("give at least one run folder or checkpoint")


def predict(args: argparse.Namespace) -> int:
    from .evaluation import predict_source

    _split_runs(args)
    out = predict_source(args.runs, source=args.source, out=args.out, with_probs=args.probs, engine=args.engine,
                         overrides=args.overrides, progress=not args.quiet, allow_missing=args.allow_missing)
    print(f"written: {out}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo_run import run_demo

    return run_demo(args)


def kfold(args: argparse.Namespace) -> int:
    from .kfold import run_kfold

    result = run_kfold(_config(args))
    print(json.dumps({k: v for k, v in result.items() if k != "folds"}, indent=1))
    return 0


def tune(args: argparse.Namespace) -> int:
    from .tune import run_tune

    cfg = _config(args)
    if args.n_trials is not None:
        cfg.tune.n_trials = args.n_trials
    if args.timeout is not None:
        cfg.tune.timeout = args.timeout
    if args.storage is not None:
        cfg.tune.storage = args.storage
    run_tune(cfg)
    return 0


def prepare(args: argparse.Namespace) -> int:
    from . import prepare as prep

    return prep.run(args.step, _config(args), copies=args.copies, out=args.out)


def export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    print(f"written: {export_onnx(args.run, args.out)}")
    return 0


def serve(args: argparse.Namespace) -> int:
    from .serve.app import serve as serve_app

    _split_runs(args)
    serve_app(args.runs, host=args.host, port=args.port, engine=args.engine)
    return 0


def report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"written: {write_report(args.run, answers=args.answers, images=args.images, progress=not args.quiet)}")
    return 0
