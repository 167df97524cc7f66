"""Smaller ONNX files for shipping: fp16 weights or int8 quantisation of an exported fp32 model.

Why: the packaged model must stay under 10 MB and an fp32 lite0 is ~14 MB.
Both conversions use the field's tools and keep the graph's float32 input and
output, so ``onnx_model`` and ``Run.open`` read every precision alike:

- ``fp16``: weights stored as float16 and cast back to float32 on load (see
  ``to_fp16`` for why not onnxconverter-common's fp16 compute).
- ``int8``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel
  weights) calibrated on a few images of the run's own data, decoded and
  transformed exactly as inference does.
- ``int8-dynamic``: ``quantize_dynamic`` (no calibration images; activations
  quantised per call).

The final softmax stays float in every variant: probabilities are what the
decision and the confidence columns read.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger("maskcls")

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
QUANTISED_OPS = ["Conv", "Gemm"]  # the weights; MatMul (the 18 probabilities from the head softmaxes), softmax stay float


def check_precision(precision: str) -> str:
    from .config import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    return precision


def to_fp16(src: Path, dst: Path) -> None:
    """``src`` with its float weights stored as float16, each cast back to float32 where the graph reads it.

    The file halves; ONNX Runtime folds the casts when it loads the model, so
    it runs the fp32 kernels on weights rounded to half precision.
    ``onnxconverter_common.float16.convert_float_to_float16`` (fp16 compute)
    is not used: on this exporter's graph it turns the float casts of the
    dynamic SAME-padding arithmetic into float16 outputs, and ONNX Runtime
    refuses the file (type error at conv_stem/Cast_3); x86 CPUs have no fp16
    convolution kernels to gain from it anyway.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph, kept, casts = model.graph, [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 16:  # scalars and shapes: as they are
            kept.append(init)
            continue
        w = numpy_helper.to_array(init)
        half = np.clip(w, -65504, 65504).astype(np.float16)
        kept.append(numpy_helper.from_array(half, f"{init.name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{init.name}__fp16"], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))


def to_int8(src: Path, dst: Path, calibration: Iterable[np.ndarray] | None, input_name: str) -> None:
    """Static QDQ int8 calibrated on ``calibration`` batches; dynamic int8 when ``calibration`` is None."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_name(dst.name + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)  # folds BN etc., as ORT advises
        if calibration is None:
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=QUANTISED_OPS)
            return
        class Batches(CalibrationDataReader):
            """The calibration batches, one feed dict at a time."""

            def __init__(self):
                self.it = iter(calibration)

            def get_next(self):
                x = next(self.it, None)
                return None if x is None else {input_name: np.ascontiguousarray(x, dtype=np.float32)}

        reader = Batches()
        quantize_static(str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=QUANTISED_OPS)
    finally:
        prepared.unlink(missing_ok=True)


def convert(src: Path, dst: Path, precision: str, *, calibration: Iterable[np.ndarray] | None = None,
            input_name: str = "image") -> Path:
    """Write ``src`` (an fp32 .onnx) at ``precision`` to ``dst``; metadata is re-added by the caller."""
    check_precision(precision)
    if precision == "fp16":
        to_fp16(src, dst)
    elif precision == "int8":
        to_int8(src, dst, calibration, input_name)
    elif precision == "int8-dynamic":
        to_int8(src, dst, None, input_name)
    else:
        dst.write_bytes(src.read_bytes())
    return dst


def calibration_batches(run, images: int = 64, folder: str | Path | None = None, batch: int = 16,
                        seed: int = 0) -> list[np.ndarray]:
    """``images`` photos of the run's training data (or of ``folder``), decoded and transformed as at inference.

    The run's own data sets the activation ranges int8 must cover; a few dozen
    photos are enough (ORT's MinMax calibration keeps the extremes).
    """
    from .config import ConfigError
    from .data.eval_transform import EvalTransform
    from .data.reader import DataError, Report, read_folder, read_train

    d = run.cfg.data
    try:
        frame = read_folder(folder) if folder else read_train(d.root, age_thresholds=d.age_thresholds,
                                                              report=Report())
    except DataError as e:
        raise ConfigError(f"int8 calibration needs images: {e} (pass --calibration DIR, or use "
                          f"--precision int8-dynamic)") from None
    frame = frame.sample(n=min(images, len(frame)), random_state=seed)
    decoder, transform = run.photo_decoder if folder else run.decoder, EvalTransform(d, **run.norm)
    xs = [transform(decoder(p)) for p in frame["path"]]
    log.info("int8 calibration: %d images from %s", len(xs), folder or d.root)
    return [np.stack(xs[i:i + batch]) for i in range(0, len(xs), batch)]
