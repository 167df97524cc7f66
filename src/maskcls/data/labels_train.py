"""Training-only label changes: moved age thresholds and dropped ages.

Evaluation always uses the true labels; these only shape what the model is
taught (e.g. leaving out the ambiguous ages 57-59 next to the 60 boundary).
"""
from __future__ import annotations

import logging

import pandas as pd

from .. import labels as L
from ..config import DataConfig

log = logging.getLogger("maskcls")


def training_frame(frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    out = frame
    if data.drop_train_ages:
        keep = ~out["age"].isin(list(data.drop_train_ages))
        if "age_known" in out:  # an unknown age (data.sources) is a placeholder, not an age to drop
            keep |= ~out["age_known"].to_numpy(bool)
        log.info("training without ages %s: %d of %d photos left out", data.drop_train_ages, (~keep).sum(), len(out))
        out = out[keep]
    if data.train_age_thresholds:
        out = L.assign_labels(out, data.train_age_thresholds)
    return out.reset_index(drop=True)
