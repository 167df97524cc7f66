"""Face boxes in real photos: the boxes CSV format and its held-out photos.

A boxes CSV (``file,x0,y0,x1,y1,mask[,gender,age]``) is how real photos come
labelled: usually the mask state only. ``file`` is relative to the CSV's
``images/`` folder (else to the CSV's folder). Pixel coordinates are in the
stored image; gender (0 male / 1 female) and age (years) may be blank =
unknown. The held-out photos are chosen by a hash of the file name, so
training (mixing weight) and scene scoring agree on them without a stored
split, and a photo's faces never fall on both sides.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from ..io import OneLineError

BOX_COLUMNS = ["file", "x0", "y0", "x1", "y1", "mask"]
OPTIONAL_COLUMNS = ["gender", "age"]
HOLDOUT_FRACTION = 0.2


class BoxesError(OneLineError, ValueError):
    """A boxes CSV that cannot be read; the message is one line naming the file and the problem."""


def images_dir(csv_path: str | Path) -> Path:
    """Where the CSV's ``file`` names live: ``images/`` beside it when present, else its own folder."""
    csv_path = Path(csv_path)
    sub = csv_path.parent / "images"
    return sub if sub.is_dir() else csv_path.parent


def read_boxes(csv_path: str | Path) -> pd.DataFrame:
    """The CSV as a table with ``path`` (absolute image path) added; gender and age as nullable ints."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise BoxesError(f"{csv_path}: boxes CSV not found")
    try:
        table = pd.read_csv(csv_path, dtype={"file": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise BoxesError(f"{csv_path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in BOX_COLUMNS if c not in table.columns]
    if missing:
        raise BoxesError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected {','.join(BOX_COLUMNS)}"
                         f"[,gender,age]")
    for c in OPTIONAL_COLUMNS:
        if c not in table.columns:
            table[c] = pd.NA
    try:
        for c in ("x0", "y0", "x1", "y1"):
            table[c] = pd.to_numeric(table[c], errors="raise").astype(float)
        table["mask"] = pd.to_numeric(table["mask"], errors="raise").astype(int)
        for c in OPTIONAL_COLUMNS:
            table[c] = pd.to_numeric(table[c], errors="raise").astype("Int64")
    except (ValueError, TypeError) as e:
        raise BoxesError(f"{csv_path}: a box, mask, gender or age value is not a number ({e})") from None
    bad = table[~table["mask"].isin([0, 1, 2]) | (table["x1"] <= table["x0"]) | (table["y1"] <= table["y0"])]
    if len(bad):
        r = bad.iloc[0]
        raise BoxesError(f"{csv_path}: {len(bad)} bad row(s), e.g. {r['file']} box ({r['x0']:g},{r['y0']:g},"
                         f"{r['x1']:g},{r['y1']:g}) mask {r['mask']} (mask must be 0/1/2 and x1>x0, y1>y0)")
    root = images_dir(csv_path)
    table["path"] = [str(root / f) for f in table["file"]]
    return table


def is_held_out(file: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """Whether photo ``file`` (its name as written in the CSV) is in the held-out part: a stable hash rule."""
    h = int(hashlib.sha1(str(file).encode("utf-8", "surrogateescape")).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def split_boxes(table: pd.DataFrame, fraction: float = HOLDOUT_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, held-out rows), by photo: all faces of one photo fall on the same side."""
    held = table["file"].map(lambda f: is_held_out(f, fraction))
    return table[~held].reset_index(drop=True), table[held].reset_index(drop=True)


def shorter_side(table: pd.DataFrame) -> pd.Series:
    """Shorter side of each box in pixels (face size bins use it)."""
    return pd.concat([table["x1"] - table["x0"], table["y1"] - table["y0"]], axis=1).min(axis=1)


def iou_matrix(a, b):
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), as x0, y0, x1, y1."""
    import numpy as np

    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def match_boxes(truth, found, min_iou: float = 0.4) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU, highest first: (truth index, found index) pairs with IoU >= ``min_iou``.

    The scene score counts a labelled face as found when it is in a pair; a
    detection in no pair is a false face unless it overlaps a labelled face
    too small to count (the caller decides, see ``issue`` rules in BENCHMARKS).
    """
    import numpy as np

    m = iou_matrix(truth, found)
    pairs, used_t, used_f = [], set(), set()
    for flat in np.argsort(-m, axis=None):
        t, f = divmod(int(flat), m.shape[1])
        if m[t, f] < min_iou:
            break
        if t in used_t or f in used_f:
            continue
        pairs.append((t, f))
        used_t.add(t)
        used_f.add(f)
    return pairs
