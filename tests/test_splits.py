"""Person-level splits: no face on both sides, stratified, reproducible."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from maskcls import labels as L
from maskcls.data.splits import holdout, kfold_indices


def _people(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A synthetic image table: n persons x 7 photos with mixed gender/age."""
    rng = np.random.default_rng(seed)
    genders = rng.integers(0, 2, n)
    ages = rng.choice([20, 25, 40, 50, 65, 70], n, p=[0.25, 0.2, 0.2, 0.2, 0.1, 0.05])
    rows = []
    for i in range(n):
        for m in [0, 0, 0, 0, 0, 1, 2]:
            rows.append({"path": f"p{i}/{m}.jpg", "person": f"{i:06d}", "mask": m, "gender": int(genders[i]),
                         "age": int(ages[i])})
    return L.assign_labels(pd.DataFrame(rows))


@pytest.mark.parametrize("folds", [2, 5])
def test_kfold_persons_never_cross(folds):
    frame = _people()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the honest split does not warn
        splits = kfold_indices(frame, folds, seed=1)
    assert len(splits) == folds
    val_count: dict[str, int] = {}
    for tr, va in splits:
        assert len(np.intersect1d(tr, va)) == 0
        assert len(tr) + len(va) == len(frame)
        tp, vp = set(frame["person"].iloc[tr]), set(frame["person"].iloc[va])
        assert not tp & vp
        for p in vp:
            val_count[p] = val_count.get(p, 0) + 1
    assert set(val_count) == set(frame["person"])
    assert set(val_count.values()) == {1}  # every person in exactly one val fold


def test_kfold_strata_roughly_balanced():
    frame = _people(90)
    strata = frame["gender"] * 3 + frame["age_band"]
    overall = strata.value_counts(normalize=True)
    for _, va in kfold_indices(frame, 5, seed=3):
        share = strata.iloc[va].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (share - overall).abs().max() < 0.12, (share, overall)
        assert (strata.iloc[va] % 3 == 2).any()  # the rare >=60 band is in every fold


def test_same_seed_same_split_other_seed_differs():
    frame = _people()
    a = kfold_indices(frame, 5, seed=7)
    b = kfold_indices(frame, 5, seed=7)
    c = kfold_indices(frame, 5, seed=8)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    ha = holdout(frame, val_fraction=0.2, seed=7)[1]
    hb = holdout(frame, val_fraction=0.2, seed=7)[1]
    assert ha["path"].tolist() == hb["path"].tolist()


@pytest.mark.parametrize("fraction,fold", [(0.2, 0), (0.2, 3), (0.25, 1), (0.5, 1)])
def test_holdout_no_person_on_both_sides(fraction, fold):
    frame = _people()
    train, val = holdout(frame, val_fraction=fraction, seed=0, fold=fold)
    assert not set(train["person"]) & set(val["person"])
    assert len(train) + len(val) == len(frame)
    assert set(train["path"]) | set(val["path"]) == set(frame["path"])
    assert abs(val["person"].nunique() / frame["person"].nunique() - fraction) < 0.08
    assert (val.groupby("person").size() == 7).all()


def test_holdout_folds_differ_and_cover_everyone():
    frame = _people()
    vals = [set(holdout(frame, val_fraction=0.2, seed=0, fold=f)[1]["person"]) for f in range(5)]
    assert set().union(*vals) == set(frame["person"])
    assert sum(len(v) for v in vals) == frame["person"].nunique()


def test_holdout_zero_fraction_trains_on_all():
    frame = _people(10)
    train, val = holdout(frame, val_fraction=0, seed=0)
    assert len(train) == len(frame) and val.empty


def test_too_few_persons():
    frame = _people(3)
    with pytest.raises(ValueError, match="persons"):
        kfold_indices(frame, 5, seed=0)
