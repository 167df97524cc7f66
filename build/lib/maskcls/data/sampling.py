"""Samplers that balance classes or persons, and a fixed subset of persons.

The 18 classes are far from even (>=60 and incorrect/no mask are rare), so
``data.sampler=class`` draws every class about equally often per epoch;
``person`` makes each person equally likely however many photos (e.g.
upsampled copies) the person has. Both draw ``len(frame)`` photos with
replacement, so an epoch keeps its length.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler

from .splits import person_strata

SAMPLERS = ("none", "class", "person")


def sample_weights(kind: str, frame: pd.DataFrame) -> np.ndarray:
    """Per-photo drawing weight: 1 / photos of its class, or 1 / photos of its person."""
    column = {"class": "label", "person": "person"}.get(kind)
    if column is None:
        raise ValueError(f"data.sampler: '{kind}' is not supported; choose one of {', '.join(SAMPLERS)}")
    counts = frame[column].map(frame[column].value_counts())
    return (1.0 / counts.to_numpy(float)).astype(np.float64)


def make_sampler(kind: str, frame: pd.DataFrame, seed: int):
    """None (plain shuffling) or a torch Sampler for ``kind``."""
    if kind == "none":
        return None
    weights = torch.as_tensor(sample_weights(kind, frame), dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(frame), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


def subset_persons(frame: pd.DataFrame, max_persons: int, seed: int = 0) -> pd.DataFrame:
    """Photos of ``max_persons`` persons, stratified by gender x age band (0 or enough: all).

    The seed is fixed so every run of an ablation sees the same persons.
    """
    people = frame.drop_duplicates("person")
    if not max_persons or max_persons >= len(people):
        return frame
    strata = person_strata(people)
    counts = np.bincount(strata)
    exact = counts * max_persons / len(people)  # largest remainder: shares as even as whole persons allow
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: max_persons - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    ids = people["person"].to_numpy()
    keep = [p for s, q in enumerate(quota) if q for p in rng.choice(ids[strata == s], q, replace=False)]
    return frame[frame["person"].isin(set(keep))].reset_index(drop=True)
