"""A decode-cache store in use (read or still being built) is never evicted (issue 22, case 5)."""
from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskcls.config import ConfigError, DataConfig, PreprocessConfig
from maskcls.data import cache as C
from maskcls.data.cache import build_cache, list_stores
from maskcls.data.decode import Decoder

DATA, PRE = DataConfig(decode_size=[32, 24]), PreprocessConfig()
DEC = Decoder(DATA, PRE)
TINY_CAP = 1e-9  # GB (1 byte): smaller than any one store, so every other store is a candidate for eviction


def _photos(folder: Path, n: int, seed: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), np.uint8)).save(p)
        out.append(str(p))
    return out


class SlowDecoder(Decoder):
    """Decodes like DEC, slowly: the store stays 'being built' long enough for another process to evict."""

    def __call__(self, source):
        time.sleep(0.1)
        return super().__call__(source)


def _build_slowly(paths, root, done):
    try:
        c = build_cache(paths, SlowDecoder(DATA, PRE), root, workers=1, progress=False, max_gb=TINY_CAP)
        done.put(("ok", int(c.ok.sum())))
    except BaseException as e:  # the failure of the issue: images.<pid>.npy -> images.npy, No such file
        done.put(("failed", f"{type(e).__name__}: {e}"))


def test_eviction_skips_a_store_in_use_by_this_process(tmp_path):
    root = tmp_path / "cache"
    a = build_cache(_photos(tmp_path / "a", 3, 0), DEC, root, workers=1, progress=False, max_gb=TINY_CAP)
    b = build_cache(_photos(tmp_path / "b", 3, 1), DEC, root, workers=1, progress=False, max_gb=TINY_CAP)
    assert {s["path"] for s in list_stores(root)} == {a.folder, b.folder}  # a is read (mapped): kept
    np.asarray(a.images).sum()  # its memory map still reads
    assert C.clear_cache(root) == (0, 0)  # `maskcls cache clear` skips stores in use too
    folder = a.folder
    del a  # no longer used: the next build may evict it
    build_cache(_photos(tmp_path / "c", 3, 2), DEC, root, workers=1, progress=False, max_gb=TINY_CAP)
    assert folder not in {s["path"] for s in list_stores(root)}


def test_two_processes_on_one_tiny_cap_both_finish(tmp_path):
    """Issue 22 case 5: a second run's eviction removed the first run's store while it was being built."""
    root = tmp_path / "cache"
    slow = _photos(tmp_path / "slow", 12, 3)
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    child = ctx.Process(target=_build_slowly, args=(slow, root, done))
    child.start()
    deadline = time.time() + 60
    while not list(root.glob("*/images.*.npy")) and time.time() < deadline:  # the child is building
        time.sleep(0.05)
    assert list(root.glob("*/images.*.npy")), f"the slow build never started: {done.get(timeout=5)}"
    quick = build_cache(_photos(tmp_path / "quick", 3, 4), DEC, root, workers=1, progress=False, max_gb=TINY_CAP)
    assert quick.ok.all()
    child.join(120)
    assert done.get(timeout=5) == ("ok", 12)


def test_two_builders_of_one_store_decode_it_once(tmp_path):
    root = tmp_path / "cache"
    paths = _photos(tmp_path / "p", 6, 5)
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    child = ctx.Process(target=_build_slowly, args=(paths, root, done))
    child.start()
    deadline = time.time() + 60
    while not list(root.glob("*/images.*.npy")) and time.time() < deadline:
        time.sleep(0.05)
    calls = []

    class Counting(Decoder):
        def __call__(self, source):
            calls.append(source)
            return super().__call__(source)

    second = build_cache(paths, Counting(DATA, PRE), root, workers=1, progress=False)  # waits, then reads
    child.join(120)
    assert done.get(timeout=5) == ("ok", 6)
    assert second.ok.all() and calls == []


def test_unreadable_image_with_the_cache_on_is_a_row_error(tmp_path, monkeypatch):
    """Issue 22 case 6: chmod 000 gave a traceback from hashing the file when the cache was on."""
    paths = _photos(tmp_path / "p", 2, 6)
    import maskcls.data.decode as D  # the decoder keys each item (Decoder.item_digest)

    real = D.file_digest

    def denied(path):
        if path == paths[1]:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(D, "file_digest", denied)
    monkeypatch.setattr(C, "_decode", lambda p: (None, f"{p}: cannot read (Permission denied)") if p == paths[1]
                        else (DEC(p), None))
    c = build_cache(paths, DEC, tmp_path / "cache", workers=1, progress=False)
    assert c.ok.tolist() == [True, False] and "Permission denied" in c.errors[0]
    monkeypatch.undo()
    folder = tmp_path / "dir.png"  # a folder where a file was expected: the same path, without monkeypatching
    folder.mkdir()
    c = build_cache([paths[0], str(folder)], DEC, tmp_path / "cache", workers=1, progress=False)
    assert c.ok.tolist() == [True, False] and "dir.png: is a folder, not an image" in c.errors[0]


@pytest.mark.parametrize("case", ["file", "inside_file"])
def test_unusable_cache_folder_is_one_line(tmp_path, case):
    (tmp_path / "f").write_text("x")
    where = tmp_path / "f" if case == "file" else tmp_path / "f" / "sub"
    with pytest.raises(ConfigError, match="data.cache_dir: .*data.cache=false"):
        build_cache(_photos(tmp_path / "p", 1, 7), DEC, where, workers=1, progress=False)
