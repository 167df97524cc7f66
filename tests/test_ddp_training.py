"""``maskcls train`` under torchrun: 2 gloo processes on CPU equal one process with the same global batch.

Tolerance: the comparison removes every source of per-rank difference that is
not a bug: a backbone without batch statistics (convnext_atto: LayerNorm is
per photo, so half a batch normalises like the whole; with BatchNorm each rank
normalises over its 4 photos, a real difference of the method), no dropout
or stochastic depth, no random augmentation, SGD (EMA stays on: it is
deterministic). Then the DDP gradient, the mean of
the two half-batch gradients, equals the one-process gradient up to float32
summation order (~1e-7 relative), so after 2 steps (4 in the resume test) the
weights agree to 1e-5 (measured: 1e-8), the validation probabilities to ~1e-6
and the validation F1 exactly (asserted to 1e-6). Data and seeds are fixed, so
this is not flaky: a near-tie would fail every time, not sometimes. The
class-balanced sampler stays on: each rank takes its shard of the same
weighted draw.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from maskcls.checkpoint import load_checkpoint
from maskcls.config import load_config
from maskcls.engine import fit

from conftest import TINY

SAME = ["model.name=convnext_atto", "model.pretrained=false", "model.drop_rate=0", "model.drop_path_rate=0",
        "data.crop_fraction=1.0", "data.augment=none", "mix.name=none",
        "train.optimizer=sgd", "train.lr=0.01", "train.scheduler=none", "train.warmup_epochs=0", "data.sampler=class"]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "maskcls.cli",
            "train", "-q"]
MASKCLS_TRAIN = [sys.executable, "-m", "maskcls.cli", "train"]  # + train.processes=2: it starts torchrun itself


def _torchrun(tmp_path: Path, *args: str, cmd: list[str] = TORCHRUN, ok: bool = True) -> subprocess.CompletedProcess:
    """2 CPU processes; on a hang (or a starved machine) the whole process group is killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [*cmd, *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)  # the workers share the session: one kill ends them all
    try:
        stdout, stderr = proc.communicate(timeout=900)  # ~45 s normally; generous for a shared, busy CPU
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if ok:
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _base(demo_root) -> list[str]:
    return [f"data.root={demo_root}", "data.val_fraction=0.25", *TINY, *SAME]  # global batch 8: 2 x 4 under DDP


def _single(tmp_path, demo_root, epochs: int) -> tuple[dict, pd.DataFrame]:
    result = fit(load_config(None, [*_base(demo_root), f"project={tmp_path / 'one'}", f"data.cache_dir={tmp_path / 'c1'}",
                                    f"train.epochs={epochs}", "name=single"]))
    return result, pd.read_csv(Path(result["run_dir"]) / "log.csv")


def _ddp_args(tmp_path, demo_root) -> list[str]:
    return [*_base(demo_root), f"project={tmp_path / 'ddp'}", f"data.cache_dir={tmp_path / 'c2'}", "name=ddp"]


def _one_run_folder(tmp_path) -> Path:
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["ddp"]  # rank 1 made no run folder
    run = tmp_path / "ddp" / "ddp"
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]  # one checkpoint set
    return run


def test_two_gloo_processes_match_one_process(tmp_path, demo_root):
    single, one_log = _single(tmp_path, demo_root, epochs=1)
    # `maskcls train train.processes=2` launches the 2 workers itself (train.threads split: 2 cores -> 1 each)
    out = _torchrun(tmp_path, *_ddp_args(tmp_path, demo_root), "train.epochs=1", "train.processes=2",
                    cmd=MASKCLS_TRAIN)
    threads = max(1, (os.cpu_count() or 1) // 2)  # the cores shared out, not every core per process
    assert f"(device cpu, {threads} threads, 2 processes)" in out.stderr, out.stderr[-2000:]  # 2 ranks really ran
    assert out.stdout.count("run: ") == 1  # one summary line for the job
    run = _one_run_folder(tmp_path)
    log = pd.read_csv(run / "log.csv")
    assert log["epoch"].tolist() == [1]
    assert log["val_f1"][0] == pytest.approx(one_log["val_f1"][0], abs=1e-6)
    assert log["train_loss"][0] == pytest.approx(one_log["train_loss"][0], abs=1e-4)  # mean over ranks
    ddp_state, one_state = load_checkpoint(run, "last"), load_checkpoint(single["run_dir"], "last")
    assert not any(k.startswith("module.") for k in ddp_state["model"])  # the plain model, loadable anywhere
    for k, v in one_state["model"].items():
        if v.is_floating_point():
            assert torch.allclose(ddp_state["model"][k], v, atol=1e-5), k
    assert (run / "val_metrics.json").is_file() and (run / "split.csv").is_file()


@pytest.mark.slow  # two torchrun launches, ~1.5 min on 2 cores
def test_resume_under_torchrun_equals_uninterrupted_single_process(tmp_path, demo_root):
    single, one_log = _single(tmp_path, demo_root, epochs=2)
    _torchrun(tmp_path, *_ddp_args(tmp_path, demo_root), "train.epochs=1")
    run = _one_run_folder(tmp_path)
    _torchrun(tmp_path, "--resume", str(run), "train.epochs=2")  # one epoch more, resumed by both ranks
    _one_run_folder(tmp_path)
    log = pd.read_csv(run / "log.csv")
    assert log["epoch"].tolist() == [1, 2]
    assert log["val_f1"].tolist() == pytest.approx(one_log["val_f1"].tolist(), abs=1e-6)
    ddp_state, one_state = load_checkpoint(run, "last"), load_checkpoint(single["run_dir"], "last")
    assert ddp_state["epoch"] == 1
    for k, v in one_state["model"].items():
        if v.is_floating_point():
            assert torch.allclose(ddp_state["model"][k], v, atol=1e-5), k
    assert ddp_state["best_f1"] == pytest.approx(single["best_f1"], abs=1e-6)


def test_processes_failing_worker_gives_one_error_line(tmp_path, demo_root):
    """A worker that stops on bad data: its own error, one line from the launcher, no torchrun traceback."""
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "train" / "train.csv").write_text("id,gender\n")  # passes the path check, fails in the reader
    (root / "train" / "images").mkdir()
    out = _torchrun(tmp_path, f"data.root={root}", f"project={tmp_path / 'runs'}", "train.processes=2",
                    *TINY, cmd=[*MASKCLS_TRAIN, "-q"], ok=False)
    assert out.returncode != 0
    assert "maskcls: error: training process 0 of 2 exited with code" in out.stderr, out.stderr[-3000:]
    assert "train.csv" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert not (tmp_path / "runs").exists()  # nothing half-made
