"""Reading data in the competition layout into one table of images.

``train/train.csv`` + ``train/images/<id>_<gender>_<race>_<age>/<stem>.jpg``
becomes one row per photo (path, person, mask, gender, age, race, age_band,
label). Problems are collected as one readable line each; only problems that
make the data unusable raise :class:`DataError`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import labels as L

log = logging.getLogger("maskcls")

TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_COLUMNS = ("ImageID",)
PHOTOS_PER_PERSON = 7


class DataError(Exception):
    """Data that cannot be used at all; the message is one line naming the file."""


@dataclass
class Report:
    """Problems found while reading, each one line that names the file."""

    warnings: list[str] = field(default_factory=list)

    def warn(self, line: str) -> None:
        self.warnings.append(line)
        log.warning(line)


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}")
    return frame


def read_train(
    root: str | Path,
    *,
    age_thresholds: Sequence[int] = L.DEFAULT_AGE_THRESHOLDS,
    relabel: str | Path | None = None,
    report: Report | None = None,
) -> pd.DataFrame:
    """Read ``root/train`` (or ``root`` itself if it holds train.csv) into an image table."""
    report = report if report is not None else Report()
    root = Path(root)
    train_dir = root / "train" if (root / "train").is_dir() else root
    if not root.exists():
        raise DataError(f"{root}: data folder not found (run `maskcls demo` to make demo data)")
    csv_path = train_dir / "train.csv"
    people = _read_csv(csv_path, TRAIN_COLUMNS)
    images_dir = train_dir / "images"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: images folder not found")
    rows = []
    for i, p in enumerate(people.itertuples(index=False), start=2):
        try:
            gender = L.parse_gender(p.gender)
            age = int(float(p.age))
        except ValueError as e:
            report.warn(f"{csv_path}:{i}: person {p.id} skipped ({e})")
            continue
        folder = images_dir / p.path
        if not folder.is_dir():
            report.warn(f"{folder}: folder of person {p.id} not found; skipped")
            continue
        count = 0
        for f in sorted(folder.iterdir()):
            if f.name.startswith(".") or f.is_dir():
                continue
            if f.suffix.lower() not in L.IMAGE_SUFFIXES:
                report.warn(f"{f}: not a .jpg/.jpeg/.png file; ignored")
                continue
            mask = L.mask_from_stem(f.stem)
            if mask is None:
                report.warn(f"{f}: unknown file name (expected mask1..5, incorrect_mask, normal); ignored")
                continue
            rows.append(
                {"path": str(f), "person": str(p.id), "folder": p.path, "mask": int(mask), "gender": int(gender),
                 "age": age, "race": p.race}
            )
            count += 1
        if count < PHOTOS_PER_PERSON:
            report.warn(f"{folder}: person {p.id} has {count} photos, expected {PHOTOS_PER_PERSON}")
    if not rows:
        raise DataError(f"{csv_path}: no usable photos found under {images_dir}")
    frame = pd.DataFrame(rows)
    if relabel:
        try:
            frame, changed = L.apply_relabel(frame, L.load_relabel(relabel))
        except (ValueError, FileNotFoundError) as e:
            msg = str(e)
            raise DataError(msg if msg.startswith(str(relabel)) else f"{relabel}: {msg}") from None
        log.info("relabel %s changed %d photos", relabel, changed)
    return L.assign_labels(frame, age_thresholds)


def read_eval(root: str | Path) -> pd.DataFrame:
    """Read ``root/eval/info.csv`` (or ``root/info.csv``): ImageID and path, in CSV order."""
    root = Path(root)
    eval_dir = root / "eval" if (root / "eval").is_dir() else root
    info = _read_csv(eval_dir / "info.csv", EVAL_COLUMNS)
    images = eval_dir / "images"
    paths = [images / i for i in info["ImageID"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: image listed in {eval_dir / 'info.csv'} not found ({len(missing)} missing in all)")
    return pd.DataFrame({"ImageID": info["ImageID"], "path": [str(p) for p in paths]})


def read_answers(path: str | Path, images: str | Path) -> pd.DataFrame:
    """A labelled list ``ImageID,ans`` (like maskfaces' answers.csv) as an image table."""
    table = _read_csv(Path(path), ("ImageID", "ans"))
    frame = pd.DataFrame({"ImageID": table["ImageID"], "path": [str(Path(images) / i) for i in table["ImageID"]]})
    frame["label"] = table["ans"].astype(int)
    if "person" in table.columns:
        frame["person"] = table["person"]
    return frame


def read_folder(folder: str | Path) -> pd.DataFrame:
    """Every image file under a folder (recursively, sorted), for prediction."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in L.IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: no .jpg/.jpeg/.png images found")
    return pd.DataFrame({"ImageID": [str(p.relative_to(folder)) for p in paths], "path": [str(p) for p in paths]})
