"""From 18 class probabilities to one class id: argmax of log p plus a per-class bias.

Macro F1 weighs the rare classes (>=60, incorrect mask) as much as the common
ones, while argmax favours the common ones. ``fit_class_bias`` moves the 18
decision thresholds on the validation persons (coordinate ascent on additive
biases to log p), and ``decide`` applies them. A zero bias is plain argmax.
Every path that turns probabilities into classes (predict, evaluate, serve,
k-fold ensembles, ONNX) goes through ``decide``.
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from .labels import NUM_CLASSES

# candidate biases per class, in nats, nearest to 0 first: of equally good values the smallest change wins
GRID = np.array(sorted(np.round(np.arange(-2.0, 2.0001, 0.25), 2), key=lambda b: (abs(b), b)))
PASSES = 3
EPS = 1e-7

log = logging.getLogger("maskcls")


def zero_decision() -> dict:
    return {"class_bias": [0.0] * NUM_CLASSES}


def class_bias(decision: Mapping | None) -> np.ndarray:
    """The (18,) bias of a decision dict (zeros when absent)."""
    bias = (decision or {}).get("class_bias")
    if bias is None:
        return np.zeros(NUM_CLASSES)
    bias = np.asarray(bias, np.float64)
    if bias.shape != (NUM_CLASSES,):
        raise ValueError(f"decision class_bias needs {NUM_CLASSES} numbers, got shape {bias.shape}")
    return bias


def decide(probs: np.ndarray, decision: Mapping | None = None) -> np.ndarray:
    """Class ids: argmax of log p + bias (plain argmax with no or zero bias)."""
    probs = np.asarray(probs)
    bias = class_bias(decision)
    if len(probs) == 0 or not bias.any():
        return probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    return (np.log(np.clip(probs, EPS, None)) + bias).argmax(1)


def macro_f1(labels: np.ndarray, pred: np.ndarray, k: int = NUM_CLASSES) -> float:
    """Macro F1 over all ``k`` classes (absent ones count 0), as ``metrics.compute_metrics``."""
    cm = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean())


def fit_class_bias(probs: np.ndarray, labels: np.ndarray, *, grid: np.ndarray = GRID,
                   passes: int = PASSES) -> np.ndarray:
    """(18,) biases that raise macro F1 of ``decide`` on (probs, labels); deterministic.

    Coordinate ascent: for each class in turn, the grid value that gives the
    best macro F1 with the other biases fixed; a value is taken only if it is
    strictly better, so ties keep the smaller change. A few passes over the
    classes; stops early when a pass changes nothing.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    k = probs.shape[1]
    bias = np.zeros(k)
    if len(labels) == 0:
        return bias
    logp = np.log(np.clip(probs, EPS, None))
    best = macro_f1(labels, logp.argmax(1), k)
    for _ in range(passes):
        changed = False
        for c in range(k):
            others = logp + bias
            others[:, c] = -np.inf
            top_other, arg_other = others.max(1), others.argmax(1)
            margin = logp[:, c] - top_other  # class c wins where margin + b > 0
            for b in grid:
                if b == bias[c]:
                    continue
                score = margin + b
                pred = np.where((score > 0) | ((score == 0) & (c < arg_other)), c, arg_other)  # argmax's ties
                f1 = macro_f1(labels, pred, k)
                if f1 > best + 1e-12:
                    best, bias[c], changed = f1, b, True
        if not changed:
            break
    return bias


def fitted_decision(probs: np.ndarray, labels: np.ndarray, *, what: str, enabled: bool = True) -> dict:
    """The decision stored with a run (``what``: "validation images") or a k-fold folder ("out-of-fold images").

    Biases fitted on (probs, labels) by ``fit_class_bias``, with macro F1 before
    and after (optimistic: the same images); zeros (plain argmax) when not
    ``enabled`` (``eval.class_bias=false``) or without images.
    """
    if not enabled:
        return {**zero_decision(), "fitted_on": "nothing (eval.class_bias=false)"}
    probs, labels = np.asarray(probs), np.asarray(labels, np.int64)
    if not len(labels):
        log.info("class bias: no %s, nothing to fit; stored zeros (argmax)", what)
        return {**zero_decision(), "fitted_on": f"nothing (no {what})"}
    bias = fit_class_bias(probs, labels)
    before, after = macro_f1(labels, probs.argmax(1)), macro_f1(labels, decide(probs, {"class_bias": bias}))
    log.info("class bias fitted on %d %s: macro F1 %.4f -> %.4f (optimistic: same images)", len(labels), what,
             before, after)
    return {"class_bias": [float(b) for b in bias], "fitted_on": f"{len(labels)} {what}",
            "f1_argmax": round(before, 5), "f1_with_bias": round(after, 5)}
