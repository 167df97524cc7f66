"""Evaluate runs on labelled images and predict unlabelled ones (the CLI's evaluate/predict)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import ConfigError
from .data.reader import read_answers, read_eval, read_folder
from .predict import Ensemble, write_folder_predictions, write_submission
from .run import run_folder

log = logging.getLogger("maskcls")


def load_models(runs: Sequence[str | Path], overrides: Sequence[str] = (), engine: str = "torch") -> Ensemble:
    """An Ensemble of runs (k-fold folders expanded), with ``key=value`` overrides (e.g. eval.tta=[flip])."""
    return Ensemble.load(runs, overrides=overrides, engine=engine)


def held_out_predictions(ens: Ensemble, progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Each member scores the persons it did not train on (``split.csv``); rows of all members together.

    For one run: its validation persons. For a k-fold folder: out-of-fold, every
    person once, by the fold model that never saw them.
    """
    probs, frames = [], []
    for k, m in enumerate(ens.members):
        frame = m.run.held_out_frame()
        p, kept = m.predict_frame(frame.assign(ImageID=frame["path"]), progress=progress)
        probs.append(p)
        frames.append(kept.assign(member=k))
    kept = pd.concat(frames, ignore_index=True)
    if kept["path"].duplicated().any():
        raise ConfigError("these runs hold out overlapping images (not the folds of one k-fold): "
                          "evaluate them one by one, or pass --answers CSV")
    return np.concatenate(probs), kept


def evaluate_run(run: str | Path, *, answers: str | None = None, images: str | None = None, out: str | None = None,
                 overrides: Sequence[str] = (), progress: bool = True, engine: str = "torch") -> tuple[dict, Path]:
    """Metrics of a run (or k-fold folder) on ``answers``, or on the persons it held out.

    Without ``answers`` each model scores only the persons its own split held out
    (``split.csv``), so a k-fold folder is scored out-of-fold.
    """
    from .metrics import compute_metrics, write_metrics  # scikit-learn, matplotlib: the training install

    ens = load_models([run], overrides, engine)
    if answers:
        frame = read_answers(answers, images or str(Path(answers).parent / "images"))
        probs, kept = ens.predict_frame(frame, progress=progress)
        stem = "eval"
    else:
        probs, kept = held_out_predictions(ens, progress)
        stem = "val"
    labels = kept["label"].to_numpy(int)
    pred = probs.argmax(1)
    m = compute_metrics(labels, pred)
    folder = Path(out) if out else run_folder(run)
    title = f"{stem} ({len(kept)} images)" if answers else \
        f"held-out persons ({len(kept)} images, {kept['person'].nunique()} persons, {len(ens.members)} model(s))"
    path = write_metrics(m, folder, f"{stem}_metrics", title=title)
    preds = pd.DataFrame({"ImageID": kept["ImageID"], "path": kept["path"], "label": labels,
                          "pred": pred, "confidence": probs.max(1).round(4)})
    if "person" in kept:
        preds["person"] = kept["person"].to_numpy()
    preds.to_csv(folder / f"{stem}_predictions.csv", index=False)
    np.save(folder / f"{stem}_probs.npy", probs.astype(np.float32))
    return m, path


def predict_source(runs: Sequence[str | Path], *, source: str | None = None, out: str | None = None,
                   with_probs: bool = False, engine: str = "torch", overrides: Sequence[str] = (),
                   progress: bool = True) -> Path:
    """Submission CSV for a data root with eval/info.csv, else one row per image of a folder."""
    ens = load_models(runs, overrides, engine)
    src = Path(source or ens.cfg.data.root)
    run_dir = run_folder(ens.members[0].path)
    warnings = ens.warnings()
    for w in warnings:
        log.warning("warning: %s", w)
    table = dict(min_confidence=ens.cfg.eval.min_confidence, warnings=warnings, thresholds=ens.cfg.data.age_thresholds)
    if (src / "eval" / "info.csv").is_file() or (src / "info.csv").is_file():
        frame = read_eval(src)
        probs, kept = ens.predict_frame(frame, progress=progress)
        path = write_submission(kept, probs, out or run_dir / "submission.csv", info=frame)
        if with_probs:
            write_folder_predictions(kept, probs, path.with_name(path.stem + "_probs.csv"), with_probs=True,
                                     source=frame, **table)
        return path
    frame = read_folder(src)
    probs, kept = ens.predict_frame(frame, progress=progress)
    low = int((probs.max(1) < ens.cfg.eval.min_confidence).sum()) if len(probs) else 0
    if low:
        log.warning("%d of %d predictions are under eval.min_confidence=%g (low_confidence column)", low, len(probs),
                    ens.cfg.eval.min_confidence)
    return write_folder_predictions(kept, probs, out or run_dir / "predictions.csv", with_probs=with_probs,
                                    source=frame, **table)
