"""Guards that keep one client from taking the service down: body bytes, decoded pixels, concurrency.

* ``BodyLimit`` (ASGI middleware) counts body bytes as they arrive, with or
  without Content-Length (chunked uploads), and answers 413 as soon as a
  request passes its path's limit; nothing beyond the limit is read or spooled.
* ``check_request_pixels``: the width x height that a request's image headers
  declare, summed over its files, against a budget, before anything is decoded
  (a 6 KB PNG can declare 36 MP, which decodes to 108 MB).
* ``header_size``: an upload's width and height from its header, without
  decoding a pixel, and only for formats whose reader is lazy (``ACCEPTED``).
  Pillow's ICO reader decodes the largest embedded image as soon as the file
  is opened (a 12 KB ICO can hold a 10000x10000 PNG), so an ICO's directory
  is read here by hand: every entry's real size (an embedded PNG's IHDR, a
  BMP's info header) is checked before Pillow ever sees the file, and the
  decode itself happens on the bounded pool.
* ``Gate``: decoding and inference run on a fixed pool of ``max_inflight``
  threads; up to ``max_queue`` more requests wait, at most ``queue_timeout``
  seconds; beyond that, 503 with ``Retry-After``. A fixed pool also bounds
  memory: every thread that runs torch gets its own malloc arena (see
  RELIABILITY.md, item 8), and the web server's own pool has 40 threads.
"""
from __future__ import annotations

import io
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, Callable, Iterator, Sequence, TypeVar

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError

T = TypeVar("T")
MULTIPART_SLACK = 64 * 1024  # headers and boundaries around the file bytes


def mb(n: int) -> str:
    """Bytes for a message: ``10 MB``; under 1 MB in kB (a 200 kB limit is not ``0 MB``)."""
    return f"{n / 1024 / 1024:.0f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} kB"


class _TooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request is larger than the limit of {mb(limit)}")


class BodyLimit:
    """413 for a request whose body passes ``limit_for(path)`` bytes, counted while it streams in."""

    def __init__(self, app, limit_for: Callable[[str], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:  # refuse before reading a byte
            return await _send_413(send, limit)
        seen, over, started = 0, False, False

        async def counted_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _TooLarge(limit)
            return message

        async def guarded_send(message):
            nonlocal started
            if over and not started:  # whatever the app made of the aborted body (400, 500), it is a 413
                started = True
                return await _send_413(send, limit)
            if over:
                return None
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
                await _send_413(send, limit)


async def _send_413(send, limit: int) -> None:
    body = json.dumps({"detail": f"request is larger than the limit of {mb(limit)}"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# Full-size decoded pixels a worker holds before it classifies them and lets them go (about 24 MB of RGB); one
# photo larger than this is held alone. With ``max_inflight`` workers this caps the decoded photos in memory.
DECODED_PIXELS_PER_STEP = 8_000_000

# Formats whose Pillow reader parses only the header on open (frames, if any, are read on demand).
ACCEPTED = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")  # JPEG also opens MPO
ICO_MAGIC = (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")  # ICO, CUR
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_ICO_IMAGES = 64


def _u(b: bytes, signed: bool = False, order: str = "little") -> int:
    return int.from_bytes(b, order, signed=signed)


def _read_at(f: IO[bytes], offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def ico_sizes(data: bytes | IO[bytes], name: str) -> list[tuple[int, int]]:
    """The real (width, height) of every image in an ICO/CUR, read from a few header bytes; 415 when malformed."""
    def bad(why: str) -> HTTPException:
        return HTTPException(415, f"{name}: not a usable ICO file ({why})")

    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    count = _u(_read_at(f, 4, 2))
    if not 0 < count <= MAX_ICO_IMAGES:
        raise bad(f"{count} images; 1 to {MAX_ICO_IMAGES} are accepted")
    directory = _read_at(f, 6, 16 * count)
    if len(directory) < 16 * count:
        raise bad("truncated directory")
    sizes = []
    for i in range(count):
        entry = directory[16 * i: 16 * i + 16]
        head = _read_at(f, _u(entry[12:16]), 24)
        if head[:8] == PNG_SIGNATURE:  # Vista icons: a whole PNG, its size in IHDR
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise bad(f"image {i + 1} is a truncated PNG")
            sizes.append((_u(head[16:20], order="big"), _u(head[20:24], order="big")))
        elif len(head) >= 12 and _u(head[:4]) == 12:  # BITMAPCOREHEADER: 16-bit sides
            sizes.append((_u(head[4:6]), _u(head[6:8]) // 2))  # the height counts the AND mask too
        elif len(head) >= 12 and _u(head[:4]) >= 40:  # BITMAPINFOHEADER and later
            sizes.append((abs(_u(head[4:8], True)), abs(_u(head[8:12], True)) // 2))
        else:
            raise bad(f"image {i + 1} is neither PNG nor BMP")
    return sizes


def header_size(data: bytes | IO[bytes], name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) an upload (bytes or a seekable file) declares, read from its header without decoding.

    413: more than ``max_pixels`` (any image of an ICO); 415: not an image, or a format outside ``ACCEPTED``.
    Only header bytes are read, so this is cheap on any thread.
    """
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    if _read_at(f, 0, 4) in ICO_MAGIC:
        sizes = ico_sizes(f, name)
        w, h = max(sizes, key=lambda s: s[0] * s[1])
    else:
        try:
            f.seek(0)
            with Image.open(f, formats=ACCEPTED) as img:  # lazy readers only: the header
                w, h = img.size
        except Image.DecompressionBombError:
            raise HTTPException(413, f"{name}: too many pixels (limit {max_pixels:,})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise HTTPException(415, f"{name}: not an image (expected JPEG, PNG, WebP, BMP, GIF, TIFF or ICO)"
                                ) from None
        sizes = [(w, h)]
    for sw, sh in sizes:
        if sw * sh > max_pixels:
            raise HTTPException(413, f"{name}: {sw}x{sh} is more than the limit of {max_pixels:,} pixels")
    if w < 1 or h < 1:
        raise HTTPException(415, f"{name}: declares an empty image ({w}x{h})")
    f.seek(0)
    return w, h


def check_request_pixels(sizes: Sequence[tuple[int, int]], budget: int) -> None:
    """413 when the images of one request declare more than ``budget`` pixels in all."""
    total = sum(w * h for w, h in sizes)
    if total > budget:
        raise HTTPException(413, f"the {len(sizes)} image(s) of this request declare {total:,} pixels, more than "
                                 f"the limit of {budget:,} per request; send fewer or smaller images")


class Gate:
    """At most ``workers`` jobs run at once on a fixed thread pool; ``queue`` more wait; the rest get 503."""

    def __init__(self, workers: int, queue: int, timeout: float, retry_after: int = 1):
        self.workers, self.capacity, self.timeout = max(1, workers), max(1, workers) + max(0, queue), timeout
        self.retry_after = retry_after
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="maskcls-infer")
        self._lock = threading.Lock()
        self._local = threading.local()  # whether this request thread holds a ``slot``
        self.pending = 0  # queued + running

    def _busy(self, why: str) -> HTTPException:
        return HTTPException(503, f"busy: {why}; retry in {self.retry_after} s",
                             headers={"Retry-After": str(self.retry_after)})

    def _done(self, _: Future) -> None:
        with self._lock:
            self.pending -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a place (503 at once when none is left) while a request reads its uploads and runs.

        Taken before a byte of the uploads is read into memory, so the requests past the gate's capacity never
        hold their files' bytes: the memory of uploads in flight is bounded by ``capacity`` requests.
        """
        with self._lock:
            if self.pending >= self.capacity:
                raise self._busy(f"{self.pending} requests are running or waiting (limit {self.capacity})")
            self.pending += 1
        self._local.held = True
        try:
            yield
        finally:
            self._local.held = False
            with self._lock:
                self.pending -= 1

    def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on the pool, from a request thread; 503 when full or when the wait runs out."""
        if getattr(self._local, "held", False):  # inside ``slot``: its place is already counted
            return self._submit(fn, *args, counted=False)
        with self._lock:
            if self.pending >= self.capacity:
                raise self._busy(f"{self.pending} requests are running or waiting (limit {self.capacity})")
            self.pending += 1
        return self._submit(fn, *args, counted=True)

    def _submit(self, fn: Callable[..., T], *args, counted: bool) -> T:
        started = threading.Event()

        def job():
            started.set()
            return fn(*args)

        future = self.pool.submit(job)
        if counted:
            future.add_done_callback(self._done)
        if not started.wait(self.timeout) and future.cancel():
            raise self._busy(f"waited {self.timeout:g} s for a free worker")
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
