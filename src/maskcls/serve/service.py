"""What the HTTP layer calls: the loaded model(s), face handling and readable results.

Models load once per process. Every face is found (``scenes.FaceFinder``,
as ``maskcls predict --faces all``: boxes in the photo's pixels, each face
framed like a training portrait, all faces of a photo in one batch) and
classified on its own; ``face_crop=False`` or a photo without a face sends
the whole photo through the run's own photo Decoder, as ``maskcls predict``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import labels as L
from ..predict import Ensemble
from ..summary import summarize


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


@dataclass
class ServeSettings:
    """Limits and per-worker resources; ``from_env`` reads the MASKCLS_* variables."""

    max_bytes: int = 10 * 1024 * 1024  # per uploaded file
    max_pixels: int = 40_000_000  # width x height per file, checked before decoding
    max_files: int = 16  # per /predict/batch request
    max_request_bytes: int = 32 * 1024 * 1024  # body of one /predict/batch request, counted while it streams
    max_request_pixels: int = 64_000_000  # width x height summed over one request's files (~200 MB decoded)
    max_inflight: int = 2  # requests decoding / inferring at once, on a fixed pool of threads
    max_queue: int = 16  # requests waiting for a free worker; more get 503 + Retry-After
    queue_timeout: int = 30  # seconds a request may wait for a worker before its 503
    max_faces: int = 8  # faces classified per photo (largest first)
    threads: int = 0  # torch / ONNX Runtime threads per worker (0: library default)

    @classmethod
    def from_env(cls) -> "ServeSettings":
        d = cls()
        return cls(**{f.name: _env_int(f"MASKCLS_{f.name.upper()}", getattr(d, f.name)) for f in dataclasses.fields(cls)})


def low_confidence_warning(confidence: float, threshold: float) -> str:
    return (f"low confidence {confidence:.0%} (under {threshold:.0%}): the model is unsure about this photo; "
            "do not rely on the answer")


class Service:
    """Loaded ensemble + optional face detection -> one result per face (or per photo)."""

    def __init__(self, ensemble: Ensemble, *, runs: Sequence[str] = (), engine: str = "torch",
                 settings: ServeSettings | None = None, face_crop: bool | None = None):
        self.ensemble, self.runs, self.engine = ensemble, [str(r) for r in runs], engine
        self.settings = settings or ServeSettings()
        cfg = ensemble.cfg
        self.face_crop = True if face_crop is None else face_crop  # find every face unless told not to
        self.thresholds = cfg.data.age_thresholds
        self.min_confidence = cfg.eval.min_confidence
        from ..scenes.finder import FaceFinder

        self.finder = FaceFinder(ensemble, side=cfg.scene.detect_side,
                                 max_faces=self.settings.max_faces) if self.face_crop else None

    @classmethod
    def load(cls, runs: Sequence[str | Path], engine: str = "torch", settings: ServeSettings | None = None,
             face_crop: bool | None = None, overrides: Sequence[str] = ()) -> "Service":
        settings = settings or ServeSettings()
        return cls(Ensemble.load(runs, engine=engine, threads=settings.threads, overrides=overrides),
                   runs=[str(r) for r in runs], engine=engine, settings=settings, face_crop=face_crop)

    def info(self) -> dict:
        cfg = self.ensemble.cfg
        return {"status": "ok", "engine": self.engine, "runs": self.runs, "members": len(self.ensemble.members),
                "model": cfg.model.name, "head": cfg.model.head, "image_size": cfg.data.image_size,
                "decode_size": cfg.data.decode_size, "face_crop": bool(self.face_crop),
                "low_confidence_below": self.min_confidence, "warnings": self.warnings(),
                "limits": dataclasses.asdict(self.settings)}

    def warnings(self) -> list[str]:
        """Reasons to distrust every answer of the loaded model(s), e.g. training on drawn demo data."""
        return self.ensemble.warnings()

    def _jobs(self, images: Sequence[np.ndarray]) -> list[tuple[int, list | None, np.ndarray]]:
        """(photo index, face box or None, pixels: the framed face, or the whole photo) for every region to classify."""
        jobs = []
        for i, img in enumerate(images):
            boxes = self.finder.find(img)[0] if self.finder is not None else []
            if not len(boxes):
                jobs.append((i, None, img))
            for box, crop in zip(boxes, self.finder.crops(img, boxes) if len(boxes) else []):
                jobs.append((i, [int(v) for v in box], crop))
        return jobs

    def predict(self, images: Sequence[np.ndarray]) -> list[dict]:
        """One result per RGB photo: the main (largest) face's labels plus ``faces``."""
        jobs = self._jobs(images)
        probs = np.zeros((len(jobs), L.NUM_CLASSES), np.float32)
        whole = [k for k, j in enumerate(jobs) if j[1] is None]
        faces = [k for k, j in enumerate(jobs) if j[1] is not None]
        for rows, photos in ((whole, True), (faces, False)):
            if rows:  # whole photos are framed like training portraits first (preprocess.frame_photos); faces are
                probs[rows] = self.ensemble.predict_images([jobs[k][2] for k in rows], photos=photos)
        out = [{"width": int(img.shape[1]), "height": int(img.shape[0]), "faces": []} for img in images]
        for (i, box, _), p in zip(jobs, probs):
            out[i]["faces"].append({"box": box, "result": summarize(p, decision=self.ensemble.decision,
                                                                    thresholds=self.thresholds,
                                                                    min_confidence=self.min_confidence)})
        for r in out:
            r.update(r["faces"][0]["result"])
            r["warnings"] = self.warnings() + ([low_confidence_warning(r["confidence"], self.min_confidence)]
                                               if r["low_confidence"] else [])
        return out
