"""``maskcls MODE [options] [key=value ...]``: a thin layer over the Python API.

Each mode parses its arguments, loads the config (defaults < --config YAML <
key=value overrides) and calls one function. Known user errors print one
line, ``maskcls: error: ...``, and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import ConfigError, from_dict, load_config

log = logging.getLogger("maskcls")


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("-c", "--config", help="YAML config (only what differs from the defaults)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


class UsageError(Exception):
    """A bad command line (unknown mode or option, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors print as one ``maskcls: error:`` line."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="maskcls", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True, metavar="MODE")

    p = sub.add_parser("train", help="train a model; writes runs/<name>/")
    _common(p)
    p.add_argument("--resume", metavar="RUN", help="continue a run folder or its last.pt")

    p = sub.add_parser("evaluate", help="score a run on its validation split or on a labelled list")
    p.add_argument("run", help="run folder or checkpoint")
    p.add_argument("--answers", help="labelled CSV ImageID,ans (e.g. eval/answers.csv); default: the persons "
                                     "the run held out (its split.csv; k-fold: out-of-fold)")
    p.add_argument("--images", help="folder of the answers' images (default: answers' folder/images)")
    p.add_argument("--out", help="folder for metrics (default: the run folder)")
    _common(p, config=False)

    p = sub.add_parser("predict", help="write a submission CSV or per-file predictions")
    p.add_argument("runs", nargs="+", help="run folder(s), checkpoint(s) or a k-fold folder; several = soft voting")
    p.add_argument("--source", help="data root with eval/info.csv, or any folder of images (default: data.root)")
    p.add_argument("--out", help="output CSV (default: <first run>/submission.csv or predictions.csv)")
    p.add_argument("--probs", action="store_true", help="also write the 18 class probabilities")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch", help="onnx needs `maskcls export` first")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 even if some images cannot be read (they get ans=-1 in a submission)")
    _common(p, config=False)

    p = sub.add_parser("demo", help="make demo data, train briefly, evaluate and predict")
    p.add_argument("--data", default="data/demo", help="where the demo data goes")
    _common(p)

    p = sub.add_parser("kfold", help="train K person-level folds; out-of-fold F1")
    _common(p)

    p = sub.add_parser("tune", help="Optuna search over the config's tune.space")
    _common(p)
    p.add_argument("--n-trials", type=int, help="overrides tune.n_trials")
    p.add_argument("--timeout", type=float, help="seconds; overrides tune.timeout")
    p.add_argument("--storage", help="database URL shared by workers (default: sqlite in the study folder)")

    p = sub.add_parser("prepare", help="offline data preparation")
    p.add_argument("step", choices=["upsample", "faces", "background"], help="what to prepare")
    _common(p)
    p.add_argument("--copies", type=int, default=2, help="upsample: copies of incorrect_mask and normal per person")
    p.add_argument("--out", help="faces/background: output data root (default: <root>-faces / <root>-nobg)")

    p = sub.add_parser("export", help="ONNX export of a run")
    p.add_argument("run")
    p.add_argument("--out", help="default: <run>/weights/model.onnx")
    _common(p, config=False)

    p = sub.add_parser("serve", help="HTTP service with a web page")
    p.add_argument("runs", nargs="+")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    _common(p, config=False)

    p = sub.add_parser("report", help="one HTML report of a run")
    p.add_argument("run")
    p.add_argument("--answers", help="labelled CSV to build the report on (default: the persons the run held out)")
    p.add_argument("--images")
    _common(p, config=False)
    return ap


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "h5py", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def user_errors() -> tuple:
    """Exceptions that mean bad input: shown as one line, never a traceback."""
    from .checkpoint import CheckpointError
    from .data.images import ImageReadError
    from .data.reader import DataError
    from .models import ModelError

    return ConfigError, CheckpointError, DataError, ImageReadError, ModelError, FileNotFoundError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        stray = [a for a in extra if a.startswith("-") or "=" not in a]
        if stray:
            raise UsageError(f"unrecognized arguments: {' '.join(stray)} (see `maskcls {args.mode} --help`)")
    except UsageError as e:
        print(f"maskcls: error: {e}", file=sys.stderr)
        return 2
    if extra:  # key=value after an option (`prepare upsample --copies 3 data.root=x`) is still an override
        args.overrides = [*getattr(args, "overrides", []), *extra]
    setup_logging(args.quiet)
    try:
        errors = user_errors()
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("maskcls: interrupted (checkpoints written so far are kept)", file=sys.stderr)
        return 130
    except errors as e:  # type: ignore[misc]
        print(f"maskcls: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from . import commands

    return getattr(commands, args.mode)(args)


if __name__ == "__main__":
    sys.exit(main())
