"""The 18-class scheme, age bands, file-name parsing and relabelling."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maskcls import labels as L
from maskcls.data.reader import DataError, read_train


def test_encode_decode_round_trip_all_ids():
    seen = set()
    for c in range(L.NUM_CLASSES):
        m, g, a = L.decode(c)
        assert (int(m), int(g), int(a)) == (c // 6, (c // 3) % 2, c % 3)
        assert L.encode(m, g, a) == c
        seen.add((int(m), int(g), int(a)))
    assert len(seen) == 18
    with pytest.raises(ValueError):
        L.decode(18)


def test_encode_decode_arrays():
    ids = np.arange(18)
    m, g, a = L.decode(ids)
    assert list(m) == [c // 6 for c in range(18)]
    assert list(g) == [(c // 3) % 2 for c in range(18)]
    assert list(a) == [c % 3 for c in range(18)]
    assert np.array_equal(L.encode(m, g, a), ids)
    # mask=2, gender=1, age=2 is the last class
    assert L.encode(L.Mask.NOT_WEAR, L.Gender.FEMALE, L.AgeBand.OLD) == 17


@pytest.mark.parametrize("age,band", [(29, 0), (30, 1), (59, 1), (60, 2), (0, 0), (99, 2)])
def test_age_band_default(age, band):
    assert L.age_band(age) == band


@pytest.mark.parametrize("age,band", [(24, 0), (25, 1), (54, 1), (55, 2), (29, 1), (30, 1), (59, 2), (60, 2)])
def test_age_band_custom_thresholds(age, band):
    assert L.age_band(age, (25, 55)) == band


def test_age_band_arrays_and_bad_thresholds():
    ages = np.array([29, 30, 59, 60])
    assert list(L.age_band(ages)) == [0, 1, 1, 2]
    assert list(L.age_band(ages, (30, 58))) == [0, 1, 2, 2]
    assert list(L.age_band(pd.Series(ages))) == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="rise"):
        L.age_band(40, (60, 30))


@pytest.mark.parametrize(
    "stem,mask",
    [("mask1", L.Mask.WEAR), ("mask2", L.Mask.WEAR), ("mask3", L.Mask.WEAR), ("mask4", L.Mask.WEAR),
     ("mask5", L.Mask.WEAR), ("incorrect_mask", L.Mask.INCORRECT), ("normal", L.Mask.NOT_WEAR),
     ("incorrect_mask2", L.Mask.INCORRECT), ("normal3", L.Mask.NOT_WEAR), ("Normal", L.Mask.NOT_WEAR),
     ("MASK1", L.Mask.WEAR)],
)
def test_mask_from_stem(stem, mask):
    assert L.mask_from_stem(stem) == mask


@pytest.mark.parametrize("stem", ["mask", "masks1", "photo", "normal_1", "incorrect", "", "mask1x", "abnormal"])
def test_mask_from_stem_unknown(stem):
    assert L.mask_from_stem(stem) is None


def _person(frame, pid):
    return frame[frame["person"] == pid]


def test_relabel_applied(demo_root, tmp_path):
    base = read_train(demo_root)
    p0, p1, p2 = sorted(base["person"].unique())[:3]
    g0 = int(_person(base, p0)["gender"].iloc[0])
    new_gender = "male" if g0 == 1 else "female"
    relabel = tmp_path / "relabel.csv"
    relabel.write_text(f"id,field,value,image\n{p0},gender,{new_gender},\n{p1},age,65,\n{p2},mask,incorrect,normal\n")
    fixed = read_train(demo_root, relabel=relabel)
    assert len(fixed) == len(base)
    a = _person(fixed, p0)
    assert set(a["gender"]) == {1 - g0}
    assert (a["label"] == L.encode(a["mask"].to_numpy(), a["gender"].to_numpy(), a["age_band"].to_numpy())).all()
    b = _person(fixed, p1)
    assert set(b["age"]) == {65} and set(b["age_band"]) == {2}
    assert set(b["label"] % 3) == {2}
    c = _person(fixed, p2)
    normal = c[c["path"].str.endswith("normal.jpg")]
    assert len(normal) == 1 and int(normal["mask"].iloc[0]) == L.Mask.INCORRECT
    assert int(normal["label"].iloc[0]) // 6 == 1
    others = c[~c["path"].str.endswith("normal.jpg")]
    assert (others["mask"].to_numpy() == _person(base, p2)[~_person(base, p2)["path"].str.endswith("normal.jpg")]["mask"].to_numpy()).all()
    # untouched persons keep their labels
    rest = sorted(base["person"].unique())[3:]
    assert fixed[fixed["person"].isin(rest)]["label"].tolist() == base[base["person"].isin(rest)]["label"].tolist()


@pytest.mark.parametrize(
    "text,message",
    [("id,what,value\n1,gender,male\n", "column"),
     ("id,field,value\n000001,height,180\n", "unknown field"),
     ("id,field,value\n000001,mask,incorrect\n", "image"),
     ("id,field,value,image\n000001,mask,sideways,normal\n", "unknown mask"),
     ("id,field,value\n000001,gender,robot\n", "gender"),
     ("id,field,value\n000001,age,old\n", "line 2"),
     ("", "relabel")],
)
def test_bad_relabel_file_is_one_clear_error(demo_root, tmp_path, text, message):
    bad = tmp_path / "relabel.csv"
    bad.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_train(demo_root, relabel=bad)
    assert len(str(info.value).splitlines()) == 1
    assert str(bad) in str(info.value)


def test_missing_relabel_file(demo_root, tmp_path):
    with pytest.raises(DataError, match="relabel file not found"):
        read_train(demo_root, relabel=tmp_path / "nope.csv")
