"""Decode cache: every image decoded and resized once into a memory-mapped store.

On 2 cores, decoding a 384x512 JPEG costs about as much as a training step
of a small model on it, every epoch. The store holds uint8 arrays at
``data.decode_size``; random augmentation still runs per epoch on top. A store
is named by the decoder settings and the content hashes of its files, so a
changed file or setting makes a new store and an unchanged dataset reuses it.

Stores live in the user's cache folder (``$XDG_CACHE_HOME/maskcls`` or
``~/.cache/maskcls``), not in the working folder, and the folder is capped
(``data.cache_max_gb``): beyond the cap the least recently used stores are
removed. ``maskcls cache clear`` removes them all.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .decode import Decoder
from .images import ImageReadError

log = logging.getLogger("maskcls")

_DECODER: Decoder | None = None
DEFAULT_MAX_GB = 10.0
_STORE = re.compile(r"^[0-9a-f]{16}$")  # store folders are named by 16 hex digits of their key


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/maskcls``, else ``~/.cache/maskcls``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "maskcls"


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``data.cache_dir`` if set, else the default user cache folder."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def list_stores(cache_dir: str | Path | None = None) -> list[dict]:
    """Stores in the cache folder, least recently used first: path, bytes, last use (epoch seconds)."""
    root = resolve_cache_dir(cache_dir)
    if not root.is_dir():
        return []
    stores = []
    for d in root.iterdir():
        if d.is_dir() and _STORE.match(d.name):
            meta = d / "meta.json"
            used = (meta if meta.is_file() else d).stat().st_mtime
            stores.append({"path": d, "bytes": _folder_bytes(d), "used": used})
    return sorted(stores, key=lambda s: s["used"])


def evict(cache_dir: str | Path | None, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove least recently used stores until the folder holds at most ``max_bytes`` (0: no cap)."""
    if max_bytes <= 0:
        return []
    stores = list_stores(cache_dir)
    total = sum(s["bytes"] for s in stores)
    removed = []
    for s in stores:
        if total <= max_bytes:
            break
        if keep is not None and s["path"].resolve() == keep.resolve():
            continue
        shutil.rmtree(s["path"], ignore_errors=True)
        total -= s["bytes"]
        removed.append(s["path"])
    if removed:
        log.info("decode cache over %.1f GB: removed %d least recently used store(s)", max_bytes / 1e9, len(removed))
    if total > max_bytes:
        log.warning("decode cache %s holds %.1f GB, over its cap of %.1f GB (data.cache_max_gb)",
                    resolve_cache_dir(cache_dir), total / 1e9, max_bytes / 1e9)
    return removed


def clear_cache(cache_dir: str | Path | None = None) -> tuple[int, int]:
    """Remove every store (only folders named like stores); returns (stores, bytes) removed."""
    stores = list_stores(cache_dir)
    for s in stores:
        shutil.rmtree(s["path"], ignore_errors=True)
    return len(stores), sum(s["bytes"] for s in stores)


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


def build_cache(paths: Sequence[str], decoder: Decoder, cache_dir: str | Path | None = None, *, workers: int = 0,
                progress: bool = True, max_gb: float = DEFAULT_MAX_GB) -> DecodeCache:
    """Open the store for ``paths`` under ``cache_dir`` (None: the user cache), building it if needed.

    After a build, least recently used stores are evicted to keep the folder under ``max_gb`` (0: no cap).
    """
    digests = [decoder.item_digest(p) for p in paths]  # a file's content (and a face's box: data.sources)
    key = hashlib.sha1((decoder.digest() + "".join(digests)).encode()).hexdigest()[:16]
    folder = resolve_cache_dir(cache_dir) / key
    meta_path = folder / "meta.json"
    h, w = decoder.size
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        images = np.load(folder / "images.npy", mmap_mode="r")
        ok = np.load(folder / "ok.npy")
        now = time.time()
        os.utime(meta_path, (now, now))  # last use, for least-recently-used eviction
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
    evict(folder.parent, int(max_gb * 1e9), keep=folder)
    return DecodeCache(np.load(folder / "images.npy", mmap_mode="r"), ok, errors, folder)


def _store(images, ok, errors, i, img, err) -> None:
    if img is None:
        errors.append(err)
    else:
        images[i] = img
        ok[i] = True
