"""``maskcls prepare upsample``: augmented copies of the rare mask states, per person.

Each person has five "mask" photos but one "incorrect_mask" and one "normal".
This writes ``copies`` augmented versions of those two (``incorrect_mask2``,
``incorrect_mask3``, ..., ``normal2``, ...) into the person's own folder, so
the reader labels them by their prefix and person-level splits keep a copy
on the same side as its source. Copies are a pure function of the source and
the seed: re-running rewrites nothing and never multiplies files; copies
numbered above ``copies + 1`` (from an earlier, larger run) are removed.
"""
from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..config import Config
from .images import load_rgb
from .reader import TRAIN_COLUMNS, DataError, _read_csv

log = logging.getLogger("maskcls")

SOURCES = ("incorrect_mask", "normal")
_COPY = re.compile(r"^(incorrect_mask|normal)(\d+)$", re.IGNORECASE)


def copy_transform() -> A.Compose:
    """Mild, label-preserving changes: mirror, colour, small shift/scale/rotation."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.9),
        A.Affine(scale=(0.93, 1.07), translate_percent=(-0.04, 0.04), rotate=(-8, 8),
                 border_mode=cv2.BORDER_REPLICATE, p=1.0),
    ])


def _source(folder: Path, stem: str) -> Path | None:
    found = [f for f in folder.iterdir() if f.is_file() and f.stem.lower() == stem and
             f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return sorted(found)[0] if found else None


def upsample(cfg: Config, copies: int = 2) -> dict:
    """Write the copies under ``data.root``; returns counts of written, kept and removed files."""
    if copies < 0:
        raise DataError(f"--copies must be 0 or more, got {copies}")
    root = Path(cfg.data.root)
    train_dir = root / "train" if (root / "train").is_dir() else root
    people = _read_csv(train_dir / "train.csv", TRAIN_COLUMNS)
    transform = copy_transform()
    counts = {"written": 0, "kept": 0, "removed": 0, "missing": 0}
    for folder_name in tqdm(people["path"], desc="upsample", unit="person", disable=not cfg.train.progress):
        folder = train_dir / "images" / folder_name
        if not folder.is_dir():
            log.warning("%s: person folder not found; skipped", folder)
            continue
        for f in folder.iterdir():  # stale copies of a larger --copies
            m = _COPY.match(f.stem)
            if m and int(m.group(2)) > copies + 1:
                f.unlink()
                counts["removed"] += 1
        for stem in SOURCES:
            src = _source(folder, stem)
            if src is None:
                counts["missing"] += 1
                continue
            image = None
            for k in range(2, copies + 2):
                out = folder / f"{stem}{k}.jpg"
                if out.is_file():
                    counts["kept"] += 1
                    continue
                image = load_rgb(src) if image is None else image
                seed = (cfg.train.seed * 1_000_003 + zlib.crc32(f"{folder_name}/{stem}{k}".encode())) % 2**32
                transform.set_random_seed(seed)
                Image.fromarray(np.ascontiguousarray(transform(image=image)["image"])).save(out, quality=95)
                counts["written"] += 1
    log.info("upsample %s: %d copies written, %d already there, %d stale removed, %d sources missing", train_dir,
             counts["written"], counts["kept"], counts["removed"], counts["missing"])
    print(f"upsample: {counts['written']} written, {counts['kept']} already there, {counts['removed']} removed "
          f"({copies} copies of {', '.join(SOURCES)} per person in {train_dir / 'images'})")
    return counts
