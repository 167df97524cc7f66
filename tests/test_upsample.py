"""``maskcls prepare upsample``: copies in the person's folder, labelled by prefix, idempotent, split-safe."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from maskcls import labels as L
from maskcls.cli import main
from maskcls.config import load_config
from maskcls.data.demo import make_demo_data
from maskcls.data.images import load_rgb
from maskcls.data.reader import read_train
from maskcls.data.splits import holdout
from maskcls.data.upsample import upsample


@pytest.fixture
def root(tmp_path):
    return make_demo_data(tmp_path / "data", persons=10, eval_persons=1, size=(48, 64))


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted((root / "train" / "images").rglob("*.jpg"))}


def cfg_for(root: Path):
    return load_config(None, [f"data.root={root}", "train.progress=false"])


def test_upsample_writes_labelled_copies_in_each_person_folder(root):
    before = read_train(root)
    counts = upsample(cfg_for(root), copies=2)
    assert counts["written"] == 10 * 2 * 2
    after = read_train(root)
    assert len(after) == len(before) + 40
    for folder in (root / "train" / "images").iterdir():
        names = sorted(p.stem for p in folder.iterdir())
        assert names == sorted(["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "incorrect_mask2",
                                "incorrect_mask3", "normal", "normal2", "normal3"])
        src, copy = load_rgb(folder / "normal.jpg"), load_rgb(folder / "normal2.jpg")
        assert src.shape == copy.shape and np.abs(src.astype(int) - copy.astype(int)).mean() > 1  # augmented
    copies = after[after["path"].str.contains(r"(?:incorrect_mask|normal)\d\.jpg$")]
    stems = copies["path"].map(lambda p: Path(p).stem.rstrip("0123456789"))
    assert (copies["mask"] == stems.map({"incorrect_mask": L.Mask.INCORRECT, "normal": L.Mask.NOT_WEAR})).all()
    people = before.drop_duplicates("person").set_index("person")
    assert (copies["gender"].to_numpy() == people.loc[copies["person"], "gender"].to_numpy()).all()
    assert (copies["age"].to_numpy() == people.loc[copies["person"], "age"].to_numpy()).all()


def test_upsample_is_idempotent_and_deterministic(root, tmp_path):
    upsample(cfg_for(root), copies=2)
    first = snapshot(root)
    again = upsample(cfg_for(root), copies=2)
    assert again["written"] == 0 and snapshot(root) == first  # no new files, no rewritten bytes
    other = make_demo_data(tmp_path / "other", persons=10, eval_persons=1, size=(48, 64))
    upsample(cfg_for(other), copies=2)
    assert snapshot(other) == first  # same data and seed -> byte-identical copies
    fewer = upsample(cfg_for(root), copies=1)
    assert fewer["removed"] == 20 and len(snapshot(root)) == 10 * 9


def test_copies_stay_in_their_persons_split(root):
    upsample(cfg_for(root), copies=2)
    frame = read_train(root)
    train, val = holdout(frame, val_fraction=0.3, seed=0)
    assert not set(train["person"]) & set(val["person"])
    for side, other in ((train, val), (val, train)):
        folders = set(side["folder"])
        copies = side[side["path"].str.contains(r"\d\.jpg$") & ~side["path"].str.contains("/mask")]
        assert len(copies) == 4 * side["person"].nunique()
        assert set(copies["folder"]) <= folders and not set(copies["folder"]) & set(other["folder"])
        sources = {str(Path(p).parent / (Path(p).stem.rstrip("0123456789") + ".jpg")) for p in copies["path"]}
        assert sources <= set(side["path"])  # every copy sits on the same side as its source photo


def test_prepare_upsample_cli(root, capsys):
    assert main(["prepare", "upsample", "--copies", "1", f"data.root={root}", "-q"]) == 0
    assert "20 written" in capsys.readouterr().out
    assert len(read_train(root)) == 10 * 9
