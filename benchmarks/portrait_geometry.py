"""Where a detector's face box sits in a training portrait, and how often it finds a face in real photos.

The first figure sets ``preprocess.framing.PORTRAIT_FACE[detector]``; the
second is the detection rate quoted in BENCHMARKS.md (real masked faces often
have none for Haar).

    python benchmarks/portrait_geometry.py [--detector haar|mtcnn|centerface|retinaface|fast] [--root data/maskfaces] [--real ../shared/realfaces]
"""
from __future__ import annotations

import argparse
import glob
import random
import time

import numpy as np
import pandas as pd

from maskcls.data.images import load_rgb
from maskcls.preprocess.faces import build_detector


def boxes(files: list[str], det) -> tuple[np.ndarray, int]:
    """Relative (cx, cy, w, h) of the largest detected face per file, and how many had none."""
    rows, missing = [], 0
    for f in files:
        img = load_rgb(f)
        h, w = img.shape[:2]
        found = det(img)
        if not found:
            missing += 1
            continue
        x0, y0, x1, y1 = found[0]
        rows.append(((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h))
    return np.array(rows).reshape(-1, 4), missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="data/maskfaces")
    ap.add_argument("--real", default="../shared/realfaces")
    ap.add_argument("--per-kind", type=int, default=80)
    ap.add_argument("--detector", default="haar", choices=["haar", "dlib", "mtcnn", "centerface", "retinaface", "fast"])
    a = ap.parse_args()
    det, rng = build_detector(a.detector), random.Random(0)
    found = []
    for kind in ("normal", "mask1", "incorrect_mask"):
        files = sorted(glob.glob(f"{a.root}/train/images/*/{kind}.*"))
        b, _ = boxes(rng.sample(files, min(a.per_kind, len(files))), det)
        found.append(b)
    b = np.concatenate(found)
    print(f"training portraits: face box median cx, cy, width, height = {np.median(b, 0).round(3).tolist()} "
          f"({len(b)} faces)")
    real = pd.read_csv(f"{a.real}/labels.csv").sample(frac=1.0, random_state=0).head(200)
    start = time.perf_counter()
    for mask, group in real.groupby("mask"):
        _, missing = boxes([f"{a.real}/images/{f}" for f in group["file"]], det)
        print(f"realfaces mask={mask}: face found in {len(group) - missing} of {len(group)} photos")
    print(f"{1000 * (time.perf_counter() - start) / len(real):.0f} ms per real photo (decode + detect)")


if __name__ == "__main__":
    main()
