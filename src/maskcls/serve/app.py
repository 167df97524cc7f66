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

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import FileResponse
from fastapi_offline import FastAPIOffline
from PIL import Image, UnidentifiedImageError

from ..data.images import ImageReadError, load_rgb
from .auth import ENV as API_KEY_ENV
from .auth import ApiKeyAuth, require_key_for
from .limits import MULTIPART_SLACK, BodyLimit, Gate, check_request_pixels, mb
from .schemas import BATCH_ERRORS, UPLOAD_ERRORS, BatchPrediction, Health, Prediction
from .service import ServeSettings, Service

STATIC = Path(__file__).parent / "static"


def read_upload(upload: UploadFile, settings: ServeSettings) -> tuple[bytes, tuple[int, int]]:
    """The upload's bytes and the (width, height) its header declares; nothing is decoded yet.

    An HTTPException with a one-line reason naming the file: 413 (bytes, pixels), 415 (format), 400 (empty).
    """
    name = upload.filename or "upload"
    data = upload.file.read(settings.max_bytes + 1)
    if len(data) > settings.max_bytes:
        raise HTTPException(413, f"{name}: file is larger than the limit of {mb(settings.max_bytes)}")
    if not data:
        raise HTTPException(400, f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            w, h = img.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"{name}: too many pixels (limit {settings.max_pixels:,})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise HTTPException(415, f"{name}: not an image (expected JPEG, PNG, WebP, BMP...)") from None
    if w * h > settings.max_pixels:
        raise HTTPException(413, f"{name}: {w}x{h} is more than the limit of {settings.max_pixels:,} pixels")
    return data, (w, h)


def decode(name: str | None, data: bytes) -> np.ndarray:
    try:
        return load_rgb(data)
    except ImageReadError as e:
        raise HTTPException(415, f"{name or 'upload'}: {e.reason}") from None


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
        data, size = read_upload(file, settings)
        check_request_pixels([size], settings.max_request_pixels)
        result = gate.run(lambda: service.predict([decode(file.filename, data)])[0])
        return {"filename": file.filename, **result}

    @app.post("/predict/batch", response_model=BatchPrediction, responses=BATCH_ERRORS,
              summary="classify several photos (repeat the multipart field `files`)")
    def predict_batch(files: list[UploadFile] = File(..., description="several photos")) -> dict:
        if len(files) > settings.max_files:
            raise HTTPException(413, f"{len(files)} files is more than the limit of {settings.max_files} per request")
        uploads, results = [], []
        for f in files:
            try:
                uploads.append(read_upload(f, settings))
                results.append({"filename": f.filename})
            except HTTPException as e:
                results.append({"filename": f.filename, "error": e.detail, "status": e.status_code})
        check_request_pixels([size for _, size in uploads], settings.max_request_pixels)
        good = [r for r in results if "error" not in r]

        def work() -> None:
            images, done = [], []
            for r, (data, _) in zip(good, uploads):
                try:
                    images.append(decode(r["filename"], data))
                    done.append(r)
                except HTTPException as e:
                    r.update(error=e.detail, status=e.status_code)
            for r, out in zip(done, service.predict(images) if images else []):
                r.update(out)

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


def serve(runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          overrides: Sequence[str] = ()) -> None:
    """``maskcls serve``: one process, model loaded before the port opens."""
    import uvicorn

    from ..config import ConfigError

    key = os.environ.get(API_KEY_ENV) or None
    try:
        require_key_for(host, key)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    app = create_app(runs, engine, ServeSettings.from_env(), api_key=key, overrides=overrides)
    print(f"maskcls: serving {len(app.state.service.ensemble.members)} model(s) ({engine}) on http://{host}:{port}/"
          + (" (API key required: header X-API-Key)" if key else ""))
    uvicorn.run(app, host=host, port=port, log_level="info")
