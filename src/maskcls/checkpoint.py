"""Checkpoints: plain dicts holding everything needed to rebuild model and preprocessing.

Written atomically (temp file + rename) so a kill mid-save never leaves a
broken ``last.pt``; read with ``weights_only=True`` so a checkpoint cannot
run code.
"""
from __future__ import annotations

import os
from pathlib import Path

VERSION = 1


class CheckpointError(Exception):
    """A checkpoint or run folder that cannot be used; one line naming the file."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    import torch  # here, not at the top: the lean ONNX install imports this module for CheckpointError

    torch.save({**state, "version": VERSION}, tmp)
    os.replace(tmp, path)


def resolve_checkpoint(run: str | Path, which: str = "best") -> Path:
    """A run folder (-> weights/<which>.pt) or a checkpoint file."""
    p = Path(run)
    if p.is_dir():
        p = p / "weights" / f"{which}.pt"
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found (give a run folder like runs/train or a .pt file)")
    return p


def load_checkpoint(run: str | Path, which: str = "best") -> dict:
    path = resolve_checkpoint(run, which)
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if type(e).__name__ == "UnpicklingError" or "weights_only" in str(e):
            raise CheckpointError(f"{path}: refused: it holds pickled objects other than tensors, and loading them "
                                  f"could run code") from None
        raise CheckpointError(f"{path}: not a readable maskcls checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a maskcls checkpoint (no model/config); for bare weights use model.weights=")
    from .config import drop_removed

    state["config"] = drop_removed(state["config"], path)  # saved before a key was removed: noted, never a crash
    state["path"] = str(path)
    return state
