"""faces.csv (one row per face, appended and flushed per frame) and annotated copies (supervision).

Streams may be stopped at any time (Ctrl-C, a camera unplugged): every row
and video frame already written stays readable. Annotated photos are written
to a temporary file and renamed; the video is closed in ``finally``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from .. import labels as L
from .finder import Faces

COLUMNS = ["file", "frame", "face", "track", "x0", "y0", "x1", "y1", "det_score", "mask", "mask_confidence",
           "gender", "age", "confidence", "error"]  # other tools read these names: keep them
COLORS = {"wear": "#1b9e3e", "incorrect": "#e08a00", "not_wear": "#d62728"}  # as on the web page
SHORT = {"wear": "mask", "incorrect": "mask wrong", "not_wear": "no mask"}
SAVE_HINT = "--save draws with supervision, in the scenes extra: pip install 'maskcls[scenes]'"


class FacesCsv:
    """faces.csv, opened once; ``write`` appends a frame's rows and flushes them to disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, COLUMNS)
        self.writer.writeheader()
        self.rows = 0

    def write(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)
        self.file.flush()  # in the OS's hands: kept if the process dies (no fsync per frame: slow disks stall)
        self.rows += len(rows)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "FacesCsv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def face_rows(file: str, frame: int, faces: Faces, answers: list[dict], tracks: np.ndarray | None = None) -> list[dict]:
    """The rows of one frame's faces (``tracks`` None: a still photo, empty track column)."""
    rows = []
    for k, (box, score, ans) in enumerate(zip(faces.boxes, faces.scores, answers)):
        track = "" if tracks is None or tracks[k] < 0 else int(tracks[k])
        rows.append({"file": file, "frame": frame, "face": k, "track": track,
                     **dict(zip(("x0", "y0", "x1", "y1"), (int(v) for v in box))),
                     "det_score": "" if np.isnan(score) else round(float(score), 4),
                     **{c: ans[c] for c in ("mask", "mask_confidence", "gender", "age", "confidence")}, "error": ""})
    return rows


def error_row(file: str, frame: int, reason: str) -> dict:
    return {**{c: "" for c in COLUMNS}, "file": file, "frame": frame, "error": reason}


class Annotator:
    """Boxes coloured by mask state and a short label per face, drawn by supervision's annotators."""

    def __init__(self):
        try:
            import supervision as sv
        except ImportError:
            from ..data.reader import DataError

            raise DataError(SAVE_HINT) from None
        self.sv = sv
        self.palette = sv.ColorPalette.from_hex([COLORS[m.name.lower()] for m in L.Mask])

    def __call__(self, rgb: np.ndarray, faces: Faces, answers: list[dict], tracks: np.ndarray | None = None) -> np.ndarray:
        """A BGR copy of ``rgb`` with the faces drawn (BGR: what OpenCV writes)."""
        sv = self.sv
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if not len(faces):
            return bgr
        masks = np.array([int(L.Mask[a["mask"].upper()]) for a in answers])
        det = sv.Detections(xyxy=faces.boxes.astype(float).reshape(-1, 4), class_id=masks)
        labels = [f"{SHORT[a['mask']]} {a['mask_confidence']:.0%}"
                  + (f" #{int(tracks[k])}" if tracks is not None and tracks[k] >= 0 else "")
                  for k, a in enumerate(answers)]
        side = min(rgb.shape[:2])
        thick = max(2, round(side / 240))
        box = sv.BoxAnnotator(color=self.palette, thickness=thick, color_lookup=sv.ColorLookup.CLASS)
        text = sv.LabelAnnotator(color=self.palette, text_color=sv.Color.WHITE, text_scale=max(0.4, side / 900),
                                 text_thickness=max(1, thick // 2), text_padding=max(3, thick * 2),
                                 text_position=sv.Position.TOP_LEFT, color_lookup=sv.ColorLookup.CLASS,
                                 smart_position=True)  # labels kept inside the frame
        return text.annotate(box.annotate(bgr, det), det, labels=labels)


def write_image(path: str | Path, bgr: np.ndarray) -> Path:
    """Encode by the file's suffix into a temporary file, then rename (never a half-written image)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".jpg", bgr)
    if not ok:
        raise OSError(f"{path}: could not encode the annotated image")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)
    return path


class VideoOut:
    """An .mp4 written frame by frame (MPEG-4, OpenCV's bundled FFmpeg); ``close`` finishes it."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not self.writer.isOpened():
            raise OSError(f"{self.path}: cannot write an .mp4 here (OpenCV has no MPEG-4 encoder?)")
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        self.writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
