"""Where a run misreads real photos: mask recall per source and class, with and without a detected face.

Reads ``realfaces/labels.csv`` (its ``source`` column names the original
repository), predicts every photo as ``evaluate --mask-set`` does (framed like
a training portrait around the detected face), runs the same face detector to
record whether it found a face, then predicts the photos again with the
detector switched off (every photo framed as a centred face crop). Measure
only: realfaces is never used to train or tune.

    python benchmarks/realfaces_breakdown.py runs/full_default [--tta flip] [--detector mtcnn]
"""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
import pandas as pd
import torch


def predict_masks(run: str, frame: pd.DataFrame, tta: list[str], detector: str,
                  detector_off: bool = False) -> np.ndarray:
    from maskcls.predict import Ensemble
    from maskcls.preprocess import faces

    build = faces.build_detector
    if detector_off:
        faces.build_detector = lambda name: (lambda img: [])
    try:  # no decode cache: the cached framing would hide the switch
        ens = Ensemble.load([run], overrides=["data.cache=false", f"preprocess.detector={detector}"])
        probs, kept = ens.predict_frame(frame, progress=False, photos=True, tta=tta)
    finally:
        faces.build_detector = build
    assert len(kept) == len(frame), "unreadable photos in the set"
    return probs.reshape(-1, 3, 6).sum(2).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--set", default="../shared/realfaces")
    ap.add_argument("--tta", default="", help="comma-separated eval.tta views, e.g. flip")
    ap.add_argument("--detector", default="haar", help="preprocess.detector that frames the photos")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    from maskcls.devsets import read_mask_set
    from maskcls.preprocess.faces import build_detector

    frame = read_mask_set(args.set).assign(ImageID=lambda f: f["file"])
    frame["src"] = frame["source"].str.split("/").str[0] if "source" in frame else "all"
    tta = [v for v in args.tta.split(",") if v]
    frame["pred"] = predict_masks(args.run, frame, tta, args.detector)
    frame["pred_off"] = predict_masks(args.run, frame, tta, args.detector, detector_off=True)
    det = build_detector(args.detector)
    frame["face"] = [bool(det(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB))) for p in frame["path"]]
    rows = []
    for (src, mask), g in frame.groupby(["src", "mask"]):
        f, nf = g[g.face], g[~g.face]
        rows.append({"source": src, "mask": int(mask), "n": len(g), "recall": (g.pred == mask).mean(),
                     "face found": g.face.mean(), "recall | face": (f.pred == mask).mean(),
                     "recall | no face": (nf.pred == mask).mean(),
                     "recall | face, detector off": (f.pred_off == mask).mean()})
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    print(f"mask accuracy {(frame.pred == frame['mask']).mean():.4f}; detector off {(frame.pred_off == frame['mask']).mean():.4f}")


if __name__ == "__main__":
    main()
