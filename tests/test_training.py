"""Tiny trainings: the loss falls, a resumed run equals an uninterrupted one, early stopping stops."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from maskcls import engine
from maskcls.checkpoint import load_checkpoint
from maskcls.config import load_config
from maskcls.engine import fit
from maskcls.preprocess.faces import resolve_detector
from maskcls.runtime import unique_run_dir


class Interrupt(Exception):
    pass


def _state(run_dir: str | Path, which: str = "last") -> dict:
    return load_checkpoint(run_dir, which)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=1e-6), k
        else:
            assert torch.equal(a[k], b[k]), k


def test_training_loss_goes_down(tiny_cfg):
    cfg = tiny_cfg("train.epochs=4", "data.batch_size=16", "train.lr=0.003", "train.warmup_epochs=0",
                   "data.val_fraction=0", "data.augment=none", "model.drop_path_rate=0", "eval.class_bias=true")  # the loop, not the regularisers
    result = fit(cfg)
    log = pd.read_csv(Path(result["run_dir"]) / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3, 4]
    losses = log["train_loss"].to_numpy()
    assert losses[-1] < 0.75 * losses[0], losses
    assert losses[-2:].mean() < losses[:2].mean(), losses
    history = load_checkpoint(result["run_dir"], "last")["history"]
    assert [h["train_loss"] for h in history] == list(losses)
    assert Path(result["best"]).is_file()  # without validation the best checkpoint still exists
    decision = load_checkpoint(result["run_dir"], "best")["decision"]  # nothing to fit the class bias on: zeros
    assert decision["class_bias"] == [0.0] * 18 and "no validation" in decision["fitted_on"]


def test_resume_equals_uninterrupted_and_run_files(tiny_cfg):
    cfg = tiny_cfg("name=exp", "train.epochs=2")
    a = fit(cfg)
    run = Path(a["run_dir"])
    # run folder: checkpoints, the resolved config, metrics
    assert run == Path(cfg.project) / "exp"
    assert (run / "weights" / "best.pt").is_file() and (run / "weights" / "last.pt").is_file()
    assert a["best"] == str(run / "weights" / "best.pt")
    saved = load_config(run / "config.yaml")
    assert cfg.preprocess.detector == "auto" and saved.preprocess.detector == resolve_detector("auto") != "auto"
    assert saved == engine.pin_detector(cfg)  # the resolved config; auto pinned so a run keeps its framing
    state = load_checkpoint(run, "last")
    assert state["epoch"] == 1 and state["config"] == saved.to_dict() and "norm" in state
    assert 0.0 <= a["best_f1"] <= 1.0 and "f1" in a["metrics"]
    assert (run / "val_metrics.json").is_file() and (run / "log.csv").is_file()
    assert unique_run_dir(cfg.project, "exp") == Path(cfg.project) / "exp2"  # never overwrite a run

    # run B: interrupted after epoch 1, then resumed from its last.pt
    def stop_after_first(epoch, metrics):
        if epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(cfg, run_dir=Path(cfg.project) / "b", on_epoch=stop_after_first)
    b_last = Path(cfg.project) / "b" / "weights" / "last.pt"
    assert load_checkpoint(b_last)["epoch"] == 0
    b = fit(cfg, resume=b_last)
    assert b["run_dir"] == str(Path(cfg.project) / "b")
    _assert_same_weights(_state(a["run_dir"]), _state(b["run_dir"]))
    assert load_checkpoint(b["run_dir"], "last")["epoch"] == 1
    log_a = pd.read_csv(Path(a["run_dir"]) / "log.csv")
    log_b = pd.read_csv(Path(b["run_dir"]) / "log.csv")
    assert log_b["epoch"].tolist() == [1, 2]
    assert log_a["train_loss"].tolist() == log_b["train_loss"].tolist()
    assert a["best_f1"] == pytest.approx(b["best_f1"])


def test_resume_to_more_epochs_with_constant_lr(tiny_cfg):
    """``maskcls train --resume RUN train.epochs=2`` after a finished 1-epoch run."""
    base = ("train.max_batches=1", "train.scheduler=none", "train.warmup_epochs=0", "data.val_fraction=0")
    two = tiny_cfg("train.epochs=2", *base)
    a = fit(two, run_dir=Path(two.project) / "a")
    first = fit(tiny_cfg("train.epochs=1", *base), run_dir=Path(two.project) / "b")
    b = fit(two, resume=Path(first["run_dir"]) / "weights" / "last.pt")
    _assert_same_weights(_state(a["run_dir"]), _state(b["run_dir"]))


def test_early_stopping_stops(tiny_cfg, monkeypatch):
    real = engine.compute_metrics
    monkeypatch.setattr(engine, "compute_metrics", lambda t, p: {**real(t, p), "f1": 0.5})  # never improves
    cfg = tiny_cfg("train.epochs=6", "train.patience=2", "train.max_batches=1")
    result = fit(cfg)
    log = pd.read_csv(Path(result["run_dir"]) / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]  # best at 1, then 2 epochs without a better F1
    assert load_checkpoint(result["run_dir"], "best")["epoch"] == 0
    assert load_checkpoint(result["run_dir"], "last")["epoch"] == 2


def test_multi_head_trains(tiny_cfg):
    result = fit(tiny_cfg("model.head=multi", "loss.name=focal", "train.max_batches=1"))
    assert Path(result["best"]).is_file()
    assert len(result["metrics"]["per_class_f1"]) == 18
