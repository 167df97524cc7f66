"""From a config to image tables with pixels and DataLoaders (training and inference alike)."""
from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from .reader import Report, read_train
from .splits import holdout


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
    return holdout(frame, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed, fold=cfg.data.fold)
