"""Batch inference shared by validation, prediction, export checks and serving: TTA and probabilities."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .labels import NUM_CLASSES


def is_channels_last(model: torch.nn.Module) -> bool:
    """Whether the model's convolutions hold NHWC weights (inputs should match)."""
    w = next((p for p in model.parameters() if p.ndim == 4), None)
    return w is not None and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)


def tta_views(x: torch.Tensor, tta: list[str]) -> list[torch.Tensor]:
    """The input and its test-time variants: horizontal flip, small shifts."""
    views = [x]
    if "flip" in tta:
        views.append(x.flip(3))
    if "shift" in tta:
        d = max(1, x.shape[-1] // 32)
        views += [torch.roll(x, shifts=(0, d), dims=(2, 3)), torch.roll(x, shifts=(0, -d), dims=(2, 3))]
    return views


@torch.no_grad()
def batch_probs(model, x: torch.Tensor, tta: list[str] | None = None) -> torch.Tensor:
    """(N, 18) probabilities of one batch: the mean over its TTA views."""
    views = tta_views(x, tta or [])
    return sum(model.probs(v) for v in views) / len(views)


@torch.no_grad()
def predict_probs(model, loader, device, *, tta: list[str] | None = None, progress=False,
                  desc="eval") -> tuple[np.ndarray, np.ndarray]:
    """(N, 18) class probabilities (mean over TTA views) and the labels of ``loader``."""
    model.eval()
    nhwc = is_channels_last(model)
    probs, labels = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        x = x.to(device)
        x = x.contiguous(memory_format=torch.channels_last) if nhwc else x
        probs.append(batch_probs(model, x, tta).cpu().numpy())
        labels.append(y.numpy())
    if not probs:
        return np.zeros((0, NUM_CLASSES), np.float32), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(labels)
