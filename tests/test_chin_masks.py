"""data.chin_masks: incorrect-mask photos recomposed as the person's mask pulled down to the chin."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maskcls.config import ConfigError, load_config
from maskcls.data.chin_masks import CUT, ChinMasks, chin_composite
from maskcls.data.dataset import PhotoDataset
from maskcls.data.images import ImageReadError

H, W = 40, 30
STEMS = ["mask1", "mask2", "incorrect_mask", "normal"]
FILL = {"mask1": 10, "mask2": 20, "incorrect_mask": 30, "normal": 200}


def _frame(persons=("p1", "p2")) -> pd.DataFrame:
    rows = [{"person": p, "path": f"/x/{p}/{s}.jpg", "mask": {"m": 0, "i": 1, "n": 2}[s[0]], "label": 6 * {"m": 0, "i": 1, "n": 2}[s[0]],
             "fill": FILL[s] + (1 if p == "p2" else 0)} for p in persons for s in STEMS]
    return pd.DataFrame(rows)


def _source(frame, broken=()):
    def read(i):
        if i in broken:
            raise ImageReadError(frame.path[i], "broken")
        return np.full((H, W, 3), frame.fill[i], np.uint8)
    return read


def test_composite_is_top_above_the_cut_and_bottom_below():
    top, bottom = np.full((100, 8, 3), 200, np.uint8), np.full((100, 8, 3), 10, np.uint8)
    out = chin_composite(top, bottom, 0.6)
    assert out.dtype == np.uint8 and out.shape == top.shape
    assert (out[:55] == 200).all() and (out[65:] == 10).all()


def test_incorrect_rows_become_the_same_persons_chin_mask():
    frame = _frame()
    ds = PhotoDataset(frame, _source(frame), lambda image: {"image": image}, compose=ChinMasks(frame, 1.0))
    for i in np.flatnonzero(frame["mask"].to_numpy() == 1):
        img, label = ds[i]
        p2 = int(frame.person[i] == "p2")
        assert int(label) == 6  # still incorrect
        assert (img[: int(CUT[0] * H) - 2] == 200 + p2).all()  # the same person's normal photo above
        assert set(np.unique(img[int(CUT[1] * H) + 2:])) <= {10 + p2, 20 + p2}  # one of their masked photos below
    for i in np.flatnonzero(frame["mask"].to_numpy() != 1):  # other rows untouched
        assert (ds[i][0] == frame.fill[i]).all()


def test_share_zero_changes_nothing_and_draws_follow_the_epoch():
    frame = _frame(persons=[f"p{k}" for k in range(40)])
    frame["fill"] = frame["path"].map(lambda p: FILL[p.split("/")[-1][:-4]])
    src = _source(frame)
    rows = np.flatnonzero(frame["mask"].to_numpy() == 1)
    off = ChinMasks(frame, 0.0)
    assert all((off(i, src(i), src) == 30).all() for i in rows)
    half = ChinMasks(frame, 0.5)
    changed = [not (half(i, src(i), src) == 30).all() for i in rows]
    assert 8 < sum(changed) < 32  # about half
    again = ChinMasks(frame, 0.5)
    assert [not (again(i, src(i), src) == 30).all() for i in rows] == changed  # same seed, same draws
    again.set_epoch(1)
    assert [not (again(i, src(i), src) == 30).all() for i in rows] != changed


def test_unreadable_partner_keeps_the_photo():
    frame = _frame(persons=["p1"])
    src = _source(frame, broken={3})  # the normal photo
    assert (ChinMasks(frame, 1.0)(2, src(2), src) == 30).all()


def test_option_is_checked_and_reaches_training(tiny_cfg):
    with pytest.raises(ConfigError, match="chin_masks"):
        load_config(None, ["data.chin_masks=1.5"])
    with pytest.raises(ConfigError, match="face_crop"):
        load_config(None, ["data.chin_masks=0.5", "preprocess.face_crop=true"])
    assert load_config(None, []).data.chin_masks == 0.0
    import torch

    from maskcls.data.feeds import Feeds
    from maskcls.distributed import Dist
    from maskcls.data.loading import load_splits

    cfg = tiny_cfg("data.chin_masks=1.0")
    train, val = load_splits(cfg)
    src = _source(train.reset_index(drop=True).assign(fill=0))
    feeds = Feeds(cfg, Dist(), torch.device("cpu"), (train, src), (val, src), {"mean": [0.5] * 3, "std": [0.5] * 3})
    assert feeds.train_ds.compose is feeds.chin and len(feeds.chin.partners) == (train["mask"] == 1).sum()
    assert feeds.val_ds.compose is None  # validation photos stay as they are
