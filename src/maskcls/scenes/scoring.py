"""Scene score: face recall, false faces per photo and mask accuracy over the faces found, by face size.

The rules of issue 21: labelled faces whose shorter side is at least 32 px
count; a detection is a hit when it overlaps one at IoU >= 0.4, matched
greedily by IoU (``data.boxes.match_boxes``); a detection that matches no
labelled face is a false face; one that matches (or overlaps at IoU >= 0.4)
only a smaller labelled face is ignored. Mask accuracy is the 3-class mask
state of each hit against its label.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_csv, write_text
from ..data.boxes import iou_matrix, match_boxes, read_boxes, shorter_side, split_boxes

log = logging.getLogger("maskcls")

MIN_SIDE, MIN_IOU = 32, 0.4
SIZES = [("32-48", 32, 48), ("48-96", 48, 96), (">=96", 96, math.inf)]


def boxes_csv(folder: str | Path) -> Path:
    """The boxes CSV of a scenes folder: the CSV itself, DIR/boxes.csv, or DIR's only .csv."""
    p = Path(folder)
    if p.is_file():
        return p
    if (p / "boxes.csv").is_file():
        return p / "boxes.csv"
    from ..data.reader import DataError

    found = sorted(p.glob("*.csv")) if p.is_dir() else []
    if len(found) != 1:
        raise DataError(f"{p}: expected a folder with images and boxes.csv (file,x0,y0,x1,y1,mask), "
                        f"{'found ' + str(len(found)) + ' CSV files' if p.is_dir() else 'folder not found'}")
    return found[0]


def match_photo(truth: np.ndarray, found: np.ndarray) -> tuple[dict[int, int], np.ndarray]:
    """({truth index: found index} of counted hits, bool mask of false detections)."""
    big = (np.minimum(truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1]) >= MIN_SIDE) if len(truth) else np.zeros(0, bool)
    pairs = match_boxes(truth, found, MIN_IOU) if len(truth) and len(found) else []
    hits = {t: f for t, f in pairs if big[t]}
    matched = {f for _, f in pairs}
    false = np.ones(len(found), bool)
    for f in range(len(found)):
        near_small = len(truth) and (iou_matrix(truth[~big], found[f:f + 1]) >= MIN_IOU).any()
        false[f] = f not in matched and not near_small
    return hits, false


def score_scenes(finder, table: pd.DataFrame, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Detect and classify every photo of ``table`` (read_boxes rows); the metrics and one row per labelled face."""
    from tqdm import tqdm

    from ..data.images import ImageReadError, load_rgb

    rows, false_faces, photos, unreadable = [], 0, 0, 0
    for path, faces in tqdm(table.groupby("path", sort=True), desc="scenes", unit="photo", disable=not progress):
        try:
            rgb = load_rgb(path)
        except ImageReadError as e:
            log.warning("%s; skipped", e)
            unreadable += 1
            continue
        photos += 1
        found = finder(rgb)
        pred_mask = finder.ensemble.classes(found.probs) // 6 if len(found) else np.zeros(0, int)
        truth = faces[["x0", "y0", "x1", "y1"]].to_numpy(float)
        hits, false = match_photo(truth, found.boxes.astype(float))
        false_faces += int(false.sum())
        side = shorter_side(faces).to_numpy()
        for k, (_, face) in enumerate(faces.iterrows()):
            f = hits.get(k)
            rows.append({"file": face["file"], "x0": face["x0"], "y0": face["y0"], "x1": face["x1"], "y1": face["y1"],
                         "side": float(side[k]), "mask": int(face["mask"]), "found": f is not None,
                         "pred_mask": int(pred_mask[f]) if f is not None else -1})
    per_face = pd.DataFrame(rows, columns=["file", "x0", "y0", "x1", "y1", "side", "mask", "found", "pred_mask"])
    return metrics(per_face, false_faces, photos, unreadable), per_face


def metrics(per_face: pd.DataFrame, false_faces: int, photos: int, unreadable: int = 0) -> dict:
    """Recall, false faces per photo and mask accuracy, overall (faces >= 32 px) and per size bin."""

    def part(f: pd.DataFrame) -> dict:
        hit = f[f["found"]]
        return {"faces": len(f), "found": len(hit), "recall": round(len(hit) / len(f), 4) if len(f) else None,
                "mask_accuracy": round(float((hit["mask"] == hit["pred_mask"]).mean()), 4) if len(hit) else None}

    counted = per_face[per_face["side"] >= MIN_SIDE]
    return {"photos": photos, "unreadable": unreadable, **part(counted), "false_faces": false_faces,
            "false_faces_per_photo": round(false_faces / max(1, photos), 4),
            "by_size": {name: part(counted[(counted["side"] >= lo) & (counted["side"] < hi)])
                        for name, lo, hi in SIZES},
            "rules": f"faces with shorter side >= {MIN_SIDE} px; hit at IoU >= {MIN_IOU}, greedy by IoU; "
                     "detections matching only a smaller face ignored"}


def scenes_text(m: dict, title: str) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"{title}: {m['photos']} photos, {m['faces']} faces >= {MIN_SIDE} px",
             f"  face recall {fmt(m['recall'])}   false faces per photo {m['false_faces_per_photo']:.3f}   "
             f"mask accuracy (faces found) {fmt(m['mask_accuracy'])}",
             f"  {'size':<8}{'faces':>7}{'found':>7}{'recall':>8}{'mask acc':>10}"]
    for name, b in m["by_size"].items():
        lines.append(f"  {name:<8}{b['faces']:>7}{b['found']:>7}{fmt(b['recall']):>8}{fmt(b['mask_accuracy']):>10}")
    return "\n".join(lines)


def evaluate_scenes(ensemble, folder: str | Path, *, out: str | Path, held_out: bool = False,
                    progress: bool = True) -> tuple[dict, Path]:
    """Score ``ensemble`` on a scenes folder (images + boxes CSV); writes scenes_<name>.json and its per-face CSV."""
    from .finder import FaceFinder

    csv = boxes_csv(folder)
    table = read_boxes(csv)
    if held_out:
        table = split_boxes(table)[1]
    finder = FaceFinder(ensemble, side=ensemble.cfg.scene.detect_side)
    m, per_face = score_scenes(finder, table, progress)
    m = {"set": str(folder), "held_out": held_out, "detector": finder.name,
         "detect_side": ensemble.cfg.scene.detect_side, **m}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scenes_{Path(folder).resolve().name}{'_held_out' if held_out else ''}"
    path = out / f"{stem}.json"
    write_text(path, json.dumps(m, indent=2))
    write_csv(per_face, out / f"{stem}_faces.csv")
    return m, path
