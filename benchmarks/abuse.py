"""Bounded loopback abuse of the service: it must stay up, answer 413/503 where due and keep its memory.

Starts ``maskcls serve`` on 127.0.0.1 (an untrained default model, or --run) with the default limits, then:

1. ``chunked``: a 300 MB upload to /predict with ``Transfer-Encoding: chunked`` (no Content-Length), sent
   64 kB at a time from a raw socket; expects 413 (or the connection closed) long before 300 MB.
2. ``bomb``: /predict/batch with 16 copies of a ~6 kB PNG declaring 6000x6000 pixels; expects 413, fast.
3. ``ico``: ``--clients`` (64) concurrent clients, each one 12 KB ICO holding a 10000x10000 PNG (Pillow's
   ICO reader decodes on open); expects 413 for all, /health answering meanwhile, and no memory jump.
4. ``headers``: one upload each of GIF, TIFF, BMP, JPEG and WebP headers declaring 60000x60000 pixels
   (a few bytes, hand-made or truncated); expects 413 or 415, never 500.
5. ``thin``: 1000x1, 1x1000 and 20000x2 PNGs, alone and in one batch with a good photo; expects 200.
6. ``clients``: ``--clients`` concurrent clients x ``--per-client`` photos to /predict; expects only 200
   and 503 (with Retry-After), no dropped connection.
7. ``heavy``: ``--clients`` concurrent clients, each one /predict/batch at the pixel budget (16 x 2000x2000
   PNGs); expects 200 or 503 and peak RSS (VmHWM from /proc) under ``--rss-bound`` MB.
Between steps and at the end /health must answer 200. Prints one JSON summary and exits 1 on any failed
expectation. Every step has a fixed request count and timeouts: it stops by itself.

    .venv/bin/python benchmarks/abuse.py --fresh
    .venv/bin/python benchmarks/abuse.py --fresh --engine onnx
    .venv/bin/python benchmarks/abuse.py --fresh --engine onnx --set preprocess.detector=haar   # the detector's share
"""
from __future__ import annotations

import argparse
import io
import json
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from latency import fresh_run, sample_jpeg  # noqa: E402
from load import free_port, peak_rss_mb, rss_mb, start_service, thread_count, wait_ready  # noqa: E402


# Peak RSS (VmHWM) promised for one worker with the default limits, set from the runs in RELIABILITY.md
# (round two: torch 1,236 MB, ONNX 401 MB measured under the whole abuse mix).
RSS_BOUND_MB = {"torch": 1700, "onnx": 1100}  # RELIABILITY.md: engine + 2 photos in flight + detector networks


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG", optimize=True)  # 1 bit per pixel of black: tiny file, many pixels
    return buf.getvalue()


def chunked_oversize(port: int, total: int = 300 * 2**20, chunk: int = 64 * 1024, timeout: float = 60) -> dict:
    """Stream ``total`` bytes chunked; stop as soon as the server answers or closes. Returns what happened."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="huge.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    s.sendall(head + b"%x\r\n" % len(part) + part + b"\r\n")
    data, sent, closed = b"\xff" * chunk, 0, None
    while sent < total and time.perf_counter() - t0 < timeout:
        if select.select([s], [], [], 0)[0]:
            break  # the server has answered
        try:
            s.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
        except OSError as e:
            closed = type(e).__name__
            break
        sent += len(data)
    status = None
    try:
        reply = s.recv(65536)
        status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else None
    except OSError as e:
        closed = closed or type(e).__name__
    s.close()
    return {"status": status, "closed": closed, "sent_mb": round(sent / 2**20, 1), "of_mb": total // 2**20,
            "s": round(time.perf_counter() - t0, 2)}


def bomb(url: str, files: int = 16, side: int = 6000) -> dict:
    data = png((side, side))
    t0 = time.perf_counter()
    r = httpx.post(url + "/predict/batch", files=[("files", (f"{i}.png", data, "image/png")) for i in range(files)],
                   timeout=120)
    return {"status": r.status_code, "file_kb": round(len(data) / 1024, 1), "files": files, "declared": f"{side}x{side}",
            "s": round(time.perf_counter() - t0, 2), "detail": r.json().get("detail", "")[:160]}


def ico_bomb(side: int = 10000) -> bytes:
    """An ICO whose one entry is a hand-made 1-bit PNG of side x side: about 12 KB, 100 MP when decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = zlib.compress((b"\x00" * (1 + (side + 7) // 8)) * side, 9)
    png_ = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png_), 22) + png_


def header_bombs(side: int = 60000) -> dict[str, bytes]:
    """Headers declaring side x side pixels, each a few bytes to a few kB (the pixel data is missing or tiny)."""
    import struct

    small = Image.new("RGB", (8, 8))
    out = {}
    for fmt in ("GIF", "TIFF", "BMP", "JPEG", "WEBP"):
        buf = io.BytesIO()
        small.save(buf, fmt)
        out[fmt] = buf.getvalue()
    gif = bytearray(out["GIF"])
    gif[6:10] = struct.pack("<HH", side, side)  # logical screen
    i = gif.index(b"\x2c")  # image descriptor
    gif[i + 5: i + 9] = struct.pack("<HH", side, side)
    out["GIF"] = bytes(gif)
    bmp = bytearray(out["BMP"])
    bmp[18:26] = struct.pack("<ii", side, side)
    out["BMP"] = bytes(bmp)
    jpg = bytearray(out["JPEG"])
    i = jpg.index(b"\xff\xc0")  # SOF0: height, width
    jpg[i + 5: i + 9] = struct.pack(">HH", side, side)
    out["JPEG"] = bytes(jpg)
    tif = bytearray(out["TIFF"])  # little-endian: patch the ImageWidth (256) and ImageLength (257) entries
    ifd = struct.unpack("<I", tif[4:8])[0]
    for k in range(struct.unpack("<H", tif[ifd: ifd + 2])[0]):
        e = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", tif[e: e + 4])
        if tag in (256, 257):
            tif[e + 8: e + 12] = struct.pack("<HH", side, 0) if kind == 3 else struct.pack("<I", side)
    out["TIFF"] = bytes(tif)
    web = bytearray(out["WEBP"])
    out["WEBP"] = bytes(web[:30])  # truncated: must be 415, not 500
    return out


def thin_photos() -> dict[str, bytes]:
    out = {}
    for w, h in ((1000, 1), (1, 1000), (20000, 2)):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (120, 90, 60)).save(buf, "PNG")
        out[f"{w}x{h}.png"] = buf.getvalue()
    return out


def crowd(url: str, clients: int, per_client: int, post) -> dict:
    """``clients`` threads, each ``per_client`` requests at once; statuses, Retry-After seen, errors, p95."""
    statuses, errors, retry_after, times = Counter(), [], set(), []
    start = threading.Barrier(clients)

    def one(client: httpx.Client) -> None:
        start.wait(30)
        for _ in range(per_client):
            t = time.perf_counter()
            try:
                r = post(client)
                statuses[r.status_code] += 1
                if r.status_code == 503:
                    retry_after.add(r.headers.get("retry-after"))
                times.append(time.perf_counter() - t)
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        clients_ = [httpx.Client(timeout=120) for _ in range(clients)]
        for f in [pool.submit(one, c) for c in clients_]:
            f.result()
        for c in clients_:
            c.close()
    times.sort()
    return {"clients": clients, "requests": clients * per_client, "statuses": dict(statuses),
            "retry_after": sorted(x for x in retry_after if x), "errors": len(errors),
            "first_error": errors[0] if errors else None, "wall_s": round(time.perf_counter() - t0, 1),
            "p95_s": round(times[int(0.95 * (len(times) - 1))], 2) if times else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder (for --engine onnx: after `maskcls export RUN`)")
    src.add_argument("--fresh", action="store_true", help="untrained default model at 160x128")
    ap.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--rss-bound", type=float, default=None,
                    help="MB the service's peak RSS must stay under (default: RSS_BOUND_MB of the engine, "
                         "RELIABILITY.md: default limits, one worker)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra service environment")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override of the --fresh model (e.g. preprocess.detector=haar)")
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args()

    args.rss_bound = args.rss_bound or RSS_BOUND_MB[args.engine]
    out: dict = {"engine": args.engine, "rss_bound_mb": args.rss_bound}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if args.fresh:
            run = str(fresh_run(Path(tmp) / "fresh", overrides=args.set))
            if args.engine == "onnx":
                from maskcls.export import export_onnx

                export_onnx(run)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "service.log"
        proc = start_service(run, args.engine, args.threads, port, log, dict(e.split("=", 1) for e in args.env))
        try:
            out["limits"] = wait_ready(proc, url, log)["limits"]
            out["rss_start_mb"] = round(rss_mb(proc.pid) or 0, 1)

            def healthy(step: str) -> None:
                try:
                    ok = proc.poll() is None and httpx.get(url + "/health", timeout=30).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    failures.append(f"service not healthy after {step}")

            out["chunked"] = c = chunked_oversize(port)
            if c["status"] not in (413, None) or (c["status"] is None and not c["closed"]) or c["sent_mb"] >= c["of_mb"]:
                failures.append(f"chunked: {c}")
            healthy("chunked")
            out["bomb"] = b = bomb(url)
            if b["status"] != 413:
                failures.append(f"bomb: {b}")
            healthy("bomb")
            bomb_ico = ico_bomb()
            health_s: list[float] = []
            stop = threading.Event()

            def watch() -> None:  # /health latency while the ICO crowd runs
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        httpx.get(url + "/health", timeout=30)
                    except httpx.HTTPError:
                        pass
                    health_s.append(time.perf_counter() - t)
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch)
            watcher.start()
            rss_before = rss_mb(proc.pid) or 0
            out["ico"] = i = crowd(url, args.clients, 1, lambda cl: cl.post(
                url + "/predict", files={"file": ("bomb.ico", bomb_ico, "image/x-icon")}))
            stop.set()
            watcher.join()
            i.update(file_kb=round(len(bomb_ico) / 1024, 1), health_max_s=round(max(health_s or [0]), 2),
                     rss_before_mb=round(rss_before, 1), rss_after_mb=round(rss_mb(proc.pid) or 0, 1))
            if set(i["statuses"]) - {413} or i["errors"]:
                failures.append(f"ico: {i}")
            healthy("ico")
            out["headers"] = hb = {}
            for fmt, data in header_bombs().items():
                r = httpx.post(url + "/predict", files={"file": (f"bomb.{fmt.lower()}", data, "image/*")}, timeout=120)
                hb[fmt] = {"bytes": len(data), "status": r.status_code, "detail": r.json().get("detail", "")[:120]}
                if r.status_code not in (413, 415):
                    failures.append(f"headers {fmt}: {hb[fmt]}")
            healthy("headers")
            thin = thin_photos()
            out["thin"] = th = {}
            for name, data in thin.items():
                th[name] = httpx.post(url + "/predict", files={"file": (name, data, "image/png")}, timeout=120).status_code
            photo = sample_jpeg()
            r = httpx.post(url + "/predict/batch", files=[("files", ("good.jpg", photo, "image/jpeg"))]
                           + [("files", (n, d, "image/png")) for n, d in thin.items()], timeout=120)
            th["batch"] = r.status_code
            th["batch_answered"] = sum("class_id" in x for x in r.json().get("results", [])) if r.status_code == 200 else 0
            if set(v for k, v in th.items() if k != "batch_answered") != {200} or th["batch_answered"] != 4:
                failures.append(f"thin: {th}")
            th["rss_after_mb"] = round(rss_mb(proc.pid) or 0, 1)
            healthy("thin")
            out["clients"] = k = crowd(url, args.clients, args.per_client,
                                       lambda cl: cl.post(url + "/predict", files={"file": ("f.jpg", photo, "image/jpeg")}))
            if set(k["statuses"]) - {200, 503} or k["errors"] or 200 not in k["statuses"]:
                failures.append(f"clients: {k}")
            if 503 in k["statuses"] and k["retry_after"] != ["1"]:
                failures.append("clients: 503 without Retry-After")
            k["rss_after_mb"] = round(rss_mb(proc.pid) or 0, 1)
            healthy("clients")
            big = png((2000, 2000))
            files = [("files", (f"{i}.png", big, "image/png")) for i in range(16)]
            out["heavy"] = h = crowd(url, args.clients, 1, lambda cl: cl.post(url + "/predict/batch", files=files))
            if set(h["statuses"]) - {200, 503} or h["errors"] or 200 not in h["statuses"]:
                failures.append(f"heavy: {h}")
            h["rss_after_mb"] = round(rss_mb(proc.pid) or 0, 1)
            healthy("heavy")
            out["rss_end_mb"] = round(rss_mb(proc.pid) or 0, 1)
            out["peak_rss_mb"] = round(peak_rss_mb(proc.pid) or 0, 1)
            out["service_threads"] = thread_count(proc.pid)
            if out["peak_rss_mb"] > args.rss_bound:
                failures.append(f"peak RSS {out['peak_rss_mb']} MB over the bound of {args.rss_bound} MB")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    out["failures"] = failures
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
