"""Inference on an exported ONNX model with ONNX Runtime, numpy and OpenCV only: no torch, timm or albumentations.

This is what ``pip install ".[serve]"`` (the lean install, from a checkout) runs: ``maskcls predict
model.onnx`` and ``maskcls serve model.onnx``. The model's config and
normalisation ride along in its metadata (``export.py`` writes them), so the
Decoder and the eval transform (``data.eval_transform``, pixel-identical to the
albumentations one) are rebuilt exactly as validation used them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from . import labels as L
from .data.eval_transform import tta_views

log = logging.getLogger("maskcls")

META_KEY = "maskcls"
INPUT, OUTPUT = "image", "probs"


def ort_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session; ``threads`` = intra-op threads (0: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OrtModel:
    """The session behind a ``Run`` opened with ``engine="onnx"``: ``probs(x)`` on NCHW float32 arrays."""

    def __init__(self, session):
        self.session = session

    def probs(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
        return self.session.run([OUTPUT], {INPUT: x})[0]

    __call__ = probs


class OnnxPredictor:
    """The Predictor API (``predict_images``, ``predict_frame``) of an ONNX ``Run``, in numpy."""

    def __init__(self, run):
        self.run = run
        self.cfg, self.norm, self.model = run.cfg, run.norm, run.model
        self.decoder, self.transform = run.decoder, run.transform
        self.path = str(run.path)

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu", which: str = "best", threads: int = 0,
             overrides=()) -> "OnnxPredictor":
        """From a run folder (its weights/model.onnx), a checkpoint beside one, or an .onnx file."""
        from .run import Run

        return cls(Run.open(run, overrides, engine="onnx", threads=threads))

    @property
    def decision(self) -> dict:
        """The run's decision settings (per-class biases), as the torch Predictor has them."""
        return self.run.decision

    def batch(self, x: np.ndarray, tta: list[str] | None = None) -> np.ndarray:
        """(N, 18) probabilities of an NCHW batch: the mean over its TTA views."""
        views = tta_views(x, self.cfg.eval.tta if tta is None else tta)
        return sum(self.model.probs(v) for v in views) / len(views)

    def decoder_for(self, photos: bool):
        """The run's decoder; ``photos=True`` for photos outside the competition layout (framed first)."""
        return self.run.photo_decoder if photos else self.decoder

    def predict_images(self, images: Sequence, tta: list[str] | None = None, photos: bool = False) -> np.ndarray:
        """(N, 18) probabilities of paths, bytes or RGB arrays (decoded here)."""
        if not len(images):
            return np.zeros((0, L.NUM_CLASSES), np.float32)
        decoder = self.decoder_for(photos)
        return self.batch(np.stack([self.transform(decoder(im)) for im in images]), tta)

    def predict_frame(self, frame, *, tta: list[str] | None = None, progress: bool = True, photos: bool = False):
        """Probabilities for every row of an image table (via the decode cache if on); unreadable rows dropped."""
        from tqdm import tqdm

        from .data.imageset import image_set

        from .data.images import ImageReadError

        images = image_set(frame, self.decoder_for(photos), self.cfg, progress)
        n, size = len(images.frame), max(1, self.cfg.eval.batch_size)
        out, good, errors = [], [], list(images.errors)
        for start in tqdm(range(0, n, size), desc="predict", leave=False, disable=not progress, unit="batch"):
            batch = []
            for i in range(start, min(n, start + size)):
                try:  # without the cache, files are decoded here: an unreadable one is dropped, never fatal
                    batch.append(self.transform(images.source(i)))
                    good.append(i)
                except ImageReadError as e:
                    errors.append(str(e))
            if batch:
                out.append(self.batch(np.stack(batch), tta))
        for e in errors:
            log.warning("%s; no prediction", e)
        probs = np.concatenate(out) if out else np.zeros((0, L.NUM_CLASSES), np.float32)
        return probs.astype(np.float32), images.frame.iloc[good].reset_index(drop=True)
