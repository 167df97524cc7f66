"""Losses as tiny modules. Each takes logits and either class ids or soft targets.

Soft targets (rows summing to 1) come from CutMix/MixUp; with them every loss
uses the same expected-value formula, so mixing works with every loss and
both head layouts.
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

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = as_soft(target, self.num_classes)
        norm = (soft * self.weight).sum(1)  # before smoothing: F.cross_entropy's weighted mean
        if self.smoothing:
            soft = soft * (1 - self.smoothing) + self.smoothing / self.num_classes
        logp = F.log_softmax(logits.float(), dim=1)
        per_sample = -(soft * logp * self.weight).sum(1)
        return per_sample.sum() / norm.sum().clamp_min(1e-12)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al.): down-weights easy examples; gamma=0 is cross entropy."""

    def __init__(self, num_classes: int, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.num_classes, self.gamma = num_classes, gamma
        self.register_buffer("weight", weight if weight is not None else torch.ones(num_classes))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = as_soft(target, self.num_classes)
        logp = F.log_softmax(logits.float(), dim=1)
        focal = (1 - logp.exp()).pow(self.gamma)
        per_sample = -(soft * focal * logp * self.weight).sum(1)
        norm = (soft * self.weight).sum(1)
        return per_sample.sum() / norm.sum().clamp_min(1e-12)


class SoftF1Loss(nn.Module):
    """1 - macro soft F1 over ``num_classes`` classes (any number, not fixed at 3)."""

    def __init__(self, num_classes: int, eps: float = 1e-7):
        super().__init__()
        self.num_classes, self.eps = num_classes, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = as_soft(target, self.num_classes)
        p = F.softmax(logits.float(), dim=1)
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


class MultiHeadLoss(nn.Module):
    """Weighted sum of one loss per head (mask 3, gender 2, age 3); logits are (N, 8)."""

    def __init__(self, losses: list[nn.Module], weights: list[float]):
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        parts = torch.split(logits, list(HEAD_SIZES.values()), dim=1)
        return sum(w * fn(z, t) for w, fn, z, t in zip(self.weights, self.losses, parts, head_targets(target)))


def class_weights(labels, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """'balanced' weights n / (k * count), capped so empty classes do not explode."""
    counts = torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).float()
    w = counts.sum() / (num_classes * counts.clamp_min(1))
    return (w / w[counts > 0].mean()).clamp(max=10.0)


def loss_from_config(cfg, head: str, train_labels) -> nn.Module:
    """The training criterion for a config's loss section and head layout."""
    if head == "single":
        w = class_weights(train_labels) if cfg.class_weights == "balanced" else None
        return build_loss(cfg.name, NUM_CLASSES, smoothing=cfg.label_smoothing, gamma=cfg.gamma, weight=w)
    losses = []
    for axis, (name, k) in enumerate(HEAD_SIZES.items()):
        w = None
        if cfg.class_weights == "balanced":
            t = torch.as_tensor(train_labels).long()
            w = class_weights(head_targets(t)[axis], k)
        losses.append(build_loss(cfg.name, k, smoothing=cfg.label_smoothing, gamma=cfg.gamma, weight=w))
    return MultiHeadLoss(losses, cfg.head_weights)
