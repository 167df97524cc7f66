"""Frame any photo like a training portrait before it reaches the model.

Training portraits (the competition layout) show one face at a fixed place
and scale: measured with the Haar chain on 240 maskfaces portraits, the face
box is centred at about (0.49, 0.36) of the frame and is 0.85 of its width;
MTCNN's tighter boxes and RetinaFace's calibrated ones are measured the same way
(``benchmarks/portrait_geometry.py --detector mtcnn|centerface|retinaface|fast``). Real photos come as tight face crops,
square or landscape, or with the face anywhere. Squashing those into the
portrait's 3:4 frame shrinks and distorts the face, and the 0.75 centre crop
then cuts off the mouth and chin, where the mask is.

``frame_photo`` finds the face and cuts a 3:4 box around it with the
training geometry, padding with the photo's own edge where the box leaves it.
Without a detected face (masks hide the lower face from Haar cascades), the
photo is taken to be a face crop: its centre square is the face box.
"""
from __future__ import annotations

import threading
from typing import Sequence

import cv2
import numpy as np

# where each detector's face box sits in a training portrait, as shares of the frame (see the module
# docstring); dlib's chain starts with HOG boxes but was not measured apart: it shares Haar's
PORTRAIT_FACE = {"haar": {"cx": 0.49, "cy": 0.36, "width": 0.85},
                 "mtcnn": {"cx": 0.48, "cy": 0.36, "width": 0.70},
                 # calibrated to forehead-to-chin boxes, so lower in the frame than MTCNN's (238-240 portraits)
                 "centerface": {"cx": 0.50, "cy": 0.46, "width": 0.72},
                 "retinaface": {"cx": 0.50, "cy": 0.46, "width": 0.72},
                 "fast": {"cx": 0.51, "cy": 0.47, "width": 0.73}}
PORTRAIT_FACE["dlib"] = PORTRAIT_FACE["haar"]
NO_FACE_SHARE = 0.8  # without a face: the face box is this share of the photo's shorter side, centred


def portrait_box(face: Sequence[float], aspect: float, detector: str = "haar") -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) frame, height/width = ``aspect``, that puts ``face`` where portraits have it.

    ``detector`` names whose boxes ``face`` is (their size and place differ).
    The box may reach outside the photo; ``crop_padded`` fills that part.
    """
    geo = PORTRAIT_FACE[detector]
    x0, y0, x1, y1 = (float(v) for v in face)
    bw = max(1.0, x1 - x0) / geo["width"]
    bh = bw * aspect
    left = (x0 + x1) / 2 - geo["cx"] * bw
    top = (y0 + y1) / 2 - geo["cy"] * bh
    return int(round(left)), int(round(top)), int(round(left + bw)), int(round(top + bh))


def crop_padded(img: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """``img[y0:y1, x0:x1]`` where the box may leave the photo: the outside repeats the photo's edge."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    pad = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    inner = img[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    if not any(pad):
        return np.ascontiguousarray(inner)
    return cv2.copyMakeBorder(np.ascontiguousarray(inner), *pad, borderType=cv2.BORDER_REPLICATE)


def default_face(shape: Sequence[int]) -> tuple[float, float, float, float]:
    """The face box assumed when none is found: the photo is a face crop."""
    h, w = int(shape[0]), int(shape[1])
    side = NO_FACE_SHARE * min(h, w)
    return (w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2


def frame_photo(img: np.ndarray, face: Sequence[float] | None, aspect: float, detector: str = "haar") -> np.ndarray:
    """The photo cut (and padded) to a ``aspect`` frame with the face where training portraits have it."""
    if face is None:  # the assumed face crop is a Haar-like box
        return crop_padded(img, portrait_box(default_face(img.shape), aspect))
    return crop_padded(img, portrait_box(face, aspect, detector))


class PhotoFramer:
    """Callable: RGB photo -> the photo framed like a training portrait (largest face, or the centre)."""

    def __init__(self, detector: str = "haar", aspect: float = 4 / 3):
        from .faces import build_detector, resolve_detector

        self.name = resolve_detector(detector)  # its framing geometry is the resolved detector's
        self.detector, self.aspect = build_detector(self.name), float(aspect)
        self.photos = self.no_face = 0
        self._lock = threading.Lock()  # cv2 cascades are not safe to share between service threads

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def frame(self, img: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
        """The framed photo and the face it was framed on; None: no face was found and the centre was assumed."""
        from . import as_rgb
        from .faces import find_face

        img = as_rgb(img)
        with self._lock:
            face = find_face(img, self.detector)
            self.photos += 1
            self.no_face += face is None
        return frame_photo(img, face, self.aspect, self.name), face

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self.frame(img)[0]
