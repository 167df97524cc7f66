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

A store in use is never removed. Every process that builds or reads a store
holds a shared ``flock`` on its ``.lease`` file for as long as it uses the
store (the lock dies with the process, so a killed run leaves no stale
lease); eviction and ``cache clear`` take an exclusive lock without waiting
and skip the stores they cannot lock. Two processes that need the same
store build it once: the second waits on the ``.build`` lock, then reads it.
"""
from __future__ import annotations

import errno
import fcntl
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

from ..config import ConfigError
from ..io import atomic_path, safe_name, write_text
from .decode import Decoder
from .images import ImageReadError

log = logging.getLogger("maskcls")

_DECODER: Decoder | None = None
DEFAULT_MAX_GB = 10.0
_STORE = re.compile(r"^[0-9a-f]{16}$")  # store folders are named by 16 hex digits of their key
LEASE, BUILD = ".lease", ".build"  # lock files inside a store: in use (shared) / being built (exclusive)


class Lease:
    """A ``flock`` on a store's lock file, held until ``release`` (or the process ends).

    ``shared``: this process uses the store (many may). ``exclusive``: nobody
    else may (eviction, building). ``wait=False`` gives up at once: ``None``.
    """

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    @classmethod
    def take(cls, folder: Path, name: str = LEASE, *, exclusive: bool = False, wait: bool = True) -> "Lease | None":
        path = folder / name
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed meanwhile (evicted): the caller makes it again
                return None
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                raise
            try:  # an evictor may have removed the folder between open and lock: then this lock guards nothing
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(fd, path)
            os.close(fd)
            if not folder.is_dir():
                return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __del__(self):
        self.release()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/maskcls``, else ``~/.cache/maskcls``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "maskcls"


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``data.cache_dir`` if set, else the default user cache folder."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def _folder_bytes(folder: Path) -> int:
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() else 0
        except FileNotFoundError:  # removed by another process meanwhile
            pass
    return total


def list_stores(cache_dir: str | Path | None = None) -> list[dict]:
    """Stores in the cache folder, least recently used first: path, bytes, last use (epoch seconds)."""
    root = resolve_cache_dir(cache_dir)
    if not root.is_dir():
        return []
    stores = []
    for d in root.iterdir():
        if d.is_dir() and _STORE.match(d.name):
            meta = d / "meta.json"
            try:
                used = (meta if meta.is_file() else d).stat().st_mtime
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            stores.append({"path": d, "bytes": _folder_bytes(d), "used": used})
    return sorted(stores, key=lambda s: s["used"])


def _remove_unused(store: Path) -> bool:
    """Remove ``store`` unless a process holds its lease (in use or being built); True if removed."""
    lease = Lease.take(store, exclusive=True, wait=False)
    if lease is None:
        return False
    try:
        shutil.rmtree(store, ignore_errors=True)
    finally:
        lease.release()
    return True


def evict(cache_dir: str | Path | None, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove least recently used stores until the folder holds at most ``max_bytes`` (0: no cap).

    Stores in use by any process (``Lease``), and ``keep``, are skipped.
    """
    if max_bytes <= 0:
        return []
    stores = list_stores(cache_dir)
    total = sum(s["bytes"] for s in stores)
    removed, busy = [], 0
    for s in stores:
        if total <= max_bytes:
            break
        if keep is not None and s["path"].resolve() == keep.resolve():
            continue
        if not _remove_unused(s["path"]):
            busy += 1
            continue
        total -= s["bytes"]
        removed.append(s["path"])
    if removed:
        log.info("decode cache over %.1f GB: removed %d least recently used store(s)", max_bytes / 1e9, len(removed))
    if total > max_bytes:
        log.warning("decode cache %s holds %.1f GB, over its cap of %.1f GB (data.cache_max_gb)%s",
                    safe_name(resolve_cache_dir(cache_dir)), total / 1e9, max_bytes / 1e9,
                    f"; {busy} store(s) in use by running processes were kept" if busy else "")
    return removed


def clear_cache(cache_dir: str | Path | None = None) -> tuple[int, int]:
    """Remove every store not in use (only folders named like stores); returns (stores, bytes) removed."""
    stores = [s for s in list_stores(cache_dir) if _remove_unused(s["path"])]
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
    """A uint8 store of shape (N, H, W, 3) plus which rows decoded fine.

    Holds the store's ``lease`` while it lives, so no eviction removes the files under its memory map.
    """

    def __init__(self, images: np.ndarray, ok: np.ndarray, errors: list[str], folder: Path,
                 lease: Lease | None = None):
        self.images, self.ok, self.errors, self.folder = images, ok, errors, folder
        self.lease = lease

    def __getstate__(self) -> dict:  # a copy in another process does not own this process's lock
        return {**self.__dict__, "lease": None}

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
    digests = [_digest(decoder, p) for p in paths]  # a file's content (and a face's box: data.sources)
    key = hashlib.sha1((decoder.digest() + "".join(digests)).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    root = usable_cache_dir(cache_dir)
    folder = root / key
    lease = None
    while lease is None:  # in use from here on: no other process evicts it, even while it is being built
        _make_folder(folder)
        lease = Lease.take(folder)
    build_lock = Lease.take(folder, BUILD, exclusive=True)  # one builder; others wait, then read its store
    try:
        found = _open_store(folder, lease, hit=True)
        if found is not None:
            return found
        _build(folder, paths, decoder, workers, progress)
    finally:
        if build_lock is not None:
            build_lock.release()
    evict(root, int(max_gb * 1e9), keep=folder)
    return _open_store(folder, lease)


def _digest(decoder: Decoder, path: str) -> str:
    """What keys one item (``Decoder.item_digest``), or a marker naming why it has none (its decode reports it)."""
    try:
        return decoder.item_digest(path)
    except FileNotFoundError:
        return "missing:" + str(path)
    except OSError as e:  # unreadable (chmod 000), a folder...: decoded (and reported) like any bad file
        return f"unreadable:{path}:{e.errno}"


def usable_cache_dir(cache_dir: str | Path | None) -> Path:
    """The cache folder, made if needed; a ``ConfigError`` in one line if it cannot be used."""
    root = resolve_cache_dir(cache_dir)
    fix = "point data.cache_dir to a writable folder, or set data.cache=false"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data.cache_dir: {safe_name(root)} is a file, not a folder; {fix}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"data.cache_dir: cannot make {safe_name(root)} ({e.strerror or e}); {fix}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"data.cache_dir: {safe_name(root)} is not writable; {fix}")
    return root


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"data.cache_dir: cannot make {safe_name(folder)} ({e.strerror or e}); point "
                          "data.cache_dir to a writable folder, or set data.cache=false") from None


def _open_store(folder: Path, lease: Lease, hit: bool = False) -> DecodeCache | None:
    """The finished store in ``folder`` (its last use refreshed), or None if there is none yet."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    images = np.load(folder / "images.npy", mmap_mode="r")
    ok = np.load(folder / "ok.npy")
    now = time.time()
    os.utime(meta_path, (now, now))  # last use, for least-recently-used eviction
    if hit:
        log.info("decode cache hit: %s (%d images)", safe_name(folder), len(images))
    return DecodeCache(images, ok, meta["errors"], folder, lease)


def _build(folder: Path, paths: Sequence[str], decoder: Decoder, workers: int, progress: bool) -> None:
    """Decode ``paths`` into ``folder``: images.npy, ok.npy, then meta.json last (its presence marks a whole store)."""
    h, w = decoder.size
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
    with atomic_path(folder / "ok.npy") as tmp_ok:
        np.save(tmp_ok, ok)
    write_text(folder / "meta.json", json.dumps({"settings": decoder.settings(), "count": len(paths),
                                                 "errors": errors}))


def _store(images, ok, errors, i, img, err) -> None:
    if img is None:
        errors.append(err)
    else:
        images[i] = img
        ok[i] = True
