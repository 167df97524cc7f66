"""The numbers of the ``data.augment`` presets, named once for both input paths.

``transforms.py`` builds the albumentations ops from them (CPU path) and
``gpu_pipeline.py`` the tensor ops (GPU path), so the two draw from the same
ranges with the same probabilities; this module imports neither library.
tests/test_gpu_pipeline.py checks that both paths list the same ops with the same p.
"""
from __future__ import annotations

FLIP_P = 0.5

# basic (the competition recipe)
BASIC_JITTER = (0.2, 0.2, 0.2, 0.02)  # brightness, contrast, saturation, hue (albumentations' ColorJitter)
BASIC_JITTER_P = 0.8
BASIC_NOISE_P = 0.3
NOISE_STD = (0.02, 0.06)  # GaussNoise std, a fraction of the pixel range (both presets)

# real: before the centre crop
FRAMING_SCALE = (0.8, 1.25)  # per axis
FRAMING_SHIFT = 0.08  # +- fraction of the side
FRAMING_ROTATE = 12.0  # +- degrees
FRAMING_P = 0.7
# real: after the resize
REAL_JITTER = (0.3, 0.3, 0.4, 0.06)
REAL_JITTER_P = 0.8
GRAY_P = 0.1
BLUR_P = 0.2  # one of Gaussian and motion blur
GAUSS_BLUR_KERNEL = (3, 5)
GAUSS_BLUR_SIGMA = (0.5, 3.0)  # albumentations' default, named so both paths use it
MOTION_BLUR_KERNEL = (3, 7)
DOWNSCALE = (0.3, 0.7)
DOWNSCALE_P = 0.25
JPEG_QUALITY = (30, 90)
JPEG_P = 0.3
REAL_NOISE_P = 0.2
DROPOUT_HOLES = (1, 2)
DROPOUT_SIDE = (0.08, 0.2)  # hole height and width, a fraction of the side
DROPOUT_P = 0.25
