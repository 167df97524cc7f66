"""FastAPI service: POST /predict, POST /predict/batch, GET /health and the web page at /.

Start one process with ``maskcls serve RUN``; for several workers use the
factory ``app_from_env`` (see docs/serving.md). Each worker loads the model
once, when the app is built. Uploads are checked before any decoding: body
bytes while they stream in (413, serve/limits.py), pixels per file and per
request from the image headers (413) and format (415), each with a one-line
JSON ``detail``. Decoding and inference run on a fixed pool of threads with a
bounded queue (503 + Retry-After beyond it); an optional API key guards it
all (serve/auth.py). Responses are typed (``schemas``), and /docs is served
from the Swagger UI files that ship in the ``fastapi-offline`` package: no
CDN, works without internet.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import FileResponse
from fastapi_offline import FastAPIOffline

from ..data.images import ImageReadError, load_rgb
from .auth import ENV as API_KEY_ENV
from .auth import ApiKeyAuth, require_key_for
from .limits import (DECODED_PIXELS_PER_STEP, MULTIPART_SLACK, BodyLimit, Gate, check_request_pixels, header_size,
                     mb)
from .schemas import BATCH_ERRORS, UPLOAD_ERRORS, BatchPrediction, Health, Prediction
from .service import ServeSettings, Service

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("maskcls")


def check_upload(upload: UploadFile, settings: ServeSettings) -> tuple[int, int]:
    """The (width, height) the upload's header declares, reading only header bytes (the file stays spooled).

    An HTTPException with a one-line reason naming the file: 413 (bytes, pixels), 415 (format), 400 (empty).
    """
    name = upload.filename or "upload"
    f = upload.file
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    if size > settings.max_bytes:
        raise HTTPException(413, f"{name}: file is larger than the limit of {mb(settings.max_bytes)}")
    if not size:
        raise HTTPException(400, f"{name}: empty file")
    return header_size(f, name, settings.max_pixels)  # header only; ICO by its directory


def upload_bytes(upload: UploadFile) -> bytes:
    upload.file.seek(0)
    return upload.file.read()


def read_upload(upload: UploadFile, settings: ServeSettings) -> tuple[bytes, tuple[int, int]]:
    """The upload's bytes and the (width, height) its header declares; nothing is decoded yet."""
    size = check_upload(upload, settings)
    return upload_bytes(upload), size


def decode(name: str | None, data: bytes) -> np.ndarray:
    try:
        return load_rgb(data)
    except ImageReadError as e:
        raise HTTPException(415, f"{name or 'upload'}: {e.reason}") from None


def predict_each(service: Service, results: list[dict], images: list[np.ndarray]) -> None:
    """Fill ``results`` with the answers for ``images``; a photo the model fails on gets a 422 error of its own.

    The whole batch runs at once; only if that fails is each photo tried alone, so the good photos' answers survive.
    """
    try:
        outs = service.predict(images) if images else []
    except Exception:
        outs = None
    if outs is not None:
        for r, out in zip(results, outs):
            r.update(out)
        return
    for r, img in zip(results, images):
        try:
            r.update(service.predict([img])[0])
        except Exception as e:
            log.exception("%s (%dx%d) could not be processed", r["filename"], img.shape[1], img.shape[0])
            r.update(error=f"{r['filename'] or 'upload'}: {img.shape[1]}x{img.shape[0]} photo could not be processed "
                           f"({type(e).__name__})", status=422)


def body_limits(settings: ServeSettings):
    """Bytes a request body may have, by path: one file, a batch, or nothing much."""
    one = settings.max_bytes + MULTIPART_SLACK
    batch = min(settings.max_files * settings.max_bytes, settings.max_request_bytes) + MULTIPART_SLACK
    return lambda path: batch if path.endswith("/batch") else (one if path.startswith("/predict") else MULTIPART_SLACK)


def create_app(runs: Sequence[str | Path] = (), engine: str = "torch", settings: ServeSettings | None = None, *,
               service: Service | None = None, face_crop: bool | None = None, api_key: str | None = None,
               overrides: Sequence[str] = ()) -> FastAPI:
    """The app with its model loaded (once, here); pass ``service`` to reuse a loaded one.

    ``api_key``: when set, every request but the page and the docs needs header X-API-Key (serve/auth.py).
    """
    settings = settings or (service.settings if service else ServeSettings())
    service = service or Service.load(runs, engine, settings, face_crop=face_crop, overrides=overrides)
    app = FastAPIOffline(title="maskcls", version=_version(), static_url="/docs/static",  # open like /docs
                         swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from an online validator
                         description="Mask, gender and age band of the faces in a photo. Gender and age are guesses "
                                     "from appearance: never use them to decide anything about a person.")
    app.state.service = service
    gate = app.state.gate = Gate(settings.max_inflight, settings.max_queue, settings.queue_timeout)
    app.add_middleware(BodyLimit, limit_for=body_limits(settings))
    app.add_middleware(ApiKeyAuth, key=api_key)  # outermost: no key, no body read

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health", response_model=Health, summary="what is loaded: model, runs, engine, limits, warnings")
    def health() -> dict:
        return service.info()

    @app.post("/predict", response_model=Prediction, responses=UPLOAD_ERRORS,
              summary="classify one photo (multipart field `file`)")
    def predict(file: UploadFile = File(..., description="one photo (JPEG, PNG...)")) -> dict:
        with gate.slot():  # before the upload's bytes are read: past capacity, 503 at once
            size = check_upload(file, settings)
            check_request_pixels([size], settings.max_request_pixels)
            result = {"filename": file.filename}
            gate.run(lambda: predict_each(service, [result], [decode(file.filename, upload_bytes(file))]))
        if "error" in result:
            raise HTTPException(result["status"], result["error"])
        return result

    @app.post("/predict/batch", response_model=BatchPrediction, responses=BATCH_ERRORS,
              summary="classify several photos (repeat the multipart field `files`)")
    def predict_batch(files: list[UploadFile] = File(..., description="several photos")) -> dict:
        if len(files) > settings.max_files:
            raise HTTPException(413, f"{len(files)} files is more than the limit of {settings.max_files} per request")
        with gate.slot():  # before the uploads' bytes are read: past capacity, 503 at once
            uploads, results = [], []
            for f in files:
                try:
                    uploads.append((f, check_upload(f, settings)))
                    results.append({"filename": f.filename})
                except HTTPException as e:
                    results.append({"filename": f.filename, "error": e.detail, "status": e.status_code})
            check_request_pixels([size for _, size in uploads], settings.max_request_pixels)
            good = [r for r in results if "error" not in r]

            def work() -> None:
                """Decode one file at a time; classify as soon as DECODED_PIXELS_PER_STEP are held, then drop them."""
                images, done, held = [], [], 0
                for r, (f, _) in zip(good, uploads):
                    try:
                        img = decode(r["filename"], upload_bytes(f))
                    except HTTPException as e:
                        r.update(error=e.detail, status=e.status_code)
                        continue
                    images.append(img)
                    done.append(r)
                    held += img.shape[0] * img.shape[1]
                    if held >= DECODED_PIXELS_PER_STEP:
                        predict_each(service, done, images)
                        images, done, held = [], [], 0
                predict_each(service, done, images)

            gate.run(work)
        return {"results": results}

    return app


def _version() -> str:
    from .. import __version__

    return __version__


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` / gunicorn workers: MASKCLS_RUNS (comma separated), MASKCLS_ENGINE, ..."""
    runs = [r for r in os.environ.get("MASKCLS_RUNS", "").split(",") if r.strip()]
    if not runs:
        raise RuntimeError("set MASKCLS_RUNS to one or more run folders, comma separated")
    return create_app([r.strip() for r in runs], os.environ.get("MASKCLS_ENGINE", "torch"), ServeSettings.from_env(),
                      api_key=os.environ.get(API_KEY_ENV) or None)


def bind(host: str, port: int):
    """A listening TCP socket on ``host:port``, or a ConfigError line saying why not (e.g. the port is in use).

    Binding before anything is announced means the address printed is one that really listens.
    """
    import errno
    import socket

    from ..config import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a recently closed port is free
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use by another program: stop it or pass --port N") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def serve(runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          overrides: Sequence[str] = ()) -> None:
    """``maskcls serve``: one process; the port is bound first, the model loaded, then the address announced."""
    import uvicorn

    from ..config import ConfigError

    key = os.environ.get(API_KEY_ENV) or None
    try:
        require_key_for(host, key)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sock = bind(host, port)
    try:
        app = create_app(runs, engine, ServeSettings.from_env(), api_key=key, overrides=overrides)
        port = sock.getsockname()[1]
        print(f"maskcls: serving {len(app.state.service.ensemble.members)} model(s) ({engine}) on "
              f"http://{host}:{port}/" + (" (API key required: header X-API-Key)" if key else ""), flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
    finally:
        sock.close()
