"""Process set-up shared by training and everything after it: threads, seeds, device, run folders.

Nothing here knows about models or data, so ``predict``, ``serve`` and
``export`` can set up torch without importing the training engine.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError


def setup_torch(threads: int = 0) -> None:
    """Pin torch threads: with 2 cores, oversubscription is slower than one pool."""
    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_device(name: str) -> None:
    """Fail with one line on a device this machine cannot give (before any data is read)."""
    if name in ("auto", "cpu"):
        return
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"train.device={name}: expected cuda or cuda:N with a number N")
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name} but CUDA is not available here; use train.device=cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name}: only {torch.cuda.device_count()} CUDA device(s) here "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("train.device=mps but MPS is not available here; use train.device=cpu or auto")
        return
    hint = "; for a GPU write cuda or cuda:0" if name.lower() in ("gpu", "nvidia") else ""
    raise ConfigError(f"train.device={name} is not a device; choose auto, cpu, cuda or cuda:N{hint}")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else is checked first (one-line error)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    return torch.device(name)


def unique_run_dir(project: str | Path, name: str) -> Path:
    """runs/train, runs/train2, ... (never overwrite an earlier run)."""
    base = Path(project)
    p, i = base / name, 2
    while p.exists():
        p, i = base / f"{name}{i}", i + 1
    return p
