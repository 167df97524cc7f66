"""A fresh ``pip install ".[serve]"`` (no torch) predicts and serves with the packaged model and no model argument.

Slow: it builds a new virtual environment from the package index (minutes). The
tree is copied first; its packaged model is the real file when present, else
the tiny demo run exported at fp16 into the copy (never into the checkout).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGED = Path("src") / "maskcls" / "weights" / "maskcls.onnx"
TOP_ONLY = {".git", ".venv", "runs", "data", "build", "dist", ".pytest_cache", ".cache"}  # not src/maskcls/data


def SKIP(folder: str, names: list[str]) -> set[str]:
    """What the copy leaves out: the checkout's own outputs (top level) and caches anywhere."""
    top = Path(folder) == REPO
    return {n for n in names if (top and n in TOP_ONLY) or n == "__pycache__" or n.endswith(".egg-info")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fresh_serve_install_predicts_and_serves_without_a_model_argument(tiny_run, demo_root, tmp_path):
    import httpx

    tree = tmp_path / "tree"
    shutil.copytree(REPO, tree, ignore=SKIP)
    if not (tree / PACKAGED).is_file():
        from maskcls.export import export_onnx

        export_onnx(tiny_run, tree / PACKAGED, precision="fp16")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MASKCLS_MODEL", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{tree}[serve]"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=1500)
    assert pip.returncode == 0, pip.stderr[-3000:]
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "maskcls")
    no_torch = subprocess.run([python, "-c", "import torch"], env=env, cwd=tmp_path, capture_output=True)
    assert no_torch.returncode != 0  # the lean install
    where = subprocess.run([python, "-c", "import maskcls.shipped as s; print(s.PACKAGED, s.PACKAGED.is_file())"],
                           env=env, cwd=tmp_path, capture_output=True, text=True)
    assert str(venv) in where.stdout and where.stdout.strip().endswith("True"), where.stdout + where.stderr

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((demo_root / "eval" / "images").iterdir())[:3]:
        shutil.copy(p, photos / p.name)
    r = subprocess.run([cli, "predict", "--source", str(photos), "-q"], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert sorted(table["file"]) == sorted(p.name for p in photos.iterdir())

    port = _free_port()
    proc = subprocess.Popen([cli, "serve", "--port", str(port), "-q"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                health = httpx.get(url + "/health", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        else:
            pytest.fail("the service did not start")
        assert health.status_code == 200 and health.json()["engine"] == "onnx"
        assert health.json()["runs"][0].endswith("maskcls/weights/maskcls.onnx") and str(venv) in health.json()["runs"][0]
        photo = next(photos.iterdir())
        answer = httpx.post(url + "/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
                            timeout=60)
        assert answer.status_code == 200, answer.text
        assert "mask" in answer.json()
    finally:
        proc.terminate()
        proc.wait(20)
