"""The batches ``fit`` trains and validates on: input path (CPU or tensor) and this rank's share.

One process on the CPU path gets a new ``make_loader`` each epoch, drawing
from the one ``EpochSampler``. The tensor path
(``data.loader``, see ``gpu_pipeline``) builds its loaders once, so workers live
across epochs. Under torchrun every rank draws the same epoch order and takes
its shard (``EpochSampler``), with ``data.batch_size / world`` photos per step,
so the ranks' batches together are the one-process batch; validation is split
with ``distributed.shard`` and put back with ``gather``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from ..config import Config, ConfigError
from ..distributed import RANK_SEED, Dist, gather_eval, shard
from .chin_masks import ChinMasks
from .dataset import PhotoDataset
from .gpu_pipeline import BatchTransform, RawImage, gpu_loader, use_gpu_path
from .loading import make_loader
from .sampling import EpochSampler
from .transforms import build_transform


def rank_batch(batch_size: int, world: int) -> int:
    """``data.batch_size`` is the global batch; each of ``world`` processes takes an equal part."""
    if batch_size % world:
        raise ConfigError(f"data.batch_size={batch_size} is the batch of all {world} processes together and must "
                          f"divide by {world}; e.g. data.batch_size={world * max(1, round(batch_size / world))}")
    return batch_size // world


class Feeds:
    """Training and validation batches of one run for one rank."""

    def __init__(self, cfg: Config, d: Dist, device: torch.device, train: tuple[pd.DataFrame, Callable],
                 val: tuple[pd.DataFrame, Callable], norm: dict, ages: bool = False,
                 real: tuple[pd.DataFrame, Callable] | None = None):
        self.cfg, self.d, self.device = cfg, d, device
        self.progress = cfg.train.progress and d.main
        self.batch = rank_batch(cfg.data.batch_size, d.world)
        (train_frame, train_source), (val_frame, val_source) = train, val
        self.train_frame = train_frame
        # albumentations datasets: the CPU path's input; HalvesMix partners and unreadable files on both paths
        self.chin = ChinMasks(train_frame.reset_index(drop=True), cfg.data.chin_masks) if cfg.data.chin_masks else None
        self.train_ds = PhotoDataset(train_frame, train_source, build_transform(cfg.data, train=True, **norm), ages=ages,
                                     compose=self.chin)
        self.val_ds = PhotoDataset(val_frame, val_source, build_transform(cfg.data, train=False, **norm))
        self.val_rows = shard(len(self.val_ds), d.rank, d.world)
        self.gpu = use_gpu_path(cfg.data, device)
        self.sampler = EpochSampler(cfg.data.sampler, train_frame, rank=d.rank, world=d.world,
                                    power=cfg.data.sampler_power)
        self.draws = self.sampler.n  # photos drawn per epoch (more than the competition's with data.sources)
        # held-out faces of data.sources, scored by mask each epoch (small: CPU transform on every path)
        self.real_ds = PhotoDataset(real[0], real[1], build_transform(cfg.data, train=False, **norm)) if real else None
        self._raw: list[PhotoDataset] = []
        if self.gpu:
            raw_train = PhotoDataset(train_frame, train_source, RawImage(), ages=ages, compose=self.chin)
            raw_val = PhotoDataset(val_frame, val_source, RawImage())
            self._raw = [raw_train, raw_val]
            self.train_tf = BatchTransform(cfg.data, train=True, **norm)
            self._train = gpu_loader(raw_train, self.train_tf, device, batch_size=self.batch,
                                     workers=cfg.data.workers, sampler=self.sampler)
            self._val = gpu_loader(self._val_part(raw_val), BatchTransform(cfg.data, train=False, **norm), device,
                                   batch_size=cfg.eval.batch_size, workers=cfg.data.workers)

    @property
    def path(self) -> str:
        return "tensor (data.loader=gpu path)" if self.gpu else "cpu (albumentations)"

    def steps(self) -> int:
        """Optimizer batches per epoch on this rank (before ``train.max_batches``)."""
        if self.gpu or self.d.enabled:
            return math.ceil(len(self.sampler) / self.batch)
        return math.ceil(self.draws / self.batch)

    def train_batches(self, epoch_seed: int):
        """The loader of one epoch: order from ``epoch_seed``, augmentation from it and the rank."""
        aug_seed = epoch_seed + RANK_SEED * self.d.rank
        self.sampler.set_epoch(epoch_seed)
        self.train_ds.transform.set_random_seed(aug_seed)  # CPU path; HalvesMix partners on both paths
        if self.chin is not None:
            self.chin.set_epoch(aug_seed)
        if self.gpu:
            self.train_tf.set_random_seed(aug_seed)
            return self._train
        if not self.d.enabled:
            return make_loader(self.train_ds, self.cfg, train=True, epoch_seed=epoch_seed, sampler=self.sampler)
        return DataLoader(self.train_ds, batch_size=self.batch, sampler=self.sampler, num_workers=self.cfg.data.workers,
                          drop_last=False)

    def val_batches(self):
        """This rank's share of the validation photos, in order."""
        if self.gpu:
            return self._val
        if not self.d.enabled:
            return make_loader(self.val_ds, self.cfg, train=False)
        return DataLoader(self._val_part(self.val_ds), batch_size=self.cfg.eval.batch_size,
                          num_workers=self.cfg.data.workers)

    def real_batches(self):
        """The held-out faces of ``data.sources`` (every rank scores all of them; they are few)."""
        return make_loader(self.real_ds, self.cfg, train=False)

    def source_weights(self) -> dict:
        """Each extra source's share of the draws (``data.sources`` weight)."""
        f = self.train_frame
        if "source_weight" not in f:
            return {}
        extra = f[f["source_weight"] > 0]
        return extra.groupby("source")["source_weight"].first().to_dict()

    def gather(self, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's validation scores -> the whole validation set, each photo once."""
        return gather_eval(self.d, len(self.val_ds), probs, labels)

    @property
    def errors(self) -> list[str]:
        """Files that failed to decode while training (only without the decode cache)."""
        return [e for ds in (self.train_ds, self.val_ds, *self._raw, *([self.real_ds] if self.real_ds else []))
                for e in ds.errors]

    def _val_part(self, ds: PhotoDataset):
        return Subset(ds, self.val_rows.tolist()) if self.d.enabled else ds
