"""Property-based fuzzing (Hypothesis): images, overrides and CSV rows give a result or one clear error (issue 22).

Never a traceback, never a 500. Each property runs ~30 examples in the default suite (a few seconds) and
several hundred in its ``slow`` twin (``pytest -m slow tests/test_fuzz.py``).
"""
from __future__ import annotations

import io
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from maskcls.config import Config, ConfigError, leaf_keys, load_config
from maskcls.data.boxes import BoxesError, read_boxes
from maskcls.data.images import ImageReadError, load_rgb
from maskcls.data.reader import DataError, read_answers, read_eval
from test_serve_limits import client_for

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FORMATS = {"PNG": ("L", "RGB", "RGBA", "P", "1", "I;16", "LA"), "JPEG": ("L", "RGB", "CMYK"),
           "GIF": ("L", "P", "RGB"), "TIFF": ("L", "RGB", "RGBA", "CMYK", "1", "I;16"), "BMP": ("L", "RGB", "P", "1"),
           "WEBP": ("RGB", "RGBA"), "ICO": ("RGB", "RGBA")}


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    """An image file of any format, mode and size (thin ones included), maybe truncated, maybe EXIF-rotated."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    side = st.one_of(st.integers(1, 4), st.integers(1, 200), st.sampled_from([1000, 3000]))
    w, h = draw(side), draw(side)
    if w * h > 600_000:
        w, h = (w, 2) if w > h else (2, h)  # long and thin, not big: the suite stays fast
    if fmt == "ICO":
        w, h = min(w, 256), min(h, 256)
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)
    img = Image.fromarray(pixels).convert(mode if mode not in ("I;16",) else "I;16")
    buf = io.BytesIO()
    kw = {}
    if fmt == "JPEG" and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(1, 8))  # orientation
        kw["exif"] = exif.tobytes()
    if fmt == "ICO":
        kw["sizes"] = [(w, h)]
    img.save(buf, fmt, **kw)
    data = buf.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, max(0, len(data) - 1))))
    return f"{w}x{h}.{fmt.lower()}", data if cut is None else data[:cut]


def _image_property(client, name: str, data: bytes) -> None:
    r = client.post("/predict", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code in (200, 400, 413, 415, 422), (name, r.status_code, r.text)
    if r.status_code == 200:
        assert r.json()["class_id"] in range(18)
    else:
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail, detail
        assert detail.startswith(name) or detail.startswith("request is larger than the limit of"), detail
    try:
        rgb = load_rgb(data)
    except ImageReadError as e:
        assert "\n" not in str(e)
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@pytest.fixture(scope="module")
def client():
    return client_for(max_pixels=4_000_000, max_request_pixels=8_000_000)[0]


@FAST
@given(image_files())
def test_any_image_file_gets_an_answer_or_one_clear_error(client, file):
    _image_property(client, *file)


@pytest.mark.slow
@LONG
@given(image_files())
def test_any_image_file_gets_an_answer_or_one_clear_error_long(client, file):
    _image_property(client, *file)


NUMERIC_KEYS = [k for k in leaf_keys()]
VALUES = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["", "null", "[]", "[1,2]", "[0,0]", "{}", "{a: 1}", ".nan", "-.inf", "true",
                                    "yes", "0x10", "1e400", "[[1]]", "'quoted'", "a: b: c", "[", "}", "\u00e9"]),
                   st.text(string.printable, max_size=12))


def _override_property(key: str, value) -> None:
    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as e:
        assert "\n" not in str(e).strip(), str(e)
    else:
        assert isinstance(cfg, Config)


@FAST
@given(st.sampled_from(NUMERIC_KEYS), VALUES)
def test_any_override_is_a_config_or_one_clear_error(key, value):
    _override_property(key, value)


@pytest.mark.slow
@LONG
@given(st.sampled_from(NUMERIC_KEYS), VALUES)
def test_any_override_is_a_config_or_one_clear_error_long(key, value):
    _override_property(key, value)


CELL = st.one_of(st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=10),
                 st.sampled_from(["", "a.jpg", "../x.jpg", "/etc/passwd", "0", "17", "18", "-1", "1.5", "nan",
                                  "\"", "a,b", "\u00e9.jpg", "1e9"]))
ROWS = st.lists(st.lists(CELL, min_size=0, max_size=7), max_size=6)
HEADERS = st.sampled_from(["ImageID", "ImageID,ans", "file,x0,y0,x1,y1,mask", "ImageID,ans,person", "", "x,y"])


def _csv_property(header: str, rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "eval" / "images").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(root / "eval" / "images" / "a.jpg")
        text = header + "\n" + "".join(",".join(r) + "\n" for r in rows)
        for name in ("info.csv", "answers.csv", "boxes.csv"):
            (root / "eval" / name).write_text(text, encoding="utf-8", errors="surrogateescape")
        for read, error in ((lambda: read_eval(root), DataError),
                            (lambda: read_answers(root / "eval" / "answers.csv", root / "eval" / "images"), DataError),
                            (lambda: read_boxes(root / "eval" / "boxes.csv"), BoxesError)):
            try:
                table = read()
            except error as e:
                assert "\n" not in str(e).strip(), str(e)
            else:
                assert len(table) <= len(rows)


@FAST
@given(HEADERS, ROWS)
@example("ImageID", [['"'], ['"']])  # the quote folds a line break into the ImageID (found by the long run)
@example("", [['"'], ['', '"']])  # ... or into a column name that the message quotes (found by the long run)
def test_any_csv_rows_are_a_table_or_one_clear_error(header, rows):
    _csv_property(header, rows)


@pytest.mark.slow
@LONG
@given(HEADERS, ROWS)
def test_any_csv_rows_are_a_table_or_one_clear_error_long(header, rows):
    _csv_property(header, rows)
