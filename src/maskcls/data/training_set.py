"""What ``fit`` trains and validates on: decoded competition photos plus the faces of ``data.sources``.

Training rows are the competition split's training photos (with the
training-only label changes of ``labels_train``) followed by the training
faces of every extra source; one ``source(i)`` serves both. Validation F1
stays on the competition's validation persons; the held-out faces of the
sources (``real``) are scored by mask alone after every epoch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..config import Config
from .decode import Decoder
from .imageset import image_set
from .labels_train import training_frame
from .reader import Report

log = logging.getLogger("maskcls")


@dataclass
class Part:
    """An image table and the decoded pixels of its rows."""

    frame: pd.DataFrame
    source: Callable[[int], np.ndarray]


@dataclass
class TrainingData:
    train: Part
    val: Part
    real: Part | None = None  # held-out faces of data.sources, scored by mask after each epoch
    errors: list[str] = field(default_factory=list)  # unreadable images, skipped

    @property
    def competition_train(self) -> pd.DataFrame:
        """Training rows of the competition layout (what the model card and class weights count)."""
        f = self.train.frame
        return f[f["source_weight"] == 0] if "source_weight" in f else f


def _rows(index: dict, paths) -> np.ndarray:
    return np.array([index[p] for p in paths], dtype=int)


def assemble(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, decoder: Decoder, *, progress: bool = True,
             report: Report | None = None) -> TrainingData:
    """Decode (once, into the cache) and join everything a run trains and validates on."""
    both = image_set(pd.concat([train_df.assign(_split="train"), val_df.assign(_split="val")]), decoder, cfg,
                     progress)
    if both.errors:  # now, before the first epoch, not after hours of training
        log.warning("%d unreadable images will be skipped:\n  %s", len(both.errors), "\n  ".join(both.errors))
    split = both.frame["_split"]
    train_frame = training_frame(both.frame[split == "train"], cfg.data)
    val_frame = both.frame[split == "val"].reset_index(drop=True)
    index = {p: i for i, p in enumerate(both.frame["path"])}
    tr, va = _rows(index, train_frame["path"]), _rows(index, val_frame["path"])
    data = TrainingData(Part(train_frame, lambda i: both.source(tr[i])), Part(val_frame, lambda i: both.source(va[i])),
                        errors=list(both.errors))
    if cfg.data.sources:
        _add_sources(data, cfg, progress, report)
    return data


def _add_sources(data: TrainingData, cfg: Config, progress: bool, report: Report | None) -> None:
    """Append the sources' training faces to ``data.train``; their held-out faces become ``data.real``."""
    from .sources import BoxDecoder, source_frames

    extra_train, extra_val = source_frames(cfg, report)
    faces = image_set(pd.concat([extra_train.assign(_split="train"), extra_val.assign(_split="val")]),
                      BoxDecoder(cfg.data, cfg.preprocess), cfg, progress)
    if faces.errors:
        log.warning("%d source faces cannot be read and are skipped:\n  %s", len(faces.errors),
                    "\n  ".join(faces.errors[:20]))
    data.errors += faces.errors
    split = faces.frame["_split"]
    own = training_frame(faces.frame[split == "train"], cfg.data)
    real = faces.frame[split == "val"].reset_index(drop=True)
    index = {p: i for i, p in enumerate(faces.frame["path"])}
    ex, rv = _rows(index, own["path"]), _rows(index, real["path"])
    comp = data.train.frame.assign(gender_known=True, age_known=True, source="", source_weight=0.0)
    n, comp_source = len(comp), data.train.source
    frame = pd.concat([comp, own], ignore_index=True)
    frame[["gender_known", "age_known"]] = frame[["gender_known", "age_known"]].astype(bool)
    data.train = Part(frame, lambda i: comp_source(i) if i < n else faces.source(ex[i - n]))
    data.real = Part(real, lambda i: faces.source(rv[i])) if len(real) else None
