"""Bounded loopback abuse of the service: it must stay up, answer 413/503 where due and keep its memory.

Starts ``maskcls serve`` on 127.0.0.1 (an untrained default model, or --run) with the default limits, then:

1. ``chunked``: a 300 MB upload to /predict with ``Transfer-Encoding: chunked`` (no Content-Length), sent
   64 kB at a time from a raw socket; expects 413 (or the connection closed) long before 300 MB.
2. ``bomb``: /predict/batch with 16 copies of a ~6 kB PNG declaring 6000x6000 pixels; expects 413, fast.
3. ``clients``: 32 concurrent clients x ``--per-client`` photos to /predict; expects only 200 and 503
   (with Retry-After), no dropped connection.
4. ``heavy``: 32 concurrent clients, each one /predict/batch at the pixel budget (16 x 2000x2000 PNGs);
   expects 200 or 503 and peak RSS under ``--rss-bound`` MB.
Between steps and at the end /health must answer 200. Prints one JSON summary and exits 1 on any failed
expectation. Every step has a fixed request count and timeouts: it stops by itself.

    .venv/bin/python benchmarks/abuse.py --fresh
    .venv/bin/python benchmarks/abuse.py --fresh --engine onnx
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
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--rss-bound", type=float, default=2000,
                    help="MB the service's peak RSS must stay under (RELIABILITY.md: default limits, one worker)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra service environment")
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args()

    out: dict = {"engine": args.engine, "rss_bound_mb": args.rss_bound}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if args.fresh:
            run = str(fresh_run(Path(tmp) / "fresh"))
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
            photo = sample_jpeg()
            out["clients"] = k = crowd(url, args.clients, args.per_client,
                                       lambda cl: cl.post(url + "/predict", files={"file": ("f.jpg", photo, "image/jpeg")}))
            if set(k["statuses"]) - {200, 503} or k["errors"] or 200 not in k["statuses"]:
                failures.append(f"clients: {k}")
            if 503 in k["statuses"] and k["retry_after"] != ["1"]:
                failures.append("clients: 503 without Retry-After")
            healthy("clients")
            big = png((2000, 2000))
            files = [("files", (f"{i}.png", big, "image/png")) for i in range(16)]
            out["heavy"] = h = crowd(url, args.clients, 1, lambda cl: cl.post(url + "/predict/batch", files=files))
            if set(h["statuses"]) - {200, 503} or h["errors"] or 200 not in h["statuses"]:
                failures.append(f"heavy: {h}")
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
