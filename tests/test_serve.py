"""The HTTP service: predictions, limits, clear errors, several faces, the page."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from maskcls import labels as L
from maskcls.data.decode import Decoder
from maskcls.decision import decide
from maskcls.predict import Ensemble
from maskcls.serve.app import create_app
from maskcls.serve.service import ServeSettings, Service
from maskcls.summary import summarize

SETTINGS = ServeSettings(max_bytes=200_000, max_pixels=1_000_000, max_files=4, threads=1)


@pytest.fixture(scope="module")
def service(tiny_run):
    return Service.load([tiny_run], settings=SETTINGS)


@pytest.fixture(scope="module")
def client(service):
    return TestClient(create_app(service=service))


@pytest.fixture(scope="module")
def photo(demo_root) -> Path:
    return sorted((demo_root / "eval" / "images").iterdir())[0]


def jpeg(size=(48, 64), color=(120, 90, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def test_predict_matches_predictor(client, tiny_run, photo):
    r = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    pred = Ensemble.load([tiny_run], device="cpu")
    expected = pred.predict_images([str(photo)], photos=True)[0]  # framed first
    c = int(decide(expected[None], pred.decision)[0])  # argmax plus the run's class bias
    assert body["class_id"] == c and body["filename"] == photo.name
    assert (body["mask"], body["gender"], body["age"]) == tuple(L.describe(c)[k] for k in ("mask", "gender", "age"))
    assert body["confidence"] == pytest.approx(expected[c], abs=1e-4)
    p = body["probabilities"]
    assert set(p) == {"mask", "gender", "age"} and set(p["age"]) == {"<30", "30-59", ">=60"}
    assert p["mask"]["wear"] == pytest.approx(expected[:6].sum(), abs=1e-3)
    assert sum(p["gender"].values()) == pytest.approx(1.0, abs=1e-3)
    assert body["faces"] == [{"box": None, "result": {k: body[k] for k in body["faces"][0]["result"]}}]
    assert (body["width"], body["height"]) == Image.open(photo).size


def test_axis_marginals():
    p = np.zeros(18)
    p[L.encode(2, 1, 0)] = 0.75
    p[L.encode(0, 1, 2)] = 0.25
    a = summarize(p)["probabilities"]
    assert a["mask"] == {"wear": 0.25, "incorrect": 0.0, "not_wear": 0.75}
    assert a["gender"]["female"] == 1.0 and a["age"] == {"<30": 0.75, "30-59": 0.0, ">=60": 0.25}


def test_batch_with_one_bad_file(client, demo_root):
    paths = sorted((demo_root / "eval" / "images").iterdir())[:2]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    files.append(("files", ("notes.txt", b"hello, not a photo", "text/plain")))
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [paths[0].name, paths[1].name, "notes.txt"]
    assert all("class_id" in x for x in results[:2])
    assert results[2]["status"] == 415 and "not an image" in results[2]["error"]


def test_batch_too_many_files(client):
    files = [("files", (f"{i}.jpg", jpeg(), "image/jpeg")) for i in range(SETTINGS.max_files + 1)]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 413 and "limit of 4" in r.json()["detail"]


def test_not_an_image_is_415_with_message(client):
    r = client.post("/predict", files={"file": ("cv.pdf", b"%PDF-1.4 not an image", "application/pdf")})
    assert r.status_code == 415
    assert r.json()["detail"].startswith("cv.pdf: not an image")


def test_truncated_image_is_415(client):
    r = client.post("/predict", files={"file": ("cut.jpg", jpeg()[:300], "image/jpeg")})
    assert r.status_code == 415 and "cut.jpg" in r.json()["detail"]


def test_empty_file_is_400(client):
    r = client.post("/predict", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_missing_field_is_422(client):
    assert client.post("/predict", files={"photo": ("a.jpg", jpeg(), "image/jpeg")}).status_code == 422


def test_too_many_bytes_is_413(client):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(buf, "PNG")  # ~480 kB of noise
    assert len(buf.getvalue()) > SETTINGS.max_bytes
    r = client.post("/predict", files={"file": ("noise.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_too_many_pixels_is_413(client):
    buf = io.BytesIO()
    Image.new("L", (1200, 1000)).save(buf, "PNG")  # 1.2 MP of black compresses to a few kB
    assert len(buf.getvalue()) < SETTINGS.max_bytes
    r = client.post("/predict", files={"file": ("big.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


def test_health_and_page(client, tiny_run):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["runs"] == [str(tiny_run)] and h["members"] == 1
    assert h["limits"]["max_bytes"] == SETTINGS.max_bytes and h["face_crop"] is False
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'type="file"' in html and "getUserMedia" in html and "<canvas" in html
    assert "http://" not in html.replace("http://localhost", "") and "https://" not in html  # no CDN


def test_two_faces_two_results(service, tiny_run, photo, monkeypatch):
    """A detector that finds two faces gives two boxed results, each from its own crop."""
    from maskcls.preprocess.faces import crop_box

    boxes = [(2, 4, 30, 40), (20, 20, 44, 60)]
    monkeypatch.setattr(Decoder, "faces", lambda self, img: list(boxes))
    faces_client = TestClient(create_app(service=Service(service.ensemble, runs=service.runs, settings=SETTINGS,
                                                         face_crop=True)))
    r = faces_client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert [f["box"] for f in faces] == [list(b) for b in boxes]
    img = np.asarray(Image.open(photo).convert("RGB"))
    pred = Ensemble.load([tiny_run], device="cpu")
    for f, b in zip(faces, boxes):
        x0, y0, x1, y1 = crop_box(b, img.shape, pred.cfg.preprocess.face_margin)
        expected = pred.predict_images([img[y0:y1, x0:x1]])[0]
        c = int(decide(expected[None], pred.decision)[0])
        assert f["result"]["class_id"] == c
        assert f["result"]["confidence"] == pytest.approx(expected[c], abs=1e-4)
    assert r.json()["class_id"] == faces[0]["result"]["class_id"]  # top level: the largest face


def test_no_face_found_falls_back_to_whole_photo(service, photo, monkeypatch):
    monkeypatch.setattr(Decoder, "faces", lambda self, img: [])
    svc = Service(service.ensemble, settings=SETTINGS, face_crop=True)
    out = svc.predict([np.asarray(Image.open(photo).convert("RGB"))])[0]
    assert [f["box"] for f in out["faces"]] == [None]


def test_onnx_engine_service(tiny_run, photo, tmp_path):
    import shutil

    from maskcls.export import export_onnx

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    export_onnx(run)
    client = TestClient(create_app([run], engine="onnx", settings=SETTINGS))
    a = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    assert client.get("/health").json()["engine"] == "onnx"
    pred = Ensemble.load([run], device="cpu")
    b = pred.predict_images([str(photo)], photos=True)[0]  # the service frames whole photos
    c = int(decide(b[None], pred.decision)[0])
    assert a["class_id"] == c and a["confidence"] == pytest.approx(b[c], abs=1e-4)


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("MASKCLS_MAX_BYTES", "123")
    monkeypatch.setenv("MASKCLS_THREADS", "2")
    s = ServeSettings.from_env()
    assert (s.max_bytes, s.threads, s.max_pixels) == (123, 2, ServeSettings().max_pixels)


def test_bad_run_is_a_clear_error(tmp_path, capsys):
    from maskcls.cli import main

    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_whole_photos_are_framed_like_portraits(service, photo, monkeypatch):
    from maskcls.preprocess import framing

    calls = []
    real = framing.frame_photo
    monkeypatch.setattr(framing, "frame_photo", lambda *a, **k: calls.append(1) or real(*a, **k))
    service.predict([np.asarray(Image.open(photo).convert("RGB"))])
    assert calls


def test_serve_command_line_overrides_reach_the_model(tiny_run, monkeypatch):
    """`maskcls serve RUN key=value` serves with them (they were parsed and dropped before)."""
    from maskcls import cli
    from maskcls.serve import app as app_module

    got = {}
    monkeypatch.setattr(app_module, "serve", lambda runs, **kw: got.update(kw, runs=runs))
    assert cli.main(["serve", str(tiny_run), "eval.min_confidence=0.9", "preprocess.detector=mtcnn"]) == 0
    assert got["overrides"] == ["eval.min_confidence=0.9", "preprocess.detector=mtcnn"]
    served = Service.load([tiny_run], settings=SETTINGS, overrides=got["overrides"])
    assert served.min_confidence == 0.9 and served.ensemble.cfg.preprocess.detector == "mtcnn"


def test_summarize_gives_the_mask_its_own_confidence():
    p = np.zeros(18)
    p[L.encode(0, 0, 0)], p[L.encode(0, 1, 1)], p[L.encode(2, 0, 0)] = 0.3, 0.3, 0.4  # class 12 wins, mask "wear" 0.6
    one = summarize(p)
    assert (one["class_id"], one["mask"], one["mask_confidence"], one["confidence"]) == (12, "not_wear", 0.4, 0.4)
    bias = [0.0] * 18
    bias[L.encode(0, 1, 1)] = 1.0  # the decision moves the class: the mask and its confidence follow it
    moved = summarize(p, decision={"class_bias": bias}, min_confidence=0.5)
    assert (moved["mask"], moved["mask_confidence"], moved["gender"], moved["age"]) == ("wear", 0.6, "female", "30-59")
    assert moved["low_confidence"] and moved["confidence"] == 0.3
    many = summarize(np.stack([p, p]))
    assert isinstance(many, list) and many == [one, one]
