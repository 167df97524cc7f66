"""Scored development sets of real photos that carry only a mask label.

``../shared/realfaces`` (``labels.csv``: ``file,mask``) holds real photos of
correctly, incorrectly and not worn masks. Rendered masks are far easier than
real ones, so every recipe is also measured here. It is for measuring only:
never train or tune thresholds on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import labels as L
from .data.reader import DataError

MASK_NAMES = [m.name.lower() for m in L.Mask]


def read_mask_set(root: str | Path) -> pd.DataFrame:
    """``root/labels.csv`` (file,mask) -> table with ``path`` and ``mask``; one-line errors."""
    root = Path(root)
    csv_path = root / "labels.csv" if root.is_dir() else root
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: labels.csv not found (expected file,mask rows)")
    images = csv_path.parent / "images"
    frame = pd.read_csv(csv_path)
    if not {"file", "mask"} <= set(frame.columns):
        raise DataError(f"{csv_path}: needs the columns file,mask")
    bad = frame[~frame["mask"].isin([0, 1, 2])]
    if len(bad):
        raise DataError(f"{csv_path}: mask must be 0, 1 or 2 (row {bad.index[0] + 2}: {bad['mask'].iloc[0]!r})")
    frame = frame.assign(path=[str(images / f) for f in frame["file"]], mask=frame["mask"].astype(int))
    missing = [p for p in frame["path"] if not Path(p).is_file()]
    if missing:
        raise DataError(f"{missing[0]}: listed in {csv_path} but not found ({len(missing)} missing)")
    return frame.reset_index(drop=True)


def mask_metrics(true_mask: np.ndarray, pred_mask: np.ndarray) -> dict:
    """Accuracy, per-class recall and the 3x3 confusion (rows: true wear/incorrect/not wear)."""
    true_mask, pred_mask = np.asarray(true_mask, int), np.asarray(pred_mask, int)
    conf = np.zeros((3, 3), int)
    np.add.at(conf, (true_mask, pred_mask), 1)
    recall = {MASK_NAMES[k]: round(float(conf[k, k] / conf[k].sum()), 4) if conf[k].sum() else None for k in range(3)}
    return {"n": int(len(true_mask)), "mask_accuracy": round(float((true_mask == pred_mask).mean()), 4) if len(true_mask) else 0.0,
            "mask_recall": recall, "mask_confusion": conf.tolist()}


def mask_text(m: dict, title: str) -> str:
    r = m["mask_recall"]
    framing = f" (faces found by {m['framing']})" if m.get("framing") else ""
    lines = [f"{title}: mask accuracy {m['mask_accuracy']:.4f} on {m['n']} photos{framing}",
             "  recall  " + "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in r.items()),
             "  confusion (rows true wear/incorrect/not_wear, cols predicted): " + str(m["mask_confusion"])]
    return "\n".join(lines)
