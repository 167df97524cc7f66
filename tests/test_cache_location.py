"""Where the decode cache lives, its size cap and `maskcls cache clear`."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskcls.cli import main
from maskcls.config import DataConfig, PreprocessConfig, load_config
from maskcls.data.cache import build_cache, default_cache_dir, list_stores, resolve_cache_dir
from maskcls.data.decode import Decoder


def _photos(folder: Path, n: int, seed: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = folder / f"{seed}_{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out


def test_default_location_follows_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "maskcls"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "maskcls"
    assert resolve_cache_dir("~/elsewhere") == tmp_path / "home" / "elsewhere"
    assert load_config().data.cache_dir is None  # nothing is written into the working folder by default


def test_tests_never_use_the_real_home(user_cache):
    assert Path(user_cache) != Path.home() / ".cache"
    assert str(default_cache_dir()).startswith(user_cache)


def test_store_goes_to_user_cache_not_working_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    dec = Decoder(DataConfig(decode_size=[32, 24]), PreprocessConfig())
    store = build_cache(_photos(tmp_path / "img", 3, 0), dec, None, workers=1, progress=False)
    assert store.folder.parent == tmp_path / "xdg" / "maskcls" and store.ok.all()
    assert not (tmp_path / ".cache").exists()


def test_size_cap_evicts_least_recently_used(tmp_path):
    dec = Decoder(DataConfig(decode_size=[64, 48]), PreprocessConfig())
    root = tmp_path / "cache"
    sets = [_photos(tmp_path / f"img{k}", 4, k) for k in range(3)]
    one = 4 * 64 * 48 * 3  # bytes of one store's pixels
    a = build_cache(sets[0], dec, root, workers=1, progress=False, max_gb=0)
    old = time.time() - 100
    os.utime(a.folder / "meta.json", (old, old))
    b = build_cache(sets[1], dec, root, workers=1, progress=False, max_gb=0)
    os.utime(b.folder / "meta.json", (old + 10, old + 10))
    build_cache(sets[0], dec, root, workers=1, progress=False, max_gb=0)  # a hit: a is now the most recent
    kept = a.folder.name
    del a, b  # no longer in use by this process (a store in use is never evicted: test_cache_lease.py)
    c = build_cache(sets[2], dec, root, workers=1, progress=False, max_gb=2.5 * one / 1e9)
    names = {s["path"].name for s in list_stores(root)}
    assert names == {kept, c.folder.name}  # b, least recently used, went
    assert np.asarray(c.images).shape == (4, 64, 48, 3)


def test_cache_clear_cli(tmp_path, capsys):
    dec = Decoder(DataConfig(decode_size=[32, 24]), PreprocessConfig())
    root = tmp_path / "cache"
    build_cache(_photos(tmp_path / "img", 3, 1), dec, root, workers=1, progress=False)
    (root / "notes.txt").write_text("not a store: left alone")
    assert main(["cache", "info", f"data.cache_dir={root}"]) == 0
    assert "1 store(s)" in capsys.readouterr().out
    assert main(["cache", "clear", f"data.cache_dir={root}"]) == 0
    assert "removed 1 store(s)" in capsys.readouterr().out
    assert list_stores(root) == [] and (root / "notes.txt").is_file()
