"""Face detectors on real scenes: recall, false faces per photo and time on the held-out realmasks photos.

Rules (issues #20 and #21): labelled faces whose shorter side is >= 32 px
count; a detection is a hit when greedy IoU matching
(``maskcls.data.boxes.match_boxes``) pairs it with one at IoU >= 0.4; a
detection paired with a smaller labelled face is ignored; one paired with
none is a false face. The held-out photos are ``split_boxes``' (81 photos).

Annotators' boxes run from forehead to chin. A detector whose boxes are
larger or offset gets a fixed ``Calibration`` (median centre shift and size
ratio over its matched boxes, IoU >= 0.3), fitted on the first ``--fit``
photos that are NOT held out and applied to the held-out ones. Detections
are cached per candidate (``--cache``), so thresholds (``--thresholds``) and
unions of candidates (``--union a+b``: per-candidate thresholds, then NMS)
are scored without running them again; thresholds are chosen on the
``--fit`` photos (columns ``fit ...``), not on the held-out ones. Time is CPU
time per photo (decode excluded) at ``--threads`` threads, which stays
honest on a loaded machine.

    OMP_NUM_THREADS=1 python benchmarks/detectors.py --fit 238                  # every candidate
    OMP_NUM_THREADS=1 python benchmarks/detectors.py --only centerface_640 --fit 238 --thresholds 0.35,0.4,0.45

Candidates named ``preprocess.detector=...`` are what that setting builds
(its threshold and calibration included), scored as they come.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from maskcls.data.boxes import match_boxes, read_boxes, shorter_side, split_boxes
from maskcls.data.images import load_rgb
from maskcls.preprocess import faces as F
from maskcls.preprocess import learned as L

MASKS = {0: "wear", 1: "incorrect", 2: "not wear"}
SIZES = [(32, 48), (48, 96), (96, 1e9)]


def scored(det) -> Callable[[np.ndarray], list]:
    """Scored boxes from any detector: its ``detect`` where it has one, else its boxes with score 1."""
    return det.detect if hasattr(det, "detect") else (lambda rgb: [(*b, 1.0) for b in det(rgb)])


# name -> factory; detections are stored before calibration and at a low threshold (raised when scoring)
CANDIDATES: dict[str, Callable[[], object]] = {
    "haar": lambda: F.build_detector("haar"),
    "dlib_hog": lambda: F.CANDIDATES["dlib_hog"](),
    "dlib_hog_up1": lambda: F.FaceDetector([F.DlibHOG(1)]),
    "mtcnn": lambda: F.Mtcnn(),  # the portrait setting: 480 px copy, faces >= 1/8 of the shorter side
    "mtcnn_scene": lambda: F.Mtcnn(side=None, min_face=16),  # full size, faces >= 16 px
    "retinaface": lambda: L.RetinaFace(side=None, threshold=0.3),  # as stored (<= 1024 px)
    "retinaface_1280": lambda: L.RetinaFace(side=1280, threshold=0.3, upscale=True),
    "retinaface_1600": lambda: L.RetinaFace(side=1600, threshold=0.3, upscale=True),
    "retinaface_640": lambda: L.RetinaFace(side=640, threshold=0.3),  # preprocess.detector=fast
    "retinaface_padall": lambda: L.RetinaFace(side=1024, threshold=0.3, pad=F.PAD),  # (padded on every photo)
    "retinaface_flip": lambda: L.RetinaFace(side=None, threshold=0.3, flip=True),
    "retinaface_pad": lambda: L.RetinaFace(side=1024, threshold=0.3, pad=F.PAD),  # padded only when none is found
    "retinaface_pad_flip": lambda: L.RetinaFace(side=1024, threshold=0.3, pad=F.PAD, flip=True),
    "centerface": lambda: L.CenterFace(side=None, threshold=0.2),
    "centerface_1280": lambda: L.CenterFace(side=1280, threshold=0.2, upscale=True),
    "centerface_640": lambda: L.CenterFace(side=640, threshold=0.2),
    "libface": lambda: L.LibFace(side=None, threshold=0.2),
    "libface_640": lambda: L.LibFace(side=640, threshold=0.2),
    # what preprocess.detector builds, its own threshold and calibration included (scored as they come)
    "preprocess.detector=auto": lambda: F.build_detector("auto"),
    "preprocess.detector=fast": lambda: F.build_detector("fast"),
    "preprocess.detector=retinaface": lambda: F.build_detector("retinaface"),
}


def run(name: str, photos: list[str], cache: Path, fresh: bool) -> dict:
    """{file: {"boxes": [[x0, y0, x1, y1, score], ...], "ms": cpu ms}} for one candidate, cached."""
    path = cache / f"{name}.json"
    done = json.loads(path.read_text()) if path.is_file() and not fresh else {}
    todo = [p for p in photos if Path(p).name not in done]
    if todo:
        det = scored(CANDIDATES[name]())
        det(np.zeros((64, 64, 3), np.uint8))  # load the model outside the timing
        for i, p in enumerate(todo):
            rgb = load_rgb(p)
            t = time.process_time()
            found = det(rgb)
            ms = 1000 * (time.process_time() - t)
            done[Path(p).name] = {"boxes": [[float(v) for v in b] for b in found], "ms": ms,
                                  "shape": list(rgb.shape[:2])}
            if (i + 1) % 20 == 0 or i + 1 == len(todo):
                print(f"  {name}: {i + 1}/{len(todo)} photos", flush=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(done))
        os.replace(tmp, path)
    return {Path(p).name: done[Path(p).name] for p in photos}


def fit_calibration(dets: dict, truth: pd.DataFrame, threshold: float) -> L.Calibration:
    """Median centre shift (share of the box) and size ratio of matched boxes at IoU >= 0.3."""
    rows = []
    for file, group in truth.groupby("file"):
        found = [b for b in dets[file]["boxes"] if b[4] >= threshold]
        t = group[["x0", "y0", "x1", "y1"]].to_numpy()
        for ti, fi in match_boxes(t, [b[:4] for b in found], min_iou=0.3):
            (a0, b0, a1, b1), (x0, y0, x1, y1) = t[ti], found[fi][:4]
            w, h = x1 - x0, y1 - y0
            rows.append(((a0 + a1 - x0 - x1) / 2 / w, (b0 + b1 - y0 - y1) / 2 / h, (a1 - a0) / w, (b1 - b0) / h))
    if len(rows) < 10:
        return L.Calibration()
    dx, dy, sw, sh = np.median(np.array(rows), axis=0)
    return L.Calibration(round(float(dx), 3), round(float(dy), 3), round(float(sw), 3), round(float(sh), 3))


def score(dets: dict, truth: pd.DataFrame, threshold: float, cal: L.Calibration, min_size: float = 0) -> dict:
    """Recall (>= 32, >= 48 px, per mask state and size bin), false faces per photo, CPU ms per photo."""
    hit = np.zeros(len(truth), bool)
    false = 0
    truth = truth.reset_index(drop=True)
    size = shorter_side(truth).to_numpy()
    for file, group in truth.groupby("file"):
        found = [(*cal(b[:4]), b[4]) for b in dets[file]["boxes"] if b[4] >= threshold]
        found = [b for b in found if min(b[2] - b[0], b[3] - b[1]) >= min_size]
        pairs = match_boxes(group[["x0", "y0", "x1", "y1"]].to_numpy(), [b[:4] for b in found])
        for ti, _ in pairs:
            hit[group.index[ti]] = True
        false += len(found) - len(pairs)
    big = size >= 32
    out = {"recall>=32": hit[big].mean(), "recall>=48": hit[size >= 48].mean(),
           "false/photo": false / truth["file"].nunique()}
    for m, label in MASKS.items():
        sel = big & (truth["mask"].to_numpy() == m)
        out[f"r {label} ({sel.sum()})"] = hit[sel].mean()
    for lo, hi in SIZES:
        sel = (size >= lo) & (size < hi)
        out[f"r {lo}-{hi if hi < 1e9 else ''} ({sel.sum()})"] = hit[sel].mean()
    out["cpu ms/photo"] = float(np.mean([d["ms"] for d in dets.values()]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boxes", default="../shared/realmasks/boxes.csv")
    ap.add_argument("--only", nargs="*", help=f"candidates (default: all of {', '.join(CANDIDATES)})")
    ap.add_argument("--thresholds", default="", help="comma list of score thresholds to score each candidate at")
    ap.add_argument("--union", nargs="*", default=[], help="a+b[@ta+tb]: union of cached candidates, NMS at IoU 0.4")
    ap.add_argument("--fit", type=int, default=60, help="non-held-out photos to fit the box calibration on (0: none)")
    ap.add_argument("--min-size", type=float, default=0, help="drop detections whose shorter side is below this (px)")
    ap.add_argument("--cache", default="runs/detectors")
    ap.add_argument("--fresh", action="store_true", help="run candidates again instead of reading the cache")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", help="also write the table here")
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import cv2

    cv2.setNumThreads(a.threads)
    cache = Path(a.cache) / f"threads{a.threads}"
    cache.mkdir(parents=True, exist_ok=True)
    train, held = split_boxes(read_boxes(a.boxes))
    fit_files = sorted(train["file"].unique())[:a.fit]
    fit_truth = train[train["file"].isin(fit_files)]
    paths = lambda t: sorted(t.drop_duplicates("file")["path"])  # noqa: E731
    names = a.only or list(CANDIDATES)
    thresholds = [float(t) for t in a.thresholds.split(",") if t] or [None]
    print(f"{held['file'].nunique()} held-out photos, {int((shorter_side(held) >= 32).sum())} faces >= 32 px; "
          f"calibration fitted on {len(fit_files)} other photos; {a.threads} thread(s)")
    rows, held_dets, fit_dets, cals = [], {}, {}, {}
    default_threshold = {"retinaface": 0.5, "centerface": 0.4, "libface": 0.5}

    def base_threshold(name: str) -> float:
        return next((v for k, v in default_threshold.items() if name.startswith(k)), 0.0)

    for name in names:
        held_dets[name] = run(name, paths(held), cache, a.fresh)
        fit_dets[name] = run(name, paths(fit_truth), cache, a.fresh) if a.fit else {}
        shipped = name.startswith("preprocess.")
        for t in [None] if shipped else thresholds:
            t = base_threshold(name) if t is None else t
            cal = fit_calibration(fit_dets[name], fit_truth, t) if a.fit and not shipped else L.Calibration()
            cals[name, t] = cal
            row = {"candidate": name, "threshold": t, **score(held_dets[name], held, t, cal, a.min_size),
                   "raw recall>=32": score(held_dets[name], held, t, L.Calibration())["recall>=32"]}
            if a.fit:  # the photos thresholds are chosen on (not held out)
                fit = score(fit_dets[name], fit_truth, t, cal, a.min_size)
                row.update({"fit recall>=48": fit["recall>=48"], "fit false/photo": fit["false/photo"]})
            rows.append(row)
    for spec in a.union:
        parts, _, ts = spec.partition("@")
        parts = parts.split("+")
        ts = [float(t) for t in ts.split("+")] if ts else [base_threshold(p) for p in parts]
        for p in parts:
            if p not in held_dets:
                held_dets[p], fit_dets[p] = run(p, paths(held), cache, False), run(p, paths(fit_truth), cache, False)
            if (p, ts[parts.index(p)]) not in cals:
                cals[p, ts[parts.index(p)]] = fit_calibration(fit_dets[p], fit_truth, ts[parts.index(p)])
        merged = {}
        for f in held_dets[parts[0]]:
            boxes = [[*cals[p, t](b[:4]), b[4]] for p, t in zip(parts, ts) for b in held_dets[p][f]["boxes"]
                     if b[4] >= t]
            merged[f] = {"boxes": L.nms_scored(boxes), "ms": sum(held_dets[p][f]["ms"] for p in parts)}
        rows.append({"candidate": "+".join(parts), "threshold": "+".join(map(str, ts)),
                     **score(merged, held, 0.0, L.Calibration(), a.min_size)})
    table = pd.DataFrame(rows).set_index("candidate")
    pd.set_option("display.width", 250)
    print(table.round(3).to_string())
    print("calibrations (dx, dy, sw, sh):")
    for (name, t), cal in cals.items():
        print(f"  {name} @ {t}: {cal}")
    if a.csv:
        table.round(4).to_csv(a.csv)


if __name__ == "__main__":
    main()
