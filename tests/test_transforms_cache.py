"""Eval transform is deterministic, train transform is seeded; the decode cache is built once."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskcls.config import load_config
from maskcls.data.cache import build_cache
from maskcls.data.decode import Decoder
from maskcls.data.images import load_rgb
from maskcls.data.transforms import build_transform

NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("crop", [0.75, 1.0])
@pytest.mark.parametrize("size", [[64, 48], [40, 32]])
def test_output_shape_is_image_size(crop, size):
    data = load_config(None, ["data.decode_size=[64,48]", f"data.image_size={size}", f"data.crop_fraction={crop}"]).data
    for train in (True, False):
        x = build_transform(data, train=train, **NORM)(image=_image())["image"]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert tuple(x.shape) == (3, *size)


def test_eval_transform_is_deterministic():
    data = load_config(None, ["data.decode_size=[64,48]", "data.image_size=[32,24]"]).data
    img = _image()
    a = build_transform(data, train=False, **NORM)(image=img)["image"]
    t = build_transform(data, train=False, **NORM)
    assert all(torch.equal(a, t(image=img)["image"]) for _ in range(5))
    # the normalisation is applied: uniform mid-grey maps near 0
    grey = t(image=np.full((64, 48, 3), 128, np.uint8))["image"]
    assert grey.abs().max() < 0.01


def test_train_transform_random_but_seeded():
    data = load_config(None, ["data.decode_size=[64,48]", "data.image_size=[64,48]"]).data
    img = _image(1)
    t = build_transform(data, train=True, **NORM)
    outs = [t(image=img)["image"] for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # random
    t.set_random_seed(123)
    first = [t(image=img)["image"] for _ in range(3)]
    t.set_random_seed(123)
    second = [t(image=img)["image"] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = build_transform(data, train=True, **NORM)
    other.set_random_seed(123)
    assert torch.equal(other(image=img)["image"], first[0])  # the seed, not the object, decides


# ----------------------------------------------------------------------------- decode cache
@pytest.fixture
def photos(demo_root, tmp_path):
    folder = Path(shutil.copytree(demo_root / "eval" / "images", tmp_path / "photos"))
    return sorted(str(p) for p in folder.glob("*.jpg"))[:10]


def _decoder(size=(32, 24)) -> Decoder:
    cfg = load_config(None, [f"data.decode_size={list(size)}"])
    return Decoder(cfg.data, cfg.preprocess)


def test_cache_built_once_then_hit(photos, tmp_path, caplog, monkeypatch):
    dec = _decoder()
    first = build_cache(photos, dec, tmp_path / "cache", progress=False)
    assert first.images.shape == (10, 32, 24, 3) and first.ok.all() and first.errors == []
    assert np.array_equal(first[3], dec(photos[3]))
    import maskcls.data.cache as cache_mod

    def no_decode(path):
        raise AssertionError("a cache hit must not decode")

    monkeypatch.setattr(cache_mod, "_decode", no_decode)
    with caplog.at_level(logging.INFO, logger="maskcls"):
        second = build_cache(photos, dec, tmp_path / "cache", progress=False)
    assert "cache hit" in caplog.text
    assert second.folder == first.folder
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_cache_rebuilt_when_file_changes(photos, tmp_path):
    dec = _decoder()
    first = build_cache(photos, dec, tmp_path / "cache", progress=False)
    old = first[2].copy()
    Image.fromarray(np.full((64, 48, 3), (255, 0, 0), np.uint8)).save(photos[2])  # same name, new content
    second = build_cache(photos, dec, tmp_path / "cache", progress=False)
    assert second.folder != first.folder
    assert not np.array_equal(second[2], old)
    assert second[2][..., 0].min() > 200 and second[2][..., 2].max() < 60
    assert np.array_equal(second[5], first[5])


def test_cache_rebuilt_when_decode_size_changes(photos, tmp_path):
    a = build_cache(photos, _decoder((32, 24)), tmp_path / "cache", progress=False)
    b = build_cache(photos, _decoder((40, 32)), tmp_path / "cache", progress=False)
    assert a.folder != b.folder
    assert b.images.shape == (10, 40, 32, 3)
    assert np.array_equal(b[0], _decoder((40, 32))(load_rgb(photos[0])))


def test_cache_lists_unreadable_files(photos, tmp_path):
    Path(photos[4]).write_bytes(b"\xff\xd8\xff garbage")
    c = build_cache(photos, _decoder(), tmp_path / "cache", progress=False)
    assert list(np.flatnonzero(~c.ok)) == [4]
    assert len(c.errors) == 1 and Path(photos[4]).name in c.errors[0]
    again = build_cache(photos, _decoder(), tmp_path / "cache", progress=False)  # errors survive a hit
    assert again.errors == c.errors and list(np.flatnonzero(~again.ok)) == [4]
