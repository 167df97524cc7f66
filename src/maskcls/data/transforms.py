"""albumentations presets. Train and eval are separate, and eval is deterministic.

The seed applied training augmentation to validation, so the "best" model it
kept collapsed to one class on clean images. Here validation, prediction,
export and serving all use ``build_transform(..., train=False)``.

Training augmentation is a named preset (``data.augment``; its numbers live in
``presets.py``, shared with the tensor ops of ``gpu_pipeline.py``):
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
from . import presets as P

AUGMENT = ("none", "basic", "real")


def _basic() -> list:
    return [
        A.HorizontalFlip(p=P.FLIP_P),
        A.ColorJitter(*P.BASIC_JITTER, p=P.BASIC_JITTER_P),
        A.GaussNoise(std_range=P.NOISE_STD, p=P.BASIC_NOISE_P),
    ]


def _framing() -> list:
    """Before the centre crop: zoom, shift, tilt and squash the portrait (photos come in every framing)."""
    shift, turn = P.FRAMING_SHIFT, P.FRAMING_ROTATE
    return [A.Affine(scale={"x": P.FRAMING_SCALE, "y": P.FRAMING_SCALE}, translate_percent=(-shift, shift),
                     rotate=(-turn, turn), border_mode=cv2.BORDER_REFLECT_101, p=P.FRAMING_P)]


def _real() -> list:
    """After the resize to the model's size: colour, then what cameras and compression do."""
    return [
        A.HorizontalFlip(p=P.FLIP_P),
        A.ColorJitter(*P.REAL_JITTER, p=P.REAL_JITTER_P),
        A.ToGray(p=P.GRAY_P),
        A.OneOf([A.GaussianBlur(blur_limit=P.GAUSS_BLUR_KERNEL, sigma_limit=P.GAUSS_BLUR_SIGMA),
                 A.MotionBlur(blur_limit=P.MOTION_BLUR_KERNEL)], p=P.BLUR_P),
        A.Downscale(scale_range=P.DOWNSCALE, p=P.DOWNSCALE_P),
        A.ImageCompression(quality_range=P.JPEG_QUALITY, p=P.JPEG_P),
        A.GaussNoise(std_range=P.NOISE_STD, p=P.REAL_NOISE_P),
        A.CoarseDropout(num_holes_range=P.DROPOUT_HOLES, hole_height_range=P.DROPOUT_SIDE,
                        hole_width_range=P.DROPOUT_SIDE, fill="random_uniform", p=P.DROPOUT_P),
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
