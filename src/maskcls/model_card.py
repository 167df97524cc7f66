"""MODEL_CARD.md in each run folder: what the model learnt from, how it scored, what it is for and not for.

``fit`` writes it when training ends and ``maskcls evaluate`` refreshes it, so
every scored set (``<stem>_metrics.json`` in the run folder) is listed. A model
trained on the drawn demo data says so in bold: it has never seen a real face.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml

from . import labels as L
from .io import write_text

DEMO_MARKER = "DRAWN_DEMO_DATA.txt"  # written by data.demo.make_demo_data at the data root
CARD = "MODEL_CARD.md"
TRAINING = "training_data.json"
DEMO_WARNING = ("trained on drawn demo data (cartoon faces), not on photos of people: "
                "its answers on real photos are meaningless")


def is_drawn_demo(root: str | Path) -> bool:
    """Whether a data root holds the drawn demo faces (``maskcls demo`` / ``make_demo_data`` mark it)."""
    return (Path(root) / DEMO_MARKER).is_file()


def training_summary(root: str | Path, train_frame=None, val_frame=None) -> dict:
    """What a run trained on: data root, persons and photos per split, drawn demo data or not."""
    out = {"root": str(Path(root).resolve()), "drawn_demo": is_drawn_demo(root)}
    for name, frame in (("train", train_frame), ("val", val_frame)):
        if frame is not None:
            out[f"{name}_persons"] = int(frame["person"].nunique()) if "person" in frame else None
            out[f"{name}_images"] = int(len(frame))
    return out


def _metrics_rows(folder: Path) -> list[str]:
    rows = []
    for path in sorted(folder.glob("*_metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict) or "f1" not in m:
            continue
        stem = path.name.removesuffix("_metrics.json")
        what = {"val": "validation persons (held out from training)", "eval": "labelled eval set (--answers)"}
        rows.append(f"| {stem} ({what.get(stem, path.name)}) | {m.get('images', '?')} | {m['f1']:.4f} | "
                    f"{m.get('accuracy', float('nan')):.4f} | {m.get('mask_f1', float('nan')):.4f} | "
                    f"{m.get('gender_f1', float('nan')):.4f} | {m.get('age_f1', float('nan')):.4f} |")
    return rows


def _mask_set_rows(folder: Path) -> list[str]:
    """Rows for real-photo sets scored by ``maskcls evaluate --mask-set`` (``mask_set_<name>.json``)."""
    rows = []
    for path in sorted(folder.glob("mask_set_*.json")):
        try:
            m = json.loads(path.read_text())
            r = m["mask_recall"]
            rows.append(f"| {path.stem.removeprefix('mask_set_')} | {m['n']} | {m['mask_accuracy']:.4f} | "
                        + " | ".join("-" if r.get(k) is None else f"{r[k]:.3f}" for k in ("wear", "incorrect", "not_wear"))
                        + " |")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return rows


VAL_PREDICTIONS = "val_predictions.csv"  # evaluate's answers on the validation persons (decision applied)
VAL_ANSWERS = "val_answers.csv"  # fit's: path, person, race, label, pred at the best epoch (the report reuses the other)


def write_val_predictions(run_dir: str | Path, frame, pred) -> Path:
    """The validation persons' answers (``fit`` at the best epoch; ``evaluate`` rewrites it), for the group table."""
    import pandas as pd

    cols = [c for c in ("path", "person", "race", "label") if c in frame]
    table = pd.DataFrame({c: frame[c].to_numpy() for c in cols}).assign(pred=np.asarray(pred, int))
    path = Path(run_dir) / VAL_ANSWERS
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _race_name(value) -> str:
    """maskfaces writes race names (White, Black, Asian, Indian, Others: UTKFace's codes 0-4); a bare code says so."""
    text = str(value).strip()
    return f"race code {text}" if text.isdigit() else text or "unknown"


def _race_of(path: str) -> str:
    """Race from the competition folder name ``<id>_<gender>_<race>_<age>``, else unknown."""
    parts = Path(str(path)).parent.name.split("_")
    return _race_name(parts[2]) if len(parts) >= 4 else "unknown"


def group_table(folder: Path, thresholds=L.DEFAULT_AGE_THRESHOLDS) -> list[str]:
    """Mask, gender and age-band accuracy per race, gender and age band of the validation persons, with counts.

    Why: a place that deploys the model should see where it is weaker, not only the mean.
    """
    import pandas as pd

    f = folder / VAL_PREDICTIONS if (folder / VAL_PREDICTIONS).is_file() else folder / VAL_ANSWERS
    try:
        t = pd.read_csv(f)
        t = t[(t["label"] >= 0) & (t["pred"] >= 0)]
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        return []
    if t.empty:
        return []
    label, pred = t["label"].to_numpy(int), t["pred"].to_numpy(int)
    race = t["race"].map(_race_name) if "race" in t else t["path"].map(_race_of)
    person = t["person"].astype(str) if "person" in t else pd.Series(t["path"].map(lambda p: Path(p).parent.name))
    hit = {"mask": label // 6 == pred // 6, "gender": label // 3 % 2 == pred // 3 % 2, "age": label % 3 == pred % 3}
    groups = {"race": race.to_numpy(),
              "gender": np.where(label // 3 % 2 == 1, "female", "male"),
              "age band": np.array([L.age_name(b, thresholds) for b in label % 3])}
    lines = ["| group | persons | photos | mask accuracy | gender accuracy | age-band accuracy |",
             "|---|---|---|---|---|---|"]
    for axis, values in groups.items():
        for v in sorted(set(values)):
            m = values == v
            lines.append(f"| {axis}: {v} | {person[m].nunique()} | {int(m.sum())} | "
                         + " | ".join(f"{hit[k][m].mean():.3f}" for k in ("mask", "gender", "age")) + " |")
    lines.append(f"| all | {person.nunique()} | {len(t)} | "
                 + " | ".join(f"{hit[k].mean():.3f}" for k in ("mask", "gender", "age")) + " |")
    return lines


def write_model_card(run_dir: str | Path, training: dict | None = None) -> Path:
    """Write (or refresh) ``<run>/MODEL_CARD.md``; ``training`` (from ``training_summary``) is kept beside it."""
    folder = Path(run_dir)
    if training is not None:
        write_text(folder / TRAINING, json.dumps(training, indent=1))
    elif (folder / TRAINING).is_file():
        training = json.loads((folder / TRAINING).read_text())
    training = training or {}
    cfg = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    data, model, train = cfg.get("data", {}), cfg.get("model", {}), cfg.get("train", {})
    ev = cfg.get("eval", {})
    lo, hi = data.get("age_thresholds") or L.DEFAULT_AGE_THRESHOLDS
    demo = bool(training.get("drawn_demo"))
    lines = [f"# Model card: {folder.name}", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} by maskcls (refreshed by `maskcls evaluate`).", ""]
    if demo:
        lines += [f"> **Warning: {DEMO_WARNING}.** It only shows that the installation works.", ""]
    lines += ["## Model", "",
              f"- backbone: `{model.get('name')}` ({model.get('head')} head), input {data.get('image_size')} (H, W)",
              f"- trained {train.get('epochs')} epochs; weights: `weights/best.pt` (inference), `weights/last.pt` "
              "(resume); `weights/model.onnx` after `maskcls export`",
              f"- predicts 18 classes: mask (wear / incorrect / not wear) x gender (male / female) x age band "
              f"(<{lo}, {lo}-{hi - 1}, >={hi})", "",
              "## Training data", ""]
    if training:
        lines += [f"- data root: `{training.get('root')}`"
                  + (" — **drawn demo data (synthetic cartoon faces)**" if demo else ""),
                  f"- training: {training.get('train_persons', '?')} persons, {training.get('train_images', '?')} "
                  "photos",
                  f"- validation: {training.get('val_persons', '?')} persons, {training.get('val_images', '?')} photos "
                  "(split by person: no face is in both)"]
    else:
        lines += [f"- data root: `{data.get('root')}` (no training summary saved with this run)"]
    lines += ["", "## Metrics", ""]
    rows = _metrics_rows(folder)
    if rows:
        lines += ["| scored set | images | macro F1 (18) | accuracy | mask F1 | gender F1 | age F1 |",
                  "|---|---|---|---|---|---|---|", *rows, "",
                  "Macro F1 averages the 18 classes equally; rare classes (older people, incorrectly worn "
                  "masks) weigh as much as common ones."]
    else:
        lines += ["Not scored yet: run `maskcls evaluate` on this run."]
    groups = group_table(folder, (lo, hi))
    source = VAL_PREDICTIONS if (folder / VAL_PREDICTIONS).is_file() else VAL_ANSWERS
    if groups:
        lines += ["", "### By group of the validation persons", "",
                  "Accuracy of each axis per race group, gender and age band (true labels) of the persons held out "
                  f"from training (`{source}`). Small groups give rough figures: read the counts.", "",
                  *groups]
    real = _mask_set_rows(folder)
    if real:
        lines += ["", "Real photos labelled by mask only (`maskcls evaluate --mask-set`; measured, never trained "
                  "or tuned on):", "", "| set | photos | mask accuracy | recall wear | recall incorrect | "
                  "recall not wear |", "|---|---|---|---|---|---|", *real]
    lines += ["", "## Intended use", "",
              "Counting or prompting correct mask wearing, for example at the entrance of a public place, "
              "on a CPU; research on the mask-classification task. Answers are per photo and meant to be "
              "checked by a person when they matter.",
              "", "## Limits", "",
              "- **Gender and age band are inferred from appearance.** They can be wrong, the labels are binary "
              "and do not describe how people identify, and they **must not be used to decide anything about a "
              "person** (access, service, identity, treatment).",
              "- The model was trained on the people and photo conditions of its training data; other faces, "
              "cameras, light or poses may score far worse than the metrics above.",
              f"- Answers with confidence under {ev.get('min_confidence', 0.5):.0%} are flagged "
              "`low_confidence` by `maskcls predict` and the service: treat them as unknown.",
              "- One face per photo is assumed unless face cropping (`preprocess.face_crop`) is on."]
    if demo:
        lines.append("- This model saw only drawn faces: do not use it on photos of people at all.")
    path = folder / CARD
    write_text(path, "\n".join(lines) + "\n")
    return path


REBUILD = "make model"  # the one command that rebuilds the packaged model (scripts/build_model.py)
TBD = "not measured (see BENCHMARKS.md)"


def _score(folder: Path | None, name: str, *keys) -> str:
    """A figure from the run's metrics file, else the placeholder."""
    try:
        v = json.loads((folder / name).read_text())
        for k in keys:
            v = v[k]
        return f"{float(v):.3f}"
    except (TypeError, OSError, ValueError, KeyError):
        return TBD


def _run_data(folder: Path | None) -> dict:
    """The ``data`` section of the run's config.yaml ({} when there is none)."""
    try:
        import yaml

        return dict(yaml.safe_load((folder / "config.yaml").read_text())["data"] or {})
    except (TypeError, OSError, KeyError, ValueError):
        return {}


def _realmasks_use(folder: Path | None) -> str:
    """How the run used realmasks: all photos (``holdout: false``) or all but the held-out 20 %."""
    sources = _run_data(folder).get("sources") or []
    if any(e.get("holdout", True) is False for e in sources if isinstance(e, dict)):
        return "all of it is used for training (`holdout: false`)"
    return ("its photos outside the held-out 20 % are used for training (`holdout: true`): the held-out photos "
            "stay unseen, so every realmasks figure in BENCHMARKS.md comes from this very model")


def write_shipped_card(out: str | Path, run_dir: str | Path | None = None, model: str | Path | None = None,
                       precision: str = "fp16") -> Path:
    """MODEL_CARD.md of the packaged model: its data and their licences, scores, use, limits, how to rebuild it.

    Scores come from the training run's metrics files where present (``maskcls
    evaluate`` wrote them); the rest stay placeholders to fill from measurements.
    The run's own card (metrics and per-group table) follows.
    """
    folder = Path(run_dir) if run_dir else None
    size = f"{Path(model).stat().st_size / 1e6:.1f} MB" if model and Path(model).is_file() else TBD
    real = "mask_set_realfaces.json"
    lines = ["# Model card: the packaged maskcls model (`maskcls/weights/maskcls.onnx`)", "",
             f"`maskcls predict` and `maskcls serve` use this model when no run folder or .onnx is given "
             f"(after `$MASKCLS_MODEL`). ONNX, {precision} weights, {size}; rebuilt by `{REBUILD}`.", "",
             "## Training data and licences", "",
             "- **maskfaces** (`../shared/maskfaces`, rendered by `make maskfaces`): real adult faces from "
             "**UTKFace** with masks placed on them. UTKFace is licensed for **non-commercial research only**. "
             "A model trained on it inherits that limit: use it for research and evaluation; **do not deploy it "
             "commercially** unless you have cleared the UTKFace licence (or retrained without UTKFace).",
             "- **realmasks** (`../shared/realmasks`, 319 street and news photos, 1,745 face boxes with a mask "
             f"label only): {_realmasks_use(folder)}. Many photos are **news-agency pictures whose copyright stays with their "
             "owners**: they were used for training only and are **not redistributed** with this project or "
             "model. Source: ch-tseng/Dataset_for_Mask_Wearing (EDEN Social Welfare Foundation, Taiwan, 2020; no "
             "licence stated).",
             *([f"- **Chin masks**: {chin:.0%} of the rendered incorrect-mask photos are recomposed with the "
                "person's own mask pulled down to the chin (`data.chin_masks`), so that an incorrectly worn mask is "
                "not only one below the nose."] if (chin := float(_run_data(folder).get("chin_masks") or 0)) else []),
             "- Gender and age labels come only from maskfaces; realmasks faces train the mask head alone.", "",
             "## Scores", "",
             "| measure | value | how |", "|---|---|---|",
             f"| realfaces mask accuracy (1,100 real photos, measure only) | {_score(folder, real, 'mask_accuracy')} "
             "| `maskcls evaluate --mask-set ../shared/realfaces` |",
             "| realfaces recall wear / incorrect / not wear | "
             + (" / ".join(_score(folder, real, "mask_recall", k) for k in ("wear", "incorrect", "not_wear"))
                if _score(folder, real, "mask_accuracy") != TBD else TBD) + " | same |",
             f"| maskfaces public eval macro F1 (18 classes) | {_score(folder, 'eval_metrics.json', 'f1')} | "
             "`maskcls evaluate --answers data/maskfaces/eval/answers.csv` |",
             "| face recall, false faces per photo and mask accuracy on held-out realmasks scenes; the cost of "
             f"{precision} against fp32 | in BENCHMARKS.md, \"Shipped model\" (measured on this file) | "
             "`maskcls evaluate --scenes`, `benchmarks/precision.py RUN` |", "",
             "Figures from the training run are of its fp32 weights; BENCHMARKS.md measures the shipped file.", "",
             "## Intended use", "",
             "Checking whether masks are worn correctly on photos, for research and evaluation (see the licence "
             "limit above): counting or prompting at an entrance, on a CPU, with a person checking the answers "
             "that matter.", "",
             "## Limits", "",
             "- **Gender and age band are inferred from appearance**, binary, and often wrong; they **must not be "
             "used to decide anything about a person**.",
             "- Faces must be found first: small, turned or hidden faces may be missed (the output says when no "
             "face was found). Real masks unlike the training ones (colours, shapes, under the nose) are read "
             "worse; incorrectly worn masks are the weakest class.",
             "- Training faces: adults from UTKFace and mostly East-Asian street photos from 2020; other people "
             "and settings may score worse. See the per-group table below.", "",
             "## Rebuild", "",
             f"    {REBUILD}", "",
             "renders maskfaces if absent, trains with `configs/shipped.yaml`, scores the run, exports it at "
             f"{precision} into `src/maskcls/weights/maskcls.onnx` and rewrites this card. It replaces the file: "
             "no versions are kept in git."]
    if folder is not None and (folder / CARD).is_file():
        body = (folder / CARD).read_text(encoding="utf-8").split("\n", 1)[1]
        lines += ["", f"## The training run ({folder.name})", "", *[
            ("#" + ln if ln.startswith("#") else ln) for ln in body.strip().splitlines()]]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, "\n".join(lines) + "\n")
