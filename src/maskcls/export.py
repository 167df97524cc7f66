"""ONNX export of a run, and ``OnnxPredictor``: the same predictor API on ONNX Runtime.

The graph outputs the (N, 18) class probabilities (``MaskNet.probs``), so both
head layouts export alike, with a dynamic batch axis. The run's config and
normalisation ride along in the model's ``metadata_props`` (key ``maskcls``),
so ``OnnxPredictor`` rebuilds the very Decoder and eval transform that
``predict.Predictor`` uses: it *is* a Predictor whose model runs on ORT.

The TorchScript exporter (``dynamo=False``) is used on purpose: the torch.export
based one needs ``onnxscript``, which is not a dependency, and both give the
same graph for these CNNs.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .models import MaskNet
from .predict import Predictor
from .run import Run, onnx_path

OPSET = 17
META_KEY = "maskcls"
INPUT, OUTPUT = "image", "probs"


class ProbsModel(torch.nn.Module):
    """The exported graph: image batch -> (N, 18) probabilities."""

    def __init__(self, model: MaskNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.probs(x)


def settings(cfg: Config, norm: dict) -> dict:
    """What serving needs besides weights: full config (decoder, transform, head) and normalisation."""
    d = cfg.data
    return {"config": cfg.to_dict(), "norm": {k: list(v) for k, v in norm.items()},
            # the preprocessing in one readable place (also inside "config")
            "preprocessing": {"decode_size": d.decode_size, "image_size": d.image_size, "preset": d.preset,
                              "crop_fraction": d.crop_fraction, **norm, "preprocess": cfg.to_dict()["preprocess"],
                              "head": cfg.model.head},
            "input": INPUT, "output": OUTPUT, "opset": OPSET}


def export_model(model: MaskNet, cfg: Config, norm: dict, out: str | Path, *, opset: int = OPSET) -> Path:
    """Write ``out`` (.onnx) with a dynamic batch axis and the settings in its metadata."""
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = cfg.data.image_size
    wrapper = ProbsModel(model.cpu().to(memory_format=torch.contiguous_format).eval()).eval()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapper, (torch.zeros(2, 3, h, w),), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(settings(cfg, norm))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


default_onnx_path = onnx_path  # <run>/weights/model.onnx


def export_onnx(run: str | Path, out: str | Path | None = None, *, which: str = "best") -> Path:
    """Export a run's checkpoint (``maskcls export RUN``); default ``<run>/weights/model.onnx``."""
    r = Run.open(run, which=which, device="cpu")
    return export_model(r.model, r.cfg, r.norm, out or onnx_path(run))


class OrtModel(torch.nn.Module):
    """Stands in for MaskNet inside a Predictor: ``probs(x)`` runs the ONNX session.

    It has no logits (the graph ends at probabilities), so ``forward`` is ``probs``.
    """

    def __init__(self, session):
        super().__init__()
        self.session = session

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: x})[0])

    forward = probs


def ort_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session; ``threads`` = intra-op threads (0: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxPredictor(Predictor):
    """A Predictor (same decoder, transform, predict_images / predict_frame) backed by ONNX Runtime."""

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu", which: str = "best", threads: int = 0,
             overrides=()) -> "OnnxPredictor":
        """From a run folder (its weights/model.onnx), a checkpoint beside one, or an .onnx file."""
        return cls(Run.open(run, overrides, engine="onnx", threads=threads))
