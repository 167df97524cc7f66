"""The ONNX Runtime session behind a ``Run`` opened with ``engine="onnx"``: no torch, timm or albumentations.

This is what ``pip install maskcls`` (the lean install) runs: ``maskcls predict
model.onnx`` and ``maskcls serve model.onnx``. The model's config and
normalisation ride along in its metadata (``export.py`` writes them), so
``run.Run`` rebuilds the Decoder and the eval transform exactly as validation
used them; ``predict.Predictor`` does the rest in numpy, for both engines.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

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
