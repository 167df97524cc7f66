"""Face detection rate per mask state for each packaged detector candidate.

A mask hides the lower face, so frontal detectors may miss masked faces.
This measures, on maskfaces training photos, how often each candidate of
``maskcls.preprocess.faces.CANDIDATES`` finds a face (any box) and a plausible
one (largest box centred, at least 15% of the photo's width: maskfaces has one
face per photo), per mask state, with its CPU cost per photo. Stages shared
between candidates run once per photo and are charged to every candidate that
needs them. About 2 CPU minutes for 100 persons (700 photos).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/faces_detection.py --persons 100
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import pandas as pd

from maskcls import labels as L
from maskcls.data.images import load_rgb
from maskcls.preprocess import faces as F

MASKS = {0: "wear", 1: "incorrect", 2: "not wear"}


def plausible(box, shape) -> bool:
    """maskfaces renders one face per photo near the middle of the portrait, often as wide as it."""
    h, w = shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return w * 0.25 < cx < w * 0.75 and h * 0.1 < cy < h * 0.75 and box[2] - box[0] > 0.15 * w


def part_key(part) -> str:
    return f"{type(part).__name__}{sorted(part.__getstate__().items())}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="data/maskfaces")
    ap.add_argument("--persons", type=int, default=100)
    ap.add_argument("--only", nargs="*", help="candidate names (default: all)")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    table = pd.read_csv(Path(args.root) / "train" / "train.csv", dtype=str)
    step = max(1, len(table) // args.persons)
    people = table.iloc[::step].head(args.persons)
    photos = [(p, L.mask_from_stem(p.stem)) for d in people["path"]
              for p in sorted((Path(args.root) / "train" / "images" / d).glob("*.jpg"))]
    names = [n for n in F.CANDIDATES if not args.only or n in args.only]
    detectors = {n: F.CANDIDATES[n]() for n in names}
    shared: dict[str, object] = {}
    for det in detectors.values():  # one instance per distinct part, so work is shared
        det.stages = [[shared.setdefault(part_key(p), p) for p in stage] for stage in det.stages]

    rows = []
    for path, mask in photos:
        rgb = load_rgb(path)
        gray, scale, pad = F.work_gray(rgb)
        memo: dict[str, tuple[list, float]] = {}

        def run(part):
            k = part_key(part)
            if k not in memo:
                t = time.process_time()
                memo[k] = (part(gray), time.process_time() - t)
            return memo[k]

        for name, det in detectors.items():
            cost, boxes = 0.0, []
            for stage in det.stages:
                found = []
                for part in stage:
                    b, s = run(part)
                    found += b
                    cost += s
                boxes = F.nms(found)
                if boxes:
                    break
            boxes = F.to_photo(boxes, scale, pad, rgb.shape)
            rows.append({"candidate": name, "mask": MASKS[int(mask)], "found": bool(boxes),
                         "plausible": bool(boxes) and plausible(boxes[0], rgb.shape),
                         "multi": len(boxes) > 1, "ms": cost * 1000})
    df = pd.DataFrame(rows)
    found = df.pivot_table(index="candidate", columns="mask", values="found", aggfunc="mean") * 100
    out = found[list(MASKS.values())].round(1)
    out.columns = [f"found% {c}" for c in out.columns]
    g = df.groupby("candidate")
    out["found% all"] = (g["found"].mean() * 100).round(1)
    out["plausible% all"] = (g["plausible"].mean() * 100).round(1)
    worst = df.pivot_table(index="candidate", columns="mask", values="plausible", aggfunc="mean").min(axis=1)
    out["plausible% worst mask"] = (worst * 100).round(1)
    out["multi-box%"] = (g["multi"].mean() * 100).round(1)
    out["CPU ms/photo"] = g["ms"].mean().round(1)
    print(f"{len(photos)} photos of {len(people)} persons from {args.root}, detection on a copy with the longer "
          f"side <= {F.WORK_SIDE} px, 1 thread")
    print(out.loc[names].to_string())
    print(f"preprocess.detector: {F.DETECTORS}")


if __name__ == "__main__":
    main()
