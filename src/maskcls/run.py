"""A trained run as one object: the interface between training and everything after it.

``Run.open(path)`` takes a run folder, a checkpoint or an exported ONNX file
and gives the resolved config (with ``key=value`` overrides), the model rebuilt
once, the decoder and eval transform built from the resolved config, the split
the run trained on (``split.csv``) and the decision settings saved with it.
predict, evaluate, report, serve, export and kfold read runs only through it
(many runs at once: ``predict.Ensemble.load``).

Overrides that change preprocessing rebuild the decoder and transform; ones
that only steer evaluation (``eval.*``, batch size, cache, device) are taken
as they are; ones that cannot apply to trained weights (``model.*``, label
bands, the split, training-only settings) are refused with one line.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, ConfigError, _set, from_saved, parse_override, validate
from .data.decode import Decoder
from .data.eval_transform import EvalTransform
from .data.splits import SPLIT_FILE, held_out, read_split

# torch and albumentations are imported where used: an ONNX run needs neither (the lean install)

log = logging.getLogger("maskcls")

# Overrides a trained model can take. Keys ending in "." are prefixes.
PIXEL_KEYS = ("data.decode_size", "data.image_size", "data.crop_fraction", "preprocess.")
EVAL_KEYS = ("eval.", "scene.", "data.batch_size", "data.cache", "data.cache_dir", "data.cache_max_gb", "data.workers", "data.root", "data.relabel",
             "train.device", "train.threads", "train.progress", "name", "project")
# Why the others are refused (first matching prefix wins).
REFUSED = (
    ("model.", "the weights were trained with it; train a new run to change it"),
    ("data.age_thresholds", "the model's age classes were trained with these bands"),
    ("data.val_fraction", "the run's split is saved in split.csv"),
    ("data.fold", "the run's split is saved in split.csv"),
    ("data.max_persons", "the run's split is saved in split.csv"),
    ("", "it only changes training"),
)


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(key.startswith(p) if p.endswith(".") else key == p for p in patterns)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "space":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def apply_overrides(cfg: Config, overrides: Sequence[str] | dict, source: str | Path = "the run") -> Config:
    """The run's config with ``overrides``; a key a trained model cannot take is one ``ConfigError`` line."""
    out = cfg.copy()
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        _set(out, key, value)
    before, after = _flat(cfg.to_dict()), _flat(out.to_dict())
    for key in after:
        if after[key] == before.get(key) or _matches(key, PIXEL_KEYS + EVAL_KEYS):
            continue
        why = next(reason for prefix, reason in REFUSED if key.startswith(prefix))
        raise ConfigError(f"{key}={after[key]} cannot apply to the trained model in {source} ({why}; it has "
                          f"{key}={before.get(key)})")
    validate(out)
    return out


def run_folder(path: str | Path) -> Path:
    """The run folder of a run folder, a checkpoint (``<run>/weights/x.pt``) or an ONNX file."""
    p = Path(path)
    if p.is_dir():
        return p
    return p.parent.parent if p.parent.name == "weights" else p.parent


def onnx_path(path: str | Path) -> Path:
    """``<run>/weights/model.onnx`` for a run folder or a checkpoint beside it; an .onnx file itself."""
    p = Path(path)
    if p.suffix == ".onnx":
        return p
    return (p / "weights" if p.is_dir() else p.parent) / "model.onnx"


def expand_runs(runs: Sequence[str | Path]) -> list[Path]:
    """Run folders, checkpoints, or a k-fold folder (its fold*/ runs)."""
    out: list[Path] = []
    for r in runs:
        p = Path(r)
        folds = sorted(p.glob("fold*/weights/best.pt")) if p.is_dir() else []
        out += [f.parent.parent for f in folds] if folds and not (p / "weights").is_dir() else [p]
    return out


KFOLD_DECISION = "decision.json"


def kfold_decision(path: str | Path) -> dict | None:
    """A k-fold folder's decision (fitted on its out-of-fold probabilities), else None."""
    f = Path(path) / KFOLD_DECISION
    if not (is_kfold_folder(path) and f.is_file()):
        return None
    try:
        return json.loads(f.read_text())
    except ValueError:
        raise CheckpointError(f"{f}: not valid JSON; delete it or rerun maskcls kfold") from None


def is_kfold_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and not (p / "weights").is_dir() and any(p.glob("fold*/weights/best.pt"))


def build_model(cfg: Config, state_dict: dict):
    """The architecture of ``cfg.model`` (no pretrained download) with the trained weights."""
    from .models import model_from_config

    arch = cfg.copy()
    arch.model = dataclasses.replace(cfg.model, pretrained=False, weights=None)
    model = model_from_config(arch)
    model.load_state_dict(state_dict)
    return model


class Run:
    """A trained model with everything needed to use it the way validation did."""

    def __init__(self, model, cfg: Config, norm: dict, *, device="cpu",
                 path: str | Path | None = None, decision: dict | None = None, engine: str = "torch",
                 training_data: dict | None = None):
        self.cfg, self.norm, self.engine = cfg, {k: list(v) for k, v in norm.items()}, engine
        self.path = Path(path) if path is not None else None
        self.folder = run_folder(self.path) if self.path is not None else None
        self.saved_decision = dict(decision or {})  # as stored with the run (checkpoint or ONNX metadata)
        self.training_data = dict(training_data or {}) or self._saved_training_data()
        self.decoder = Decoder(cfg.data, cfg.preprocess)
        # numpy + OpenCV for both engines, pixel-identical to the albumentations eval transform (test_lean)
        self.transform = EvalTransform(cfg.data, **self.norm)
        if engine == "torch":
            import torch

            self.device = torch.device(device)
            self.model = model.to(self.device).eval()
            self.model = self.model.to(memory_format=torch.channels_last)  # NHWC: ~1.6x faster CPU inference
        else:
            self.device, self.model = "cpu", model
        self._photo_decoder: Decoder | None = None

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """(N, 18) class probabilities of an NCHW float32 batch: the one call where torch and ONNX differ."""
        if self.engine == "torch":
            from .inference import torch_probs

            return torch_probs(self.model, batch, self.device)
        return self.model.probs(batch)

    def _saved_training_data(self) -> dict:
        """``training_data.json`` of the run folder (runs whose checkpoint predates the summary)."""
        from .model_card import TRAINING

        f = self.folder / TRAINING if self.folder is not None else None
        return json.loads(f.read_text()) if f is not None and f.is_file() else {}

    def warnings(self) -> list[str]:
        """Reasons to distrust every answer of this model, in words (shown by predict, serve and the page)."""
        from .model_card import DEMO_WARNING

        return [f"model {DEMO_WARNING}"] if self.training_data.get("drawn_demo") else []

    @property
    def photo_decoder(self) -> Decoder:
        """The decoder for photos outside the competition layout: framed like a training portrait first."""
        if self._photo_decoder is None:
            self._photo_decoder = Decoder(self.cfg.data, self.cfg.preprocess, photos=True)
        return self._photo_decoder

    @classmethod
    def open(cls, path: str | Path, overrides: Sequence[str] | dict = (), which: str = "best",
             device: str | None = None, engine: str = "auto", threads: int = 0) -> "Run":
        """A run folder / checkpoint (``engine=torch``) or its exported ONNX model (``engine=onnx``).

        ``auto``: onnx for an ``.onnx`` file, else torch. ``device`` None means
        the config's ``train.device`` (after overrides).
        """
        if engine == "auto":
            engine = "onnx" if str(path).endswith(".onnx") else "torch"
        if engine == "onnx":
            return cls._open_onnx(path, overrides, threads)
        if engine != "torch":
            raise ConfigError(f"unknown engine '{engine}'; choose torch or onnx")
        if is_kfold_folder(path):
            raise CheckpointError(f"{path}: a k-fold folder holds several runs; open them with expand_runs()")
        state = load_checkpoint(path, which)
        cfg = apply_overrides(from_saved(state["config"], state["path"]), overrides, state["path"])
        from .runtime import resolve_device, setup_torch

        dev = resolve_device(device or cfg.train.device)
        if threads or cfg.train.threads:
            setup_torch(threads or cfg.train.threads)
        return cls(build_model(cfg, state["model"]), cfg, state["norm"], device=dev, path=state["path"],
                   decision=state.get("decision"), training_data=state.get("training_data"))

    @classmethod
    def _open_onnx(cls, path: str | Path, overrides: Sequence[str] | dict, threads: int) -> "Run":
        from .onnx_model import META_KEY, OrtModel, ort_session

        file = onnx_path(path)
        if not file.is_file():
            raise CheckpointError(f"{file}: no ONNX model; run `maskcls export {path}` first")
        try:
            session = ort_session(file, threads)
            info = json.loads(session.get_modelmeta().custom_metadata_map[META_KEY])
        except KeyError:
            raise CheckpointError(f"{file}: ONNX model without maskcls settings; "
                                  f"export it with `maskcls export`") from None
        except Exception as e:  # onnxruntime raises its own types for bad files
            raise CheckpointError(f"{file}: not a readable ONNX model ({type(e).__name__})") from None
        cfg = apply_overrides(from_saved(info["config"], file), overrides, file)
        return cls(OrtModel(session), cfg, info["norm"], device="cpu", path=file, decision=info.get("decision"),
                   engine="onnx", training_data=info.get("training_data"))

    @property
    def decision(self) -> dict:
        """The decision settings to apply: the saved ones, none with ``eval.class_bias=false``."""
        return self.saved_decision if self.cfg.eval.class_bias else {}

    # ------------------------------------------------------------------ the split
    @property
    def split(self) -> pd.DataFrame | None:
        """``split.csv`` of the run folder (part, person, image), or None for a bare checkpoint / older run."""
        f = self.folder / SPLIT_FILE if self.folder is not None else None
        return read_split(f) if f is not None and f.is_file() else None

    def held_out_frame(self) -> pd.DataFrame:
        """The labelled images of the persons this run did not train on (read from ``data.root``)."""
        from .data.reader import Report, read_train

        split = self.split
        if split is None:
            raise ConfigError(f"{self.folder}: no {SPLIT_FILE} (a bare checkpoint, or trained before splits were "
                              f"saved): pass --answers CSV to evaluate")
        want = split[split["part"] == "val"]
        if want.empty:
            raise ConfigError(f"{self.folder}: this run trained on all persons (data.val_fraction=0): "
                              f"pass --answers CSV to evaluate")
        d = self.cfg.data
        frame = held_out(read_train(d.root, age_thresholds=d.age_thresholds, relabel=d.relabel, report=Report(),
                                    allow_duplicates=d.allow_duplicates), split, d.root)
        if len(frame) < len(want):
            log.warning("%s: %d of %d held-out images not found under %s", self.folder, len(want) - len(frame),
                        len(want), d.root)
        if frame.empty:
            raise ConfigError(f"{self.folder / SPLIT_FILE}: none of its held-out images are under data.root={d.root}")
        return frame

    def __repr__(self) -> str:
        return f"Run({self.path}, {self.cfg.model.name}, engine={self.engine})"
