"""``maskcls prepare faces|background``: a preprocessed copy of a whole data root.

Same layout (train/ and eval/, same file names, CSVs copied unchanged), so the
copy is used as ``data.root`` with preprocessing off. Training with
``preprocess.face_crop=true`` on the original root instead gives the same
pixels through the decode cache, and a run trained that way applies the crop
by itself at prediction and in the service; with the copy, photos given to
predict or the service must be prepared the same way first.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import labels as L
from ..config import Config, ConfigError
from ..data.images import ImageReadError, load_rgb
from . import Preprocessor

log = logging.getLogger("maskcls")

SUFFIX = {"faces": "-faces", "background": "-nobg"}


def step_config(step: str, cfg: Config):
    """The preprocess settings of one step: only that step, the rest of ``preprocess.*`` as given."""
    pre = dataclasses.replace(cfg.preprocess)
    if step == "faces":
        pre.face_crop, pre.background = True, "none"
    elif step == "background":
        pre.face_crop = False
        if pre.background == "none":
            pre.background = "grabcut"
            log.info("preprocess.background is none; using grabcut (offline)")
    else:
        raise ConfigError(f"unknown prepare step '{step}'; choose faces or background")
    return pre


def prepare_root(step: str, cfg: Config, out: str | None = None) -> dict:
    """Write the prepared copy of ``data.root`` to ``out`` (default ``<root>-faces`` / ``<root>-nobg``)."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise ConfigError(f"data.root: {root}: data folder not found")
    dest = Path(out) if out else root.with_name(root.name + SUFFIX.get(step, "-" + step))
    prep = Preprocessor(step_config(step, cfg))
    if dest.resolve() == root.resolve() or root.resolve() in dest.resolve().parents:
        raise ConfigError(f"--out {dest}: must lie outside the data root {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in L.IMAGE_SUFFIXES]
    for p in files:
        if p.suffix.lower() not in L.IMAGE_SUFFIXES:  # CSVs and anything else: copied as they are
            (dest / p.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest / p.relative_to(root))
    jobs = [(str(p), str(dest / p.relative_to(root))) for p in images]
    workers = min(os.cpu_count() or 1, 8) if len(jobs) > 64 else 1
    bar = tqdm(total=len(jobs), desc=f"prepare {step}", unit="img", disable=not cfg.train.progress)
    counts = {"photos": 0, "no_face": 0, "unreadable": 0}
    if workers > 1:  # each worker has its own copy of the preprocessor (detectors are rebuilt there)
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(prep,)) as pool:
            for result in pool.map(_one, jobs, chunksize=16):
                _count(counts, result)
                bar.update()
    else:
        _init(prep)
        for job in jobs:
            _count(counts, _one(job))
            bar.update()
    bar.close()
    failed = counts["unreadable"]
    summary = {"out": str(dest), "images": len(images), **counts}
    what = "centre crop" if step == "faces" else "centre seed"
    print(f"written: {dest}  ({len(images)} images; no face found in {counts['no_face']} of {counts['photos']} "
          f"-> {what}; {failed} unreadable copied as they were)")
    return summary


_PREP: Preprocessor | None = None


def _init(prep: Preprocessor) -> None:
    global _PREP
    _PREP = prep


def _one(job: tuple[str, str]) -> tuple[int, int, str | None]:
    """Prepare one photo: (went through detection, had no face, error line or None)."""
    src, dst = Path(job[0]), Path(job[1])
    dst.parent.mkdir(parents=True, exist_ok=True)
    before = _PREP.stats()  # type: ignore[union-attr]
    try:
        img = _PREP(load_rgb(src))  # type: ignore[misc]
    except ImageReadError as e:
        shutil.copy2(src, dst)
        return 0, 0, str(e)
    save_rgb(img, dst)
    after = _PREP.stats()  # type: ignore[union-attr]
    return after["photos"] - before["photos"], after["no_face"] - before["no_face"], None


def _count(counts: dict, result: tuple[int, int, str | None]) -> None:
    photos, no_face, error = result
    counts["photos"] += photos
    counts["no_face"] += no_face
    if error:
        counts["unreadable"] += 1
        log.warning("%s; copied unchanged", error)


def save_rgb(img, path: Path) -> None:
    """Always 3-channel RGB, in the format of the file name (so CSV paths stay valid)."""
    im = Image.fromarray(np.ascontiguousarray(img[..., :3]) if img.ndim == 3 else img).convert("RGB")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=95)
    else:
        im.save(path)
