"""An image table with the source of its pixels (decode cache or on-the-fly decoding); no torch needed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..config import Config
from .cache import build_cache
from .decode import Decoder


@dataclass
class ImageSet:
    """An image table with the source of its decoded pixels."""

    frame: pd.DataFrame
    source: Callable[[int], np.ndarray]
    errors: list[str] = field(default_factory=list)


def image_set(frame: pd.DataFrame, decoder: Decoder, cfg: Config, progress: bool = True) -> ImageSet:
    """Attach pixels to a table: the decode cache, or decoding on the fly."""
    frame = frame.reset_index(drop=True)
    if not cfg.data.cache:
        paths = frame["path"].tolist()
        return ImageSet(frame, lambda i: decoder(paths[i]))
    cache = build_cache(frame["path"].tolist(), decoder, cfg.data.cache_dir, progress=progress,
                        max_gb=cfg.data.cache_max_gb)
    keep = np.flatnonzero(cache.ok)
    rows = keep.copy()
    kept = frame.iloc[keep].reset_index(drop=True)
    return ImageSet(kept, lambda i: cache[rows[i]], list(cache.errors))
