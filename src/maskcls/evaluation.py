"""Evaluate runs on labelled images and predict unlabelled ones (the CLI's evaluate/predict)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import ConfigError, load_config, parse_override
from .data.reader import Report, read_answers, read_eval, read_folder
from .metrics import compute_metrics, write_metrics
from .predict import Ensemble, Predictor, expand_runs, write_folder_predictions, write_submission

log = logging.getLogger("maskcls")


def load_models(runs: Sequence[str | Path], overrides: Sequence[str] = (), engine: str = "torch"):
    """An Ensemble of runs, with ``key=value`` overrides (e.g. eval.tta=[flip]) applied to each."""
    if engine == "onnx":
        from .export import OnnxPredictor

        members = [OnnxPredictor.load(r) for r in expand_runs(runs)]
    else:
        members = [Predictor.load(r) for r in expand_runs(runs)]
    if overrides:
        values = dict(parse_override(o) for o in overrides)
        for m in members:
            m.cfg = load_config(None, {**m.cfg.to_dict(), **values})
    return Ensemble(members)


def labelled_frame(ens: Ensemble, answers: str | None, images: str | None) -> tuple[pd.DataFrame, str]:
    if answers:
        folder = images or str(Path(answers).parent / "images")
        return read_answers(answers, folder), "eval"
    from .engine import load_splits

    cfg = ens.cfg
    _, val = load_splits(cfg, Report())
    if val.empty:
        raise ConfigError("this run trained on all persons (data.val_fraction=0): pass --answers CSV to evaluate")
    return val.assign(ImageID=val["path"]), "val"


def evaluate_run(run: str | Path, *, answers: str | None = None, images: str | None = None, out: str | None = None,
                 overrides: Sequence[str] = (), progress: bool = True, engine: str = "torch") -> tuple[dict, Path]:
    """Metrics of a run (or k-fold folder) on ``answers`` or on its validation split."""
    ens = load_models([run], overrides, engine)
    frame, stem = labelled_frame(ens, answers, images)
    probs, kept = ens.predict_frame(frame, progress=progress)
    labels = kept["label"].to_numpy(int)
    m = compute_metrics(labels, probs.argmax(1))
    folder = Path(out) if out else (Path(run) if Path(run).is_dir() else Path(run).parent.parent)
    path = write_metrics(m, folder, f"{stem}_metrics", title=f"{stem} ({len(kept)} images)")
    preds = pd.DataFrame({"ImageID": kept["ImageID"], "path": kept["path"], "label": labels,
                          "pred": probs.argmax(1), "confidence": probs.max(1).round(4)})
    preds.to_csv(folder / f"{stem}_predictions.csv", index=False)
    np.save(folder / f"{stem}_probs.npy", probs.astype(np.float32))
    return m, path


def predict_source(runs: Sequence[str | Path], *, source: str | None = None, out: str | None = None,
                   with_probs: bool = False, engine: str = "torch", overrides: Sequence[str] = (),
                   progress: bool = True) -> Path:
    """Submission CSV for a data root with eval/info.csv, else one row per image of a folder."""
    ens = load_models(runs, overrides, engine)
    src = Path(source or ens.cfg.data.root)
    first = Path(expand_runs(runs)[0])
    run_dir = first if first.is_dir() else first.parent.parent
    if (src / "eval" / "info.csv").is_file() or (src / "info.csv").is_file():
        frame = read_eval(src)
        probs, kept = ens.predict_frame(frame, progress=progress)
        path = write_submission(kept, probs, out or run_dir / "submission.csv", info=frame)
        if with_probs:
            write_folder_predictions(kept, probs, path.with_name(path.stem + "_probs.csv"), with_probs=True)
        return path
    frame = read_folder(src)
    probs, kept = ens.predict_frame(frame, progress=progress)
    return write_folder_predictions(kept, probs, out or run_dir / "predictions.csv", with_probs=with_probs)
