"""ONNX export of a run (needs torch); running the result needs only ``onnx_model`` (no torch).

The graph outputs the (N, 18) class probabilities (``MaskNet.probs``), so both
head layouts export alike, with a dynamic batch axis. The run's config,
normalisation and training-data summary ride along in the model's
``metadata_props`` (key ``maskcls``), so ``Run.open(..., engine="onnx")`` rebuilds
the very Decoder and eval transform that the torch run uses.

The TorchScript exporter (``dynamo=False``) is used on purpose: the torch.export
based one needs ``onnxscript``, which is not a dependency, and both give the
same graph for these CNNs.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from .config import Config
from .models import MaskNet
from .onnx_model import INPUT, META_KEY, OUTPUT
from .run import Run, onnx_path

OPSET = 17


class ProbsModel(torch.nn.Module):
    """The exported graph: image batch -> (N, 18) probabilities."""

    def __init__(self, model: MaskNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.probs(x)


def settings(cfg: Config, norm: dict, *, training_data: dict | None = None, decision: dict | None = None) -> dict:
    """What serving needs besides weights: full config (decoder, transform, head), normalisation, decision
    settings and what the model was trained on (for the demo-data warning)."""
    d = cfg.data
    return {"config": cfg.to_dict(), "norm": {k: list(v) for k, v in norm.items()},
            "training_data": training_data or {}, "decision": decision or {},
            # the preprocessing in one readable place (also inside "config")
            "preprocessing": {"decode_size": d.decode_size, "image_size": d.image_size,
                              "crop_fraction": d.crop_fraction, **norm, "preprocess": cfg.to_dict()["preprocess"],
                              "head": cfg.model.head},
            "input": INPUT, "output": OUTPUT, "opset": OPSET}


def export_model(model: MaskNet, cfg: Config, norm: dict, out: str | Path, *, opset: int = OPSET,
                 training_data: dict | None = None, decision: dict | None = None) -> Path:
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
    entry.key, entry.value = META_KEY, json.dumps(settings(cfg, norm, training_data=training_data, decision=decision))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


def export_onnx(run: str | Path, out: str | Path | None = None, *, which: str = "best") -> Path:
    """Export a run's checkpoint (``maskcls export RUN``); default ``<run>/weights/model.onnx``."""
    r = Run.open(run, which=which, device="cpu")
    return export_model(r.model, r.cfg, r.norm, out or onnx_path(run), training_data=r.training_data,
                        decision=r.saved_decision)
