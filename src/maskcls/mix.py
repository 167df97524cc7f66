"""Batch mixing: CutMix of vertical halves, square CutMix, MixUp (soft targets).

Every mixer maps ``(x, class ids)`` to ``(x, soft targets (N, 18))``; the
losses take soft targets for both head layouts. "halves" pastes the left or
right part of a partner photo (a face is left/right symmetric, so half a face
of another person is still a face) and mixes the labels by the real pasted
area. Its partners come from the whole training set, not only the batch, so
the rare >=60 class can be pasted in every batch (``mix.partners=old``).

A face whose gender or age is unknown (``data.sources``) is never mixed and
never pasted: a mixed label would give it a share of an axis nobody labelled.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError, MixConfig
from .labels import NUM_CLASSES
from .targets import TargetEncoder

log = logging.getLogger("maskcls")


def partner_pools(labels: np.ndarray, partners: str) -> dict:
    """Dataset indices a photo may take its partner from, keyed by pool."""
    labels = np.asarray(labels, int)
    if partners == "all":
        return {"all": np.arange(len(labels))}
    if partners == "old":
        return {"old": np.flatnonzero(labels % 3 == 2)}
    if partners == "same_mask":
        return {m: np.flatnonzero(labels // 6 == m) for m in range(3)}
    raise ConfigError(f"mix.partners: '{partners}' is not supported; choose all, old or same_mask")


class HalvesMix:
    """CutMix of a vertical strip touching the left or right edge (width share from ``mix.ratio``).

    ``last`` records the latest batch's mixing (row, partner index, pasted
    columns, side) for inspection and tests.
    """

    def __init__(self, cfg: MixConfig, dataset, seed: int = 0, encoder: TargetEncoder | None = None):
        self.prob, self.ratio, self.partners = cfg.prob, tuple(cfg.ratio), cfg.partners
        self.dataset = dataset
        self.encode = encoder or TargetEncoder()
        frame = dataset.frame
        complete = (frame["gender_known"].to_numpy(bool) & frame["age_known"].to_numpy(bool)
                    if "gender_known" in frame else np.ones(len(frame), bool))
        self.pools = {k: v[complete[v]] for k, v in partner_pools(frame["label"].to_numpy(int), cfg.partners).items()}
        if cfg.partners == "old" and not len(self.pools["old"]):
            raise ConfigError("mix.partners=old but the training split has no >=60 photos; use mix.partners=all")
        self.rng = np.random.default_rng(seed)
        self.last: list[dict] = []

    def set_epoch(self, seed: int) -> None:
        """Same mixing after a resume: the draws depend on the epoch only."""
        self.rng = np.random.default_rng(seed)

    def _pool(self, label: int) -> np.ndarray:
        key = label // 6 if self.partners == "same_mask" else self.partners
        return self.pools[key]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        soft = self.encode(y)
        classes = self.encode.classes(y)
        complete = self.encode.complete(y).cpu().numpy()
        x = x.clone()
        self.last = []
        for i in np.flatnonzero(self.rng.random(n) < self.prob):
            pool = self._pool(int(classes[i]))
            if not len(pool) or not complete[i]:
                continue
            j = int(pool[self.rng.integers(len(pool))])
            px, py = self.dataset[j]
            cols = int(np.clip(round(self.rng.uniform(*self.ratio) * w), 1, w - 1))
            left = bool(self.rng.random() < 0.5)
            cut = slice(0, cols) if left else slice(w - cols, w)
            x[i, :, :, cut] = px.to(x.device, x.dtype)[:, :, cut]
            area = cols * h / (w * h)  # the real pasted share of the pixels
            soft[i] = soft[i] * (1.0 - area) + area * self.encode(py[None].to(soft.device))[0]
            self.last.append({"row": int(i), "partner": j, "cols": cols, "side": "left" if left else "right",
                              "area": area})
        return x, soft


class TimmMix:
    """Square CutMix or MixUp of the batch with its reverse (timm's ``Mixup``, batch mode)."""

    def __init__(self, cfg: MixConfig, encoder: TargetEncoder | None = None):
        from timm.data import Mixup

        self.encode = encoder or TargetEncoder()
        alphas = {"mixup_alpha": cfg.alpha, "cutmix_alpha": 0.0} if cfg.name == "mixup" else \
            {"mixup_alpha": 0.0, "cutmix_alpha": cfg.alpha}
        self.mixup = Mixup(**alphas, prob=cfg.prob, switch_prob=0.0, mode="batch", correct_lam=True,
                           label_smoothing=0.0, num_classes=NUM_CLASSES)  # smoothing is loss.name's job

    def set_epoch(self, seed: int) -> None:
        np.random.seed(seed % 2**32)  # timm draws from numpy's global generator

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        soft = self.encode(y)
        even = len(x) - len(x) % 2  # timm needs an even batch; an odd last photo stays unmixed
        if even >= 2:
            x = x.clone()
            part = x[:even]
            original = part.clone()
            lam = self.mixup._mix_batch(part)  # mixes the images in place (with their reverse) and returns lam
            complete = self.encode.complete(y)[:even]
            keep = complete & complete.flip(0)  # a row and its partner both fully labelled
            x[:even] = torch.where(keep[:, None, None, None].to(x.device), part, original)
            mixed = soft[:even] * lam + soft[:even].flip(0) * (1.0 - lam)  # timm's mixup_target, any width
            soft[:even] = torch.where(keep[:, None], mixed, soft[:even])
        return x, soft


def as_soft(y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y.long(), NUM_CLASSES).float() if y.dim() == 1 else y.float().clone()


def build_mixer(cfg: MixConfig, dataset, seed: int = 0, encoder: TargetEncoder | None = None):
    """None when mixing is off, else a callable ``(x, y) -> (x, soft y)`` (rows as ``encoder`` writes them)."""
    if cfg.name == "none" or cfg.prob <= 0:
        return None
    if cfg.name == "halves":
        return HalvesMix(cfg, dataset, seed, encoder)
    if cfg.name in ("cutmix", "mixup"):
        if cfg.partners != "all":
            log.warning("mix.partners=%s applies to mix.name=halves only; %s mixes within the batch",
                        cfg.partners, cfg.name)
        return TimmMix(cfg, encoder)
    raise ConfigError(f"mix.name: '{cfg.name}' is not supported; choose none, halves, cutmix or mixup")
