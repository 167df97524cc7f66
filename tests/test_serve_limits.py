"""Service guards (issue #10): streamed body limit, pixel budget per request, bounded concurrency, API key.

A stub service stands in for the model where only the guards matter, so these tests take milliseconds.
"""
from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from maskcls.serve import app as app_module
from maskcls.serve.app import create_app
from maskcls.serve.auth import is_loopback, require_key_for
from maskcls.serve.limits import BodyLimit, Gate
from maskcls.serve.service import ServeSettings
from maskcls.summary import summarize

LIMITS = dict(max_bytes=200_000, max_pixels=1_000_000, max_files=4, max_request_pixels=1_500_000, threads=1)


class StubService:
    """What create_app needs of a Service; ``predict`` may block until ``release`` is set."""

    def __init__(self, settings: ServeSettings, block: bool = False):
        self.settings, self.block = settings, block
        self.release, self.entered = threading.Event(), threading.Semaphore(0)
        self.threads: set[str] = set()

    def info(self) -> dict:  # every field of the typed /health response (serve/schemas.py)
        return {"status": "ok", "engine": "onnx", "runs": [], "members": 0, "model": "stub", "head": "multi",
                "image_size": [64, 48], "decode_size": [64, 48], "face_crop": False, "low_confidence_below": 0.5,
                "warnings": [], "limits": dataclasses.asdict(self.settings)}

    def predict(self, images):
        self.threads.add(threading.current_thread().name)
        self.entered.release()
        if self.block:
            self.release.wait(10)
        r = summarize(np.full(18, 1 / 18))  # class 0: a schema-valid result
        return [{**r, "width": int(im.shape[1]), "height": int(im.shape[0]), "faces": [{"box": None, "result": r}],
                 "warnings": []} for im in images]


def client_for(**kw) -> tuple[TestClient, StubService]:
    api_key = kw.pop("api_key", None)
    block = kw.pop("block", False)
    service = StubService(ServeSettings(**{**LIMITS, **kw}), block=block)
    return TestClient(create_app(service=service, api_key=api_key)), service


def png(size=(48, 64), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def multipart(parts: list[tuple[str, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, data in parts:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


# ----------------------------------------------------------------------------- 1. body limit
def test_chunked_upload_over_the_limit_is_413():
    client, _ = client_for()
    body = multipart([("big.png", b"\0" * 600_000)])

    def chunks():  # a generator body: httpx sends it chunked, without Content-Length
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    r = client.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 413 and r.json()["detail"].startswith("request is larger than the limit")


def test_chunked_upload_under_the_limit_is_served():
    client, _ = client_for()
    body = multipart([("ok.png", png())])
    r = client.post("/predict", content=iter([body[:100], body[100:]]),
                    headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 200, r.text
    assert r.json()["width"] == 48


def test_declared_content_length_over_the_limit_is_413_before_reading():
    client, _ = client_for()
    r = client.post("/predict", content=b"x" * 300_000, headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 413


def test_body_limit_stops_reading_a_stream():
    """The middleware itself: a 100 MB stream is cut after the limit, not read to its end."""
    received = []

    async def app(scope, receive, send):  # reads the whole body, like a form parser
        while True:
            m = await receive()
            if not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"\0" * 1_000_000, "more_body": len(received) < 100}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/predict", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimit(app, lambda path: 5_000_000)(scope, receive, send))
    assert sent[0]["status"] == 413 and len(received) == 6  # 6 MB read of 100, then 413


def test_get_requests_get_a_small_body_limit():
    client, _ = client_for()
    assert client.request("GET", "/health", content=b"x" * 200_000).status_code == 413
    assert client.get("/health").status_code == 200


# ----------------------------------------------------------------------------- 2. pixel budget
def test_pixel_bomb_batch_is_413_before_decoding(monkeypatch):
    """Small files declaring many pixels: each is under max_pixels, together they pass the request budget."""
    decoded = []
    monkeypatch.setattr(app_module, "load_rgb", lambda data: decoded.append(1))
    client, _ = client_for()
    bomb = png((900, 900), "L")  # 810,000 pixels in ~1 kB
    assert len(bomb) < 10_000
    r = client.post("/predict/batch", files=[("files", (f"{i}.png", bomb, "image/png")) for i in range(2)])
    assert r.status_code == 413 and "1,620,000 pixels" in r.json()["detail"] and "per request" in r.json()["detail"]
    assert decoded == []


def test_batch_within_the_pixel_budget_is_served():
    client, _ = client_for()
    r = client.post("/predict/batch", files=[("files", (f"{i}.png", png(), "image/png")) for i in range(3)])
    assert r.status_code == 200 and [x["width"] for x in r.json()["results"]] == [48, 48, 48]


# ----------------------------------------------------------------------------- concurrency
def _post_in_thread(client, out: list):
    t = threading.Thread(target=lambda: out.append(client.post("/predict", files={"file": ("a.png", png())})))
    t.start()
    return t


def test_beyond_inflight_and_queue_is_503_with_retry_after():
    client, service = client_for(max_inflight=1, max_queue=0, block=True)
    first: list = []
    t = _post_in_thread(client, first)
    assert service.entered.acquire(timeout=10)  # the first request holds the only worker
    r = client.post("/predict", files={"file": ("b.png", png())})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
    assert client.get("/health").status_code == 200  # the service itself still answers
    service.release.set()
    t.join(10)
    assert first[0].status_code == 200


def test_queue_wait_runs_out_with_503():
    client, service = client_for(max_inflight=1, max_queue=1, queue_timeout=0, block=True)
    first: list = []
    t = _post_in_thread(client, first)
    assert service.entered.acquire(timeout=10)
    t0 = time.perf_counter()
    r = client.post("/predict", files={"file": ("b.png", png())})
    assert r.status_code == 503 and "waited" in r.json()["detail"] and time.perf_counter() - t0 < 5
    service.release.set()
    t.join(10)
    assert first[0].status_code == 200


def test_inference_runs_on_a_fixed_pool_of_threads():
    client, service = client_for(max_inflight=2)
    threads = [_post_in_thread(client, out := []) for _ in range(12)]
    for t in threads:
        t.join(20)
    assert 1 <= len(service.threads) <= 2 and all(n.startswith("maskcls-infer") for n in service.threads)


def test_gate_counts_release_after_errors():
    gate = Gate(workers=1, queue=0, timeout=1)
    with pytest.raises(ZeroDivisionError):
        gate.run(lambda: 1 / 0)
    time.sleep(0.05)
    assert gate.run(lambda: 7) == 7 and gate.pending == 0


# ----------------------------------------------------------------------------- API key
def test_api_key_required_when_set():
    client, _ = client_for(api_key="s3cret")
    files = {"file": ("a.png", png())}
    assert client.post("/predict", files=files).status_code == 401
    assert client.post("/predict", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/health").status_code == 401
    assert client.post("/predict", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/").status_code == 200  # the page holds no data


def test_no_key_is_fine_on_loopback_and_refused_beyond():
    client, _ = client_for()
    assert client.get("/health").status_code == 200
    far = TestClient(create_app(service=StubService(ServeSettings(**LIMITS))), base_url="http://10.1.2.3:8000")
    r = far.get("/health")
    assert r.status_code == 403 and "MASKCLS_API_KEY" in r.json()["detail"]
    near = TestClient(create_app(service=StubService(ServeSettings(**LIMITS))), base_url="http://127.0.0.1:8000")
    assert near.get("/health").status_code == 200


def test_binding_beyond_loopback_needs_a_key(capsys, monkeypatch):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    require_key_for("127.0.0.1", None)
    require_key_for("0.0.0.0", "k")
    with pytest.raises(ValueError, match="MASKCLS_API_KEY"):
        require_key_for("0.0.0.0", None)
    from maskcls.cli import main

    monkeypatch.delenv("MASKCLS_API_KEY", raising=False)
    assert main(["serve", "runs/none", "--host", "0.0.0.0"]) == 2  # before any model is loaded
    err = capsys.readouterr().err
    assert "MASKCLS_API_KEY" in err and len(err.strip().splitlines()) == 1


def test_settings_from_env_reads_new_limits(monkeypatch):
    monkeypatch.setenv("MASKCLS_MAX_INFLIGHT", "3")
    monkeypatch.setenv("MASKCLS_MAX_REQUEST_PIXELS", "1000")
    s = ServeSettings.from_env()
    assert (s.max_inflight, s.max_request_pixels) == (3, 1000)
