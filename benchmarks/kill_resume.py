"""A real kill and resume: SIGKILL ``maskcls train`` mid-run, ``--resume`` it, compare with an uninterrupted run.

Makes tiny demo data, trains run A without interruption, starts run B, kills it
with SIGKILL as soon as its first ``last.pt`` is written (so inside epoch 2),
resumes B with ``maskcls train --resume`` and compares the final weights of A
and B tensor by tensor (``torch.equal``: bit-identical) and their log.csv rows.
Bounded: tiny data, a few batches per epoch, a timeout on every step.

    .venv/bin/python benchmarks/kill_resume.py
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from maskcls.data.demo import make_demo_data


def train(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskcls.cli", "train", *args, "-q"], env=env, timeout=timeout,
                          capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batches", type=int, default=6, help="train.max_batches per epoch")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_demo_data(tmp / "data", persons=12, eval_persons=2, size=(48, 64))
        common = [f"data.root={root}", f"project={tmp / 'runs'}", f"data.cache_dir={tmp / 'cache'}",
                  "data.decode_size=[64,48]", "data.image_size=[64,48]", "data.batch_size=8", "data.val_fraction=0.25",
                  f"train.epochs={args.epochs}", f"train.max_batches={args.batches}", "train.threads=1",
                  "train.progress=false"]
        a = train([*common, "name=a"], env)
        assert a.returncode == 0, a.stderr[-2000:]
        run_b = tmp / "runs" / "b"
        last = run_b / "weights" / "last.pt"
        proc = subprocess.Popen([sys.executable, "-m", "maskcls.cli", "train", *common, "name=b", "-q"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        epochs_at_kill = len(pd.read_csv(run_b / "log.csv")) if (run_b / "log.csv").exists() else 0
        killed_at = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
        b = train(["--resume", str(run_b)], env)
        assert b.returncode == 0, b.stderr[-2000:]
        wa = torch.load(tmp / "runs" / "a" / "weights" / "last.pt", map_location="cpu", weights_only=True)
        wb = torch.load(last, map_location="cpu", weights_only=True)
        same = [k for k in wa["model"] if torch.equal(wa["model"][k], wb["model"][k])]
        log_a = pd.read_csv(tmp / "runs" / "a" / "log.csv")
        log_b = pd.read_csv(run_b / "log.csv")
        result = {"epochs": args.epochs, "killed_after_epoch": killed_at, "log_rows_at_kill": epochs_at_kill,
                  "tensors": len(wa["model"]), "bit_identical_tensors": len(same),
                  "optimizer_state_equal": all(torch.equal(x, y) for x, y in zip(
                      [t for s in wa["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)],
                      [t for s in wb["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)])),
                  "log_epochs_b": log_b["epoch"].tolist(),
                  "train_loss_equal": log_a["train_loss"].tolist() == log_b["train_loss"].tolist(),
                  "val_f1_equal": log_a["val_f1"].tolist() == log_b["val_f1"].tolist()}
    print(json.dumps(result, indent=1))
    ok = result["bit_identical_tensors"] == result["tensors"] and result["train_loss_equal"] and killed_at < args.epochs
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
