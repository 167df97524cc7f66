"""From a config to image tables with pixels and DataLoaders (training and inference alike)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from .cache import build_cache
from .decode import Decoder
from .reader import Report, read_train
from .splits import holdout


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


def make_loader(ds: Dataset, cfg: Config, *, train: bool, epoch_seed: int = 0, sampler=None) -> DataLoader:
    g = torch.Generator().manual_seed(epoch_seed)
    return DataLoader(
        ds,
        batch_size=cfg.data.batch_size if train else cfg.eval.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        generator=g if train else None,
        num_workers=cfg.data.workers,
        drop_last=False,  # every validation image counts once; a short last train batch is fine
        persistent_workers=False,
    )


def load_train_frame(cfg: Config, report: Report | None = None) -> pd.DataFrame:
    """The labelled training table; ``data.max_persons`` keeps a fixed stratified subset of persons."""
    from .sampling import subset_persons

    frame = read_train(cfg.data.root, age_thresholds=cfg.data.age_thresholds, relabel=cfg.data.relabel,
                       report=report if report is not None else Report(), allow_duplicates=cfg.data.allow_duplicates)
    return subset_persons(frame, cfg.data.max_persons)


def load_splits(cfg: Config, report: Report | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The holdout split ``train`` uses (fold ``data.fold`` of round(1 / val_fraction))."""
    frame = load_train_frame(cfg, report)
    return holdout(frame, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed, fold=cfg.data.fold,
                   by=cfg.data.split)
