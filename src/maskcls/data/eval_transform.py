"""The deterministic eval transform in numpy and OpenCV alone, for the lean (ONNX) inference install.

It reproduces ``transforms.build_transform(data, train=False)`` (albumentations
CenterCrop -> Resize (bilinear) -> Normalize -> CHW) pixel for pixel, without
importing torch or albumentations; ``tests/test_lean.py`` checks the parity.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..config import DataConfig


class EvalTransform:
    """Callable: uint8 HxWx3 at ``decode_size`` -> float32 3xHxW model input."""

    def __init__(self, data: DataConfig, *, mean, std):
        self.size = tuple(int(v) for v in data.image_size)
        dh, dw = data.decode_size
        self.crop = (int(dh * data.crop_fraction), int(dw * data.crop_fraction))
        # albumentations' Normalize: (x - mean * 255) / (std * 255), computed once per uint8 value
        self.mean = np.asarray(mean, np.float32) * 255.0
        self.scale = 1.0 / (np.asarray(std, np.float32) * 255.0)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        ch, cw = self.crop
        if (ch, cw) != img.shape[:2]:
            h, w = img.shape[:2]
            y0, x0 = (h - ch) // 2, (w - cw) // 2  # albumentations' centre: floor of half the margin
            img = img[y0:y0 + ch, x0:x0 + cw]
        h, w = self.size
        if img.shape[:2] != (h, w):
            img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR)
        out = (img.astype(np.float32) - self.mean) * self.scale
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)
