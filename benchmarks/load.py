"""Load test of the HTTP service: a fixed number of requests at a fixed concurrency, then stop.

Starts ``maskcls serve`` on 127.0.0.1 in a subprocess, waits for /health,
sends ``--rounds`` x ``--requests`` POST /predict from ``--concurrency``
threads (httpx), stops the service and prints throughput, p50/p95 latency,
errors, the service's resident memory (VmRSS) before the first round and
after each round, and its peak (VmHWM), all from /proc. Everything is
bounded: a fixed request count, loopback only, a deadline per round.

    .venv/bin/python benchmarks/load.py --run runs/maskfaces_default --requests 300 --concurrency 8
    .venv/bin/python benchmarks/load.py --run runs/maskfaces_default --engine onnx   # after `maskcls export RUN`
    .venv/bin/python benchmarks/load.py --fresh --requests 200 --rounds 5            # untrained default model
    .venv/bin/python benchmarks/load.py --fresh --rounds 5 --env MALLOC_ARENA_MAX=2  # extra service environment
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


def proc_status_mb(pid: int, key: str) -> float | None:
    """A memory line of /proc/PID/status in MB: VmRSS (now) or VmHWM (the most ever), Linux only."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    return proc_status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float | None:
    return proc_status_mb(pid, "VmRSS")


def malloc_arenas(pid: int) -> dict | None:
    """glibc's per-thread malloc arenas in /proc/PID/smaps: how many, and the RSS they hold (MB).

    A non-main arena lives in 64 MB-aligned anonymous mappings of at most
    64 MB; the main arena is ``[heap]``. Freed memory stays in its arena, so
    every thread that ran inference keeps a share of the peak it once needed.
    """
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return None
    arenas, arena_rss, heap_rss, current = 0, 0, 0, None
    for line in lines:
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            start, end = (int(x, 16) for x in head[0].split("-"))
            name = head[5] if len(head) > 5 else ""
            anon_rw = head[1].startswith("rw") and head[4] == "0" and not name
            current = "heap" if name == "[heap]" else (
                "arena" if anon_rw and start % (64 << 20) == 0 and end - start <= 64 << 20 else None)
            arenas += current == "arena"
        elif head[0] == "Rss:" and current:
            kb = int(head[1])
            if current == "heap":
                heap_rss += kb
            else:
                arena_rss += kb
    return {"arenas": arenas, "arena_rss_mb": round(arena_rss / 1024, 1), "heap_rss_mb": round(heap_rss / 1024, 1)}


def thread_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def start_service(run: str, engine: str, threads: int, port: int, log: Path, extra_env: dict | None = None
                  ) -> subprocess.Popen:
    """``maskcls serve`` in a subprocess; its output goes to ``log`` (a pipe could fill and stall it)."""
    env = {**os.environ, "MASKCLS_THREADS": str(threads), "OMP_NUM_THREADS": str(threads or os.cpu_count()),
           **(extra_env or {})}
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


def hammer(url: str, image: bytes, requests: int, concurrency: int, headers: dict | None = None
           ) -> tuple[list[float], list[str], float]:
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
                r = client.post(url + "/predict", files={"file": ("face.jpg", image, "image/jpeg")},
                                headers=headers)
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


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return round(float(np.percentile(ms, 50)), 1), round(float(np.percentile(ms, 95)), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder (for --engine onnx: after `maskcls export RUN`)")
    src.add_argument("--fresh", action="store_true", help=f"untrained default model at {FRESH_SIZE[0]}x{FRESH_SIZE[1]}")
    ap.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--requests", type=int, default=300, help="requests per round")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of --requests; RSS is read after each")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads in the service")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment of the service (MALLOC_ARENA_MAX=2, MASKCLS_MAX_INFLIGHT=4...)")
    ap.add_argument("--image", help="photo to send (default: a drawn 384x512 portrait)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    image = Path(args.image).read_bytes() if args.image else sample_jpeg()
    extra_env = dict(e.split("=", 1) for e in args.env)
    headers = {"X-API-Key": extra_env["MASKCLS_API_KEY"]} if extra_env.get("MASKCLS_API_KEY") else None
    rounds = []
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
        proc = start_service(run, args.engine, args.threads, port, log, extra_env)
        try:
            info = wait_ready(proc, url, log)
            hammer(url, image, min(8, args.requests), 1, headers)  # warm-up, not counted
            before = rss_mb(proc.pid)
            arenas_before = malloc_arenas(proc.pid)
            for _ in range(args.rounds):
                latencies, errors, wall = hammer(url, image, args.requests, args.concurrency, headers)
                p50, p95 = percentiles(latencies)
                rounds.append({"ok": len(latencies), "errors": len(errors), "p50_ms": p50, "p95_ms": p95,
                               "throughput_rps": round(len(latencies) / wall, 2),
                               "rss_mb": round(rss_mb(proc.pid) or 0, 1), "threads": thread_count(proc.pid),
                               **(malloc_arenas(proc.pid) or {}),
                               "first_error": errors[0] if errors else None})
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    last = rounds[-1]
    result = {"engine": args.engine, "model": info["model"], "image_size": info["image_size"],
              "requests": args.requests, "rounds": args.rounds, "concurrency": args.concurrency,
              "threads": args.threads, "env": extra_env,
              "throughput_rps": last["throughput_rps"], "p50_ms": last["p50_ms"], "p95_ms": last["p95_ms"],
              "errors": sum(r["errors"] for r in rounds), "rss_before_mb": round(before or 0, 1),
              "rss_after_mb": [r["rss_mb"] for r in rounds], "peak_rss_mb": round(rss, 1) if rss else None,
              "service_threads": last["threads"], "arenas_before": arenas_before,
              "arenas_after": {k: last.get(k) for k in ("arenas", "arena_rss_mb", "heap_rss_mb")}, "per_round": [{k: v for k, v in r.items() if k != "first_error"}
                                                                for r in rounds]}
    print(json.dumps(result, indent=1))
    first = next((r["first_error"] for r in rounds if r["first_error"]), None)
    if first:
        print(f"first error: {first}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
