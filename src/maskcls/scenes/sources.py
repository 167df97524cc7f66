"""What ``--source`` names: photos (one file, a folder, a glob), a video file or a camera index.

Ultralytics' convention: ``--source 0`` is the first camera. Bad sources
raise ``DataError`` with one line that says what to pass.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .. import labels as L
from ..data.reader import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
WHAT = "a photo, a folder of photos, a glob ('shots/*.jpg'), a video file or a camera index (0)"
MISSING = f"give --source: {WHAT}; a data root with eval/info.csv gives a submission"


@dataclass
class Source:
    """Photos (``paths``) or one stream (``video``: a file path or a camera index)."""

    kind: str  # "photos" | "video" | "camera"
    name: str
    paths: list[Path] = field(default_factory=list)
    root: Path | None = None  # photos: the folder their ``file`` names are relative to

    def file_name(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if self.root else str(path)


def resolve_source(src: str | None) -> Source:
    """The photos or stream ``src`` names; DataError (one line) when there are none."""
    if src is None or not str(src).strip():
        raise DataError(MISSING)
    src = str(src)
    if src.isdigit():
        return Source("camera", src)
    p = Path(src)
    if p.is_dir():
        from ..data.listing import list_images  # broken links get error rows, skipped folders a counted warning

        paths = list_images(p)
        if not paths:
            raise DataError(f"{p}: no .jpg/.jpeg/.png images found")
        return Source("photos", src, paths, root=p)
    if p.is_file():
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return Source("video", src)
        if p.suffix.lower() in L.IMAGE_SUFFIXES:
            return Source("photos", src, [p], root=p.parent)
        raise DataError(f"{p}: neither a photo (.jpg/.png) nor a video ({'/'.join(VIDEO_SUFFIXES)})")
    if glob.has_magic(src):
        paths = sorted(Path(q) for q in glob.glob(src, recursive=True) if Path(q).suffix.lower() in L.IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{src}: the glob matches no .jpg/.jpeg/.png photo")
        return Source("photos", src, paths)
    raise DataError(f"{src}: not found; --source takes {WHAT}")


class Stream:
    """Frames of a video file or camera as RGB arrays, with the stream's frame rate and length (0: unknown)."""

    def __init__(self, source: Source):
        target = int(source.name) if source.kind == "camera" else source.name
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            what = "camera" if source.kind == "camera" else "video"
            raise DataError(f"{source.name}: cannot open this {what}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 240 else 25.0
        self.frames = max(0, int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))) if source.kind == "video" else 0

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = self.cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            self.cap.release()
