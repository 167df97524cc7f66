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
from ..io import OneLineError

log = logging.getLogger("maskcls")

TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_COLUMNS = ("ImageID",)
PHOTOS_PER_PERSON = 7


class DataError(OneLineError):
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


def _person_row(p, images_dir: Path) -> tuple[str, int, str, int, str]:
    """(id, gender, race, age, folder) of one train.csv row; ValueError naming the bad field."""
    pid, race, folder = str(p.id).strip(), str(p.race).strip(), str(p.path).strip()
    if not pid:
        raise ValueError("empty id")
    gender = int(L.parse_gender(p.gender))
    if not race:
        raise ValueError("empty race")
    age = L.parse_age(p.age)
    if not folder or folder in (".", "..") or Path(folder).name != folder or "\\" in folder:
        raise ValueError(f"path {folder!r} is not a folder name inside {images_dir}")
    return pid, gender, race, age, folder


def _duplicates(people: list[tuple[int, tuple]], csv_path: Path, allow: bool, report: Report) -> set[int]:
    """Lines to skip: repeated rows and folders listed twice; error unless ``allow``.

    Two folders under one id stay one person when allowed (as the rows say),
    else they are an error too: one id must be one person.
    """
    problems, skip = [], set()
    by_id: dict[str, tuple[int, tuple]] = {}
    by_folder: dict[str, tuple[int, tuple]] = {}
    for line, row in people:
        pid, folder = row[0], row[4]
        if folder in by_folder:
            first, other = by_folder[folder]
            what = "repeats line" if other == row else "lists the same folder as line"
            problems.append(f"{csv_path}:{line}: person {pid} {what} {first} ({folder}); its photos would count twice")
            skip.add(line)
            continue
        if pid in by_id:
            first, other = by_id[pid]
            problems.append(f"{csv_path}:{line}: id {pid} is also on line {first}: two folders ({other[4]}, {folder}) "
                            f"would be merged into one person")
        by_id.setdefault(pid, (line, row))
        by_folder[folder] = (line, row)
    if problems and not allow:
        raise DataError(f"{problems[0]} ({len(problems)} duplicate row(s) in all; fix {csv_path.name}, or set "
                        f"data.allow_duplicates=true to read the first of each)")
    for line in problems:
        report.warn(line + "; kept as data.allow_duplicates says" if "merged" in line else line + "; skipped")
    return skip


def read_train(
    root: str | Path,
    *,
    age_thresholds: Sequence[int] = L.DEFAULT_AGE_THRESHOLDS,
    relabel: str | Path | None = None,
    report: Report | None = None,
    allow_duplicates: bool = False,
) -> pd.DataFrame:
    """Read ``root/train`` (or ``root`` itself if it holds train.csv) into an image table.

    Every field of every row is checked (id, gender, race, age in 0..120, path
    a folder inside images/); a bad row is skipped with one warning line.
    Repeated rows, folders listed twice and ids shared by two folders are
    errors unless ``allow_duplicates``.
    """
    report = report if report is not None else Report()
    root = Path(root)
    train_dir = root / "train" if (root / "train").is_dir() else root
    if not root.exists():
        raise DataError(f"{root}: data folder not found (run `maskcls demo` to make demo data)")
    csv_path = train_dir / "train.csv"
    table = _read_csv(csv_path, TRAIN_COLUMNS)
    images_dir = train_dir / "images"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: images folder not found")
    people = []
    for i, p in enumerate(table.itertuples(index=False), start=2):
        try:
            people.append((i, _person_row(p, images_dir)))
        except ValueError as e:
            report.warn(f"{csv_path}:{i}: person {p.id} skipped ({e})")
    skip = _duplicates(people, csv_path, allow_duplicates, report)
    rows = []
    for line, (pid, gender, race, age, path) in people:
        if line in skip:
            continue
        folder = images_dir / path
        if not folder.is_dir():
            report.warn(f"{folder}: folder of person {pid} not found; skipped")
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
                {"path": str(f), "person": pid, "folder": path, "mask": int(mask), "gender": gender,
                 "age": age, "race": race}
            )
            count += 1
        if count < PHOTOS_PER_PERSON:
            report.warn(f"{folder}: person {pid} has {count} photos, expected {PHOTOS_PER_PERSON}")
    if not rows:
        raise DataError(f"{csv_path}: no usable photos found under {images_dir}")
    frame = pd.DataFrame(rows)
    if relabel:
        try:
            frame, changed = L.apply_relabel(frame, L.load_relabel(relabel), allow_conflicts=allow_duplicates,
                                             warn=lambda line: report.warn(f"{relabel}: {line}"))
        except (ValueError, FileNotFoundError) as e:
            msg = str(e)
            raise DataError(msg if msg.startswith(str(relabel)) else f"{relabel}: {msg}") from None
        log.info("relabel %s changed %d photos", relabel, changed)
    return L.assign_labels(frame, age_thresholds)


def _inside(image_id: str, where: Path, line: int) -> str:
    """An ImageID that names a file inside ``where`` (no absolute path, no ``..``)."""
    if not image_id or Path(image_id).is_absolute() or ".." in Path(image_id).parts:
        raise DataError(f"{where}:{line}: ImageID {image_id!r} must be a file name inside the images folder")
    return image_id


def read_eval(root: str | Path) -> pd.DataFrame:
    """Read ``root/eval/info.csv`` (or ``root/info.csv``): ImageID and path, in CSV order."""
    root = Path(root)
    eval_dir = root / "eval" if (root / "eval").is_dir() else root
    info_path = eval_dir / "info.csv"
    info = _read_csv(info_path, EVAL_COLUMNS)
    if info.empty:
        raise DataError(f"{info_path}: no rows (expected one ImageID per line)")
    images = eval_dir / "images"
    paths = [images / _inside(i, info_path, n) for n, i in enumerate(info["ImageID"], start=2)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: image listed in {eval_dir / 'info.csv'} not found ({len(missing)} missing in all)")
    return pd.DataFrame({"ImageID": info["ImageID"], "path": [str(p) for p in paths]})


def read_answers(path: str | Path, images: str | Path) -> pd.DataFrame:
    """A labelled list ``ImageID,ans`` (like maskfaces' answers.csv) as an image table.

    Every ``ans`` must be a class id 0..17 (one line naming the first bad row);
    an empty list is an error, not a score of nothing.
    """
    path = Path(path)
    table = _read_csv(path, ("ImageID", "ans"))
    if table.empty:
        raise DataError(f"{path}: no rows (expected ImageID,ans lines)")
    labels = []
    for line, (image_id, ans) in enumerate(zip(table["ImageID"], table["ans"]), start=2):
        _inside(image_id, path, line)
        text = str(ans).strip()
        if not (text.isdigit() and 0 <= int(text) < L.NUM_CLASSES):
            raise DataError(f"{path}:{line}: ans {ans!r} of {image_id} is not a class id 0..{L.NUM_CLASSES - 1}")
        labels.append(int(text))
    repeats = table["ImageID"].duplicated()
    if repeats.any():  # each image is scored once: a repeat would count it twice (and broke the score's shapes)
        first = int(repeats.to_numpy().argmax())
        image_id = table["ImageID"].iloc[first]
        line = int((table["ImageID"] == image_id).to_numpy().argmax()) + 2
        raise DataError(f"{path}:{first + 2}: ImageID {image_id} repeats line {line} ({int(repeats.sum())} repeated "
                        f"row(s) in all); each image is scored once: remove the repeats")
    frame = pd.DataFrame({"ImageID": table["ImageID"], "path": [str(Path(images) / i) for i in table["ImageID"]]})
    frame["label"] = labels
    if "person" in table.columns:
        frame["person"] = table["person"]
    return frame


def read_folder(folder: str | Path) -> pd.DataFrame:
    """Every image file under a folder (recursively, sorted), for prediction."""
    from .listing import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    paths = list_images(folder)  # dangling links and loops included (they get error rows); the rest is counted
    if not paths:
        raise DataError(f"{folder}: no .jpg/.jpeg/.png images found")
    return pd.DataFrame({"ImageID": [str(p.relative_to(folder)) for p in paths], "path": [str(p) for p in paths]})
