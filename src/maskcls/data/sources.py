"""Extra labelled faces beside the competition layout: boxes CSVs and PASCAL-VOC folders (``data.sources``).

Real photos come with face boxes and a mask label, rarely a gender or an age.
Each entry of ``data.sources`` names one set::

    data:
      sources:
        - {kind: boxes, path: ../shared/realmasks/boxes.csv, weight: 0.25}
        - {kind: voc, path: /data/kaggle_masks, weight: 0.1, classes: {mask_weared_incorrect: 1}}

- ``weight``: the expected share of every training batch drawn from that
  source (``sampling.draw_weights``). The competition photos keep the rest,
  and an epoch grows so that they are drawn as often as without sources.
- ``holdout`` (default true): the photos ``boxes.is_held_out`` picks (a hash
  of the file name) are never trained on; their faces are scored after every
  epoch (mask accuracy and recall per class in log.csv), which is what a
  mixing weight is chosen on. ``holdout: false`` trains on every photo (a
  shipped model, once the weight is chosen).
- ``classes`` (VOC): object name -> mask state 0 wear / 1 incorrect / 2 not
  worn (null: ignore the object), over ``VOC_CLASSES``.
- ``min_size`` (default 16): boxes with a shorter side below this many pixels
  are skipped, with one counted warning.

Every face is framed exactly as ``predict`` frames a face a detector found
in a photo (``BoxDecoder``: ``preprocess.framing.frame_photo`` with the run's
detector geometry), and decoded once into the decode cache (the item key
holds the box).
"""
from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from .. import labels as L
from ..config import (SOURCE_KINDS as KINDS, SOURCE_MIN_SIZE as MIN_SIZE, Config, ConfigError, DataConfig,
                      PreprocessConfig, check_source_entries as check_entries)
from .boxes import BoxesError, is_held_out, read_boxes, shorter_side
from .decode import Decoder
from .images import ImageReadError, load_rgb, resize
from .reader import DataError, Report

log = logging.getLogger("maskcls")

# the names the common public mask sets use (Kaggle face-mask-detection, ch-tseng's good/none/bad)
VOC_CLASSES = {"with_mask": 0, "good": 0, "mask_weared_incorrect": 1, "with_incorrect_mask": 1, "none": 1,
               "without_mask": 2, "bad": 2}
BOX_SEP = "#box="  # an item of the decode cache: "<image path>#box=x0,y0,x1,y1"


# ----------------------------------------------------------------------------- entries
def source_name(entry: dict) -> str:
    """``name``, else the folder of the CSV / the VOC folder's name."""
    if entry.get("name"):
        return str(entry["name"])
    p = Path(entry["path"])
    return p.parent.name if entry["kind"] == "boxes" else p.name


# ----------------------------------------------------------------------------- readers
def read_voc(folder: str | Path, classes: dict | None = None) -> pd.DataFrame:
    """``Annotations/*.xml`` + ``JPEGImages/`` as a boxes table (file, x0..y1, mask, gender, age, path).

    ``classes`` adds to (or overrides) ``VOC_CLASSES``; a name in neither is an
    error naming the name and the file, so a new data set's classes are never
    guessed.
    """
    folder = Path(folder)
    notes, images = folder / "Annotations", folder / "JPEGImages"
    if not notes.is_dir():
        raise DataError(f"{notes}: folder not found (a VOC source needs Annotations/*.xml and JPEGImages/)")
    mapping = {**VOC_CLASSES, **(classes or {})}
    rows = []
    for xml in sorted(notes.glob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise DataError(f"{xml}: not readable XML ({e})") from None
        name = (root.findtext("filename") or "").strip() or xml.stem + ".jpg"
        image = images / Path(name).name
        if not image.is_file():  # some sets write the wrong suffix in <filename>
            found = [p for p in images.glob(Path(name).stem + ".*") if p.suffix.lower() in L.IMAGE_SUFFIXES]
            image = found[0] if found else image
        for obj in root.iter("object"):
            label = (obj.findtext("name") or "").strip()
            if label not in mapping:
                raise DataError(f"{xml}: unknown VOC class name {label!r}; map it in the entry's classes, e.g. "
                                f"classes: {{{label}: 1}} (0 wear, 1 incorrect, 2 not worn, null: ignore)")
            if mapping[label] is None:
                continue
            box = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                raise DataError(f"{xml}: object {label!r} has no readable bndbox (xmin, ymin, xmax, ymax)") from None
            if x1 <= x0 or y1 <= y0:
                raise DataError(f"{xml}: object {label!r} has an empty box ({x0:g},{y0:g},{x1:g},{y1:g})")
            rows.append({"file": image.name, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "mask": int(mapping[label]),
                         "path": str(image)})
    if not rows:
        raise DataError(f"{notes}: no labelled objects found in its .xml files")
    table = pd.DataFrame(rows)
    table["gender"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["age"] = pd.array([pd.NA] * len(table), dtype="Int64")
    return table


def read_entry(entry: dict) -> pd.DataFrame:
    """One entry's boxes (one row per face), with one-line errors for a missing file or a bad row."""
    if entry["kind"] == "voc":
        return read_voc(entry["path"], entry.get("classes"))
    try:
        return read_boxes(entry["path"])
    except BoxesError as e:
        raise DataError(str(e)) from None


def source_frames(cfg: Config, report: Report | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training faces, held-out faces) of every ``data.sources`` entry, as image tables.

    Columns: ``path`` (a decode-cache item: image path and box), ``image``,
    ``file``, ``box``, ``source``, ``source_weight``, ``person`` (the photo),
    ``mask``, ``gender``, ``age`` (placeholder 0 where unknown),
    ``gender_known``, ``age_known``, ``age_band``, ``label``.
    """
    report = report if report is not None else Report()
    parts, held = [], []
    for entry in cfg.data.sources:
        name = source_name(entry)
        table = read_entry(entry)
        small = shorter_side(table) < float(entry.get("min_size", MIN_SIZE))
        if small.any():
            report.warn(f"{entry['path']}: {int(small.sum())} of {len(table)} boxes are smaller than "
                        f"{entry.get('min_size', MIN_SIZE)} px on their shorter side; skipped")
        table = table[~small].reset_index(drop=True)
        out = faces_table(table, name, float(entry["weight"]), cfg.data.age_thresholds)
        out_held = out["file"].map(is_held_out).to_numpy(bool)
        if entry.get("holdout", True):
            parts.append(out[~out_held])
            held.append(out[out_held])
        else:
            parts.append(out)
        log.info("source %s: %d faces (%d photos) for training, %d held-out faces of %d photos scored each epoch",
                 name, len(parts[-1]), parts[-1]["file"].nunique(), len(held[-1]) if held and
                 entry.get("holdout", True) else 0, held[-1]["file"].nunique() if held and entry.get("holdout", True)
                 else 0)
    empty = faces_table(pd.DataFrame(columns=["file", "x0", "y0", "x1", "y1", "mask", "gender", "age", "path"]),
                        "", 0.0, cfg.data.age_thresholds)
    train = pd.concat(parts, ignore_index=True) if parts else empty
    val = pd.concat(held, ignore_index=True) if held else empty
    return train, val


def faces_table(table: pd.DataFrame, name: str, weight: float, thresholds) -> pd.DataFrame:
    """A boxes table as training rows: unknown gender/age get placeholder 0 and a False ``*_known`` flag."""
    boxes = [(float(a), float(b), float(c), float(d)) for a, b, c, d in
             zip(table["x0"], table["y0"], table["x1"], table["y1"])]
    gender = pd.to_numeric(table["gender"], errors="coerce") if "gender" in table else pd.Series(np.nan, table.index)
    age = pd.to_numeric(table["age"], errors="coerce") if "age" in table else pd.Series(np.nan, table.index)
    out = pd.DataFrame({
        "path": [box_item(p, b) for p, b in zip(table["path"], boxes)],
        "image": table["path"].astype(str).to_numpy(), "file": table["file"].astype(str).to_numpy(),
        "box": boxes, "source": name, "source_weight": weight,
        "person": [f"{name}:{f}" for f in table["file"]],  # one photo's faces count as one "person" (its split unit)
        "mask": table["mask"].astype(int).to_numpy(),
        "gender": gender.fillna(0).astype(int).to_numpy(), "gender_known": gender.notna().to_numpy(),
        "age": age.fillna(0).astype(int).to_numpy(), "age_known": age.notna().to_numpy(),
        "race": "",
    })
    return L.assign_labels(out, thresholds) if len(out) else out.assign(age_band=pd.Series(dtype=int),
                                                                        label=pd.Series(dtype=int))


def summary(cfg: Config, train: pd.DataFrame, held: pd.DataFrame | None) -> list[dict]:
    """Per source: where it is, its weight, and the faces (photos) trained on and held out, for the model card."""
    out = []
    for entry in cfg.data.sources:
        name = source_name(entry)
        mine = train[train["source"] == name] if "source" in train else train.iloc[:0]
        kept = held[held["source"] == name] if held is not None and len(held) else mine.iloc[:0]
        out.append({"name": name, "kind": entry["kind"], "path": str(Path(entry["path"]).resolve()),
                    "weight": float(entry["weight"]), "holdout": bool(entry.get("holdout", True)),
                    "train_faces": int(len(mine)), "train_photos": int(mine["file"].nunique()),
                    "train_faces_by_mask": {m.name.lower(): int((mine["mask"] == m).sum()) for m in L.Mask},
                    "held_out_faces": int(len(kept)), "held_out_photos": int(kept["file"].nunique())})
    return out


# ----------------------------------------------------------------------------- framing
def box_item(path: str | Path, box) -> str:
    """The decode-cache item of one face: its image path and box."""
    return f"{path}{BOX_SEP}{','.join(f'{float(v):g}' for v in box)}"


def parse_item(item: str) -> tuple[str, tuple[float, float, float, float]]:
    path, _, box = str(item).rpartition(BOX_SEP)
    x0, y0, x1, y1 = (float(v) for v in box.split(","))
    return path, (x0, y0, x1, y1)


class BoxDecoder(Decoder):
    """Decoder of ``box_item`` items: the face framed exactly as ``predict`` frames a face it found.

    Without ``preprocess.face_crop``: ``framing.frame_photo`` with the run's
    resolved detector geometry, the call ``PhotoFramer`` makes with the
    detector's largest box. With it: the face crop with ``face_margin``
    (``Preprocessor.crop``), as the service crops each found face.
    """

    def __init__(self, data: DataConfig, pre: PreprocessConfig):
        super().__init__(data, pre)
        from ..preprocess.faces import resolve_detector

        self.geometry = resolve_detector(pre.detector)
        self.aspect = self.size[0] / self.size[1]

    def settings(self) -> dict:
        return {**super().settings(), "boxes": {"geometry": self.geometry, "face_crop": bool(self.pre.face_crop),
                                                "margin": self.pre.face_margin if self.pre.face_crop else None}}

    def item_digest(self, item: str) -> str:
        path, box = parse_item(item)
        return super().item_digest(path) + hashlib.sha1(repr(box).encode()).hexdigest()[:8]

    def frame(self, img: np.ndarray, box) -> np.ndarray:
        """One face of a decoded photo, before the resize to ``decode_size``."""
        from ..preprocess import as_rgb
        from ..preprocess.framing import frame_photo

        img = as_rgb(img)
        if self.pre.face_crop:
            return self._prep.crop(img, tuple(int(round(v)) for v in box))
        return frame_photo(img, box, self.aspect, self.geometry)

    def __call__(self, item) -> np.ndarray:
        path, box = parse_item(item)
        img = load_rgb(path)
        h, w = img.shape[:2]
        if box[0] >= w or box[1] >= h or box[2] <= 0 or box[3] <= 0:
            raise ImageReadError(path, f"box {box} lies outside the {w}x{h} photo")
        return resize(self.frame(img, box), self.size)


__all__ = ["BoxDecoder", "KINDS", "VOC_CLASSES", "check_entries", "read_voc", "source_frames"]
