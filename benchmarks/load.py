"""Load test of the HTTP service: a fixed number of requests at a fixed concurrency, then stop.

Starts ``maskcls serve`` on 127.0.0.1 in a subprocess, waits for /health,
sends ``--requests`` POST /predict from ``--concurrency`` threads (httpx),
stops the service and prints throughput, p50/p95 latency, errors and the
service's peak RSS (VmHWM from /proc).

    .venv/bin/python benchmarks/load.py --run runs/maskfaces_default --requests 300 --concurrency 8
    .venv/bin/python benchmarks/load.py --run runs/maskfaces_default --engine onnx   # after `maskcls export RUN`
    .venv/bin/python benchmarks/load.py --fresh --requests 100                       # untrained default model
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from latency import FRESH_SIZE, fresh_run, sample_jpeg  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the most resident memory the process ever had (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_service(run: str, engine: str, threads: int, port: int, log: Path) -> subprocess.Popen:
    """``maskcls serve`` in a subprocess; its output goes to ``log`` (a pipe could fill and stall it)."""
    env = {**os.environ, "MASKCLS_THREADS": str(threads), "OMP_NUM_THREADS": str(threads or os.cpu_count())}
    cmd = [sys.executable, "-m", "maskcls.cli", "serve", run, "--host", "127.0.0.1", "--port", str(port),
           "--engine", engine, "-q"]
    with log.open("w") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            return httpx.get(url + "/health", timeout=2).json()
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"service not ready after {timeout:.0f}s")


def hammer(url: str, image: bytes, requests: int, concurrency: int) -> tuple[list[float], list[str], float]:
    """Each thread takes request numbers until ``requests`` are sent; returns latencies, errors, wall time."""
    counter, lock = iter(range(requests)), threading.Lock()
    latencies, errors = [], []

    def worker(client: httpx.Client) -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            t = time.perf_counter()
            try:
                r = client.post(url + "/predict", files={"file": ("face.jpg", image, "image/jpeg")})
                ok = r.status_code == 200
                if not ok:
                    errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
            except httpx.HTTPError as e:
                ok = False
                errors.append(f"{type(e).__name__}: {e}")
            if ok:
                latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=120, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        for f in [pool.submit(worker, client) for _ in range(concurrency)]:
            f.result()
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder (for --engine onnx: after `maskcls export RUN`)")
    src.add_argument("--fresh", action="store_true", help=f"untrained default model at {FRESH_SIZE[0]}x{FRESH_SIZE[1]}")
    ap.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads in the service")
    ap.add_argument("--image", help="photo to send (default: a drawn 384x512 portrait)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    image = Path(args.image).read_bytes() if args.image else sample_jpeg()
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
        proc = start_service(run, args.engine, args.threads, port, log)
        try:
            info = wait_ready(proc, url, log)
            hammer(url, image, min(8, args.requests), 1)  # warm-up, not counted
            latencies, errors, wall = hammer(url, image, args.requests, args.concurrency)
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    result = {"engine": args.engine, "model": info["model"], "image_size": info["image_size"],
              "requests": args.requests, "concurrency": args.concurrency, "threads": args.threads,
              "throughput_rps": round(len(latencies) / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
              "p95_ms": round(float(np.percentile(ms, 95)), 1), "errors": len(errors),
              "peak_rss_mb": round(rss, 1) if rss else None}
    print(json.dumps(result, indent=1))
    if errors:
        print(f"first error: {errors[0]}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
