"""ONNX export of a run (needs torch); running the result needs only ``onnx_model`` (no torch).

The graph outputs the (N, 18) class probabilities (``MaskNet.probs``), so both
head layouts export alike, with a dynamic batch axis. The run's config,
normalisation and training-data summary ride along in the model's
``metadata_props`` (key ``maskcls``), so ``Run.open(..., engine="onnx")`` rebuilds
the very Decoder and eval transform that the torch run uses.

The TorchScript exporter (``dynamo=False``) is used on purpose: the torch.export
based one needs ``onnxscript``, which is not a dependency, and both give the
same graph for these CNNs.

``precision`` (fp16, int8, int8-dynamic; ``precision.py``) converts the fp32
graph afterwards, then the same metadata (plus ``precision``) is written into
the smaller file, so it opens exactly like the fp32 one.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .config import Config
from .io import atomic_path, check_output
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


def settings(cfg: Config, norm: dict, *, training_data: dict | None = None, decision: dict | None = None,
             precision: str = "fp32") -> dict:
    """What serving needs besides weights: full config (decoder, transform, head), normalisation, decision
    settings and what the model was trained on (for the demo-data warning)."""
    d = cfg.data
    return {"config": cfg.to_dict(), "norm": {k: list(v) for k, v in norm.items()},
            "training_data": training_data or {}, "decision": decision or {},
            # the preprocessing in one readable place (also inside "config")
            "preprocessing": {"decode_size": d.decode_size, "image_size": d.image_size,
                              "crop_fraction": d.crop_fraction, **norm, "preprocess": cfg.to_dict()["preprocess"],
                              "head": cfg.model.head},
            "input": INPUT, "output": OUTPUT, "opset": OPSET, "precision": precision}


def export_model(model: MaskNet, cfg: Config, norm: dict, out: str | Path, *, opset: int = OPSET,
                 training_data: dict | None = None, decision: dict | None = None, precision: str = "fp32",
                 calibration=None) -> Path:
    """Write ``out`` (.onnx) with a dynamic batch axis and the settings in its metadata.

    ``precision`` other than fp32 converts the exported graph (``precision.convert``;
    ``calibration``: NCHW batches for static int8).
    """
    import onnx

    from .precision import check_precision, convert

    check_precision(precision)
    out = check_output(out)
    h, w = cfg.data.image_size
    wrapper = ProbsModel(model.cpu().to(memory_format=torch.contiguous_format).eval()).eval()
    with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapper, (torch.zeros(2, 3, h, w),), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        if precision != "fp32":
            small = tmp.with_name(tmp.name + f".{precision}")
            try:
                convert(tmp, small, precision, calibration=calibration, input_name=INPUT)
                small.replace(tmp)
            finally:
                small.unlink(missing_ok=True)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]  # the converters may copy or drop it: one entry, written here
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(settings(cfg, norm, training_data=training_data, decision=decision,
                                                               precision=precision))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return out


def export_onnx(run: str | Path, out: str | Path | None = None, *, which: str = "best", precision: str = "fp32",
                calibration: str | Path | None = None, calibration_images: int = 64) -> Path:
    """Export a run's checkpoint (``maskcls export RUN``); default ``<run>/weights/model.onnx``.

    ``precision=int8`` calibrates on ``calibration_images`` photos of the run's
    training data (``data.root``), or of the folder ``calibration``.
    """
    from .precision import calibration_batches, check_precision

    check_precision(precision)
    if out is not None:
        check_output(out)  # before loading anything: a bad --out is one line, at once
    r = Run.open(run, which=which, device="cpu")
    batches = calibration_batches(r, calibration_images, calibration) if precision == "int8" else None
    return export_model(r.model, r.cfg, r.norm, out or onnx_path(run), training_data=r.training_data,
                        decision=r.saved_decision, precision=precision, calibration=batches)
