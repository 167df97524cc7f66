"""Typed responses of the HTTP service, so /docs and /openapi.json say exactly what comes back.

Every error is ``{"detail": "one line naming the file and the problem"}``;
``ERRORS`` lists the codes each endpoint can answer, for the OpenAPI schema.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field


class AxisProbabilities(BaseModel):
    """Marginals of the 18 class probabilities on each axis."""

    mask: dict[str, float] = Field(..., description="wear, incorrect, not_wear", examples=[
        {"wear": 0.97, "incorrect": 0.02, "not_wear": 0.01}])
    gender: dict[str, float] = Field(..., description="male, female", examples=[{"male": 0.05, "female": 0.95}])
    age: dict[str, float] = Field(..., description="the run's age bands, e.g. <30, 30-59, >=60",
                                  examples=[{"<30": 0.04, "30-59": 0.93, ">=60": 0.03}])


class Result(BaseModel):
    """The labels of one face (or of the whole photo)."""

    class_id: int = Field(..., ge=0, le=17, description="mask*6 + gender*3 + age band")
    mask: Literal["wear", "incorrect", "not_wear"]
    mask_confidence: float = Field(..., ge=0, le=1, description="probability of this mask state, summed over "
                                   "gender and age (summary.summarize)")
    gender: Literal["male", "female"]
    age: str = Field(..., description="age band, e.g. 30-59")
    confidence: float = Field(..., ge=0, le=1, description="probability of the predicted class")
    low_confidence: bool = Field(False, description="confidence below the service's threshold: treat as unsure")
    probabilities: AxisProbabilities


class Face(BaseModel):
    box: Optional[list[int]] = Field(..., description="[x0, y0, x1, y1] in the photo's pixels; null: whole photo")
    result: Result


class Prediction(Result):
    """One photo: the labels of its largest face (or the whole photo) and every face found."""

    filename: Optional[str] = None
    width: int
    height: int
    faces: list[Face]
    warnings: list[str] = Field(default_factory=list, description="reasons to distrust this answer, in words")


class FileError(BaseModel):
    """A file of a batch that could not be classified; the others still are."""

    filename: Optional[str] = None
    error: str = Field(..., description="one line naming the file and the problem")
    status: int = Field(..., description="the HTTP status the file would get on its own (400, 413, 415)")


class BatchPrediction(BaseModel):
    results: list[Prediction | FileError] = Field(..., description="one entry per uploaded file, in upload order")


class Limits(BaseModel):
    """The service's limits (MASKCLS_* environment variables, docs/serving.md)."""

    max_bytes: int = Field(..., description="largest upload per file")
    max_pixels: int = Field(..., description="largest width x height per file")
    max_files: int = Field(..., description="files per /predict/batch request")
    max_faces: int = Field(..., description="faces classified per photo")
    threads: int

    model_config = {"extra": "allow"}


class Health(BaseModel):
    """What is loaded: enough to tell which model answers."""

    status: Literal["ok"]
    engine: Literal["torch", "onnx"]
    runs: list[str]
    members: int
    model: str = Field(..., description="backbone name, e.g. tf_efficientnet_lite0")
    head: str
    image_size: list[int]
    decode_size: list[int]
    face_crop: bool
    low_confidence_below: float = Field(..., description="confidence under which a result is flagged low_confidence")
    warnings: list[str] = Field(default_factory=list, description="e.g. the model was trained on drawn demo data")
    limits: Limits

    model_config = {"extra": "allow"}  # later additions stay visible


class ErrorDetail(BaseModel):
    detail: str = Field(..., description="one line naming the file and the problem",
                        examples=["photo.pdf: not an image (expected JPEG, PNG, WebP, BMP...)"])


def _error(text: str) -> dict:
    return {"model": ErrorDetail, "description": text}


UPLOAD_ERRORS = {
    400: _error("Empty file."),
    413: _error("File larger than MASKCLS_MAX_BYTES, image over MASKCLS_MAX_PIXELS, or request body too large."),
    415: _error("Not a readable image (PDF, text, truncated or corrupt file)."),
    503: _error("Busy: too many requests being classified at once; retry after the Retry-After seconds."),
}
BATCH_ERRORS = {
    **{k: v for k, v in UPLOAD_ERRORS.items() if k != 413},
    413: _error("More files than MASKCLS_MAX_FILES, or request body too large. Per-file problems (400, 413, 415) "
                "come back inside `results` instead."),
}
