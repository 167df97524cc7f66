"""What 18 class probabilities say per axis: mask, gender and age band, each with its own confidence.

One place for the per-axis view that predict (CSV), serve (JSON) and the scene
tools show. The mask comes first: it is what a person looks at first, and its
own probability (summed over gender and age) is often far surer than the
18-class confidence of the whole label.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import labels as L
from .decision import decide


def axis_probs(probs: np.ndarray) -> np.ndarray:
    """(N, 8): marginals of (N, 18) class probabilities on mask (3), gender (2) and age band (3)."""
    cube = np.asarray(probs, np.float64).reshape(-1, len(L.Mask), len(L.Gender), len(L.AgeBand))
    return np.concatenate([cube.sum((2, 3)), cube.sum((1, 3)), cube.sum((1, 2))], axis=1)


def axis_columns(thresholds: Sequence[int] = L.DEFAULT_AGE_THRESHOLDS) -> list[str]:
    """Names of the 8 columns of ``axis_probs``: p_mask_wear, ..., p_gender_female, p_age_under30, ..."""
    lo, hi = thresholds
    return ([f"p_mask_{m.name.lower()}" for m in L.Mask] + [f"p_gender_{g.name.lower()}" for g in L.Gender]
            + [f"p_age_under{lo}", f"p_age_{lo}_{hi - 1}", f"p_age_{hi}plus"])


def summarize(probs: np.ndarray, *, decision: dict | None = None,
              thresholds: Sequence[int] = L.DEFAULT_AGE_THRESHOLDS, min_confidence: float = 0.0) -> dict | list[dict]:
    """The readable result of (18,) probabilities (a dict) or (N, 18) ones (a list of dicts).

    The class is ``decision.decide``'s; ``mask_confidence`` is the probability of
    its mask state summed over gender and age, ``confidence`` the probability of
    the whole 18-class label (``low_confidence`` when under ``min_confidence``),
    and ``probabilities`` the marginals of every axis.
    """
    p = np.asarray(probs, np.float64)
    if p.ndim == 1:
        return summarize(p[None], decision=decision, thresholds=thresholds, min_confidence=min_confidence)[0]
    axes = axis_probs(p)
    nm, ng = len(L.Mask), len(L.Gender)
    out = []
    for row, a, c in zip(p, axes, decide(p, decision).tolist()):
        m, g, age = L.decode(c)
        out.append({
            "class_id": int(c), "mask": m.name.lower(), "mask_confidence": round(float(a[int(m)]), 4),
            "gender": g.name.lower(), "age": L.age_name(age, thresholds), "confidence": round(float(row[c]), 4),
            "low_confidence": bool(row[c] < min_confidence),
            "probabilities": {
                "mask": {k.name.lower(): round(float(v), 4) for k, v in zip(L.Mask, a[:nm])},
                "gender": {k.name.lower(): round(float(v), 4) for k, v in zip(L.Gender, a[nm:nm + ng])},
                "age": {L.age_name(k, thresholds): round(float(v), 4) for k, v in zip(L.AgeBand, a[nm + ng:])},
            },
        })
    return out
