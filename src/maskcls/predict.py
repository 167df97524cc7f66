"""Prediction from trained runs: one model or a soft-voting ensemble of many, torch or ONNX alike.

A ``Run`` carries its config and normalisation, so the decoder and the
deterministic eval transform are rebuilt exactly as validation used them, and
its ``probs(batch)`` is the only call where the engines differ. Everything
around it (decoding, framing, TTA, unreadable files, the decision) is the
numpy path here, so the lean ONNX install runs the very same code.
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
from .data.decode import Decoder
from .decision import class_bias, decide
from .io import atomic_write, write_csv
from .run import Run, expand_runs, kfold_decision
from .summary import axis_columns, axis_probs, summarize

# no torch here: a torch run imports it inside ``Run.probs``; an ONNX run never does (the lean install)

log = logging.getLogger("maskcls")

__all__ = ["Predictor", "Ensemble", "expand_runs", "tta_views", "write_submission", "write_folder_predictions"]


def tta_views(x: np.ndarray, tta: Sequence[str]) -> list[np.ndarray]:
    """An NCHW batch and its test-time variants: horizontal flip, small horizontal shifts."""
    views = [x]
    if "flip" in tta:
        views.append(np.ascontiguousarray(x[..., ::-1]))
    if "shift" in tta:
        d = max(1, x.shape[-1] // 32)
        views += [np.roll(x, shift=(0, d), axis=(2, 3)), np.roll(x, shift=(0, -d), axis=(2, 3))]
    return views


class Predictor:
    """Predictions of one ``Run`` (torch or ONNX): images or an image table in, (N, 18) probabilities out.

    ``decoder`` replaces the run's own (the service classifies face crops it made itself).
    """

    def __init__(self, run: Run, decoder: Decoder | None = None):
        self.run, self.cfg, self.transform, self.path = run, run.cfg, run.transform, str(run.path)
        self.decoder = decoder or run.decoder

    @property
    def decision(self) -> dict:
        return self.run.decision

    def decoder_for(self, photos: bool) -> Decoder:
        """The decoder; ``photos=True`` for photos outside the competition layout (framed first)."""
        return self.run.photo_decoder if photos else self.decoder

    def batch(self, x: np.ndarray, tta: Sequence[str] | None = None) -> np.ndarray:
        """(N, 18) probabilities of an NCHW float32 batch: the mean over its TTA views (``eval.tta`` by default)."""
        views = tta_views(x, self.cfg.eval.tta if tta is None else tta)
        return (sum(self.run.probs(v) for v in views) / len(views)).astype(np.float32)

    def predict_images(self, images: Sequence, tta: Sequence[str] | None = None, photos: bool = False) -> np.ndarray:
        """(N, 18) probabilities of paths, bytes or RGB arrays (decoded here)."""
        if not len(images):
            return np.zeros((0, L.NUM_CLASSES), np.float32)
        decoder = self.decoder_for(photos)
        return self.batch(np.stack([self.transform(decoder(im)) for im in images]), tta)

    def predict_frame(self, frame: pd.DataFrame, *, tta: Sequence[str] | None = None, progress: bool = True,
                      photos: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
        """Probabilities for every row of an image table (via the decode cache if on).

        Returns (probs, kept frame): rows whose image cannot be read are dropped
        and reported, never fatal. ``photos=True`` frames each photo like a
        training portrait first (``preprocess.frame_photos``).
        """
        from tqdm import tqdm

        from .data.images import ImageReadError
        from .data.imageset import image_set

        images = image_set(frame, self.decoder_for(photos), self.cfg, progress)
        n, size = len(images.frame), max(1, self.cfg.eval.batch_size)
        out, good, errors = [], [], list(images.errors)
        for start in tqdm(range(0, n, size), desc="predict", leave=False, disable=not progress, unit="batch"):
            batch = []
            for i in range(start, min(n, start + size)):
                try:  # without the cache, files are decoded here: an unreadable one is dropped, never fatal
                    batch.append(self.transform(images.source(i)))
                    good.append(i)
                except ImageReadError as e:
                    errors.append(str(e))
            if batch:
                out.append(self.batch(np.stack(batch), tta))
        for e in errors:
            log.warning("%s; no prediction", e)
        probs = np.concatenate(out) if out else np.zeros((0, L.NUM_CLASSES), np.float32)
        return probs, images.frame.iloc[good].reset_index(drop=True)


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
             engine: str = "auto", threads: int = 0) -> "Ensemble":
        """The one way to open runs for prediction: run folders, checkpoints, .onnx files or a k-fold folder
        (its folds), each through ``Run.open`` with the same ``key=value`` overrides.

        ``engine``: "torch" (run folders, checkpoints), "onnx" (their exported
        model, or an .onnx file; ``device`` is then the CPU) or "auto" (onnx
        for an .onnx file); ``device`` None is
        the run's ``train.device``; ``threads``: intra-op threads (0: the default).
        """
        if not runs:
            raise ValueError("an ensemble needs at least one run")
        members = [Predictor(Run.open(p, overrides, device=device, engine=engine, threads=threads))
                   for p in expand_runs(runs)]
        return cls(members, kfold_decision(runs[0]) if len(runs) == 1 else None)

    @property
    def cfg(self) -> Config:
        return self.members[0].cfg

    def warnings(self) -> list[str]:
        """Reasons to distrust every answer (e.g. a member trained on drawn demo data), each once."""
        return list(dict.fromkeys(w for m in self.members for w in m.run.warnings()))

    def predict_images(self, images: Sequence, tta: list[str] | None = None, photos: bool = False) -> np.ndarray:
        """(N, 18) mean probabilities of paths, bytes or RGB arrays."""
        return np.mean([m.predict_images(images, tta, photos=photos) for m in self.members], axis=0)

    def predict_frame(self, frame: pd.DataFrame, *, tta: list[str] | None = None, progress: bool = True,
                      photos: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
        """(probs, kept frame) as ``Predictor.predict_frame``; rows every member could read, probabilities averaged."""
        if len(self.members) == 1:
            return self.members[0].predict_frame(frame, tta=tta, progress=progress, photos=photos)
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
    """One row per file: the mask and its own confidence first, then the class (by ``decide``), gender, age,
    the 18-class confidence, ``low_confidence`` and the per-axis probabilities (and the 18 with ``with_probs``);
    files of ``source`` without a prediction get a row with ``error`` saying why."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = axis_columns(thresholds)
    warning = "; ".join(warnings)
    by_id = {}
    results = summarize(np.asarray(probs).reshape(-1, L.NUM_CLASSES), decision=decision, thresholds=thresholds,
                        min_confidence=min_confidence)
    for image_id, p, a, r in zip(frame["ImageID"], probs, axis_probs(probs), results):
        row = {"file": image_id, **{k: r[k] for k in ("mask", "mask_confidence", "class_id", "gender", "age",
                                                       "confidence", "low_confidence")},
               "error": "", "warning": warning}
        row.update({n: round(float(v), 5) for n, v in zip(names, a)})
        if with_probs:
            row.update({f"p{k}": round(float(v), 5) for k, v in enumerate(p)})
        by_id[image_id] = row
    order = source if source is not None else frame
    rows = []
    for image_id, path in zip(order["ImageID"], order["path"] if "path" in order else order["ImageID"]):
        rows.append(by_id.get(image_id) or {"file": image_id, "class_id": None, "error": unreadable_reason(path),
                                            "warning": warning})
    columns = ["file", "mask", "mask_confidence", "class_id", "gender", "age", "confidence", "low_confidence", "error",
               "warning", *names, *([f"p{k}" for k in range(L.NUM_CLASSES)] if with_probs else [])]
    table = pd.DataFrame(rows, columns=columns)
    table["class_id"] = table["class_id"].astype("Int64")  # empty, not NaN-float, for unreadable files
    write_csv(table, out)
    return out
