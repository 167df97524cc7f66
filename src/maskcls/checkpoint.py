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
    check_weights_fit(state, path)
    state["path"] = str(path)
    return state


def check_weights_fit(state: dict, path: str | Path) -> None:
    """``CheckpointError`` in one line when the weights do not fit the network the checkpoint's config names.

    An edited or mixed-up ``best.pt`` (config says resnet18, weights are lite0) used to fail deep in
    ``load_state_dict`` with a 163-line message, and ``train --resume`` first tried to download the named
    model's pretrained weights. The skeleton is built without weights, before anything else is.
    """
    from .config import ConfigError, from_dict
    from .models import model_from_config

    conf = state["config"] if isinstance(state["config"], dict) else {}
    model_conf = {k: v for k, v in (conf.get("model") or {}).items() if k not in ("pretrained", "weights")}
    try:
        cfg = from_dict({"model": {**model_conf, "pretrained": False, "weights": None},
                         "data": {"age_thresholds": (conf.get("data") or {}).get("age_thresholds", [30, 60])}})
        expected = {k: tuple(v.shape) for k, v in model_from_config(cfg).state_dict().items()}
    except (ConfigError, ValueError, TypeError):  # a config this version cannot read: its own loader says why
        return
    except Exception as e:  # an unknown timm name, for one
        raise CheckpointError(f"{path}: its config names a model that cannot be built ({str(e).splitlines()[0]})"
                              ) from None
    found = {k: tuple(getattr(v, "shape", ())) for k, v in state["model"].items()} \
        if isinstance(state["model"], dict) else {}
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    shaped = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if missing or extra or shaped:
        example = (missing or extra or shaped)[0]
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config names (model.name={cfg.model.name}, "
            f"model.head={cfg.model.head}): {len(missing)} missing, {len(extra)} unexpected and {len(shaped)} "
            f"differently shaped tensors (e.g. {example}); the file was edited or mixed up with another run's")
