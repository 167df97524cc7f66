"""Losses as tiny modules. Each takes logits and either class ids or soft targets.

Soft targets (rows summing to 1) come from CutMix/MixUp; with them every loss
uses the same expected-value formula, so mixing works with every loss and
both head layouts.

Every loss takes an optional per-sample weight ``known`` (N,): 0 leaves a
sample out of that loss entirely (no gradient to the head), which is how a
head whose axis is unknown for a sample (a real face labelled by mask only)
is trained on the samples that have its label alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .labels import HEAD_SIZES, NUM_CLASSES

LOSSES = ("ce", "focal", "smoothing", "f1")


def as_soft(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids (N,) -> one-hot (N, C); soft targets pass through."""
    if target.dim() == 1:
        return F.one_hot(target.long(), num_classes).float()
    return target.float()


class CrossEntropy(nn.Module):
    """Cross entropy with optional label smoothing and class weights."""

    def __init__(self, num_classes: int, smoothing: float = 0.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.num_classes, self.smoothing = num_classes, smoothing
        self.register_buffer("weight", weight if weight is not None else torch.ones(num_classes))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        soft = as_soft(target, self.num_classes)
        norm = (soft * self.weight).sum(1)  # before smoothing: F.cross_entropy's weighted mean
        if self.smoothing:
            soft = soft * (1 - self.smoothing) + self.smoothing / self.num_classes
        logp = F.log_softmax(logits.float(), dim=1)
        per_sample = -(soft * logp * self.weight).sum(1)
        if known is not None:
            per_sample, norm = per_sample * known, norm * known
        return per_sample.sum() / norm.sum().clamp_min(1e-12)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al.): down-weights easy examples; gamma=0 is cross entropy."""

    def __init__(self, num_classes: int, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.num_classes, self.gamma = num_classes, gamma
        self.register_buffer("weight", weight if weight is not None else torch.ones(num_classes))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        soft = as_soft(target, self.num_classes)
        logp = F.log_softmax(logits.float(), dim=1)
        focal = (1 - logp.exp()).pow(self.gamma)
        per_sample = -(soft * focal * logp * self.weight).sum(1)
        norm = (soft * self.weight).sum(1)
        if known is not None:
            per_sample, norm = per_sample * known, norm * known
        return per_sample.sum() / norm.sum().clamp_min(1e-12)


class SoftF1Loss(nn.Module):
    """1 - macro soft F1 over ``num_classes`` classes (any number, not fixed at 3)."""

    def __init__(self, num_classes: int, eps: float = 1e-7):
        super().__init__()
        self.num_classes, self.eps = num_classes, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        y = as_soft(target, self.num_classes)
        p = F.softmax(logits.float(), dim=1)
        if known is not None:  # a left-out sample counts as neither a hit nor a miss
            y, p = y * known[:, None], p * known[:, None]
        tp = (p * y).sum(0)
        fp = (p * (1 - y)).sum(0)
        fn = ((1 - p) * y).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        return 1 - f1.mean()


def build_loss(name: str, num_classes: int, *, smoothing: float = 0.1, gamma: float = 2.0,
               weight: torch.Tensor | None = None) -> nn.Module:
    if name == "ce":
        return CrossEntropy(num_classes, 0.0, weight)
    if name == "smoothing":
        return CrossEntropy(num_classes, smoothing, weight)
    if name == "focal":
        return FocalLoss(num_classes, gamma, weight)
    if name == "f1":
        return SoftF1Loss(num_classes)
    raise ValueError(f"unknown loss '{name}'; choose one of {', '.join(LOSSES)}")


def head_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """18-class ids or soft targets -> (mask, gender, age) targets (ids or marginals)."""
    if target.dim() == 1:
        t = target.long()
        return t // 6, (t // 3) % 2, t % 3
    grid = target.float().view(-1, 3, 2, 3)  # mask x gender x age
    return grid.sum((2, 3)), grid.sum((1, 3)), grid.sum((1, 2))


class AgeDistLoss(nn.Module):
    """KL(label distribution || predicted distribution) + ``l1`` x |expected age error| in decades (DLDL-v2)."""

    def __init__(self, l1: float = 0.1):
        super().__init__()
        self.l1 = l1

    def forward(self, logits: torch.Tensor, dist: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        kl = (dist * (torch.log(dist.clamp_min(1e-12)) - logp)).sum(1)
        years = torch.arange(logits.shape[1], dtype=torch.float32, device=logits.device)
        err = ((logp.exp() - dist) @ years).abs()
        if known is None:
            return kl.mean() + self.l1 * (err.mean() / 10.0)
        n = known.sum().clamp_min(1e-12)
        return (kl * known).sum() / n + self.l1 * ((err * known).sum() / n / 10.0)


class MultiHeadLoss(nn.Module):
    """Weighted sum of one loss per head (mask 3, gender 2, age 3 bands or a distribution over years).

    With an age distribution head (``encoder.age_bins`` > 0) targets are
    encoded to (N, 18 + years) rows: mask and gender from the 18 columns, the
    age head from the rest. With partial labels (``encoder.partial``) the last
    two columns say whether gender and age are known; each sample's gender and
    age loss is weighted by them (0: left out, no gradient to that head).
    """

    def __init__(self, losses: list[nn.Module], weights: list[float], encoder=None):
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)
        self.encoder = encoder if encoder is not None and (encoder.age_bins or encoder.partial) else None
        age = self.encoder.age_bins if self.encoder and self.encoder.age_bins else HEAD_SIZES["age"]
        self.sizes = [HEAD_SIZES["mask"], HEAD_SIZES["gender"], age]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        parts = torch.split(logits, self.sizes, dim=1)
        known = [None, None, None]
        if self.encoder is None:
            targets = head_targets(target[:, 0] if target.dim() == 2 and target.shape[1] == 2 else target)
        else:
            soft = self.encoder(target)
            if self.encoder.partial:
                known = [None, soft[:, -2], soft[:, -1]]
                soft = soft[:, :-2]
            mask, gender, band = head_targets(soft[:, :NUM_CLASSES])
            targets = (mask, gender, soft[:, NUM_CLASSES:] if self.encoder.age_bins else band)
        return sum(w * (fn(z, t) if k is None else fn(z, t, k))
                   for w, fn, z, t, k in zip(self.weights, self.losses, parts, targets, known))


def loss_from_config(cfg, head: str, encoder=None) -> nn.Module:
    """The training criterion for a config's loss section and head layout (``encoder``: targets.TargetEncoder)."""
    if head == "single":
        return build_loss(cfg.name, NUM_CLASSES, smoothing=cfg.label_smoothing, gamma=cfg.gamma)
    losses = [build_loss(cfg.name, k, smoothing=cfg.label_smoothing, gamma=cfg.gamma) for k in HEAD_SIZES.values()]
    if encoder is not None and encoder.age_bins:
        losses[2] = AgeDistLoss()
    return MultiHeadLoss(losses, cfg.head_weights, encoder)
