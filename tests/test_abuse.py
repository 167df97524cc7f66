"""The bounded loopback abuse run (benchmarks/abuse.py) as a slow test: a real server, real sockets.

The fast tests of each guard are in test_serve_limits.py; this one checks that
together, on uvicorn, the service stays up, answers 413/503 where due and
keeps its peak RSS under the bound documented in RELIABILITY.md: the abuse mix of issue 22 (allowed
traffic and 64 clients, ICO and other header bombs, thin photos), bounded in time (15 minutes per engine).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_abuse_run_stays_up_within_bounds(tmp_path, engine):
    out = tmp_path / "abuse.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "abuse.py"), "--fresh", "--engine", engine,
                           "--json", str(out)], env=env, capture_output=True, text=True, timeout=900)
    result = json.loads(out.read_text())
    assert proc.returncode == 0, result["failures"]
    assert result["chunked"]["sent_mb"] < 100 and result["bomb"]["status"] == 413
    assert {200, 503} >= set(map(int, result["clients"]["statuses"])) and result["clients"]["errors"] == 0
    assert set(map(int, result["ico"]["statuses"])) == {413} and result["ico"]["clients"] == 64  # none decoded
    assert all(h["status"] in (413, 415) for h in result["headers"].values())
    assert result["thin"]["batch_answered"] == 4  # thin photos answered, the good one's answer survives
    assert result["peak_rss_mb"] <= result["rss_bound_mb"]  # VmHWM: the kernel's own peak, nothing sampled
