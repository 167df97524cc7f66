"""Training engine: ``train_one_epoch`` and ``fit(cfg) -> metrics``; nothing after training imports it.

``fit`` only wires pieces together; every piece (reader, split, cache, model,
loss, sampler, mixing) is built by its own module from the config. Process
set-up lives in ``runtime``, data loading in ``data.loading`` and ``data.feeds``
(input path, this rank's batches), batch inference in ``inference`` and
data-parallel roles in ``distributed`` (under torchrun; no-ops otherwise); a
trained run is read back through ``run.Run``.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, from_dict, save_config
from .data.decode import Decoder
from .data.feeds import Feeds
from .data.labels_train import training_frame
from .data.loading import image_set, load_splits, load_train_frame, make_loader  # noqa: F401 (re-exported)
from .data.reader import Report
from .data.splits import SPLIT_FILE, save_split
from .decision import decide, fit_class_bias, macro_f1, zero_decision
from .inference import predict_probs
from .losses import loss_from_config
from .metrics import compute_metrics, summary_text, write_metrics
from .models import MaskNet, data_config, model_from_config
from .preflight import check_before_training
from .run import run_folder
from .runtime import resolve_device, seed_everything, setup_torch, unique_run_dir
from .targets import encoder_from_config

log = logging.getLogger("maskcls")


# ----------------------------------------------------------------------------- loops
def train_one_epoch(model: MaskNet, loader, criterion, optimizer, scheduler, device, *, scaler=None, accumulate=1,
                    mixer=None, max_batches=0, progress=True, desc="train", channels_last=False, ema=None) -> float:
    """One pass over ``loader``; returns the mean training loss. ``ema`` is updated after each optimizer step."""
    model.train()
    amp = device.type == "cuda" and scaler is not None and scaler.is_enabled()
    total, count = 0.0, 0
    n = len(loader) if not max_batches else min(max_batches, len(loader))
    bar = tqdm(loader, total=n, desc=desc, leave=False, disable=not progress, unit="batch")
    optimizer.zero_grad(set_to_none=True)
    for step, (x, y) in enumerate(bar):
        if max_batches and step >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mixer is not None:
            x, y = mixer(x, y)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast(device.type, dtype=torch.float16) if amp else nullcontext():
            loss = criterion(model(x), y)
        (scaler.scale(loss / accumulate) if amp else loss / accumulate).backward()
        if (step + 1) % accumulate == 0 or step + 1 == n:
            if amp:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            if ema is not None:  # the scheduler's step count drives the warm-up, and resumes with it
                ema.update(distributed.unwrap(model), step=scheduler.last_epoch if scheduler is not None else None)
        total += loss.item() * len(x)
        count += len(x)
        bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return total / max(count, 1)


def build_ema(model: torch.nn.Module, cfg: Config):
    """timm's ModelEmaV3 of the weights (with warm-up), or None when ``train.ema`` is off.

    With few people the weights chase each batch; their average generalises
    better and costs one extra copy of a small model.
    """
    if not cfg.train.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=True)


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    t = cfg.train
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:  # model.freeze_blocks
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer '{t.optimizer}'; choose adamw or sgd")


def lr_factor(step: int, *, total: int, warmup: int, kind: str, steps_per_epoch: int, step_size: int,
              gamma: float) -> float:
    """Linear warm-up, then cosine to 1% / step decay / constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if kind == "step":
        return gamma ** (step // max(1, step_size * steps_per_epoch))
    return 1.0


def build_scheduler(optimizer, cfg: Config, steps_per_epoch: int):
    t = cfg.train
    total = steps_per_epoch * t.epochs
    warmup = int(t.warmup_epochs * steps_per_epoch)
    fn = lambda s: lr_factor(s, total=total, warmup=warmup, kind=t.scheduler, steps_per_epoch=steps_per_epoch,
                             step_size=t.step_size, gamma=t.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


# ----------------------------------------------------------------------------- fit
class Logger:
    """Per-epoch rows to ``log.csv`` and TensorBoard."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "log.csv"
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        except Exception as e:  # tensorboard is optional at run time
            log.info("tensorboard off (%s)", e)

    def log(self, row: dict) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def restore(self, history: list[dict]) -> None:
        """On resume, rewrite log.csv from the checkpoint's history: a kill between last.pt and the row loses none."""
        rows = [{k: v for k, v in h.items() if k != "best_metrics"} for h in history]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["epoch"])
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def fit_decision(cfg: Config, best_val, model, val_ds, device, run_dir: Path) -> dict:
    """Per-class biases for macro F1 fitted on the best model's validation probabilities.

    Stored as ``decision`` in best.pt and last.pt; zeros (plain argmax) without
    validation persons or with ``eval.class_bias=false``.
    """
    weights = run_dir / "weights"
    if not cfg.eval.class_bias:
        decision = {**zero_decision(), "fitted_on": "nothing (eval.class_bias=false)"}
    elif not len(val_ds):
        decision = {**zero_decision(), "fitted_on": "nothing (no validation persons)"}
        log.info("class bias: no validation persons (data.val_fraction=0), nothing to fit; stored zeros (argmax)")
    else:
        if best_val is None:  # resumed after the best epoch: score the best weights once more
            model.load_state_dict(load_checkpoint(weights / "best.pt")["model"])
            best_val = predict_probs(model, make_loader(val_ds, cfg, train=False), device)
        probs, labels = best_val
        bias = fit_class_bias(probs, labels)
        before, after = macro_f1(labels, probs.argmax(1)), macro_f1(labels, decide(probs, {"class_bias": bias}))
        decision = {"class_bias": [float(b) for b in bias], "fitted_on": f"{len(labels)} validation images",
                    "val_f1_argmax": round(before, 5), "val_f1_with_bias": round(after, 5)}
        log.info("class bias fitted on %d validation images: val macro F1 %.4f -> %.4f (optimistic: same persons)",
                 len(labels), before, after)
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(weights / name)
        state.pop("path", None)
        save_checkpoint({**state, "decision": decision}, weights / name)
    return decision


def fit(cfg: Config, *, splits: tuple[pd.DataFrame, pd.DataFrame] | None = None, resume: str | Path | None = None,
        run_dir: str | Path | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train a model from a config; returns the best validation metrics and the run paths.

    ``splits`` overrides the holdout split (k-fold passes its folds), ``resume``
    continues from a ``last.pt``, ``on_epoch(epoch, metrics)`` is called after
    each validation (Optuna prunes from it by raising).
    """
    state = None
    if resume:
        state = load_checkpoint(resume, "last")
        cfg = from_dict(state["config"]) if cfg is None else cfg
        run_dir = run_folder(state["path"])
    check_before_training(cfg, paths=splits is None)  # one line for a bad device, model name or path
    if cfg.train.processes > 1 and not distributed.launched():
        log.warning("train.processes=%d is started by `maskcls train` (or torchrun); this runs in one process",
                    cfg.train.processes)
    decoder = Decoder(cfg.data, cfg.preprocess)  # checks the face detector / background remover, still before data
    setup_torch(cfg.train.threads)
    seed_everything(cfg.train.seed)
    d = distributed.setup(resolve_device(cfg.train.device))  # under torchrun: this rank's device and role
    device = d.device
    report = Report()
    train_df, val_df = splits if splits is not None else load_splits(cfg, report)
    # the run folder is made only once the data reads: a wrong path leaves no empty runs/train2
    if d.main:  # rank 0 alone writes; the others learn the folder from it
        run_dir = Path(run_dir) if run_dir else unique_run_dir(cfg.project, cfg.name)
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if state is None or not (run_dir / SPLIT_FILE).is_file():  # the persons it trains on, for evaluate, kfold
            save_split(train_df, val_df, cfg.data.root, run_dir / SPLIT_FILE)
    run_dir = Path(distributed.broadcast(d, str(run_dir)))
    log.info("run folder: %s (device %s, %d threads%s)", run_dir, device, torch.get_num_threads(),
             f", {d.world} processes" if d.enabled else "")
    overlap = set(train_df["person"]) & set(val_df["person"]) if cfg.data.split == "person" else set()
    if overlap:
        raise RuntimeError(f"{len(overlap)} persons are in both train and validation, e.g. {sorted(overlap)[0]}")
    progress = cfg.train.progress and d.main
    with distributed.local_first(d):  # one decode-cache build per node
        both = image_set(pd.concat([train_df.assign(_split="train"), val_df.assign(_split="val")]), decoder, cfg,
                         progress)
    if both.errors:  # now, before the first epoch, not after hours of training
        log.warning("%d unreadable images will be skipped:\n  %s", len(both.errors), "\n  ".join(both.errors))
    train_all = both.frame[both.frame["_split"] == "train"]
    train_set_frame = training_frame(train_all, cfg.data)
    val_frame = both.frame[both.frame["_split"] == "val"].reset_index(drop=True)
    src_index = {p: i for i, p in enumerate(both.frame["path"])}
    tr_rows = np.array([src_index[p] for p in train_set_frame["path"]], dtype=int)
    va_rows = np.array([src_index[p] for p in val_frame["path"]], dtype=int)

    model = model_from_config(cfg).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    norm = data_config(model)
    encoder = encoder_from_config(cfg)
    feeds = Feeds(cfg, d, device, (train_set_frame, lambda i: both.source(tr_rows[i])),
                  (val_frame, lambda i: both.source(va_rows[i])), norm, ages=encoder.age_bins > 0)
    train_ds, val_ds = feeds.train_ds, feeds.val_ds
    log.info("train %d photos of %d persons, val %d photos of %d persons; input path: %s", len(train_ds),
             train_set_frame["person"].nunique(), len(val_ds), val_frame["person"].nunique(), feeds.path)

    from .mix import build_mixer  # noqa: WPS433 (optional techniques live in their own modules)

    criterion = loss_from_config(cfg.loss, cfg.model.head, train_set_frame["label"].to_numpy(), encoder).to(device)
    mixer = build_mixer(cfg.mix, train_ds, seed=cfg.train.seed, encoder=encoder)
    optimizer = build_optimizer(model, cfg)
    steps = feeds.steps()
    if cfg.train.max_batches:
        steps = min(steps, cfg.train.max_batches)
    scheduler = build_scheduler(optimizer, cfg, math.ceil(steps / cfg.train.accumulate))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp and device.type == "cuda")
    start, best_f1, bad_epochs, history = 0, -math.inf, 0, []  # -loss (no validation) is below -1
    ema = build_ema(model, cfg)
    if state is not None:
        model.load_state_dict(state.get("train_model", state["model"]))
        if ema is not None:
            ema.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, best_f1, bad_epochs, history = state["epoch"] + 1, state["best_f1"], state["bad_epochs"], state["history"]
        log.info("resumed %s at epoch %d", state["path"], start + 1)
    model = distributed.wrap(d, model)  # DDP under torchrun: gradients averaged over ranks

    from .model_card import training_summary, write_model_card, write_val_predictions

    training = training_summary(cfg.data.root, train_set_frame, val_frame)  # rides in checkpoints and the ONNX file
    logger = Logger(run_dir) if d.main else None
    if logger is not None and state is not None:
        logger.restore(history)
    best_metrics: dict = history[-1].get("best_metrics", {}) if history else {}
    best_val = None  # (probs, labels) of the best epoch's validation: the class bias is fitted on them
    t_start = time.time()
    for epoch in range(start, cfg.train.epochs):
        t0 = time.time()
        epoch_seed = cfg.train.seed * 1000 + epoch  # same data order and augmentation after a resume
        torch.manual_seed(epoch_seed + distributed.RANK_SEED * d.rank)
        if mixer is not None and hasattr(mixer, "set_epoch"):
            mixer.set_epoch(epoch_seed + distributed.RANK_SEED * d.rank)
        loader = feeds.train_batches(epoch_seed)
        train_loss = train_one_epoch(model, loader, criterion, optimizer, scheduler, device, scaler=scaler,
                                     accumulate=cfg.train.accumulate, mixer=mixer, max_batches=cfg.train.max_batches,
                                     progress=progress, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                                     channels_last=cfg.train.channels_last, ema=ema)
        train_loss = distributed.mean(d, train_loss)
        served = ema.module if ema is not None else distributed.unwrap(model)  # what validation scores, best.pt ships
        train_time = time.time() - t0
        metrics = {}
        if len(val_ds):
            probs, labels = predict_probs(served, feeds.val_batches(), device, progress=progress)
            probs, labels = feeds.gather(probs, labels)  # every rank: the whole validation set, each photo once
            metrics = compute_metrics(labels, probs.argmax(1))
        f1 = metrics.get("f1", -train_loss)  # without validation, "best" is the last epoch
        improved = f1 > best_f1
        best_f1, bad_epochs = (f1, 0) if improved else (best_f1, bad_epochs + 1)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_f1": round(metrics.get("f1", float("nan")), 5),
               "val_accuracy": round(metrics.get("accuracy", float("nan")), 5),
               "val_age_f1": round(metrics.get("age_f1", float("nan")), 5), "lr": optimizer.param_groups[0]["lr"],
               "train_images_per_s": round(min(len(train_ds), steps * cfg.data.batch_size) / train_time, 2),
               "epoch_s": round(time.time() - t0, 2)}
        if improved:
            best_metrics = {k: v for k, v in metrics.items()}
            best_val = (probs, labels) if metrics else None
        history.append({**row, "best_metrics": best_metrics})
        if d.main:
            trained = distributed.unwrap(model)
            # last.pt: everything a resume needs; best.pt: only what inference needs (a quarter of the size)
            inference = {"model": served.state_dict(), "config": cfg.to_dict(), "norm": norm,
                         "training_data": training, "epoch": epoch, "best_f1": best_f1}
            save_checkpoint({**inference, **({"train_model": trained.state_dict()} if ema is not None else {}),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict(), "bad_epochs": bad_epochs, "history": history},
                            run_dir / "weights" / "last.pt")
            if improved:
                save_checkpoint({**inference, "metrics": best_metrics}, run_dir / "weights" / "best.pt")
            logger.log(row)  # after last.pt: a kill in between cannot duplicate the row on resume
        log.info("epoch %d/%d  loss %.4f  val F1 %.4f  (%.0fs)%s", epoch + 1, cfg.train.epochs, train_loss,
                 metrics.get("f1", float("nan")), time.time() - t0, "  *best*" if improved else "")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if cfg.train.patience and bad_epochs >= cfg.train.patience:
            log.info("early stop: no better val F1 for %d epochs", bad_epochs)
            break
    if logger is not None:
        logger.close()
    decision = fit_decision(cfg, best_val, distributed.unwrap(model), val_ds, device, run_dir) if d.main else None
    decision = distributed.broadcast(d, decision)
    problems = report.warnings + both.errors + feeds.errors  # the latter: no cache
    if both.errors:
        log.warning("%d unreadable images were skipped (listed before the first epoch)", len(both.errors))
    result = {"run_dir": str(run_dir), "best": str(run_dir / "weights" / "best.pt"), "best_f1": best_f1,
              "decision": decision,
              "wall_s": round(time.time() - t_start, 1), "problems": problems}
    if best_metrics:
        if d.main:
            write_metrics(best_metrics, run_dir, "val_metrics", title="validation (best epoch)")
        result["metrics"] = best_metrics
        log.info("\n%s", summary_text(best_metrics, "validation (best epoch)"))
    if d.main:
        if best_val is not None and len(best_val[1]) == len(val_frame) and \
                (np.asarray(best_val[1]) == val_frame["label"].to_numpy()).all():  # rows in val_frame's order
            write_val_predictions(run_dir, val_frame, best_val[0].argmax(1))  # the card's per-group table
        result["model_card"] = str(write_model_card(run_dir, training))
    result["model_card"] = str(distributed.broadcast(d, result.get("model_card")))
    distributed.shutdown(d)  # only a process group setup() made
    return result
