"""Decode cache: every image decoded and resized once into a memory-mapped store.

On 2 cores, decoding a 384x512 JPEG costs about as much as a training step
of a small model on it, every epoch. The store holds uint8 arrays at
``data.decode_size``; random augmentation still runs per epoch on top. A store
is named by the decoder settings and the content hashes of its files, so a
changed file or setting makes a new store and an unchanged dataset reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .decode import Decoder, file_digest
from .images import ImageReadError

log = logging.getLogger("maskcls")

_DECODER: Decoder | None = None


def _init(decoder: Decoder) -> None:
    global _DECODER
    _DECODER = decoder


def _decode(path: str):
    try:
        return _DECODER(path), None  # type: ignore[misc]
    except ImageReadError as e:
        return None, str(e)
    except Exception as e:  # a broken file must not stop the build
        return None, f"{path}: cannot decode ({type(e).__name__}: {e})"


class DecodeCache:
    """A uint8 store of shape (N, H, W, 3) plus which rows decoded fine."""

    def __init__(self, images: np.ndarray, ok: np.ndarray, errors: list[str], folder: Path):
        self.images, self.ok, self.errors, self.folder = images, ok, errors, folder

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i])

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)


def build_cache(paths: Sequence[str], decoder: Decoder, cache_dir: str | Path, *, workers: int = 0,
                progress: bool = True) -> DecodeCache:
    """Open the store for ``paths`` under ``cache_dir``, building it if needed."""
    digests = [file_digest(p) if Path(p).is_file() else "missing:" + str(p) for p in paths]
    key = hashlib.sha1((decoder.digest() + "".join(digests)).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / key
    meta_path = folder / "meta.json"
    h, w = decoder.size
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        images = np.load(folder / "images.npy", mmap_mode="r")
        ok = np.load(folder / "ok.npy")
        log.info("decode cache hit: %s (%d images)", folder, len(images))
        return DecodeCache(images, ok, meta["errors"], folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"images.{os.getpid()}.npy"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), h, w, 3))
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[str] = []
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(paths), desc="decode cache", unit="img", disable=not progress, leave=False)
    if workers > 1 and len(paths) > 64:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(decoder,)) as pool:
            results = pool.map(_decode, paths, chunksize=32)
            for i, (img, err) in enumerate(results):
                _store(images, ok, errors, i, img, err)
                bar.update()
    else:
        _init(decoder)
        for i, p in enumerate(paths):
            _store(images, ok, errors, i, *_decode(p))
            bar.update()
    bar.close()
    images.flush()
    del images
    os.replace(tmp, folder / "images.npy")  # atomic: a killed build leaves no half store
    np.save(folder / "ok.npy", ok)
    meta_path.write_text(json.dumps({"settings": decoder.settings(), "count": len(paths), "errors": errors}))
    return DecodeCache(np.load(folder / "images.npy", mmap_mode="r"), ok, errors, folder)


def _store(images, ok, errors, i, img, err) -> None:
    if img is None:
        errors.append(err)
    else:
        images[i] = img
        ok[i] = True
