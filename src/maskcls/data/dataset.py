"""torch Dataset over an image table; pixels come from the cache or the decoder."""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .images import ImageReadError

log = logging.getLogger("maskcls")


class PhotoDataset(Dataset):
    """Yields ``(image tensor, class id)``; the class id is -1 when unlabelled.

    With ``ages=True`` the target is ``(class id, exact age)``, for heads that
    learn the exact age (``targets.TargetEncoder``). A table with partial
    labels (``gender_known``/``age_known`` columns, from ``data.sources``)
    yields ``(class id, exact age, known)``: ``known`` is 1 (gender known) + 2
    (age known), so the loss can leave an unknown axis out.

    ``source(i)`` returns the decoded uint8 image of row ``i``. A row that fails
    to decode is reported once and replaced by the next good row, so a corrupt
    file never stops an epoch.

    ``compose(row, image, source)`` may replace a training image by one made
    from other rows (``chin_masks.ChinMasks``) before the transform.
    """

    def __init__(self, frame: pd.DataFrame, source: Callable[[int], np.ndarray], transform, ages: bool = False,
                 compose: Callable | None = None):
        self.frame = frame.reset_index(drop=True)
        self.labels = self.frame["label"].to_numpy(np.int64) if "label" in self.frame else None
        partial = self.labels is not None and "gender_known" in self.frame
        self.ages = self.frame["age"].to_numpy(np.int64) if (ages or partial) and self.labels is not None else None
        self.known = (self.frame["gender_known"].to_numpy(bool) * 1 + self.frame["age_known"].to_numpy(bool) * 2
                      ).astype(np.int64) if partial else None
        self.source = source
        self.transform = transform
        self.compose = compose
        self.bad: set[int] = set()
        self.errors: list[str] = []  # one line per unreadable file

    def __len__(self) -> int:
        return len(self.frame)

    def image(self, i: int) -> np.ndarray:
        return self.source(i)

    def __getitem__(self, i: int):
        for k in range(len(self)):
            j = (i + k) % len(self)
            if j in self.bad:
                continue
            try:
                img = self.source(j)
                break
            except ImageReadError as e:
                self.bad.add(j)
                self.errors.append(str(e))
                log.warning("%s; skipped", e)
        else:
            raise RuntimeError("no readable image in the dataset")
        if self.compose is not None:
            img = self.compose(j, img, self.source)
        x = self.transform(image=img)["image"]
        y = int(self.labels[j]) if self.labels is not None else -1
        if self.known is not None:
            return x, torch.tensor([y, int(self.ages[j]), int(self.known[j])])
        if self.ages is not None:
            return x, torch.tensor([y, int(self.ages[j])])
        return x, torch.tensor(y)
