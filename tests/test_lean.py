"""The lean inference install: ONNX predict and serve with torch, timm and albumentations unimportable."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maskcls.config import DataConfig
from maskcls.data.eval_transform import EvalTransform
from maskcls.data.transforms import build_transform

SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAINING_ONLY = ("torch", "torchvision", "timm", "albumentations", "sklearn", "matplotlib", "optuna", "onnx",
                 "tensorboard")
# Run first in the child: importing any training-only package fails as if it were not installed.
BLOCK = f"import sys\nfor _m in {TRAINING_ONLY!r}:\n    sys.modules[_m] = None\n"
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.mark.parametrize("data", [DataConfig(), DataConfig(crop_fraction=1.0),
                                  DataConfig(decode_size=[101, 77], image_size=[60, 50], crop_fraction=0.9),
                                  DataConfig(decode_size=[64, 48], image_size=[64, 48])])
def test_numpy_transform_matches_albumentations(data, demo_root):
    from maskcls.config import PreprocessConfig
    from maskcls.data.decode import Decoder

    decoder = Decoder(data, PreprocessConfig())
    photos = sorted((demo_root / "eval" / "images").iterdir())[:3]
    rng = np.random.default_rng(0)
    images = [decoder(str(p)) for p in photos] + [rng.integers(0, 256, (*data.decode_size, 3), dtype=np.uint8)]
    ours, theirs = EvalTransform(data, **NORM), build_transform(data, train=False, **NORM)
    for img in images:
        expected = theirs(image=img)["image"].numpy()
        got = ours(img)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_tta_views_are_the_flip_and_two_shifts():
    from maskcls.predict import tta_views

    x = np.random.default_rng(1).random((2, 3, 8, 64)).astype(np.float32)
    assert len(tta_views(x, [])) == 1 and tta_views(x, [])[0] is x
    plain, flip, right, left = tta_views(x, ["flip", "shift"])
    np.testing.assert_array_equal(flip, x[..., ::-1])
    np.testing.assert_array_equal(right[..., 2:], x[..., :-2])  # 64 // 32 = 2 pixels, wrapped around
    np.testing.assert_array_equal(left[..., :-2], x[..., 2:])


@pytest.fixture(scope="module")
def lone_onnx(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported, then copied alone (no run folder, no checkpoint) as a deployment would ship it."""
    from maskcls.export import export_onnx

    folder = tmp_path_factory.mktemp("lean")
    path = export_onnx(tiny_run, folder / "export" / "model.onnx")
    (folder / "model").mkdir()
    return Path(shutil.copy(path, folder / "model" / "model.onnx"))


def _child(code: str, tmp_path: Path, **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    args = [sys.executable, "-c", BLOCK + code]
    if kw.pop("background", False):
        return subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_block_really_blocks(tmp_path):
    r = _child("import torch", tmp_path)
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_onnx_predict_without_torch(lone_onnx, tiny_run, demo_root, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((demo_root / "eval" / "images").iterdir())[:4]:
        shutil.copy(p, photos / p.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "pred.csv"
    code = (f"from maskcls.cli import main\n"
            f"code = main(['predict', {str(lone_onnx)!r}, '--source', {str(photos)!r}, '--out', {str(out)!r}, "
            f"'--probs', '--allow-missing', '-q'])\n"
            f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {TRAINING_ONLY!r} and sys.modules[m])\n"
            f"print('LOADED', loaded)\n"
            f"sys.exit(code)\n")
    r = _child(code, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LOADED []" in r.stdout
    assert "trained on drawn demo data" in r.stderr  # said once on the terminal as well as in the CSV
    table = pd.read_csv(out)
    assert len(table) == 5
    bad = table[table["file"] == "broken.jpg"].iloc[0]
    assert "corrupt" in bad["error"] or "not an image" in bad["error"]
    good = table[table["file"] != "broken.jpg"]
    assert good["error"].isna().all() and good["class_id"].notna().all()
    assert good["warning"].str.contains("drawn demo data").all()
    # the same numbers as the torch engine on the training install (this process)
    from maskcls.predict import Ensemble

    expected = Ensemble.load([tiny_run], device="cpu").predict_images([str(photos / f) for f in good["file"]],
                                                                   photos=True)  # a folder: framed like portraits
    got = good[[f"p{k}" for k in range(18)]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert (good["class_id"].to_numpy() == expected.argmax(1)).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_onnx_serve_without_torch(lone_onnx, tiny_run, demo_root, tmp_path):
    import httpx

    port = _free_port()
    code = (f"from maskcls.cli import main\n"
            f"sys.exit(main(['serve', {str(lone_onnx)!r}, '--port', '{port}', '-q']))\n")
    proc = _child(code, tmp_path, background=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                health = httpx.get(url + "/health", timeout=2).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.3)
        else:
            pytest.fail("the lean service did not start")
        assert health["engine"] == "onnx" and any("drawn demo data" in w for w in health["warnings"])
        photo = sorted((demo_root / "eval" / "images").iterdir())[0]
        body = httpx.post(url + "/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
                          timeout=30).json()
        from maskcls.predict import Ensemble

        expected = Ensemble.load([tiny_run], device="cpu").predict_images([str(photo)], photos=True)[0]
        assert body["class_id"] == int(expected.argmax())
        assert body["confidence"] == pytest.approx(float(expected.max()), abs=2e-4)
        assert any("drawn demo data" in w for w in body["warnings"])
        assert httpx.get(url + "/docs", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_training_commands_say_how_to_install(tmp_path):
    r = _child("from maskcls.cli import main\nsys.exit(main(['train', 'train.epochs=1', '-q']))", tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "pip install 'maskcls[train]'" in lines[0] and lines[0].startswith("maskcls: error: `maskcls train`")
    r = _child("from maskcls.cli import main\nsys.exit(main(['cfg', 'train.epochs']))", tmp_path)
    assert r.returncode == 0 and "train.epochs=3" in r.stdout  # the CLI itself works in the lean install


def test_slim_best_checkpoint(tiny_run, demo_root, tmp_path):
    """best.pt keeps what inference needs; last.pt what resume needs; predict, export and serve load best.pt."""
    from fastapi.testclient import TestClient

    from maskcls.checkpoint import load_checkpoint
    from maskcls.export import export_onnx
    from maskcls.predict import Ensemble
    from maskcls.serve.app import create_app
    from maskcls.serve.service import ServeSettings

    best_file = Path(tiny_run) / "weights" / "best.pt"
    best, last = load_checkpoint(best_file), load_checkpoint(tiny_run, "last")
    assert not {"optimizer", "scheduler", "scaler", "history"} & set(best)
    assert {"model", "config", "norm", "training_data", "metrics"} <= set(best)
    assert {"optimizer", "scheduler", "scaler", "history", "bad_epochs"} <= set(last)
    assert best_file.stat().st_size < 0.6 * (Path(tiny_run) / "weights" / "last.pt").stat().st_size

    photo = str(sorted((demo_root / "eval" / "images").iterdir())[0])
    expected = Ensemble.load([best_file], device="cpu").predict_images([photo], photos=True)[0]
    onnx = export_onnx(best_file, tmp_path / "m.onnx")
    np.testing.assert_allclose(Ensemble.load([onnx], engine="onnx").predict_images([photo], photos=True)[0], expected, atol=2e-4)
    client = TestClient(create_app([best_file], settings=ServeSettings(threads=1)))
    body = client.post("/predict", files={"file": ("a.jpg", open(photo, "rb").read(), "image/jpeg")}).json()
    assert body["class_id"] == int(expected.argmax())
    meta = json.loads(__import__("onnx").load(str(onnx)).metadata_props[0].value)
    assert meta["training_data"]["drawn_demo"] is True
