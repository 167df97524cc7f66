"""One function per CLI mode; each wires config to the Python API and prints results."""
from __future__ import annotations

import argparse
import json
import logging
import os
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


def _threads_per_process(cfg: Config) -> int:
    """``train.threads`` if set, else the cores shared out: oversubscribed pools are slower than idle cores."""
    return cfg.train.threads or max(1, (os.cpu_count() or 1) // cfg.train.processes)


def _check_gpus(cfg: Config) -> None:
    """On CUDA each process takes one card (LOCAL_RANK): more processes than cards is a config error."""
    import torch

    from .config import ConfigError
    from .runtime import resolve_device

    cards = torch.cuda.device_count()
    if resolve_device(cfg.train.device).type == "cuda" and cfg.train.processes > cards:
        raise ConfigError(f"train.processes={cfg.train.processes} but {cards} CUDA device(s): one process per card")


def train(args: argparse.Namespace) -> int:
    from . import distributed
    from .checkpoint import load_checkpoint
    from .engine import fit

    if args.resume:
        state = load_checkpoint(args.resume, "last")
        cfg = _run_config(state["config"], args.overrides)
    else:
        cfg = _config(args)
    if cfg.train.processes > 1 and not distributed.launched():
        from .preflight import check_before_training

        check_before_training(cfg)  # a bad path or name: one line here, not one per worker and torchrun's trace
        _check_gpus(cfg)
        return distributed.launch(args.argv, cfg.train.processes, _threads_per_process(cfg))
    result = fit(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line for the whole job
        score = (f"best val F1: {result['best_f1']:.4f}" if result["best_f1"] >= 0  # no validation: -train loss
                 else "no validation persons (data.val_fraction=0): weights of the best training loss")
        print(f"run: {result['run_dir']}  {score}  weights: {result['best']}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_run

    m, out = evaluate_run(args.run, answers=args.answers, images=args.images, out=args.out, overrides=args.overrides,
                          progress=not args.quiet)
    from .metrics import summary_text

    print(summary_text(m, "evaluation"))
    print(f"written: {out}")
    if getattr(args, "mask_set", None):
        from .devsets import mask_text
        from .evaluation import evaluate_mask_set

        mm, mpath = evaluate_mask_set(args.run, args.mask_set, out=args.out, overrides=args.overrides,
                                      progress=not args.quiet)
        print(mask_text(mm, f"mask set {args.mask_set}"))
        print(f"written: {mpath}")
    from .report import write_report

    print(f"report: {write_report(args.run, metrics=out)}")
    if not args.out:  # scores written into the run folder: the model card lists them
        from .model_card import write_model_card
        from .report import run_folder

        print(f"model card: {write_model_card(run_folder(args.run))}")
    return 0


def _split_runs(args: argparse.Namespace) -> None:
    """Both RUNS and key=value are positional: move the overrides out of ``runs``."""
    args.overrides = [*[r for r in args.runs if "=" in r], *args.overrides]
    args.runs = [r for r in args.runs if "=" not in r]
    if not args.runs:
        from .config import ConfigError

        raise ConfigError("give at least one run folder or checkpoint")


def _engine(args: argparse.Namespace) -> str:
    """--engine; else onnx for an .onnx file, or when torch is not installed and the runs are exported."""
    import importlib.util

    from .run import expand_runs, onnx_path

    if args.engine:
        return args.engine
    if any(str(r).endswith(".onnx") for r in args.runs):
        return "onnx"
    if importlib.util.find_spec("torch") is None and all(onnx_path(r).is_file() for r in expand_runs(args.runs)):
        return "onnx"  # the lean install: use the exported models
    return "torch"


def predict(args: argparse.Namespace) -> int:
    from .evaluation import predict_source

    _split_runs(args)
    out = predict_source(args.runs, source=args.source, out=args.out, with_probs=args.probs, engine=_engine(args),
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
    run_tune(cfg, n_trials=args.n_trials, timeout=args.timeout, storage=args.storage, study=args.study)
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
    serve_app(args.runs, host=args.host, port=args.port, engine=_engine(args), overrides=args.overrides)
    return 0


def report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"written: {write_report(args.run, answers=args.answers, images=args.images, progress=not args.quiet)}")
    return 0


def _flow(value) -> str:
    """A value as one line of YAML, as it would be typed in key=value."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def cfg(args: argparse.Namespace) -> int:
    """``maskcls cfg``: every key, its value, default, choices and help."""
    from .config import describe_keys

    words = [w for w in args.words if "=" not in w]
    config = load_config(args.config, [w for w in args.words if "=" in w])
    keys = describe_keys(config)

    def match(w: str) -> list[dict]:  # a section or key prefix (train, train.lr), else any key containing the word
        return [k for k in keys if k["key"].startswith(w)] or [k for k in keys if w in k["key"]]

    picked = {k["key"] for w in words for k in match(w)}
    rows = [k for k in keys if not words or k["key"] in picked]
    if not rows:
        from .config import ConfigError

        raise ConfigError(f"no config key contains {' or '.join(map(repr, words))} (`maskcls cfg` lists them all)")
    width = max(len(f"{r['key']}={_flow(r['value'])}") for r in rows if len(_flow(r["value"])) < 40)
    for r in rows:
        text = f"{r['key']}={_flow(r['value'])}"
        notes = [r["help"]] if r["help"] else []
        if r["choices"]:
            notes.append(f"choices: {', '.join(map(str, r['choices']))}")
        if r["value"] != r["default"]:
            notes.append(f"default: {_flow(r['default'])}")
        line = f"{text:<{width}}  # {'; '.join(notes)}" if notes else text
        print(line if len(text) <= width else f"{text}\n{'':<{width}}  # {'; '.join(notes)}")
    return 0


def cache(args: argparse.Namespace) -> int:
    """``maskcls cache info|clear``."""
    from .data.cache import clear_cache, list_stores, resolve_cache_dir

    config = load_config(None, args.overrides)
    folder = resolve_cache_dir(config.data.cache_dir)
    if args.action == "clear":
        n, size = clear_cache(folder)
        print(f"removed {n} store(s), {size / 1e6:.1f} MB, from {folder}")
        return 0
    stores = list_stores(folder)
    total = sum(s["bytes"] for s in stores)
    print(f"decode cache: {folder}")
    print(f"  {len(stores)} store(s), {total / 1e6:.1f} MB (cap {config.data.cache_max_gb:g} GB: data.cache_max_gb)")
    import time

    for s in stores:
        print(f"  {s['path'].name}  {s['bytes'] / 1e6:9.1f} MB  last used {time.strftime('%Y-%m-%d %H:%M', time.localtime(s['used']))}")
    return 0
