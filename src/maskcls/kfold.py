"""``maskcls kfold``: K person-level folds, out-of-fold F1, and a ready ensemble.

Each fold trains with ``engine.fit`` into ``<project>/<name>/fold{k}``; the best
model of each fold predicts its own validation persons, so every training
person is predicted exactly once by a model that never saw them. The macro
F1 of those out-of-fold predictions (plain argmax) is an honest score of the
whole recipe, and the folder itself is a soft-voting ensemble for
``predict``/``evaluate``/``serve``. The ensemble's class biases are fitted on
the out-of-fold probabilities and saved as ``decision.json`` (not the mean of
the folds' own biases: each of those saw only a fifth of the persons).
"""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import pandas as pd

from . import labels as L
from .config import Config, save_config
from .data.decode import Decoder
from .data.loading import load_train_frame
from .data.reader import Report
from .data.splits import kfold_indices
from .decision import fitted_decision
from .engine import fit
from .metrics import compute_metrics, write_metrics
from .predict import Ensemble
from .preflight import check_before_training
from .run import KFOLD_DECISION
from .runtime import unique_run_dir

log = logging.getLogger("maskcls")


def run_kfold(cfg: Config) -> dict:
    """Train ``data.folds`` folds; writes oof.csv, kfold.json and oof metrics in the k-fold folder."""
    t0 = time.time()
    check_before_training(cfg)  # one line for a bad device, model name or path, before the data is read
    Decoder(cfg.data, cfg.preprocess)  # and for a face detector / background remover that cannot load
    report = Report()
    frame = load_train_frame(cfg, report)
    folds = kfold_indices(frame, cfg.data.folds, cfg.train.seed)
    kdir = unique_run_dir(cfg.project, cfg.name)
    kdir.mkdir(parents=True)
    save_config(cfg, kdir / "config.yaml")
    log.info("k-fold folder: %s (%d folds of %d persons)", kdir, len(folds), frame["person"].nunique())
    parts, fold_results = [], []
    for k, (tr, va) in enumerate(folds):
        fold_cfg = cfg.copy()
        fold_cfg.data.fold = k
        train_df, val_df = frame.iloc[tr].reset_index(drop=True), frame.iloc[va].reset_index(drop=True)
        log.info("fold %d/%d: train %d persons, val %d persons", k + 1, len(folds), train_df["person"].nunique(),
                 val_df["person"].nunique())
        result = fit(fold_cfg, splits=(train_df, val_df), run_dir=kdir / f"fold{k}")
        probs, kept = Ensemble.load([result["run_dir"]]).predict_frame(val_df, progress=cfg.train.progress)
        part = kept[["path", "person", "label"]].assign(fold=k, pred=probs.argmax(1))
        columns = pd.DataFrame(probs.round(5), columns=[f"p{c}" for c in range(probs.shape[1])])
        parts.append(pd.concat([part.reset_index(drop=True), columns], axis=1))
        fold_results.append({"fold": k, "run_dir": result["run_dir"], "best_f1": result["best_f1"],
                             "val_persons": int(val_df["person"].nunique()), "val_images": int(len(kept))})
    oof = pd.concat(parts, ignore_index=True)
    oof.to_csv(kdir / "oof.csv", index=False)
    labels = oof["label"].to_numpy(int)
    m = compute_metrics(labels, oof["pred"].to_numpy(int))
    write_metrics(m, kdir, "oof_metrics", title=f"out-of-fold ({len(oof)} images, {len(folds)} folds)")
    # the ensemble's biases, fitted on the out-of-fold probabilities (every person once, unseen); predict,
    # evaluate and serve of the folder apply them to the members' mean probabilities (decision.json)
    decision = fitted_decision(oof[[f"p{c}" for c in range(L.NUM_CLASSES)]].to_numpy(), labels,
                               what="out-of-fold images", enabled=cfg.eval.class_bias)
    (kdir / KFOLD_DECISION).write_text(json.dumps(decision, indent=1))
    summary = {"kfold_dir": str(kdir), "folds_n": len(folds), "persons": int(oof["person"].nunique()),
               "images": int(len(oof)), "oof_f1": m["f1"], "oof_accuracy": m["accuracy"], "oof_old_f1": m["old_f1"],
               "oof_f1_with_bias": decision.get("f1_with_bias", m["f1"]),
               "fold_f1": [round(float(f["best_f1"]), 5) for f in fold_results],
               "mean_fold_f1": float(np.mean([f["best_f1"] for f in fold_results])),
               "wall_s": round(time.time() - t0, 1), "problems": report.warnings, "folds": fold_results}
    (kdir / "kfold.json").write_text(json.dumps(summary, indent=1))
    log.info("out-of-fold macro F1 %.4f over %d persons (folds: %s); ensemble: maskcls predict %s",
             m["f1"], summary["persons"], ", ".join(f"{f:.4f}" for f in summary["fold_f1"]), kdir)
    return summary
