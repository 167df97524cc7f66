"""Samplers that balance classes or persons, and a fixed subset of persons.

The 18 classes are far from even (>=60 and incorrect/no mask are rare), so
``data.sampler=class`` draws every class about equally often per epoch;
``person`` makes each person equally likely however many photos (e.g.
upsampled copies) the person has. Both draw ``len(frame)`` photos with
replacement, so an epoch keeps its length. ``EpochSampler`` is the one
sampler: one process, several, CPU or tensor input path alike.

``data.sampler_power`` softens the balance: weights are ``1 / count**power``,
so a class is drawn in proportion to ``count**(1 - power)``; 1 is full
balance, 0 the natural frequencies, 0.5 square-root sampling. Full balance
draws the few photos of a >=60 person without a mask ~14 times an epoch
while a young woman's masked photo is drawn ~0.3 times, which is one way
to memorise a few old faces.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from .splits import person_strata

SAMPLERS = ("none", "class", "person")


def sample_weights(kind: str, frame: pd.DataFrame, power: float = 1.0) -> np.ndarray:
    """Per-photo drawing weight: 1 / (photos of its class)**power, or of its person."""
    column = {"class": "label", "person": "person"}.get(kind)
    if column is None:
        raise ValueError(f"data.sampler: '{kind}' is not supported; choose one of {', '.join(SAMPLERS)}")
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"data.sampler_power: {power} is outside [0, 1]")
    counts = frame[column].map(frame[column].value_counts())
    return (counts.to_numpy(float) ** -power).astype(np.float64)


def draw_weights(kind: str, frame: pd.DataFrame, power: float = 1.0) -> tuple[np.ndarray | None, int]:
    """Per-photo drawing weights of one epoch (None: a plain permutation) and its number of draws.

    Rows of an extra source (``data.sources``: a ``source_weight`` column above
    0) are drawn with the expected share ``source_weight`` of every draw, and
    so of every batch; the competition photos share the rest. Within the
    competition photos the weighting is ``kind``'s; within a source the mask
    states are balanced the same way (``class``), by photo (``person``) or
    not (``none``). The epoch has ``competition photos / (1 - sum of weights)``
    draws, so the competition photos are drawn as often as without sources.
    """
    if "source_weight" not in frame or not (frame["source_weight"] > 0).any():
        if kind == "none":
            return None, len(frame)
        return sample_weights(kind, frame, power), len(frame)
    extra = (frame["source_weight"] > 0).to_numpy()
    base = frame[~extra]
    weights = np.zeros(len(frame))
    total = 0.0
    if len(base):
        w = np.ones(len(base)) if kind == "none" else sample_weights(kind, base, power)
        share = 1.0 - float(frame.loc[extra].groupby("source")["source_weight"].first().sum())
        weights[~extra] = w / w.sum() * share
    for _, rows in frame[extra].groupby("source").groups.items():
        part = frame.loc[rows]
        by = {"class": "mask", "person": "person"}.get(kind)
        w = np.ones(len(part)) if by is None else sample_weights(kind, part.assign(label=part["mask"]), power)
        idx = frame.index.get_indexer(rows)
        weights[idx] = w / w.sum() * float(part["source_weight"].iloc[0])
    total = weights.sum()
    draws = int(round(len(base) / (weights[~extra].sum() / total))) if len(base) else len(frame)
    return weights / total, max(1, draws)


class EpochSampler(torch.utils.data.Sampler):
    """The order of one epoch from ``set_epoch(seed)``, optionally one shard of it.

    Every rank draws the same sequence (weighted for ``class`` and ``person``,
    as torch's WeightedRandomSampler draws it; a permutation for ``none``) from
    the same seed, pads it to a multiple of ``world`` with its first items, and
    takes positions ``rank``, ``rank + world``, ... So the ranks' batches k
    together hold exactly the photos of batch k of one process with the whole
    batch. One process is ``world=1``; a loader may outlive an epoch.
    """

    def __init__(self, kind: str, frame: pd.DataFrame, *, rank: int = 0, world: int = 1, seed: int = 0,
                 power: float = 1.0):
        weights, draws = draw_weights(kind, frame, power)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.n, self.rank, self.world, self.seed = draws, rank, world, seed

    def set_epoch(self, seed: int) -> None:
        self.seed = seed

    def sequence(self) -> torch.Tensor:
        """The whole epoch's draw, before sharding (the same on every rank)."""
        g = torch.Generator().manual_seed(self.seed)
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights, self.n, replacement=True, generator=g)

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self):
        seq = self.sequence()
        pad = len(self) * self.world - len(seq)
        if pad:
            seq = torch.cat([seq, seq[:pad]])
        return iter(seq[self.rank::self.world].tolist())


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
