"""``maskcls report RUN``: one self-contained HTML page to look at a run.

Metrics table, confusion matrices (18 classes and per axis, as counts and
row-normalised, each with a colour bar), per-class F1 bars, training curves
(from ``log.csv``, integer epoch ticks) and the most confident mistakes as
thumbnails. Charts and
photos are base64-embedded, so the single file can be mailed or archived.
It reads what ``evaluation.evaluate_run`` writes (``<stem>_metrics.json`` and
``<stem>_predictions.csv``) and runs that evaluation first when it is missing.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import labels as L
from .data.images import ImageReadError, load_rgb
from .io import write_text
from .metrics import axis_confusions, class_name, plot_confusion, save_confusion_png
from .run import run_folder

log = logging.getLogger("maskcls")

WORST = 24  # mistakes shown in the gallery
THUMB = 160  # thumbnail height in pixels


def find_results(run: str | Path, answers: str | None = None, images: str | None = None,
                 progress: bool = True) -> Path:
    """The metrics JSON to report on; evaluates first if needed.

    With ``answers`` they are always scored afresh; otherwise existing
    ``eval_*`` (from ``maskcls evaluate --answers``) or ``val_*`` results are
    used, and the validation split is scored if there are none.
    """
    from .evaluation import evaluate_run

    folder = run_folder(run)
    if answers is None:
        for stem in ("eval", "val"):
            if (folder / f"{stem}_metrics.json").is_file() and (folder / f"{stem}_predictions.csv").is_file():
                return folder / f"{stem}_metrics.json"
    log.info("no saved predictions in %s: evaluating first", folder)
    return evaluate_run(run, answers=answers, images=images, progress=progress)[1]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def f1_bars(per_class: list[float], support: list[int]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    names = [f"{class_name(c)}  (n={support[c]})" for c in range(L.NUM_CLASSES)]
    colors = ["#1b9e3e", "#e08a00", "#d62728"]
    ax.barh(range(L.NUM_CLASSES), per_class, color=[colors[c // 6] for c in range(L.NUM_CLASSES)])
    ax.set_yticks(range(L.NUM_CLASSES), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    for c, v in enumerate(per_class):
        ax.text(min(v + 0.01, 0.93), c, f"{v:.2f}", va="center", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def confusion_png(m: dict, metrics_path: Path) -> str:
    saved = metrics_path.with_name(metrics_path.stem + "_confusion.png")
    if saved.is_file():
        return base64.b64encode(saved.read_bytes()).decode()
    with tempfile.TemporaryDirectory() as tmp:
        save_confusion_png(m["confusion"], Path(tmp) / "c.png")
        return base64.b64encode((Path(tmp) / "c.png").read_bytes()).decode()


def normalised_confusion_png(m: dict) -> str:
    """The 18x18 matrix with each row divided by its total: where each true class goes, whatever its size."""
    with tempfile.TemporaryDirectory() as tmp:
        save_confusion_png(m["confusion"], Path(tmp) / "n.png", normalised=True)
        return base64.b64encode((Path(tmp) / "n.png").read_bytes()).decode()


def axis_confusion_png(m: dict, thresholds=L.DEFAULT_AGE_THRESHOLDS) -> str:
    """Mask, gender and age confusion matrices: counts (top row) and row-normalised (bottom row)."""
    plt = _pyplot()
    names = {"mask": [x.name.lower().replace("_", " ") for x in L.Mask],
             "gender": [x.name.lower() for x in L.Gender],
             "age": [L.age_name(a, thresholds) for a in L.AgeBand]}
    fig, axes = plt.subplots(2, 3, figsize=(14.5, 7.5))
    for col, (axis, cm) in enumerate(axis_confusions(m["confusion"]).items()):
        plot_confusion(axes[0, col], cm, names[axis], fontsize=9, title=f"{axis}: images")
        plot_confusion(axes[1, col], cm, names[axis], normalised=True, fontsize=9, title=f"{axis}: share of true class")
    fig.tight_layout()
    return _png(fig)


def curves_figure(logs: list[Path]):
    """Loss and validation scores per epoch for each log.csv (one per fold in a k-fold folder); None without logs."""
    from matplotlib.ticker import MaxNLocator

    frames = [(p, pd.read_csv(p)) for p in logs]
    frames = [(p, f) for p, f in frames if len(f) and "epoch" in f]
    if not frames:
        return None
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for p, f in frames:
        tag = "" if len(frames) == 1 else f"{p.parent.name} "
        a.plot(f["epoch"], f["train_loss"], marker="o", label=f"{tag}train loss")
        for col in ("val_f1", "val_accuracy", "val_age_f1"):
            if col in f and f[col].notna().any():
                b.plot(f["epoch"], f[col], marker="o", label=f"{tag}{col.replace('_', ' ')}")
    for ax, title in ((a, "training loss"), (b, "validation")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5 ticks
    b.set_ylim(0, 1)
    fig.tight_layout()
    return fig


def curves_png(logs: list[Path]) -> str | None:
    fig = curves_figure(logs)
    return _png(fig) if fig is not None else None


def thumbnail(path: str) -> str | None:
    from PIL import Image

    try:
        img = Image.fromarray(load_rgb(path))
    except ImageReadError as e:
        log.warning("%s; left out of the report", e)
        return None
    img.thumbnail((THUMB * 2, THUMB))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


def worst_errors(preds: pd.DataFrame, k: int = WORST) -> pd.DataFrame:
    """Wrong predictions, most confident first."""
    wrong = preds[(preds["label"] != preds["pred"]) & (preds["pred"] >= 0)]  # -1: unreadable, no thumbnail
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(k)


def _label(c: int) -> str:
    d = L.describe(int(c))
    return f"{d['mask'].replace('_', ' ')} / {d['gender']} / {d['age']}"


def _metrics_table(m: dict) -> str:
    rows = [("macro F1 (18 classes)", m["f1"]), ("accuracy", m["accuracy"])]
    rows += [(f"{axis} accuracy / F1", f"{m[f'{axis}_accuracy']:.4f} / {m[f'{axis}_f1']:.4f}")
             for axis in ("mask", "gender", "age")]
    rows.append((">=60 F1", m["old_f1"]))
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{v if isinstance(v, str) else f'{v:.4f}'}</td></tr>"
                    for k, v in rows)
    return f"<table class='metrics'>{cells}</table>"


def _gallery(errors: pd.DataFrame) -> str:
    if errors.empty:
        return "<p>No mistakes.</p>"
    cards = []
    for row in errors.itertuples(index=False):
        thumb = thumbnail(row.path)
        img = f"<img src='data:image/jpeg;base64,{thumb}' alt=''>" if thumb else "<div class='missing'>unreadable</div>"
        cards.append(f"<figure>{img}<figcaption><b>{html.escape(str(row.ImageID))}</b><br>"
                     f"true: {html.escape(_label(row.label))}<br>"
                     f"<span class='bad'>pred: {html.escape(_label(row.pred))} ({row.confidence:.0%})</span>"
                     f"</figcaption></figure>")
    return f"<div class='gallery'>{''.join(cards)}</div>"


CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:0 auto;padding:1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table.metrics th{text-align:left;padding-right:1.5rem;font-weight:500}table.metrics td{font-variant-numeric:tabular-nums}
img.chart{max-width:100%}.meta{color:#555}
.gallery{display:flex;flex-wrap:wrap;gap:.8rem}.gallery figure{margin:0;width:170px;font-size:12px}
.gallery img{height:160px;max-width:170px;object-fit:contain;background:#eee}.bad{color:#b00020}
.missing{height:160px;background:#eee;color:#777;display:flex;align-items:center;justify-content:center}
"""


def write_report(run: str | Path, answers: str | None = None, images: str | None = None, *,
                 metrics: str | Path | None = None, out: str | Path | None = None, progress: bool = True) -> Path:
    """Write ``<stem>_report.html`` next to the metrics and return its path.

    ``metrics`` names a ``<stem>_metrics.json`` already written (by ``maskcls
    evaluate``); otherwise ``find_results`` picks or makes one.
    """
    metrics_path = Path(metrics) if metrics else find_results(run, answers, images, progress)
    stem = metrics_path.name.removesuffix("_metrics.json")
    m = json.loads(metrics_path.read_text())
    preds_path = metrics_path.with_name(f"{stem}_predictions.csv")
    preds = pd.read_csv(preds_path) if preds_path.is_file() else None
    folder = run_folder(run)
    logs = [folder / "log.csv"] if (folder / "log.csv").is_file() else sorted(folder.glob("fold*/log.csv"))
    support = np.asarray(m["confusion"]).sum(1).astype(int).tolist()
    cfg_text = ""
    if (folder / "config.yaml").is_file():
        import yaml

        c = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        mc, dc = c.get("model", {}), c.get("data", {})
        cfg_text = (f"model {mc.get('name')} ({mc.get('head')} head), image size {dc.get('image_size')}, "
                    f"decode size {dc.get('decode_size')}")
        thresholds = dc.get("age_thresholds") or L.DEFAULT_AGE_THRESHOLDS
    else:
        thresholds = L.DEFAULT_AGE_THRESHOLDS
    curves = curves_png(logs)
    sections = [
        f"<h1>maskcls report: {html.escape(folder.name)}</h1>",
        f"<p class='meta'>{html.escape(str(folder))}<br>{html.escape(cfg_text)}<br>"
        f"scored on <b>{html.escape(stem)}</b>: {m['images']} images &middot; written {time.strftime('%Y-%m-%d %H:%M')}</p>",
        "<h2 id='metrics'>Metrics</h2>", _metrics_table(m),
        "<h2 id='confusion'>Confusion matrix</h2>",
        "<p class='meta'>Rows: true class; columns: predicted. The colour bar beside each matrix is its legend.</p>",
        f"<img class='chart' alt='confusion matrix' src='data:image/png;base64,{confusion_png(m, metrics_path)}'>",
        "<h2 id='confusion-normalised'>Confusion matrix, row-normalised</h2>",
        "<p class='meta'>Each row divided by its number of images: the share of each true class given each answer "
        "(the diagonal is the recall), so rare classes are as visible as common ones.</p>",
        f"<img class='chart' alt='row-normalised confusion matrix' "
        f"src='data:image/png;base64,{normalised_confusion_png(m)}'>",
        "<h2 id='axis-confusion'>Confusion per axis</h2>",
        "<p class='meta'>The same predictions folded onto mask, gender and age band: counts above, "
        "row-normalised below.</p>",
        f"<img class='chart' alt='confusion per axis' src='data:image/png;base64,{axis_confusion_png(m, thresholds)}'>",
        "<h2 id='per-class'>Per-class F1</h2>",
        f"<img class='chart' alt='per-class F1' src='data:image/png;base64,{f1_bars(m['per_class_f1'], support)}'>",
        "<h2 id='curves'>Training curves</h2>",
        f"<img class='chart' alt='training curves' src='data:image/png;base64,{curves}'>" if curves
        else "<p>No log.csv in the run folder.</p>",
        f"<h2 id='errors'>Most confident mistakes (up to {WORST})</h2>",
        _gallery(worst_errors(preds)) if preds is not None else f"<p>No {html.escape(preds_path.name)}.</p>",
    ]
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>maskcls report {html.escape(folder.name)}"
            f"</title><style>{CSS}</style></head><body>{''.join(sections)}</body></html>")
    out = Path(out) if out else metrics_path.with_name(f"{stem}_report.html")
    write_text(out, page)
    return out
