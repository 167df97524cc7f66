"""Prediction from trained runs: one model or a soft-voting ensemble of many.

A ``Run`` carries its config and normalisation, so the decoder and the
deterministic eval transform are rebuilt exactly as validation used them.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import labels as L
from .config import Config
from .decision import class_bias, decide
from .io import atomic_write, write_csv
from .run import Run, expand_runs, kfold_decision, open_runs

# torch is imported inside the torch engine's methods: ONNX prediction (onnx_model) runs without it

log = logging.getLogger("maskcls")

__all__ = ["Predictor", "Ensemble", "expand_runs", "write_submission", "write_folder_predictions"]


class Predictor:
    """Predictions of one ``Run``: images or an image table in, (N, 18) probabilities out."""

    def __init__(self, run: Run):
        self.run = run
        self.cfg, self.norm, self.model, self.device = run.cfg, run.norm, run.model, run.device
        self.decoder, self.transform = run.decoder, run.transform
        self.path = str(run.path)

    @classmethod
    def load(cls, run: str | Path, device: str | None = None, which: str = "best",
             overrides: Sequence[str] = ()) -> "Predictor":
        """``device`` None (or "auto" from older callers) uses the run's ``train.device``."""
        return cls(Run.open(run, overrides, which=which, device=None if device == "auto" else device))

    @property
    def decision(self) -> dict:
        return self.run.decision

    def tensor(self, decoded: np.ndarray):
        return self.transform(image=decoded)["image"]

    def decoder_for(self, photos: bool):
        """The run's decoder; ``photos=True`` for photos outside the competition layout (framed first)."""
        return self.run.photo_decoder if photos else self.decoder

    def predict_images(self, images: Sequence, tta: list[str] | None = None, photos: bool = False) -> np.ndarray:
        """(N, 18) probabilities of paths, bytes or RGB arrays (decoded here)."""
        import torch

        from .inference import batch_probs, is_channels_last

        if not len(images):
            return np.zeros((0, L.NUM_CLASSES), np.float32)
        decoder = self.decoder_for(photos)
        with torch.no_grad():
            x = torch.stack([self.tensor(decoder(im)) for im in images]).to(self.device)
            if is_channels_last(self.model):
                x = x.contiguous(memory_format=torch.channels_last)
            return batch_probs(self.model, x, tta if tta is not None else self.cfg.eval.tta).cpu().numpy()

    def predict_frame(self, frame: pd.DataFrame, *, tta: list[str] | None = None, progress: bool = True,
                      photos: bool = False):
        """Probabilities for every row of an image table (via the decode cache if on).

        Returns (probs, kept frame): rows whose image cannot be read are dropped
        and reported, never fatal. ``photos=True`` frames each photo like a
        training portrait first (``preprocess.frame_photos``).
        """
        from .data.dataset import PhotoDataset
        from .data.loading import image_set, make_loader
        from .inference import predict_probs

        images = image_set(frame, self.decoder_for(photos), self.cfg, progress)
        ds = PhotoDataset(images.frame, images.source, self.transform)
        probs, _ = predict_probs(self.model, make_loader(ds, self.cfg, train=False), self.device,
                                 tta=tta if tta is not None else self.cfg.eval.tta, progress=progress, desc="predict")
        kept = images.frame
        if ds.bad:  # without the cache a bad row was filled with the next good one: its probabilities are not its own
            good = np.setdiff1d(np.arange(len(kept)), sorted(ds.bad))
            probs, kept = probs[good], kept.iloc[good].reset_index(drop=True)
        for e in images.errors:
            log.warning("%s; no prediction", e)
        return probs, kept


class Ensemble:
    """Soft voting: the mean of the members' class probabilities, then one decision (``decision.decide``).

    The decision is ``decision``, when given (a k-fold folder's, fitted on its
    out-of-fold probabilities), else the mean of the members' class biases.
    """

    def __init__(self, members: list[Predictor], decision: dict | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one run")
        self.members = members
        self._decision = decision

    @property
    def decision(self) -> dict:
        if not self.cfg.eval.class_bias:
            return {}
        if self._decision is not None:
            return self._decision
        biases = [class_bias(m.decision) for m in self.members]
        return {"class_bias": np.mean(biases, axis=0).tolist()} if any(b.any() for b in biases) else {}

    def classes(self, probs: np.ndarray) -> np.ndarray:
        """Class ids of ensemble probabilities under the ensemble's decision."""
        return decide(probs, self.decision)

    @classmethod
    def load(cls, runs: Sequence[str | Path], device: str | None = None, overrides: Sequence[str] = (),
             engine: str = "torch", threads: int = 0) -> "Ensemble":
        """Every run of ``runs`` (k-fold folders expanded) with the same overrides."""
        if engine == "onnx":
            from .onnx_model import OnnxPredictor

            members = [OnnxPredictor(r) for r in open_runs(runs, overrides, engine="onnx", threads=threads)]
        else:
            members = [Predictor(r) for r in open_runs(runs, overrides, device=device, threads=threads)]
        return cls(members, kfold_decision(runs[0]) if len(runs) == 1 else None)

    @property
    def cfg(self) -> Config:
        return self.members[0].cfg

    def warnings(self) -> list[str]:
        """Reasons to distrust every answer (e.g. a member trained on drawn demo data), each once."""
        return list(dict.fromkeys(w for m in self.members for w in m.run.warnings()))

    def predict_images(self, images: Sequence, tta: list[str] | None = None, photos: bool = False) -> np.ndarray:
        return np.mean([m.predict_images(images, tta, photos=photos) for m in self.members], axis=0)

    def predict_frame(self, frame: pd.DataFrame, *, tta: list[str] | None = None, progress: bool = True,
                      photos: bool = False):
        results = [m.predict_frame(frame, tta=tta, progress=progress, photos=photos) for m in self.members]
        common = set.intersection(*(set(f["path"]) for _, f in results))
        kept = results[0][1][results[0][1]["path"].isin(common)].reset_index(drop=True)
        stacked = []
        for probs, f in results:
            idx = pd.Series(np.arange(len(f)), index=f["path"])
            stacked.append(probs[idx[kept["path"]].to_numpy()])
        return np.mean(stacked, axis=0), kept


MISSING = -1  # ``ans`` of an image that could not be read: never a class id, so it cannot pass as one


def write_submission(frame: pd.DataFrame, probs: np.ndarray, out: str | Path, info: pd.DataFrame | None = None,
                     decision: dict | None = None) -> Path:
    """``ImageID,ans`` in the order of ``info`` (the competition's info.csv); classes by ``decide``;
    unreadable images get ``ans=-1``."""
    pred = dict(zip(frame["ImageID"], decide(probs, decision).tolist()))
    order = info["ImageID"] if info is not None else frame["ImageID"]
    missing = [i for i in order if i not in pred]
    if missing:
        log.warning("%d images could not be read; marked ans=%d in %s, e.g. %s", len(missing), MISSING, out,
                    missing[0])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageID", "ans"])
        for i in order:
            w.writerow([i, pred.get(i, MISSING)])
    return out


def axis_columns(thresholds: Sequence[int] = L.DEFAULT_AGE_THRESHOLDS) -> list[str]:
    """Names of the per-axis probability columns: p_mask_wear, ..., p_gender_female, p_age_under30, ..."""
    lo, hi = thresholds
    return ([f"p_mask_{m.name.lower()}" for m in L.Mask] + [f"p_gender_{g.name.lower()}" for g in L.Gender]
            + [f"p_age_under{lo}", f"p_age_{lo}_{hi - 1}", f"p_age_{hi}plus"])


def axis_probs(probs: np.ndarray) -> np.ndarray:
    """(N, 8): marginals of the 18 class probabilities on mask (3), gender (2) and age band (3)."""
    cube = np.asarray(probs, np.float64).reshape(-1, len(L.Mask), len(L.Gender), len(L.AgeBand))
    return np.concatenate([cube.sum((2, 3)), cube.sum((1, 3)), cube.sum((1, 2))], axis=1)


def unreadable_reason(path: str) -> str:
    """Why a file got no prediction, in one line (decoding it again to find out)."""
    from .data.images import ImageReadError, load_rgb

    try:
        load_rgb(path)
    except ImageReadError as e:
        return e.reason
    return "could not be decoded or preprocessed"


def write_folder_predictions(frame: pd.DataFrame, probs: np.ndarray, out: str | Path, with_probs: bool = False, *,
                             source: pd.DataFrame | None = None, min_confidence: float = 0.0,
                             warnings: Sequence[str] = (), decision: dict | None = None,
                             thresholds: Sequence[int] = L.DEFAULT_AGE_THRESHOLDS) -> Path:
    """One row per file: labels (class by ``decide``), confidence, ``low_confidence``, per-axis probabilities (and the 18 with
    ``with_probs``); files of ``source`` without a prediction get a row with ``error`` saying why."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = axis_columns(thresholds)
    warning = "; ".join(warnings)
    by_id = {}
    for image_id, p, a, c in zip(frame["ImageID"], probs, axis_probs(probs), decide(probs, decision).tolist()):
        d = L.describe(c)
        row = {"file": image_id, "class_id": c, "mask": d["mask"], "gender": d["gender"],
               "age": L.age_name(L.decode(c)[2], thresholds), "confidence": round(float(p[c]), 4),
               "low_confidence": bool(p[c] < min_confidence), "error": "", "warning": warning}
        row.update({n: round(float(v), 5) for n, v in zip(names, a)})
        if with_probs:
            row.update({f"p{k}": round(float(v), 5) for k, v in enumerate(p)})
        by_id[image_id] = row
    order = source if source is not None else frame
    rows = []
    for image_id, path in zip(order["ImageID"], order["path"] if "path" in order else order["ImageID"]):
        rows.append(by_id.get(image_id) or {"file": image_id, "class_id": None, "error": unreadable_reason(path),
                                            "warning": warning})
    columns = ["file", "class_id", "mask", "gender", "age", "confidence", "low_confidence", "error", "warning",
               *names, *([f"p{k}" for k in range(L.NUM_CLASSES)] if with_probs else [])]
    table = pd.DataFrame(rows, columns=columns)
    table["class_id"] = table["class_id"].astype("Int64")  # empty, not NaN-float, for unreadable files
    write_csv(table, out)
    return out
