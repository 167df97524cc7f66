"""What the HTTP layer calls: the loaded model(s), face handling and readable results.

Models load once per process. With ``preprocess.face_crop`` every face the
detector finds is cropped (``preprocess.faces.crop_box``, as in training) and
classified on its own; otherwise, or when no face is found, the whole photo
goes through the run's own Decoder, exactly as in ``maskcls predict``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import labels as L
from ..data.decode import Decoder
from ..predict import Ensemble, Predictor
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
        self.face_crop = cfg.preprocess.face_crop if face_crop is None else face_crop
        self.thresholds = cfg.data.age_thresholds
        self.min_confidence = cfg.eval.min_confidence
        self.detector: Decoder = ensemble.members[0].decoder
        # Face crops are made here, so their decoder only resizes (and removes the background if configured).
        self.faces_ensemble = Ensemble([self._face_member(m) for m in ensemble.members],
                                       ensemble._decision) if self.face_crop else None

    @classmethod
    def load(cls, runs: Sequence[str | Path], engine: str = "torch", settings: ServeSettings | None = None,
             face_crop: bool | None = None, overrides: Sequence[str] = ()) -> "Service":
        settings = settings or ServeSettings()
        return cls(Ensemble.load(runs, engine=engine, threads=settings.threads, overrides=overrides),
                   runs=[str(r) for r in runs], engine=engine, settings=settings, face_crop=face_crop)

    @staticmethod
    def _face_member(member: Predictor) -> Predictor:
        """The same run (and model) with a decoder that only resizes: the crop is made here."""
        return Predictor(member.run, Decoder(member.cfg.data, dataclasses.replace(member.cfg.preprocess,
                                                                                   face_crop=False)))

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
        """(photo index, face box or None, pixels) for every region to classify."""
        jobs = []
        for i, img in enumerate(images):
            boxes = list(self.detector.faces(img))[: self.settings.max_faces] if self.face_crop else []
            if not boxes:
                jobs.append((i, None, img))
                continue
            from ..preprocess.faces import crop_box

            for box in boxes:
                x0, y0, x1, y1 = crop_box(tuple(int(v) for v in box), img.shape, self.ensemble.cfg.preprocess.face_margin)
                jobs.append((i, [int(v) for v in box], img[y0:y1, x0:x1]))
        return jobs

    def predict(self, images: Sequence[np.ndarray]) -> list[dict]:
        """One result per RGB photo: the main (largest) face's labels plus ``faces``."""
        jobs = self._jobs(images)
        probs = np.zeros((len(jobs), L.NUM_CLASSES), np.float32)
        whole = [k for k, j in enumerate(jobs) if j[1] is None]
        faces = [k for k, j in enumerate(jobs) if j[1] is not None]
        for rows, ens in ((whole, self.ensemble), (faces, self.faces_ensemble)):
            if rows:
                # whole photos are framed like training portraits first (preprocess.frame_photos)
                probs[rows] = ens.predict_images([jobs[k][2] for k in rows], photos=ens is self.ensemble)
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
