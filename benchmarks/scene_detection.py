"""Scene face finding on realmasks: recall and false faces per photo by detection size and score threshold.

Tunes ``scene.detect_side`` and SceneMtcnn's score floor on the photos that
are NOT held out (data.boxes.split_boxes), by the issue-21 matching rules
(scenes.scoring.match_photo); the held-out photos stay for the final score
(`maskcls evaluate MODEL --scenes ../shared/realmasks --held-out`).

    OMP_NUM_THREADS=2 python benchmarks/scene_detection.py --sides 480 640 800 1024
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from maskcls.data.boxes import read_boxes, split_boxes
from maskcls.data.images import load_rgb
from maskcls.scenes.finder import SceneMtcnn
from maskcls.scenes.scoring import MIN_SIDE, match_photo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", default="../shared/realmasks/boxes.csv")
    ap.add_argument("--sides", type=int, nargs="+", default=[480, 640, 800, 1024])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.8, 0.9, 0.95, 0.98, 0.99])
    ap.add_argument("--held-out", action="store_true", help="the held-out photos instead (measure, never tune)")
    args = ap.parse_args()
    train, held = split_boxes(read_boxes(args.boxes))
    table = held if args.held_out else train
    photos = [(load_rgb(p), f[["x0", "y0", "x1", "y1"]].to_numpy(float)) for p, f in table.groupby("path")]
    faces = sum(int((np.minimum(t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]) >= MIN_SIDE).sum()) for _, t in photos)
    print(f"{len(photos)} photos, {faces} faces >= {MIN_SIDE} px ({'held-out' if args.held_out else 'tuning'} part)")
    print(f"{'side':>5} {'thresh':>6} {'recall':>7} {'false/photo':>11} {'ms/photo':>9}")
    for side in args.sides:
        det = SceneMtcnn(side, threshold=0.0)
        found, t0 = [], time.perf_counter()
        for rgb, _ in photos:
            found.append(det.scored(rgb))
        ms = (time.perf_counter() - t0) / len(photos) * 1000
        for th in args.thresholds:
            hits = false = 0
            for (_, truth), (boxes, scores) in zip(photos, found):
                h, f = match_photo(truth, boxes[scores >= th].astype(float))
                hits += len(h)
                false += int(f.sum())
            print(f"{side:>5} {th:>6.2f} {hits / faces:>7.3f} {false / len(photos):>11.3f} {ms:>9.0f}")


if __name__ == "__main__":
    main()
