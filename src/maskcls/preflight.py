"""Checks that run before any data is read, cache built or run folder made: one line per problem.

``fit``, ``kfold`` and ``tune`` call ``check_before_training(cfg)`` first, so a
wrong device, model name or path fails in a second instead of after minutes
of decoding. (The preprocessing backends, face detector and background
remover, are checked when ``fit`` builds its Decoder, also before the data is
read.) Each problem raises the project's error types, which the CLI prints as
one ``maskcls: error:`` line (exit status 2).
"""
from __future__ import annotations

from pathlib import Path

from .config import Config, ConfigError
from .data.reader import DataError
from .models import check_model_name
from .runtime import check_device


def check_paths(cfg: Config) -> None:
    """data.root (with train.csv), data.relabel and model.weights exist."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (data.root; run `maskcls demo` to make demo data)")
    train = root / "train" if (root / "train").is_dir() else root
    if not (train / "train.csv").is_file():
        raise DataError(f"{train / 'train.csv'}: file not found (data.root={root} needs train/train.csv)")
    for key, value in {"data.relabel": cfg.data.relabel, "model.weights": cfg.model.weights}.items():
        if value and not Path(value).is_file():
            raise ConfigError(f"{key}={value}: file not found")


def check_before_training(cfg: Config, *, paths: bool = True) -> None:
    """Device, model name and (unless the caller already read the data) paths, before anything slow."""
    check_device(cfg.train.device)
    check_model_name(cfg.model.name)
    if paths:
        check_paths(cfg)
