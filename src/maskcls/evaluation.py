"""Evaluate runs on labelled images and predict unlabelled ones (the CLI's evaluate/predict)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import ConfigError
from .data.reader import DataError, read_answers, read_eval, read_folder
from .decision import class_bias
from .predict import Ensemble, write_folder_predictions, write_submission
from .run import run_folder

log = logging.getLogger("maskcls")


def align(frame: pd.DataFrame, probs: np.ndarray, kept: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for every row of ``frame`` (zeros where no prediction) and which rows have one."""
    where = pd.Series(np.arange(len(kept)), index=kept["path"].to_numpy())
    ok = frame["path"].isin(where.index).to_numpy()
    full = np.zeros((len(frame), probs.shape[1] if probs.ndim == 2 else 18), np.float32)
    full[ok] = probs[where[frame["path"][ok]].to_numpy()]
    return full, ok


def held_out_predictions(ens: Ensemble, progress: bool = True) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Each member scores the persons it did not train on (``split.csv``); rows of all members together.

    For one run: its validation persons. For a k-fold folder: out-of-fold, every
    person once, by the fold model that never saw them. Returns (probs, frame,
    ok): every held-out row, ``ok`` False where the image could not be read.
    """
    probs, frames, oks = [], [], []
    for k, m in enumerate(ens.members):
        frame = m.run.held_out_frame().reset_index(drop=True)
        p, kept = m.predict_frame(frame.assign(ImageID=frame["path"]), progress=progress)
        full, ok = align(frame, p, kept)
        probs.append(full)
        oks.append(ok)
        frames.append(frame.assign(ImageID=frame["path"], member=k))
    frame = pd.concat(frames, ignore_index=True)
    if frame["path"].duplicated().any():
        raise ConfigError("these runs hold out overlapping images (not the folds of one k-fold): "
                          "evaluate them one by one, or pass --answers CSV")
    return np.concatenate(probs), frame, np.concatenate(oks)


def _report_unread(frame: pd.DataFrame, ok: np.ndarray, consequence: str) -> None:
    if not ok.all():
        log.warning("%d of %d images could not be read (e.g. %s); %s", int((~ok).sum()), len(ok),
                    frame["path"][~ok].iloc[0], consequence)


def evaluate_mask_set(run: str | Path, root: str | Path, *, out: str | None = None, overrides: Sequence[str] = (),
                      progress: bool = True, engine: str = "torch") -> tuple[dict, Path]:
    """Mask accuracy and per-class recall of a run on real photos labelled only by mask (e.g. realfaces).

    The photos go through the path any outside photo takes (``photos=True``:
    framed like a training portrait). Measure only: never tune on this set.
    """
    from .devsets import mask_metrics, read_mask_set
    from .preprocess.faces import resolve_detector

    ens = Ensemble.load([run], overrides=overrides, engine=engine)
    frame = read_mask_set(root).assign(ImageID=lambda f: f["file"])
    probs, kept = ens.predict_frame(frame, progress=progress, photos=True)
    pre = ens.cfg.preprocess
    m = {"set": str(root), **mask_metrics(kept["mask"].to_numpy(), ens.classes(probs) // 6),
         "unreadable": len(frame) - len(kept),
         "framing": resolve_detector(pre.detector) if pre.frame_photos or pre.face_crop else None}
    folder = Path(out) if out else run_folder(run)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mask_set_{Path(root).resolve().name}.json"
    path.write_text(json.dumps(m, indent=2))
    return m, path


def evaluate_run(run: str | Path, *, answers: str | None = None, images: str | None = None, out: str | None = None,
                 overrides: Sequence[str] = (), progress: bool = True, engine: str = "torch") -> tuple[dict, Path]:
    """Metrics of a run (or k-fold folder) on ``answers``, or on the persons it held out.

    Without ``answers`` each model scores only the persons its own split held out
    (``split.csv``), so a k-fold folder is scored out-of-fold.
    """
    from .metrics import NO_PREDICTION, compute_metrics, write_metrics  # scikit-learn, matplotlib: the training install

    ens = Ensemble.load([run], overrides=overrides, engine=engine)
    if answers:
        kept = read_answers(answers, images or str(Path(answers).parent / "images"))
        probs, ok = align(kept, *ens.predict_frame(kept, progress=progress))
        stem = "eval"
    else:
        probs, kept, ok = held_out_predictions(ens, progress)
        stem = "val"
    _report_unread(kept, ok, "each counts as a wrong answer")
    labels = kept["label"].to_numpy(int)
    pred = np.where(ok, ens.classes(probs), NO_PREDICTION)
    m = compute_metrics(labels, pred)
    if class_bias(ens.decision).any():  # the plain argmax score beside it
        m["f1_without_bias"] = compute_metrics(labels, np.where(ok, probs.argmax(1), NO_PREDICTION))["f1"]
        if not answers:
            log.warning("the class bias was fitted on these same held-out persons: macro F1 %.4f is optimistic; "
                        "without it %.4f (eval.class_bias=false)", m["f1"], m["f1_without_bias"])
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
                   progress: bool = True, allow_missing: bool = False) -> Path:
    """Submission CSV for a data root with eval/info.csv, else one row per image of a folder.

    Images that cannot be read get ``ans=-1`` in a submission (never a class);
    the file is written either way, then a DataError says how many unless
    ``allow_missing`` (a warning then).
    """
    ens = Ensemble.load(runs, overrides=overrides, engine=engine)
    src = Path(source or ens.cfg.data.root)
    run_dir = run_folder(ens.members[0].path)
    warnings = ens.warnings()
    for w in warnings:
        log.warning("warning: %s", w)
    table = dict(min_confidence=ens.cfg.eval.min_confidence, warnings=warnings, thresholds=ens.cfg.data.age_thresholds)
    if (src / "eval" / "info.csv").is_file() or (src / "info.csv").is_file():
        frame = read_eval(src)
        probs, kept = ens.predict_frame(frame, progress=progress)
        path = write_submission(kept, probs, out or run_dir / "submission.csv", info=frame, decision=ens.decision)
        if with_probs:
            write_folder_predictions(kept, probs, path.with_name(path.stem + "_probs.csv"), with_probs=True,
                                     source=frame, decision=ens.decision, **table)
    else:
        frame = read_folder(src)  # any photos: framed like training portraits first (preprocess.frame_photos)
        probs, kept = ens.predict_frame(frame, progress=progress, photos=True)
        low = int((probs.max(1) < ens.cfg.eval.min_confidence).sum()) if len(probs) else 0
        if low:
            log.warning("%d of %d predictions are under eval.min_confidence=%g (low_confidence column)", low,
                        len(probs), ens.cfg.eval.min_confidence)
        path = write_folder_predictions(kept, probs, out or run_dir / "predictions.csv", with_probs=with_probs,
                                        source=frame, decision=ens.decision, **table)
    unread = frame[~frame["path"].isin(set(kept["path"]))]
    if len(unread) and not allow_missing:
        raise DataError(f"{len(unread)} of {len(frame)} images could not be read (e.g. {unread['path'].iloc[0]}); "
                        f"{path} marks them ans=-1 / gives them an error row: fix them, or pass --allow-missing")
    return path
