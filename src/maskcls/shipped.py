"""The model ``predict``, ``serve`` and ``evaluate`` use when none is given: env ``MASKCLS_MODEL``, then the packaged one.

Why: after ``pip install ".[serve]"`` a user should check photos at once, with
no training. The package carries one ONNX model (``weights/maskcls.onnx``,
rebuilt by ``make model``) with its MODEL_CARD.md beside it. An explicit run
folder, checkpoint or .onnx always wins; ``MASKCLS_MODEL`` lets a deployment
point at its own file without changing the command line.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .config import ConfigError

log = logging.getLogger("maskcls")

ENV = "MASKCLS_MODEL"
PACKAGED = Path(__file__).parent / "weights" / "maskcls.onnx"
REBUILD = "make model"


def default_model() -> Path:
    """``$MASKCLS_MODEL`` if set, else the packaged file; a ConfigError line saying what to do if neither exists."""
    env = os.environ.get(ENV, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise ConfigError(f"{ENV}={env}: no such run folder, checkpoint or .onnx file")
        log.info("model: %s (from %s)", path, ENV)
        return path
    if PACKAGED.is_file():
        log.info("model: %s (packaged)", PACKAGED)
        return PACKAGED
    raise ConfigError(f"no model given and none packaged ({PACKAGED} is absent): pass a run folder or .onnx file, "
                      f"set {ENV}, or build the packaged one from the data with `{REBUILD}` in a checkout")


def resolve_models(given: list[str]) -> list[str]:
    """The models a command was given, or ``[default_model()]`` when it was given none."""
    return list(given) if given else [str(default_model())]
