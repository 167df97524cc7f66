"""What each export precision costs: file size, probability drift, class agreement, latency and accuracy.

Exports RUN at fp32, fp16, int8 (static, calibrated on the run's training photos)
and int8-dynamic into --out (never into the run), then for each file:

- size in MB;
- max |p - p_fp32| over the 18 probabilities and the share of photos whose
  18-class answer equals fp32's, on --images (default: the run's eval images,
  else its training photos; at most --n);
- latency: ms per image at batch 1 (p50) and at batch 16, ``--threads`` ONNX Runtime threads, in
  ``--rounds`` rounds that interleave the precisions (median of the rounds);
- with --mask-set DIR (e.g. ../shared/realfaces): mask accuracy and per-class
  recall through ``evaluate --mask-set``'s own function (measure only);
- with --answers CSV (e.g. data/maskfaces/eval/answers.csv): macro F1 (18 classes).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/precision.py runs/shipped --out /tmp/precision \\
        --mask-set ../shared/realfaces --answers data/maskfaces/eval/answers.csv
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from maskcls.data.reader import read_folder
from maskcls.evaluation import evaluate_mask_set, evaluate_run
from maskcls.export import export_onnx
from maskcls.predict import Ensemble
from maskcls.precision import PRECISIONS


def sample_images(run_cfg, images: str | None, n: int) -> list[str]:
    root = Path(images) if images else Path(run_cfg.data.root) / "eval" / "images"
    if not root.is_dir():
        root = Path(run_cfg.data.root) / "train" / "images"
    paths = read_folder(root)["path"].tolist()
    step = max(1, len(paths) // n)
    return paths[::step][:n]


def latency(pred: Ensemble, shape: tuple, batch: int, repeats: int) -> tuple[float, float]:
    """(p50 ms at batch 1, ms per image at ``batch``) of the model alone."""
    x1 = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    xb = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    for _ in range(3):
        pred.members[0].run.probs(x1)
    one = []
    for _ in range(repeats):
        t = time.perf_counter()
        pred.members[0].run.probs(x1)
        one.append(time.perf_counter() - t)
    pred.members[0].run.probs(xb)
    t = time.perf_counter()
    for _ in range(3):
        pred.members[0].run.probs(xb)
    return float(np.percentile(one, 50) * 1000), float((time.perf_counter() - t) / (3 * batch) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run folder or checkpoint")
    ap.add_argument("--out", required=True, help="folder for the exported files and precision.json")
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--images", help="folder of photos to compare probabilities on (default: the run's eval images)")
    ap.add_argument("--n", type=int, default=200, help="photos compared (default 200)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20, help="batch-1 calls timed per round")
    ap.add_argument("--rounds", type=int, default=5, help="latency rounds, precisions interleaved")
    ap.add_argument("--mask-set", help="real photos labelled by mask (DIR/labels.csv), e.g. ../shared/realfaces")
    ap.add_argument("--answers", help="labelled CSV for macro F1, e.g. data/maskfaces/eval/answers.csv")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, ref, photos, models = [], None, None, {}
    for precision in args.precisions:
        t0 = time.time()
        path = export_onnx(args.run, out / f"model-{precision}.onnx", precision=precision)
        pred = Ensemble.load([path], engine="onnx", threads=args.threads)
        photos = photos or sample_images(pred.cfg, args.images, args.n)
        probs = np.concatenate([pred.predict_images(photos[i:i + 32]) for i in range(0, len(photos), 32)])
        ref = probs if ref is None else ref
        row = {"precision": precision, "file": str(path), "mb": round(path.stat().st_size / 1e6, 2),
               "photos": len(photos), "max_abs_prob_diff": round(float(np.abs(probs - ref).max()), 5),
               "class_agreement": round(float((probs.argmax(1) == ref.argmax(1)).mean()), 4),
               "threads": args.threads}
        models[precision] = pred
        if args.mask_set:
            m, _ = evaluate_mask_set(path, args.mask_set, out=str(out / precision), engine="onnx", progress=False)
            row.update(mask_accuracy=m["mask_accuracy"], mask_recall=m["mask_recall"], mask_n=m["n"])
        if args.answers:
            m, _ = evaluate_run(path, answers=args.answers, out=str(out / precision), engine="onnx", progress=False)
            row.update(macro_f1=round(m["f1"], 4))
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    # latency in interleaved rounds (median of the rounds), so a busy machine slows every precision alike
    timed = {p: [] for p in models}
    for _ in range(args.rounds):
        for p, pred in models.items():
            h, w = pred.cfg.data.image_size
            timed[p].append(latency(pred, (3, h, w), 16, args.repeats))
    for row in rows:
        t = np.asarray(timed[row["precision"]])
        row.update(ms_batch1_p50=round(float(np.median(t[:, 0])), 2), ms_per_image_batch16=round(float(np.median(t[:, 1])), 2))
    (out / "precision.json").write_text(json.dumps(rows, indent=1))
    print("\n| precision | MB | max abs prob diff | class agreement | ms/img batch 1 | ms/img batch 16 |"
          + (" mask-set accuracy | recall wear / incorrect / not wear |" if args.mask_set else "")
          + (" macro F1 |" if args.answers else ""))
    for r in rows:
        line = (f"| {r['precision']} | {r['mb']:.1f} | {r['max_abs_prob_diff']:.4f} | {r['class_agreement']:.3f} | "
                f"{r['ms_batch1_p50']:.1f} | {r['ms_per_image_batch16']:.1f} |")
        if args.mask_set:
            rec = r["mask_recall"]
            line += f" {r['mask_accuracy']:.4f} | " + " / ".join(
                "-" if rec[k] is None else f"{rec[k]:.3f}" for k in ("wear", "incorrect", "not_wear")) + " |"
        if args.answers:
            line += f" {r['macro_f1']:.4f} |"
        print(line)


if __name__ == "__main__":
    main()
