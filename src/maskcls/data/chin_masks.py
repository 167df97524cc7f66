"""Masks pulled down to the chin, composed from each person's own training photos.

The maskfaces renderer shows an incorrectly worn mask with the nose exposed
in 70 % of its photos and on the chin in 30 %, small and cut to the face's
oval. In real photos the mask is at least as often pulled down below the
mouth onto chin and neck (nose *and* mouth exposed), and the model calls
most of those "not wear" (BENCHMARKS.md, "Where real photos are misread"). A person's seven photos are renders of one
portrait, so the person's ``normal`` photo above a cut below the mouth, and one
of their correctly masked photos below it, shows that person with the mask on
the chin. ``ChinMasks`` replaces a share (``data.chin_masks``) of the
``incorrect_mask`` training photos with such composites; labels do not change.
The cut assumes the competition's portrait framing (no ``preprocess.face_crop``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .images import ImageReadError

CUT = (0.57, 0.63)  # cut line, as a share of the portrait's height: below the mouth, above the mask's lower edge
FEATHER = 0.025  # share of the height blended across the cut, so the seam is not a hard edge


def chin_composite(top: np.ndarray, bottom: np.ndarray, cut: float) -> np.ndarray:
    """``top`` above ``cut`` (share of the height), ``bottom`` below it, blended over ``FEATHER``."""
    h = top.shape[0]
    ramp = (np.arange(h, dtype=np.float32) - cut * h) / max(1.0, FEATHER * h) + 0.5
    w = np.clip(ramp, 0.0, 1.0).reshape(h, *([1] * (top.ndim - 1)))
    return (top * (1.0 - w) + bottom * w + 0.5).astype(top.dtype)


class ChinMasks:
    """Callable ``(row, image, source) -> image`` for ``PhotoDataset``; see the module docstring.

    Draws depend only on the epoch seed and the row, so they survive a resume
    and do not repeat across DataLoader workers.
    """

    def __init__(self, frame: pd.DataFrame, prob: float, seed: int = 0):
        self.prob, self.seed = float(prob), seed
        self.partners: dict[int, tuple[int, np.ndarray]] = {}
        if not {"person", "path", "mask"} <= set(frame.columns):
            return
        stems = frame["path"].map(lambda p: Path(p).stem.lower()).to_numpy()
        rows = np.arange(len(frame))
        for _, idx in frame.groupby("person").indices.items():
            normal = [i for i in idx if stems[i].startswith("normal")]
            wear = rows[idx][(frame["mask"].to_numpy()[idx] == 0)]
            if normal and len(wear):
                self.partners.update({int(i): (normal[0], wear) for i in idx if stems[i].startswith("incorrect")})

    def set_epoch(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, row: int, img: np.ndarray, source: Callable[[int], np.ndarray]) -> np.ndarray:
        pair = self.partners.get(int(row))
        if pair is None or not self.prob:
            return img
        rng = np.random.default_rng([self.seed, int(row)])
        if rng.random() >= self.prob:
            return img
        try:
            top, bottom = source(pair[0]), source(int(rng.choice(pair[1])))
        except ImageReadError:  # reported where that row itself is read
            return img
        if top.shape != img.shape or bottom.shape != img.shape:
            return img
        return chin_composite(top, bottom, rng.uniform(*CUT))
