"""All faces of one frame: detect (with scores where the detector gives them), frame, classify in one batch.

Each face is framed exactly as ``predict`` frames the face it finds in a
photo (``preprocess.framing``: the training portrait's geometry around the
detector's box), then every face of the frame goes through the ensemble as
one batch. Scenes need a smaller smallest face than portraits (where a face
under 1/8 of the photo is noise), so MTCNN runs here with a floor in pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..preprocess.faces import Mtcnn, build_detector, detect_faces, resolve_detector
from ..preprocess.framing import frame_photo

MIN_FACE_PX = 32  # smallest face looked for, in the frame's own pixels (the scene score counts faces from 32 px)
# MTCNN's final score floor: on the realmasks photos that are not held out (benchmarks/scene_detection.py, side 640)
# 0.0 finds 0.80 of faces with 0.78 false faces per photo, 0.9 finds 0.76 with 0.34, 0.99 0.62 with 0.10
MIN_SCORE = 0.9


class SceneMtcnn(Mtcnn):
    """MTCNN on a copy whose longer side is at most ``side``, every face from ``min_face`` px, with scores."""

    def __init__(self, side: int = 640, min_face: int = MIN_FACE_PX, threshold: float = MIN_SCORE):
        self.side, self.min_face, self.threshold = int(side), int(min_face), float(threshold)

    def scored(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) int boxes in ``rgb``'s pixels and (N,) scores, largest first."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self.side / max(h, w))
        work = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)),
                                                   interpolation=cv2.INTER_AREA)
        try:  # P-Net's window is 12 px: below that a face cannot be found at any scale
            found, _ = self.model.detect(np.ascontiguousarray(work[..., ::-1]),
                                         min_face_size=max(12.0, self.min_face * scale))
        except ValueError:  # mtcnn-runtime stacks an empty list when no scale has a candidate
            found = np.zeros((0, 5))
        found = np.asarray(found, float).reshape(-1, 5)
        found = found[found[:, 4] >= self.threshold]
        return _clean(found[:, :4] / scale, found[:, 4], w, h)

    def __call__(self, rgb: np.ndarray) -> list:
        return [tuple(b) for b in self.scored(rgb)[0]]


def _clean(boxes: np.ndarray, scores: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Rounded, clipped to the frame, empty boxes dropped, largest first."""
    boxes = np.rint(np.asarray(boxes, float).reshape(-1, 4))
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(int)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores = boxes[keep], np.asarray(scores, float)[keep]
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
    return boxes[order], scores[order]


def scene_detector(name: str, side: int, video: bool = False
                   ) -> tuple[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """(resolved name, rgb -> (boxes, scores)); chains without scores (Haar, dlib) give NaN scores.

    ``auto`` is CenterFace for photos and the faster RetinaFace pass (``fast``)
    for video and cameras, where a frame has ~60 ms (notes in BENCHMARKS.md).
    A run trained under ``auto`` names the detector it resolved to
    (``engine.pin_detector``): its ``centerface`` still means ``fast`` on video
    (CenterFace there: 200 ms a frame against 25). Faces are framed with the
    geometry of the detector that found them either way.
    """
    name = "fast" if video and name in ("auto", "centerface") and _has("fast") else name
    name = resolve_detector(name)
    if name == "mtcnn":
        build_detector(name)  # the clear install error when its package is missing
        return name, SceneMtcnn(side).scored
    chain = build_detector(name)
    if hasattr(chain, "detect"):  # learned detectors: their own scores, calibrated boxes, own working size
        def scored(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            found = np.asarray(detect_faces(rgb, chain), float).reshape(-1, 5)
            return _clean(found[:, :4], found[:, 4], rgb.shape[1], rgb.shape[0])

        return name, scored

    def scored(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.asarray(chain(rgb), float).reshape(-1, 4)
        return _clean(boxes, np.full(len(boxes), math.nan), rgb.shape[1], rgb.shape[0])

    return name, scored


def _has(name: str) -> bool:
    import importlib.util

    from ..preprocess.faces import EXTRAS

    return importlib.util.find_spec(EXTRAS[name][0]) is not None


@dataclass
class Faces:
    """The faces of one frame: boxes (N, 4) in its pixels, detector scores (N,), probabilities (N, 18)."""

    boxes: np.ndarray
    scores: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


class FaceFinder:
    """Callable: RGB frame -> ``Faces``: every face (at most ``max_faces``, largest first), classified in one batch."""

    def __init__(self, ensemble, side: int = 640, max_faces: int = 0, video: bool = False):
        cfg = ensemble.cfg
        self.ensemble, self.max_faces = ensemble, int(max_faces)
        self.name, self.detect = scene_detector(cfg.preprocess.detector, side, video)
        h, w = cfg.data.decode_size
        self.aspect = h / w

    def crops(self, rgb: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        """Each face framed like a training portrait (the geometry of this detector's boxes)."""
        return [frame_photo(rgb, tuple(b), self.aspect, self.name) for b in boxes]

    def classify(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 18) probabilities of the faces at ``boxes``, one batch."""
        if not len(boxes):
            return np.zeros((0, 18), np.float32)
        return np.asarray(self.ensemble.predict_images(self.crops(rgb, boxes), photos=False), np.float32)

    def find(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = self.detect(rgb)
        if self.max_faces:
            boxes, scores = boxes[: self.max_faces], scores[: self.max_faces]
        return boxes, scores

    def __call__(self, rgb: np.ndarray) -> Faces:
        boxes, scores = self.find(rgb)
        return Faces(boxes, scores, self.classify(rgb, boxes))
