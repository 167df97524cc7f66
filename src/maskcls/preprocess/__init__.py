"""Optional preprocessing before decoding: face crop and background removal.

``Preprocessor(cfg.preprocess)`` is called by ``data.decode.Decoder`` on every
photo (uint8 RGB in, uint8 RGB out) before the resize to ``data.decode_size``,
so training, prediction and the service apply the same crop from the run's
config; the decode cache keys its stores by these settings. It counts the
photos where no face was found (and a centre crop or centre seed was used),
for the offline command and the service to report.
"""
from __future__ import annotations

import threading

import numpy as np

from ..config import ConfigError, PreprocessConfig
from .background import build_remover
from .faces import Box, build_detector, centre_box, crop_box

__all__ = ["Preprocessor", "Box"]


def as_rgb(img: np.ndarray) -> np.ndarray:
    """Grey, HxWx1 and RGBA arrays as HxWx3 uint8 RGB (transparent parts on white, like decoding)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {img.shape}")
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        a = img[..., 3:].astype(np.float32) / 255.0
        return np.clip(img[..., :3] * a + 255.0 * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    return img


class Preprocessor:
    """Face crop and/or background removal as one callable, configured by ``preprocess.*``."""

    def __init__(self, cfg: PreprocessConfig):
        if not 0.0 <= cfg.face_margin <= 3.0:
            raise ConfigError(f"preprocess.face_margin must be in [0, 3] (a share of the face size), "
                              f"got {cfg.face_margin}")
        self.cfg = cfg
        self.detector = build_detector(cfg.detector)
        self.remover = build_remover(cfg)
        self.uses_faces = cfg.face_crop or cfg.background == "grabcut"
        self.photos = 0  # photos that went through face detection
        self.fallbacks = 0  # ... of which had no face: centre crop / centre seed
        self._lock = threading.Lock()  # cv2/dlib detectors are not safe to share between service threads

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def detect(self, img: np.ndarray) -> list[Box]:
        """Every face box (x0, y0, x1, y1) of the photo, largest first."""
        img = as_rgb(img)
        with self._lock:
            return self.detector(img)

    def crop(self, img: np.ndarray, face: Box | None) -> np.ndarray:
        """The face with ``face_margin`` around it at the photo's aspect; the centre without a face."""
        x0, y0, x1, y1 = crop_box(face, img.shape, self.cfg.face_margin) if face else centre_box(img.shape)
        return np.ascontiguousarray(img[y0:y1, x0:x1])

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self.process(img)[0]

    def process(self, img: np.ndarray) -> tuple[np.ndarray, bool | None]:
        """The preprocessed photo and whether a face was found (None: this configuration looks for none)."""
        img = as_rgb(img)
        face = None
        with self._lock:
            if self.uses_faces:
                faces = self.detector(img)
                face = faces[0] if faces else None
                self.photos += 1
                self.fallbacks += face is None
            if self.remover is not None:
                img = self.remover(img, face)
        if self.cfg.face_crop:
            img = self.crop(img, face)
        return img, (face is not None) if self.uses_faces else None

    def stats(self) -> dict:
        return {"photos": self.photos, "no_face": self.fallbacks}
