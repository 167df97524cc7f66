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
from dataclasses import dataclass, field, replace
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
from .data.imageset import image_set
from .data.loading import load_splits, make_loader
from .data.reader import Report
from .data.training_set import TrainingData, assemble
from .data.splits import SPLIT_FILE, save_split
from .decision import fitted_decision
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
def train_one_epoch(model: MaskNet, loader, criterion, optimizer, scheduler, device, *, scaler=None,
                    mixer=None, max_batches=0, progress=True, desc="train", ema=None) -> float:
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
        x = x.contiguous(memory_format=torch.channels_last)  # NHWC, as the model's weights
        with torch.autocast(device.type, dtype=torch.float16) if amp else nullcontext():
            loss = criterion(model(x), y)
        (scaler.scale(loss) if amp else loss).backward()
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
        return torch.optim.SGD(groups, lr=t.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer '{t.optimizer}'; choose adamw or sgd")


def lr_factor(step: int, *, total: int, warmup: int, kind: str) -> float:
    """Linear warm-up, then cosine to 1% or constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def build_scheduler(optimizer, cfg: Config, steps_per_epoch: int):
    t = cfg.train
    total = steps_per_epoch * t.epochs
    warmup = int(t.warmup_epochs * steps_per_epoch)
    fn = lambda s: lr_factor(s, total=total, warmup=warmup, kind=t.scheduler)
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
    if cfg.eval.class_bias and len(val_ds) and best_val is None:  # resumed after the best epoch: score it again
        model.load_state_dict(load_checkpoint(weights / "best.pt")["model"])
        best_val = predict_probs(model, make_loader(val_ds, cfg, train=False), device)
    probs, labels = best_val if best_val is not None and len(val_ds) else (np.zeros((0, 18)), np.zeros(0, int))
    decision = fitted_decision(probs, labels, what="validation images", enabled=cfg.eval.class_bias)
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(weights / name)
        state.pop("path", None)
        save_checkpoint({**state, "decision": decision}, weights / name)
    return decision


@dataclass
class Training:
    """The pieces of one run that the epoch loop drives (built by ``build_training``)."""

    model: torch.nn.Module
    norm: dict
    feeds: Feeds
    criterion: torch.nn.Module
    mixer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    ema: object
    steps: int


@dataclass
class Progress:
    """Where the loop stands; a resume restores it from last.pt."""

    start: int = 0
    best_f1: float = -math.inf  # -loss (no validation) is below -1
    bad_epochs: int = 0
    history: list = field(default_factory=list)


def fit(cfg: Config, *, splits: tuple[pd.DataFrame, pd.DataFrame] | None = None, resume: str | Path | None = None,
        run_dir: str | Path | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train a model from a config; returns the best validation metrics and the run paths.

    ``splits`` overrides the holdout split (k-fold passes its folds), ``resume``
    continues from a ``last.pt``, ``on_epoch(epoch, metrics)`` is called after
    each validation (Optuna prunes from it by raising).
    """
    state = load_checkpoint(resume, "last") if resume else None
    if state is not None:
        cfg = from_dict(state["config"]) if cfg is None else cfg
        run_dir = run_folder(state["path"])
    cfg = pin_detector(cfg)
    d, decoder, report = prepare(cfg, checked_paths=splits is None)
    train_df, val_df = splits if splits is not None else load_splits(cfg, report)
    run_dir = open_run_folder(cfg, d, run_dir, train_df, val_df, resumed=state is not None)
    check_split(cfg, train_df, val_df)
    with distributed.local_first(d):  # one decode-cache build per node
        data = assemble(cfg, train_df, val_df, decoder, progress=cfg.train.progress and d.main, report=report)
    t = build_training(cfg, d, data)
    progress = restore(t, state) if state is not None else Progress()
    t.model = distributed.wrap(d, t.model)  # DDP under torchrun: gradients averaged over ranks
    best_metrics, best_val, wall = run_epochs(cfg, d, t, data, progress, run_dir, state, on_epoch)
    return finish(cfg, d, t, data, report, run_dir, progress, best_metrics, best_val, wall)


def pin_detector(cfg: Config) -> Config:
    """``preprocess.detector=auto`` replaced by the detector it resolves to here, so the run keeps its framing.

    Training frames boxes (``data.sources``) with the resolved detector's
    geometry; ``auto`` resolved again at load time on another install can
    pick another detector and frame faces differently (a run trained under
    MTCNN framing read held-out street faces at 0.878, under CenterFace's
    0.850: notes/sources.md). config.yaml, checkpoints and ONNX metadata
    then name the detector the run was trained with; an override still wins.
    """
    if cfg.preprocess.detector != "auto":
        return cfg
    from .preprocess.faces import resolve_detector

    return replace(cfg, preprocess=replace(cfg.preprocess, detector=resolve_detector("auto")))


def prepare(cfg: Config, *, checked_paths: bool) -> tuple[distributed.Dist, Decoder, Report]:
    """Up-front checks (one line each), the decoder, threads, seeds and this process's role."""
    check_before_training(cfg, paths=checked_paths)  # one line for a bad device, model name or path
    if cfg.train.processes > 1 and not distributed.launched():
        log.warning("train.processes=%d is started by `maskcls train` (or torchrun); this runs in one process",
                    cfg.train.processes)
    decoder = Decoder(cfg.data, cfg.preprocess)  # checks the face detector / background remover, still before data
    setup_torch(cfg.train.threads)
    seed_everything(cfg.train.seed)
    return distributed.setup(resolve_device(cfg.train.device)), decoder, Report()  # under torchrun: rank's device


def open_run_folder(cfg: Config, d, run_dir, train_df: pd.DataFrame, val_df: pd.DataFrame, *, resumed: bool) -> Path:
    """The run folder with config.yaml and split.csv, made only once the data reads (no empty runs/train2)."""
    if d.main:  # rank 0 alone writes; the others learn the folder from it
        run_dir = Path(run_dir) if run_dir else unique_run_dir(cfg.project, cfg.name)
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if not resumed or not (run_dir / SPLIT_FILE).is_file():  # the persons it trains on, for evaluate, kfold
            save_split(train_df, val_df, cfg.data.root, run_dir / SPLIT_FILE)
    run_dir = Path(distributed.broadcast(d, str(run_dir)))
    log.info("run folder: %s (device %s, %d threads%s)", run_dir, d.device, torch.get_num_threads(),
             f", {d.world} processes" if d.enabled else "")
    return run_dir


def check_split(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame) -> None:
    overlap = set(train_df["person"]) & set(val_df["person"])
    if overlap:
        raise RuntimeError(f"{len(overlap)} persons are in both train and validation, e.g. {sorted(overlap)[0]}")


def build_training(cfg: Config, d, data: TrainingData) -> Training:
    """Model, batches, loss, mixing, optimizer, schedule, AMP scaler and EMA, in the order the seeds expect."""
    device = d.device
    model = model_from_config(cfg).to(device).to(memory_format=torch.channels_last)
    norm = data_config(model)
    encoder = encoder_from_config(cfg)
    feeds = Feeds(cfg, d, device, (data.train.frame, data.train.source), (data.val.frame, data.val.source), norm,
                  ages=encoder.age_bins > 0, real=(data.real.frame, data.real.source) if data.real else None)
    comp = data.competition_train
    log.info("train %d photos of %d persons, val %d photos of %d persons; input path: %s", len(comp),
             comp["person"].nunique(), len(feeds.val_ds), data.val.frame["person"].nunique(), feeds.path)
    if data.real is not None:
        log.info("data.sources: %d training faces drawn at %s of each batch (%d draws an epoch); %d held-out faces "
                 "scored by mask each epoch", len(data.train.frame) - len(comp),
                 ", ".join(f"{s} {w:g}" for s, w in feeds.source_weights().items()), feeds.draws, len(data.real.frame))

    from .mix import build_mixer  # noqa: WPS433 (optional techniques live in their own modules)

    criterion = loss_from_config(cfg.loss, cfg.model.head, encoder).to(device)
    mixer = build_mixer(cfg.mix, feeds.train_ds, seed=cfg.train.seed, encoder=encoder)
    optimizer = build_optimizer(model, cfg)
    steps = feeds.steps()
    if cfg.train.max_batches:
        steps = min(steps, cfg.train.max_batches)
    scheduler = build_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    ema = build_ema(model, cfg)
    return Training(model, norm, feeds, criterion, mixer, optimizer, scheduler, scaler, ema, steps)



def restore(t: Training, state: dict) -> Progress:
    """Weights, EMA, optimizer, schedule and scaler from last.pt; the loop continues after its epoch."""
    t.model.load_state_dict(state.get("train_model", state["model"]))
    if t.ema is not None:
        t.ema.module.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    t.scaler.load_state_dict(state["scaler"])
    log.info("resumed %s at epoch %d", state["path"], state["epoch"] + 2)
    return Progress(state["epoch"] + 1, state["best_f1"], state["bad_epochs"], state["history"])


def run_epochs(cfg: Config, d, t: Training, data: TrainingData, p: Progress, run_dir: Path, state,
               on_epoch) -> tuple[dict, tuple | None, float]:
    """The epoch loop: train, validate, save; returns (best metrics, best validation probs, seconds)."""
    training = data_summary(cfg, data)  # rides in checkpoints and the ONNX file
    logger = Logger(run_dir) if d.main else None
    if logger is not None and state is not None:
        logger.restore(p.history)
    best_metrics: dict = p.history[-1].get("best_metrics", {}) if p.history else {}
    best_val = None  # (probs, labels) of the best epoch's validation: the class bias is fitted on them
    t_start = time.time()
    for epoch in range(p.start, cfg.train.epochs):
        t0 = time.time()
        train_loss = train_epoch(cfg, d, t, epoch)
        served = t.ema.module if t.ema is not None else distributed.unwrap(t.model)  # what validation scores, best.pt ships
        train_time = time.time() - t0
        metrics, probs, labels = validate(t, served, d)
        f1 = metrics.get("f1", -train_loss)  # without validation, "best" is the last epoch
        improved = f1 > p.best_f1
        p.best_f1, p.bad_epochs = (f1, 0) if improved else (p.best_f1, p.bad_epochs + 1)
        real = score_real(t, served, data, d.device)
        row = {**epoch_row(cfg, t, epoch, train_loss, metrics, train_time, t0), **real}
        if improved:
            best_metrics = {k: v for k, v in metrics.items()}
            best_val = (probs, labels) if metrics else None
        p.history.append({**row, "best_metrics": best_metrics})
        if d.main:
            save_epoch(cfg, t, served, training, epoch, p, best_metrics, improved, run_dir)
            logger.log(row)  # after last.pt: a kill in between cannot duplicate the row on resume
        log.info("epoch %d/%d  loss %.4f  val F1 %.4f%s  (%.0fs)%s", epoch + 1, cfg.train.epochs, train_loss,
                 metrics.get("f1", float("nan")), real_text(real), time.time() - t0, "  *best*" if improved else "")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if cfg.train.patience and p.bad_epochs >= cfg.train.patience:
            log.info("early stop: no better val F1 for %d epochs", p.bad_epochs)
            break
    if logger is not None:
        logger.close()
    return best_metrics, best_val, time.time() - t_start


def train_epoch(cfg: Config, d, t: Training, epoch: int) -> float:
    """One epoch's batches (order and augmentation from the seed and the epoch) through ``train_one_epoch``."""
    epoch_seed = cfg.train.seed * 1000 + epoch  # same data order and augmentation after a resume
    torch.manual_seed(epoch_seed + distributed.RANK_SEED * d.rank)
    if t.mixer is not None and hasattr(t.mixer, "set_epoch"):
        t.mixer.set_epoch(epoch_seed + distributed.RANK_SEED * d.rank)
    loader = t.feeds.train_batches(epoch_seed)
    loss = train_one_epoch(t.model, loader, t.criterion, t.optimizer, t.scheduler, d.device, scaler=t.scaler,
                           mixer=t.mixer, max_batches=cfg.train.max_batches,
                           progress=cfg.train.progress and d.main, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                           ema=t.ema)
    return distributed.mean(d, loss)


def validate(t: Training, served, d) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """Metrics on the competition's validation persons (every rank: the whole set, each photo once)."""
    if not len(t.feeds.val_ds):
        return {}, None, None
    probs, labels = predict_probs(served, t.feeds.val_batches(), d.device, progress=t.feeds.progress)
    probs, labels = t.feeds.gather(probs, labels)
    return compute_metrics(labels, probs.argmax(1)), probs, labels


def score_real(t: Training, served, data: TrainingData, device) -> dict:
    """Mask accuracy and recall per state on the sources' held-out faces (log.csv columns ``real_*``)."""
    if data.real is None:
        return {}
    from .devsets import mask_metrics

    probs, _ = predict_probs(served, t.feeds.real_batches(), device, progress=t.feeds.progress, desc="real")
    m = mask_metrics(data.real.frame["mask"].to_numpy(), probs.argmax(1) // 6)
    nan = float("nan")
    return {"real_mask_accuracy": m["mask_accuracy"],
            **{f"real_recall_{k}": nan if v is None else v for k, v in m["mask_recall"].items()}}


def real_text(real: dict) -> str:
    if not real:
        return ""
    return (f"  real mask acc {real['real_mask_accuracy']:.3f} (recall wear {real['real_recall_wear']:.2f} "
            f"incorrect {real['real_recall_incorrect']:.2f} not {real['real_recall_not_wear']:.2f})")


def data_summary(cfg: Config, data: TrainingData) -> dict:
    """What the run trained on (model card, checkpoints): the competition split, plus each extra source's faces."""
    from .model_card import training_summary

    out = training_summary(cfg.data.root, data.competition_train, data.val.frame)
    if cfg.data.sources:
        from .data.sources import summary

        out["sources"] = summary(cfg, data.train.frame, data.real.frame if data.real else None)
    return out


def epoch_row(cfg: Config, t: Training, epoch: int, train_loss: float, metrics: dict, train_time: float,
              t0: float) -> dict:
    """One log.csv row."""
    nan = float("nan")
    return {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_f1": round(metrics.get("f1", nan), 5),
            "val_accuracy": round(metrics.get("accuracy", nan), 5), "val_age_f1": round(metrics.get("age_f1", nan), 5),
            "lr": t.optimizer.param_groups[0]["lr"],
            "train_images_per_s": round(min(t.feeds.draws, t.steps * cfg.data.batch_size) / train_time, 2),
            "epoch_s": round(time.time() - t0, 2)}


def save_epoch(cfg: Config, t: Training, served, training: dict, epoch: int, p: Progress, best_metrics: dict,
               improved: bool, run_dir: Path) -> None:
    """last.pt: everything a resume needs; best.pt (when improved): only what inference needs (a quarter the size)."""
    trained = distributed.unwrap(t.model)
    inference = {"model": served.state_dict(), "config": cfg.to_dict(), "norm": t.norm,
                 "training_data": training, "epoch": epoch, "best_f1": p.best_f1}
    save_checkpoint({**inference, **({"train_model": trained.state_dict()} if t.ema is not None else {}),
                     "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
                     "scaler": t.scaler.state_dict(), "bad_epochs": p.bad_epochs, "history": p.history},
                    run_dir / "weights" / "last.pt")
    if improved:
        save_checkpoint({**inference, "metrics": best_metrics}, run_dir / "weights" / "best.pt")


def finish(cfg: Config, d, t: Training, data: TrainingData, report: Report, run_dir: Path, p: Progress,
           best_metrics: dict, best_val, wall: float) -> dict:
    """Class-bias decision, validation metrics file, model card; the result ``fit`` returns."""
    from .model_card import write_model_card, write_val_predictions

    decision = fit_decision(cfg, best_val, distributed.unwrap(t.model), t.feeds.val_ds, d.device, run_dir) \
        if d.main else None
    decision = distributed.broadcast(d, decision)
    problems = report.warnings + data.errors + t.feeds.errors  # the latter: no cache
    if data.errors:
        log.warning("%d unreadable images were skipped (listed before the first epoch)", len(data.errors))
    result = {"run_dir": str(run_dir), "best": str(run_dir / "weights" / "best.pt"), "best_f1": p.best_f1,
              "decision": decision, "wall_s": round(wall, 1), "problems": problems}
    if best_metrics:
        if d.main:
            write_metrics(best_metrics, run_dir, "val_metrics", title="validation (best epoch)")
        result["metrics"] = best_metrics
        log.info("\n%s", summary_text(best_metrics, "validation (best epoch)"))
    if d.main:
        val_frame = data.val.frame
        if best_val is not None and len(best_val[1]) == len(val_frame) and \
                (np.asarray(best_val[1]) == val_frame["label"].to_numpy()).all():  # rows in val_frame's order
            write_val_predictions(run_dir, val_frame, best_val[0].argmax(1))  # the card's per-group table
        result["model_card"] = str(write_model_card(run_dir, data_summary(cfg, data)))
    result["model_card"] = str(distributed.broadcast(d, result.get("model_card")))
    distributed.shutdown(d)  # only a process group setup() made
    return result
