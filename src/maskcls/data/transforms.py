"""albumentations presets. Train and eval are separate, and eval is deterministic.

The seed applied training augmentation to validation, so the "best" model it
kept collapsed to one class on clean images. Here validation, prediction,
export and serving all use ``build_transform(..., train=False)``.

Training augmentation is a named preset (``data.augment``):
- ``none``: crop and resize only;
- ``basic``: flip, colour jitter, noise (the competition recipe);
- ``real``: what real photos do to a face that rendered portraits never show:
  other framings and aspect ratios, lost resolution (downscale, then upscale),
  blur, JPEG artefacts, grey and re-coloured masks, and random erasing.
"""
from __future__ import annotations

import cv2
import albumentations as A
from albumentations.pytorch import ToTensorV2

from ..config import DataConfig

AUGMENT = ("none", "basic", "real")


def _basic() -> list:
    return [
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
        A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
    ]


def _framing() -> list:
    """Before the centre crop: zoom, shift, tilt and squash the portrait (photos come in every framing)."""
    return [A.Affine(scale={"x": (0.8, 1.25), "y": (0.8, 1.25)}, translate_percent=(-0.08, 0.08), rotate=(-12, 12),
                     border_mode=cv2.BORDER_REFLECT_101, p=0.7)]


def _real() -> list:
    """After the resize to the model's size: colour, then what cameras and compression do."""
    return [
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.06, p=0.8),
        A.ToGray(p=0.1),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=0.2),
        A.Downscale(scale_range=(0.3, 0.7), p=0.25),
        A.ImageCompression(quality_range=(30, 90), p=0.3),
        A.GaussNoise(std_range=(0.02, 0.06), p=0.2),
        A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.08, 0.2), hole_width_range=(0.08, 0.2),
                        fill="random_uniform", p=0.25),
    ]


def build_transform(data: DataConfig, *, train: bool, mean, std) -> A.Compose:
    """Transform of a decoded uint8 image (``decode_size``) into a model tensor."""
    augment = data.augment if train else "none"
    if augment not in AUGMENT:
        raise ValueError(f"unknown data.augment '{augment}'; choose one of {', '.join(AUGMENT)}")
    h, w = data.image_size
    ops: list = _framing() if augment == "real" else []
    dh, dw = data.decode_size
    ops.append(A.CenterCrop(int(dh * data.crop_fraction), int(dw * data.crop_fraction)))
    ops.append(A.Resize(h, w))
    if augment == "basic":
        ops += _basic()
    elif augment == "real":
        ops += _real()
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(ops)
