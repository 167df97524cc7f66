"""The deterministic path from a file to the array that augmentation starts from.

decode -> (face crop / background removal, if configured) -> resize to
``data.decode_size``. Training, validation, prediction, export and the service
all call this one function, so they see identical pixels; its output is what
the decode cache stores.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..config import DataConfig, PreprocessConfig
from .images import load_rgb, resize


class Decoder:
    """Callable: path, bytes or RGB array -> uint8 HxWx3 at ``decode_size``.

    ``photos=True`` is for photos outside the competition layout (``predict``
    on a folder, the service, real-photo scoring): with
    ``preprocess.frame_photos`` each is first framed like a training portrait
    (``preprocess.framing``), unless the run crops faces anyway.
    """

    def __init__(self, data: DataConfig, pre: PreprocessConfig, photos: bool = False):
        self.size = tuple(data.decode_size)
        self.pre = pre
        self._prep = None
        if pre.face_crop or pre.background != "none":
            from ..preprocess import Preprocessor

            self._prep = Preprocessor(pre)
        self._framer = None
        if photos and pre.frame_photos and not pre.face_crop:
            from ..preprocess.framing import PhotoFramer

            self._framer = PhotoFramer(pre.detector, aspect=self.size[0] / self.size[1])

    def settings(self) -> dict:
        """Everything that changes the output pixels (the cache key)."""
        from ..preprocess.faces import DETECTOR_REVISION, resolve_detector

        pre = {k: v for k, v in vars(self.pre).items() if k != "frame_photos"}  # that one is the "framed" key
        pre["detector"] = resolve_detector(pre["detector"])  # "auto" is whichever is installed here
        revision = DETECTOR_REVISION.get(pre["detector"]) if self._prep or self._framer else None
        return {"decode_size": list(self.size), "preprocess": pre if self._prep else None, "v": 1,
                **({"framed": pre["detector"]} if self._framer else {}),  # each detector frames its own way
                **({"detector_revision": revision} if revision else {})}  # and changes in its code change crops

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:12]

    def item_digest(self, item: str) -> str:
        """What the decode cache keys one item by: the file's content (``BoxDecoder`` adds the box)."""
        return file_digest(item) if Path(item).is_file() else "missing:" + str(item)

    def __call__(self, source) -> np.ndarray:
        return self.with_face(source)[0]

    def with_face(self, source) -> tuple[np.ndarray, bool | None]:
        """The decoded array and whether a face was found for the framing or crop (None: nothing looked for one).

        False means the photo was framed on its centre as a guess: predict and
        the service report it as "no face found" rather than silently.
        """
        img = source if isinstance(source, np.ndarray) else load_rgb(source)
        found = None
        if self._framer is not None:
            img, face = self._framer.frame(img)
            found = face is not None
        if self._prep is not None:
            img, prep_found = self._prep.process(img)
            found = prep_found if prep_found is not None else found
        return resize(img, self.size), found

    def faces(self, img: np.ndarray) -> list:
        """Face boxes (x0, y0, x1, y1) of a decoded photo; empty without a detector."""
        return self._prep.detect(img) if self._prep is not None else []


def file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()
