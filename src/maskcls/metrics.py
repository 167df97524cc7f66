"""Competition metrics: macro F1 over the 18 classes, plus per-axis views."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from . import labels as L
from .io import atomic_path, write_text


NO_PREDICTION = -1  # an image that could not be read: wrong on every axis, never a class


def _axes(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask, gender and age band of class ids; NO_PREDICTION stays -1 on every axis."""
    return tuple(np.where(c < 0, -1, a) for a in L.decode(np.maximum(c, 0)))


def compute_metrics(y_true, y_pred) -> dict:
    """Macro F1 (18 classes, absent classes count as 0 like the competition), accuracy, per axis.

    A prediction of ``NO_PREDICTION`` (-1, an unreadable image) counts as wrong
    everywhere: a missed image of its true class, a false positive of none.
    """
    t, p = np.asarray(y_true, int), np.asarray(y_pred, int)
    classes = list(range(L.NUM_CLASSES))
    out = {
        "images": int(len(t)),
        "unreadable": int((p < 0).sum()),
        "f1": float(f1_score(t, p, labels=classes, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(t, p)) if len(t) else 0.0,
    }
    for axis, (name, k) in enumerate(L.HEAD_SIZES.items()):
        ta, pa = _axes(t)[axis], _axes(p)[axis]
        out[f"{name}_accuracy"] = float(accuracy_score(ta, pa)) if len(t) else 0.0
        out[f"{name}_f1"] = float(f1_score(ta, pa, labels=list(range(k)), average="macro", zero_division=0))
    out["per_class_f1"] = [float(x) for x in f1_score(t, p, labels=classes, average=None, zero_division=0)]
    age_old = _axes(t)[2] == 2
    out["old_f1"] = float(f1_score(age_old, _axes(p)[2] == 2, zero_division=0)) if age_old.any() else 0.0
    out["confusion"] = confusion_matrix(t, p, labels=classes).tolist()
    return out


def class_name(c: int) -> str:
    d = L.describe(c)
    return f"{c}: {d['mask']}/{d['gender']}/{d['age']}"


def summary_text(m: dict, title: str = "evaluation") -> str:
    lines = [
        f"{title}: {m['images']} images" + (f" ({m['unreadable']} unreadable, counted wrong)"
                                              if m.get("unreadable") else ""),
        f"  macro F1 (18 classes) {m['f1']:.4f}   accuracy {m['accuracy']:.4f}",
        f"  mask   acc {m['mask_accuracy']:.4f}  F1 {m['mask_f1']:.4f}",
        f"  gender acc {m['gender_accuracy']:.4f}  F1 {m['gender_f1']:.4f}",
        f"  age    acc {m['age_accuracy']:.4f}  F1 {m['age_f1']:.4f}   (>=60 F1 {m['old_f1']:.4f})",
        "  per-class F1:",
    ]
    for c, f in enumerate(m["per_class_f1"]):
        lines.append(f"    {class_name(c):28s} {f:.3f}")
    return "\n".join(lines)


def axis_confusions(cm) -> dict[str, np.ndarray]:
    """The 18x18 confusion matrix folded onto each axis: mask 3x3, gender 2x2, age 3x3 (rows true, columns predicted)."""
    cm = np.asarray(cm, dtype=np.int64)
    out = {}
    t, p = np.meshgrid(np.arange(L.NUM_CLASSES), np.arange(L.NUM_CLASSES), indexing="ij")
    for axis, (name, k) in enumerate(L.HEAD_SIZES.items()):
        m = np.zeros((k, k), np.int64)
        np.add.at(m, (L.decode(t.ravel())[axis], L.decode(p.ravel())[axis]), cm.ravel())
        out[name] = m
    return out


def normalise_rows(cm) -> np.ndarray:
    """Each row divided by its total (recall per true class); empty rows stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum(1, keepdims=True)
    return np.divide(cm, total, out=np.zeros_like(cm), where=total > 0)


def plot_confusion(ax, cm, names: list[str], *, normalised: bool = False, fontsize: int = 6, title: str = ""):
    """Draw one confusion matrix with a colour bar (the legend of its shades); returns the image."""
    cm = np.asarray(cm)
    shown = normalise_rows(cm) if normalised else cm
    vmax = 1.0 if normalised else max(1, int(cm.max()))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax)
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class" if normalised else "images")
    n = len(names)
    ax.set_xticks(range(n), names, rotation=90 if n > 6 else 0, fontsize=fontsize + 1)
    ax.set_yticks(range(n), names, fontsize=fontsize + 1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                text = f"{shown[i, j]:.0%}" if normalised else str(int(cm[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if shown[i, j] > vmax / 2 else "black")
    return im


def save_confusion_png(cm, path: str | Path, normalised: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 8))
    plot_confusion(ax, cm, [class_name(c) for c in range(L.NUM_CLASSES)], normalised=normalised,
                   title="row-normalised (recall per true class)" if normalised else "")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_metrics(m: dict, folder: str | Path, stem: str = "metrics", title: str = "evaluation") -> Path:
    """``stem.json``, ``stem.txt`` and ``stem_confusion.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / f"{stem}.json", json.dumps(m, indent=1))
    write_text(folder / f"{stem}.txt", summary_text(m, title) + "\n")
    save_confusion_png(m["confusion"], folder / f"{stem}_confusion.png")
    return folder / f"{stem}.json"
