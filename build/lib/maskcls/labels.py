"""The 18-class label scheme: mask state x gender x age band.

A class id is ``mask * 6 + gender * 3 + age_band``. Everything that turns
people into labels (age thresholds, relabelling, file-name parsing) lives here
so that training, evaluation and serving agree on one definition.
"""
from __future__ import annotations

import logging
import math
import re
from enum import IntEnum
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

NUM_CLASSES = 18
DEFAULT_AGE_THRESHOLDS = (30, 60)
AGE_RANGE = (0, 120)  # whole years; anything else in a label file is a typo, not a person

log = logging.getLogger("maskcls")


class Mask(IntEnum):
    WEAR = 0
    INCORRECT = 1
    NOT_WEAR = 2


class Gender(IntEnum):
    MALE = 0
    FEMALE = 1


class AgeBand(IntEnum):
    YOUNG = 0  # < first threshold (30)
    MIDDLE = 1  # first threshold .. second threshold - 1 (30-59)
    OLD = 2  # >= second threshold (60)


HEAD_SIZES = {"mask": len(Mask), "gender": len(Gender), "age": len(AgeBand)}

# mask1..mask5 are correctly worn; extra copies (incorrect_mask2, normal3,
# written by `maskcls prepare upsample`) map by their prefix.
_STEM = re.compile(r"^(?:(?P<wear>mask)\d+|(?P<incorrect>incorrect_mask)\d*|(?P<normal>normal)\d*)$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def encode(mask, gender, age_band):
    """Class id from the three axes; works on ints and numpy arrays alike."""
    if isinstance(mask, np.ndarray):
        return mask * 6 + np.asarray(gender) * 3 + np.asarray(age_band)
    return int(mask) * 6 + int(gender) * 3 + int(age_band)


def decode(class_id):
    """(mask, gender, age_band) from a class id (int or numpy array)."""
    if isinstance(class_id, np.ndarray):
        return class_id // 6, (class_id // 3) % 2, class_id % 3
    c = int(class_id)
    if not 0 <= c < NUM_CLASSES:
        raise ValueError(f"class id {c} is outside 0..{NUM_CLASSES - 1}")
    return Mask(c // 6), Gender((c // 3) % 2), AgeBand(c % 3)


def describe(class_id: int) -> dict:
    """Readable labels of one class id, as served and written in CSVs."""
    m, g, a = decode(class_id)
    return {"class_id": int(class_id), "mask": m.name.lower(), "gender": g.name.lower(), "age": age_name(a)}


def age_name(band: int, thresholds: Sequence[int] = DEFAULT_AGE_THRESHOLDS) -> str:
    lo, hi = thresholds
    return [f"<{lo}", f"{lo}-{hi - 1}", f">={hi}"][int(band)]


def age_band(age, thresholds: Sequence[int] = DEFAULT_AGE_THRESHOLDS):
    """Age band of an age (or array of ages) for thresholds ``(lo, hi)``."""
    lo, hi = int(thresholds[0]), int(thresholds[1])
    if not lo < hi:
        raise ValueError(f"age thresholds must rise, got {list(thresholds)}")
    if isinstance(age, (np.ndarray, pd.Series)):
        return np.where(np.asarray(age) < lo, 0, np.where(np.asarray(age) < hi, 1, 2))
    return AgeBand(0 if age < lo else (1 if age < hi else 2))


def parse_gender(text: str) -> Gender:
    t = str(text).strip().lower()
    if t in ("male", "m", "0"):
        return Gender.MALE
    if t in ("female", "f", "1"):
        return Gender.FEMALE
    raise ValueError(f"unknown gender {text!r} (expected male or female)")


def parse_age(text) -> int:
    """An age in whole years within AGE_RANGE; ValueError naming the value otherwise (inf, -3, 1e9, 31.5, old)."""
    t = str(text).strip()
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"age {t!r} is not a number") from None
    lo, hi = AGE_RANGE
    if not math.isfinite(value):
        raise ValueError(f"age {t!r} is not a finite number")
    if value != int(value):
        raise ValueError(f"age {t!r} is not a whole number of years")
    if not lo <= value <= hi:
        raise ValueError(f"age {t} is outside {lo}..{hi}")
    return int(value)


def mask_from_stem(stem: str) -> Mask | None:
    """Mask state from a photo's file stem, or None if the name is unknown."""
    m = _STEM.match(stem.lower())
    if not m:
        return None
    if m.group("wear"):
        return Mask.WEAR
    return Mask.INCORRECT if m.group("incorrect") else Mask.NOT_WEAR


RELABEL_FIELDS = ("gender", "age", "mask")


def load_relabel(path: str | Path) -> pd.DataFrame:
    """Read a relabel CSV: ``id,field,value[,image]``.

    ``field`` is gender (male/female), age (years) or mask (wear/incorrect/
    not_wear, which needs the ``image`` stem, e.g. ``normal``). Known wrong
    labels of the public data are fixed here instead of in the images.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: relabel file not found")
    try:
        table = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not a readable relabel CSV ({str(e).splitlines()[0]})") from None
    missing = {"id", "field", "value"} - set(table.columns)
    if missing:
        raise ValueError(f"{p}: relabel CSV lacks column(s) {sorted(missing)}; expected id,field,value[,image]")
    bad = table[~table["field"].isin(RELABEL_FIELDS)]
    if len(bad):
        raise ValueError(f"{p}: unknown field {bad['field'].iloc[0]!r} (expected one of {list(RELABEL_FIELDS)})")
    return table


def apply_relabel(frame: pd.DataFrame, table: pd.DataFrame, *, allow_conflicts: bool = False,
                  warn: Callable[[str], None] = log.warning) -> tuple[pd.DataFrame, int]:
    """Apply a relabel table to an image table; returns (new table, rows changed).

    A row that matches no photo is reported through ``warn`` (a typo in an id
    must not pass silently). Two rows giving one label two values are an error
    unless ``allow_conflicts`` (then the last row wins, with a warning).
    """
    out = frame.copy()
    changed = 0
    seen: dict[tuple, tuple[int, str]] = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        sel = out["person"] == str(row.id)
        image = getattr(row, "image", "")
        image = image.strip() if isinstance(image, str) else ""
        try:
            if row.field == "gender":
                value = str(int(parse_gender(row.value)))
                out.loc[sel, "gender"] = int(value)
            elif row.field == "age":
                value = str(parse_age(row.value))
                out.loc[sel, "age"] = int(value)
            else:
                if not image:
                    raise ValueError("a mask relabel needs the image column (e.g. normal)")
                if str(row.value).upper() not in Mask.__members__:
                    raise ValueError(f"unknown mask {row.value!r} (expected wear, incorrect or not_wear)")
                value = str(int(Mask[str(row.value).upper()]))
                sel &= out["path"].map(lambda s: Path(s).stem.lower() == image.lower())
                out.loc[sel, "mask"] = int(value)
        except (ValueError, TypeError) as e:
            raise ValueError(f"line {line} (person {row.id}, {row.field}): {e}") from None
        key = (str(row.id), row.field, image.lower() if row.field == "mask" else "")
        if key in seen and seen[key][1] != value:
            what = f"{row.field}" + (f" of {image}" if row.field == "mask" else "")
            msg = (f"lines {seen[key][0]} and {line} give person {row.id} two different {what} values "
                   f"({row.value!r} last)")
            if not allow_conflicts:
                raise ValueError(f"{msg}; keep one row, or set data.allow_duplicates=true to let the last row win")
            warn(f"{msg}; the last row wins (data.allow_duplicates)")
        seen[key] = (line, value)
        if not sel.any():
            warn(f"line {line}: person {row.id}" + (f" photo {image}" if row.field == "mask" else "")
                 + " is not in the data; nothing changed")
        changed += int(sel.sum())
    return out, changed


def assign_labels(frame: pd.DataFrame, thresholds: Sequence[int] = DEFAULT_AGE_THRESHOLDS) -> pd.DataFrame:
    """(Re)compute ``age_band`` and ``label`` columns from mask, gender, age."""
    out = frame.copy()
    out["age_band"] = age_band(out["age"].to_numpy(), thresholds).astype(int)
    out["label"] = encode(out["mask"].to_numpy(int), out["gender"].to_numpy(int), out["age_band"].to_numpy(int))
    return out
