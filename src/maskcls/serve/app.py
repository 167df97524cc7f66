"""FastAPI service: POST /predict, POST /predict/batch, GET /health and the web page at /.

Start one process with ``maskcls serve RUN``; for several workers use the
factory ``app_from_env`` (see docs/serving.md). Each worker loads the model
once, when the app is built. Uploads are checked before any decoding: size
(413), pixel count (413) and format (415), each with a one-line JSON
``detail``.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image, UnidentifiedImageError

from ..data.images import ImageReadError, load_rgb
from .service import ServeSettings, Service

STATIC = Path(__file__).parent / "static"
MULTIPART_SLACK = 64 * 1024  # headers and boundaries around the file bytes


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB"


def read_image(upload: UploadFile, settings: ServeSettings) -> np.ndarray:
    """The upload as RGB pixels, or an HTTPException with a one-line reason naming the file."""
    name = upload.filename or "upload"
    data = upload.file.read(settings.max_bytes + 1)
    if len(data) > settings.max_bytes:
        raise HTTPException(413, f"{name}: file is larger than the limit of {_mb(settings.max_bytes)}")
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
    try:
        return load_rgb(data)
    except ImageReadError as e:
        raise HTTPException(415, f"{name}: {e.reason}") from None


def create_app(runs: Sequence[str | Path] = (), engine: str = "torch", settings: ServeSettings | None = None, *,
               service: Service | None = None, face_crop: bool | None = None) -> FastAPI:
    """The app with its model loaded (once, here); pass ``service`` to reuse a loaded one."""
    settings = settings or (service.settings if service else ServeSettings())
    service = service or Service.load(runs, engine, settings, face_crop=face_crop)
    app = FastAPI(title="maskcls", description="Mask, gender and age band of the faces in a photo.")
    app.state.service = service

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        """413 from Content-Length before the multipart body is read and spooled."""
        size = request.headers.get("content-length")
        files = settings.max_files if request.url.path.endswith("/batch") else 1
        if size and size.isdigit() and int(size) > files * (settings.max_bytes + MULTIPART_SLACK):
            return JSONResponse({"detail": f"request is larger than the limit of {_mb(files * settings.max_bytes)}"},
                                status_code=413)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict:
        return service.info()

    @app.post("/predict")
    def predict(file: UploadFile = File(..., description="one photo (JPEG, PNG...)")) -> dict:
        img = read_image(file, settings)
        return {"filename": file.filename, **service.predict([img])[0]}

    @app.post("/predict/batch")
    def predict_batch(files: list[UploadFile] = File(..., description="several photos")) -> dict:
        if len(files) > settings.max_files:
            raise HTTPException(413, f"{len(files)} files is more than the limit of {settings.max_files} per request")
        images, results = [], []
        for f in files:
            try:
                images.append(read_image(f, settings))
                results.append({"filename": f.filename})
            except HTTPException as e:
                results.append({"filename": f.filename, "error": e.detail, "status": e.status_code})
        good = [r for r in results if "error" not in r]
        for r, out in zip(good, service.predict(images) if images else []):
            r.update(out)
        return {"results": results}

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` / gunicorn workers: MASKCLS_RUNS (comma separated), MASKCLS_ENGINE, ..."""
    runs = [r for r in os.environ.get("MASKCLS_RUNS", "").split(",") if r.strip()]
    if not runs:
        raise RuntimeError("set MASKCLS_RUNS to one or more run folders, comma separated")
    return create_app([r.strip() for r in runs], os.environ.get("MASKCLS_ENGINE", "torch"), ServeSettings.from_env())


def serve(runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000, engine: str = "torch") -> None:
    """``maskcls serve``: one process, model loaded before the port opens."""
    import uvicorn

    app = create_app(runs, engine, ServeSettings.from_env())
    print(f"maskcls: serving {len(app.state.service.ensemble.members)} model(s) ({engine}) on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="info")
