"""albumentations presets. Train and eval are separate, and eval is deterministic.

The seed applied training augmentation to validation, so the "best" model it
kept collapsed to one class on clean images. Here validation, prediction,
export and serving all use ``build_transform(..., train=False)``.
"""
from __future__ import annotations

import albumentations as A
from albumentations.pytorch import ToTensorV2

from ..config import DataConfig

PRESETS = ("base", "custom")


def build_transform(data: DataConfig, *, train: bool, mean, std) -> A.Compose:
    """Transform of a decoded uint8 image (``decode_size``) into a model tensor."""
    if data.preset not in PRESETS:
        raise ValueError(f"unknown preset '{data.preset}'; choose one of {', '.join(PRESETS)}")
    h, w = data.image_size
    ops: list = []
    if data.preset == "custom":
        dh, dw = data.decode_size
        ops.append(A.CenterCrop(int(dh * data.crop_fraction), int(dw * data.crop_fraction)))
    ops.append(A.Resize(h, w))
    if train and data.preset == "custom":
        ops += [
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
        ]
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(ops)
