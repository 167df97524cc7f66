"""Splitting by person, never by photo.

The 7 photos of a person are near-duplicates of one face; a split by photo
puts the same face on both sides and inflates validation F1 (the seed's most
common bug). Splits are stratified on each person's gender x age band so the
rare >=60 class appears in every fold.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("maskcls")


def person_strata(frame: pd.DataFrame) -> np.ndarray:
    """Per-photo stratum: the person's gender x age band (0..5)."""
    return (frame["gender"].to_numpy(int) * 3 + frame["age_band"].to_numpy(int)).astype(int)


def kfold_indices(frame: pd.DataFrame, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) row indices of each fold; persons never cross folds."""
    from sklearn.model_selection import StratifiedGroupKFold  # training install only

    strata = person_strata(frame)
    groups = frame["person"].to_numpy()
    n_people = len(np.unique(groups))
    if n_people < folds:
        raise ValueError(f"{n_people} persons cannot make {folds} folds; lower data.folds")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(np.zeros(len(frame)), strata, groups)]


def holdout(frame: pd.DataFrame, *, val_fraction: float, seed: int, fold: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One (train, val) split: fold ``fold`` of round(1 / val_fraction) folds.

    ``val_fraction=0`` trains on everything (no validation).
    """
    if val_fraction == 0:
        return frame.reset_index(drop=True), frame.iloc[:0].reset_index(drop=True)
    k = max(2, round(1 / val_fraction))
    tr, va = kfold_indices(frame, k, seed)[fold % k]
    return frame.iloc[tr].reset_index(drop=True), frame.iloc[va].reset_index(drop=True)


# ----------------------------------------------------------------------------- the split a run trained on
SPLIT_FILE = "split.csv"


def _relative(paths: pd.Series, root: str | Path) -> list[str]:
    """Image paths relative to the data root (posix), so a moved data root still matches."""
    base = Path(root).resolve()
    out = []
    for p in paths:
        q = Path(p).resolve()
        try:
            out.append(q.relative_to(base).as_posix())
        except ValueError:
            out.append(q.as_posix())
    return out


def save_split(train: pd.DataFrame, val: pd.DataFrame, root: str | Path, path: str | Path) -> Path:
    """``split.csv``: one row per image (part, person, image relative to ``data.root``)."""
    rows = [pd.DataFrame({"part": part, "person": f["person"].astype(str).to_numpy(),
                          "image": _relative(f["path"], root)}) for part, f in (("train", train), ("val", val))]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    pd.concat(rows, ignore_index=True).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def read_split(path: str | Path) -> pd.DataFrame:
    """The table ``save_split`` wrote; a bad file is one line naming it."""
    from .reader import DataError

    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{path}: not a readable split file ({type(e).__name__})") from None
    if not {"part", "person", "image"} <= set(table.columns) or not table["part"].isin(["train", "val"]).all():
        raise DataError(f"{path}: not a maskcls split file (expected columns part,person,image; part train or val)")
    return table


def held_out(frame: pd.DataFrame, split: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """The rows of a training table that the run held out (its ``val`` images)."""
    val = set(split.loc[split["part"] == "val", "image"])
    return frame[[p in val for p in _relative(frame["path"], root)]].reset_index(drop=True)
