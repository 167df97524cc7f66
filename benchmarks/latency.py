"""CPU inference speed on ONE thread: torch eager vs ONNX Runtime, same model, same input.

Single-image latency (p50/p95 over ``--repeats`` calls) and batch throughput
(``--batch`` images per call) of the model alone, plus the cost of decoding and
transforming one 384x512 JPEG (the same for both engines). torch gets
``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency.py --run runs/maskfaces_default
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency.py --fresh   # untrained default model at 160x128
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maskcls.checkpoint import save_checkpoint
from maskcls.config import load_config
from maskcls.export import export_model
from maskcls.models import create_model, data_config
from maskcls.run import Run

FRESH_SIZE = (160, 128)


def fresh_run(folder: Path, image_size=FRESH_SIZE, overrides: list[str] = ()) -> Path:
    """A run folder with an untrained default model (ImageNet backbone, random head): no training needed."""
    h, w = image_size
    cfg = load_config(None, [f"data.image_size=[{h},{w}]", *overrides])
    model = create_model(cfg.model.name, head=cfg.model.head, pretrained=False, drop_rate=cfg.model.drop_rate)
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "norm": data_config(model)},
                    folder / "weights" / "best.pt")
    return folder


def sample_jpeg(size=(384, 512)) -> bytes:
    """One drawn portrait at the competition's photo size."""
    from maskcls.data.demo import draw_face

    buf = io.BytesIO()
    draw_face(np.random.default_rng(0), mask=0, gender=1, age=40, size=size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def timings(fn, repeats: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.asarray(out)


def measure(name: str, probs, shape, args) -> dict:
    x1 = torch.randn(1, *shape)
    xb = torch.randn(args.batch, *shape)
    with torch.inference_mode():
        single = timings(lambda: probs(x1), args.repeats) * 1000
        batch = timings(lambda: probs(xb), args.batch_repeats, warmup=1)
    return {"engine": name, "p50_ms": float(np.percentile(single, 50)), "p95_ms": float(np.percentile(single, 95)),
            f"batch{args.batch}_img_per_s": float(args.batch / batch.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder or checkpoint")
    src.add_argument("--fresh", action="store_true", help="untrained default model (no run needed)")
    ap.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                    help=f"model input for --fresh (default {FRESH_SIZE[0]} {FRESH_SIZE[1]})")
    ap.add_argument("--repeats", type=int, default=50, help="single-image calls timed")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batch-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = fresh_run(Path(tmp) / "fresh", args.image_size or FRESH_SIZE) if args.fresh else args.run
        pt = Run.open(run, device="cpu")
        onnx_path = export_model(pt.model, pt.cfg, pt.norm, Path(tmp) / "model.onnx")  # never writes into the run
        ort = Run.open(onnx_path, engine="onnx", threads=args.threads)
        h, w = pt.cfg.data.image_size
        rows = [measure("torch eager", pt.model.probs, (3, h, w), args),
                measure("onnxruntime", ort.model.probs, (3, h, w), args)]
        jpeg = sample_jpeg()
        prep = timings(lambda: pt.transform(pt.decoder(jpeg)), args.repeats) * 1000
    print(f"model {pt.cfg.model.name} ({pt.cfg.model.head} head), input {h}x{w}, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print(f"{'engine':14s} {'p50 ms':>8s} {'p95 ms':>8s} {'batch' + str(args.batch) + ' img/s':>16s}")
    for r in rows:
        print(f"{r['engine']:14s} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r[f'batch{args.batch}_img_per_s']:16.1f}")
    print(f"decode+transform of one 384x512 JPEG: p50 {np.percentile(prep, 50):.2f} ms (same for both engines)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "decode_transform_p50_ms": float(np.percentile(prep, 50)),
                                               "image_size": [h, w], "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
