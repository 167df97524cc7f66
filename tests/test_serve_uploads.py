"""Uploads are sized from their headers, never decoded on the web threads; thin photos never get a 500 (issue 22, 2-3)."""
from __future__ import annotations

import io
import struct
import threading
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import IcoImagePlugin, Image

from maskcls.export import export_onnx
from maskcls.serve.app import create_app
from maskcls.serve.limits import header_size, ico_sizes
from maskcls.serve.service import ServeSettings, Service
from test_serve_limits import client_for, png


def png_bomb(w: int, h: int) -> bytes:
    """A 1-bit PNG of w x h made by hand: 10000x10000 is about 12 KB on disk and 100 MP once decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (w + 7) // 8)
    raw = zlib.compress(row * h, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def ico_holding(images: list[bytes], declared=(16, 16)) -> bytes:
    """An ICO whose directory declares ``declared`` for every image (it may lie) and holds ``images``."""
    head = struct.pack("<HHH", 0, 1, len(images))
    offset, entries = 6 + 16 * len(images), b""
    for data in images:
        entries += struct.pack("<BBBBHHII", declared[0] % 256, declared[1] % 256, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
    return head + entries + b"".join(images)


@pytest.fixture
def decodes(monkeypatch):
    """Threads on which Pillow decoded an ICO's image (its reader decodes inside Image.open)."""
    seen: list[str] = []
    real = IcoImagePlugin.IcoFile.frame

    def frame(self, idx):
        seen.append(threading.current_thread().name)
        return real(self, idx)

    monkeypatch.setattr(IcoImagePlugin.IcoFile, "frame", frame)
    return seen


def test_ico_bomb_is_refused_without_decoding(decodes):
    """Issue 22 case 2: a 12 KB ICO holding a 10000x10000 PNG was decoded on open (RSS +5 GB with 64 clients)."""
    bomb = ico_holding([png_bomb(10000, 10000)])
    assert len(bomb) < 20_000
    client, service = client_for()
    r = client.post("/predict", files={"file": ("bomb.ico", bomb, "image/x-icon")})
    assert r.status_code == 413 and "bomb.ico: 10000x10000 is more than the limit" in r.json()["detail"]
    r = client.post("/predict/batch", files=[("files", ("a.png", png(), "image/png")),
                                             ("files", ("bomb.ico", bomb, "image/x-icon"))])
    assert r.status_code == 200
    assert [x.get("status") for x in r.json()["results"]] == [None, 413]
    assert decodes == []  # not a pixel of it was decoded


def test_ico_directory_that_lies_is_read_past(decodes):
    """The directory says 16x16; the embedded PNG's IHDR says 10000x10000: the IHDR counts."""
    assert ico_sizes(ico_holding([png_bomb(10000, 10000)], declared=(16, 16)), "x.ico") == [(10000, 10000)]
    client, _ = client_for()
    r = client.post("/predict", files={"file": ("liar.ico", ico_holding([png_bomb(10000, 10000)]), "image/x-icon")})
    assert r.status_code == 413 and decodes == []


def test_small_ico_is_answered_and_decoded_on_the_bounded_pool(decodes):
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (90, 80, 70)).save(buf, "ICO", sizes=[(48, 48), (16, 16)])
    assert header_size(buf.getvalue(), "ok.ico", 10**6) == (48, 48)
    client, service = client_for()
    r = client.post("/predict", files={"file": ("ok.ico", buf.getvalue(), "image/x-icon")})
    assert r.status_code == 200, r.text
    assert decodes and all(t.startswith("maskcls-infer") for t in decodes)


@pytest.mark.parametrize("data, status", [
    (b"\x00\x00\x01\x00" + struct.pack("<H", 1000) + b"\x00" * 64, 415),  # 1000 images declared
    (b"\x00\x00\x01\x00\x01\x00" + b"\x00" * 4, 415),  # truncated directory
    (ico_holding([b"GIF89a" + b"\x00" * 40]), 415),  # an entry that is neither PNG nor BMP
])
def test_malformed_ico_is_415(data, status):
    client, _ = client_for()
    r = client.post("/predict", files={"file": ("x.ico", data, "image/x-icon")})
    assert r.status_code == status and r.json()["detail"].startswith("x.ico: ")


def test_formats_outside_the_accepted_list_are_415():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PCX")
    client, _ = client_for()
    r = client.post("/predict", files={"file": ("x.pcx", buf.getvalue(), "image/x-pcx")})
    assert r.status_code == 415


def test_a_photo_the_model_fails_on_costs_only_its_own_answer(monkeypatch):
    client, service = client_for()
    real = service.predict

    def predict(images):
        if any(im.shape[1] == 7 for im in images):
            raise ValueError("a shape the model cannot use")
        return real(images)

    monkeypatch.setattr(service, "predict", predict)
    r = client.post("/predict/batch", files=[("files", ("good.png", png(), "image/png")),
                                             ("files", ("odd.png", png((7, 9)), "image/png")),
                                             ("files", ("good2.png", png(), "image/png"))])
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x.get("status") for x in results] == [None, 422, None] and "class_id" in results[2]
    assert results[1]["error"] == "odd.png: 7x9 photo could not be processed (ValueError)"
    r = client.post("/predict", files={"file": ("odd.png", png((7, 9)), "image/png")})
    assert r.status_code == 422


THIN = [(1000, 1), (1, 1000), (20000, 2), (1, 1)]


@pytest.fixture(scope="module", params=["torch", "onnx"])
def real_client(request, tiny_run, tmp_path_factory):
    settings = ServeSettings(max_bytes=2_000_000, max_pixels=1_000_000, threads=1)
    run = tiny_run if request.param == "torch" else export_onnx(tiny_run, tmp_path_factory.mktemp("onnx") / "m.onnx")
    return TestClient(create_app(service=Service.load([run], request.param, settings)))


def test_thin_and_long_photos_are_answered_not_500(real_client):
    """Issue 22 case 3: a cv2 assertion in preprocess/faces.py work_copy gave a 500 and lost the batch."""
    rng = np.random.default_rng(0)

    def photo(w, h):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    for w, h in THIN:
        r = real_client.post("/predict", files={"file": (f"{w}x{h}.png", photo(w, h), "image/png")})
        assert r.status_code == 200, (w, h, r.text)
        assert (r.json()["width"], r.json()["height"]) == (w, h)
    files = [("files", ("good.png", photo(64, 48), "image/png"))] + [
        ("files", (f"{w}x{h}.png", photo(w, h), "image/png")) for w, h in THIN[:3]]
    r = real_client.post("/predict/batch", files=files)
    assert r.status_code == 200 and all("class_id" in x for x in r.json()["results"])


def test_a_worker_holds_a_bounded_share_of_decoded_pixels(monkeypatch):
    """A batch is classified in steps of DECODED_PIXELS_PER_STEP: full-size photos are let go as it goes."""
    from maskcls.serve import app as app_module

    monkeypatch.setattr(app_module, "DECODED_PIXELS_PER_STEP", 2 * 48 * 64)
    client, service = client_for()
    calls = []
    real = service.predict
    monkeypatch.setattr(service, "predict", lambda images: calls.append(len(images)) or real(images))
    r = client.post("/predict/batch", files=[("files", (f"{i}.png", png(), "image/png")) for i in range(4)])
    assert r.status_code == 200 and all("class_id" in x for x in r.json()["results"])
    assert calls == [2, 2]


def test_requests_past_capacity_are_refused_before_their_bytes_are_read(monkeypatch):
    from maskcls.serve import app as app_module

    client, service = client_for(max_inflight=1, max_queue=0)
    read = []
    real = app_module.upload_bytes
    monkeypatch.setattr(app_module, "upload_bytes", lambda f: read.append(f.filename) or real(f))
    gate = client.app.state.gate
    with gate.slot():  # the only place is taken
        r = client.post("/predict", files={"file": ("late.png", png(), "image/png")})
    assert r.status_code == 503 and read == []
    assert client.post("/predict", files={"file": ("ok.png", png(), "image/png")}).status_code == 200
