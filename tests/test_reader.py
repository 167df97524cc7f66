"""Reading the competition layout: labels, one clear line per problem, odd image files."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskcls import labels as L
from maskcls.config import load_config
from maskcls.data.decode import Decoder
from maskcls.data.images import ImageReadError, load_rgb
from maskcls.data.reader import DataError, Report, read_answers, read_eval, read_folder, read_train


@pytest.fixture
def copy_root(demo_root, tmp_path):
    """A private copy of the demo data that a test may damage."""
    return Path(shutil.copytree(demo_root, tmp_path / "data"))


def _folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "train" / "images").iterdir() if p.is_dir())


# ----------------------------------------------------------------------------- good data
def test_good_data_seven_photos_and_labels(demo_root):
    report = Report()
    frame = read_train(demo_root, report=report)
    assert report.warnings == []
    csv = pd.read_csv(demo_root / "train" / "train.csv", dtype=str)
    assert len(frame) == 7 * len(csv) == 84
    assert (frame.groupby("person").size() == 7).all()
    for person, rows in frame.groupby("person"):
        stems = sorted(Path(p).stem for p in rows["path"])
        assert stems == sorted(["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"])
        assert sorted(rows["mask"]) == [0, 0, 0, 0, 0, 1, 2]
        folder = rows["folder"].iloc[0]
        pid, gender, race, age = folder.split("_")
        assert pid == person
        row = csv[csv["id"] == person].iloc[0]
        assert (row["gender"], row["race"], row["age"]) == (gender, race, age)
        assert set(rows["gender"]) == {0 if gender == "male" else 1}
        assert set(rows["age"]) == {int(age)}
        assert set(rows["age_band"]) == {int(L.age_band(int(age)))}
    expected = L.encode(frame["mask"].to_numpy(), frame["gender"].to_numpy(), frame["age_band"].to_numpy())
    assert np.array_equal(frame["label"].to_numpy(), expected)
    assert frame["label"].between(0, 17).all()


def test_custom_thresholds_change_bands(demo_root):
    a = read_train(demo_root)
    b = read_train(demo_root, age_thresholds=(20, 21))
    assert (b["age_band"] == np.where(b["age"] < 20, 0, np.where(b["age"] < 21, 1, 2))).all()
    assert not a["age_band"].equals(b["age_band"])


def test_root_may_be_the_train_folder(demo_root):
    assert len(read_train(demo_root / "train")) == 84


def test_eval_and_answers(demo_root):
    ev = read_eval(demo_root)
    info = pd.read_csv(demo_root / "eval" / "info.csv")
    assert ev["ImageID"].tolist() == info["ImageID"].tolist()
    assert all(Path(p).is_file() for p in ev["path"])
    ans = read_answers(demo_root / "eval" / "answers.csv", demo_root / "eval" / "images")
    assert len(ans) == 42 and ans["label"].between(0, 17).all()
    assert len(read_folder(demo_root / "eval" / "images")) == 42


# ----------------------------------------------------------------------------- problems
def test_missing_train_csv(copy_root):
    (copy_root / "train" / "train.csv").unlink()
    with pytest.raises(DataError) as info:
        read_train(copy_root)
    msg = str(info.value)
    assert "train.csv" in msg and "not found" in msg and len(msg.splitlines()) == 1


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_train(tmp_path / "nowhere")


def test_missing_columns(copy_root):
    csv = copy_root / "train" / "train.csv"
    frame = pd.read_csv(csv, dtype=str).drop(columns=["age", "path"])
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError) as info:
        read_train(copy_root)
    msg = str(info.value)
    assert str(csv) in msg and "age" in msg and "path" in msg and len(msg.splitlines()) == 1


def test_missing_person_folder(copy_root):
    victim = _folders(copy_root)[0]
    shutil.rmtree(victim)
    report = Report()
    frame = read_train(copy_root, report=report)
    assert len(report.warnings) == 1
    assert victim.name in report.warnings[0] and "not found" in report.warnings[0]
    assert len(frame) == 77


def test_unknown_file_name(copy_root):
    folder = _folders(copy_root)[1]
    shutil.copy(folder / "mask1.jpg", folder / "selfie.jpg")
    report = Report()
    frame = read_train(copy_root, report=report)
    assert len(report.warnings) == 1
    assert "selfie.jpg" in report.warnings[0] and "unknown file name" in report.warnings[0]
    assert len(frame) == 84 and not frame["path"].str.endswith("selfie.jpg").any()


def test_person_with_too_few_photos(copy_root):
    folder = _folders(copy_root)[2]
    (folder / "mask3.jpg").unlink()
    (folder / "normal.jpg").unlink()
    report = Report()
    frame = read_train(copy_root, report=report)
    assert len(report.warnings) == 1
    assert folder.name in report.warnings[0] and "5 photos" in report.warnings[0]
    assert len(frame) == 82


def test_bad_age_in_csv_is_one_line(copy_root):
    csv = copy_root / "train" / "train.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[0, "age"] = "old"
    frame.to_csv(csv, index=False)
    report = Report()
    assert len(read_train(copy_root, report=report)) == 77
    assert len(report.warnings) == 1 and "train.csv:2" in report.warnings[0]


def test_eval_image_missing(copy_root):
    first = pd.read_csv(copy_root / "eval" / "info.csv")["ImageID"].iloc[0]
    (copy_root / "eval" / "images" / first).unlink()
    with pytest.raises(DataError, match=first):
        read_eval(copy_root)


# ----------------------------------------------------------------------------- corrupt file
@pytest.mark.parametrize("cache", [True, False])
def test_corrupt_jpg_skipped_and_listed(copy_root, tmp_path, cache):
    bad = _folders(copy_root)[3] / "mask2.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(ImageReadError, match="mask2.jpg"):
        load_rgb(bad)
    from maskcls.engine import fit

    cfg = load_config(None, [f"data.root={copy_root}", f"project={tmp_path / 'runs'}", f"data.cache={cache}",
                             f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0", "data.decode_size=[32,24]",
                             "data.image_size=[32,24]", "data.batch_size=16", "train.epochs=1",
                             "train.progress=false", "train.threads=1", "model.name=resnet10t", "model.pretrained=false"])
    result = fit(cfg)
    assert Path(result["best"]).is_file()
    assert any(str(bad) in p for p in result["problems"]), result["problems"]


# ----------------------------------------------------------------------------- image modes
def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_grayscale(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.new("L", (30, 20), 100).save(path)
    out = load_rgb(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - 100).max() <= 2
    dec = Decoder(load_config(None, ["data.decode_size=[16,12]"]).data, load_config().preprocess)
    assert dec(path).shape == (16, 12, 3)


def test_rgba_transparent_is_not_black():
    img = Image.new("RGBA", (20, 10), (0, 0, 0, 0))  # fully transparent black
    img.paste((255, 0, 0, 255), (0, 0, 10, 10))  # opaque red left half
    out = load_rgb(_png(img))
    assert out.shape == (10, 20, 3)
    assert out[5, 15].min() > 200  # transparent -> light background
    assert tuple(out[5, 2]) == (255, 0, 0)


def test_palette_with_transparency():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0)).convert("P")
    img.info["transparency"] = 0
    out = load_rgb(_png(img))
    assert out.shape == (8, 8, 3)


def test_cmyk_jpeg_colours():
    red = Image.new("RGB", (16, 16), (220, 30, 30)).convert("CMYK")
    data = _jpeg(red)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "CMYK"
    out = load_rgb(data)
    assert out.shape == (16, 16, 3)
    r, g, b = out[8, 8].astype(int)
    assert r > 180 and g < 80 and b < 80, (r, g, b)


def test_16bit_png():
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    out = load_rgb(_png(Image.fromarray(arr)))
    assert out.shape == (8, 8, 3) and out.max() == 255 and out.min() == 0


def test_exif_rotated_jpeg():
    img = Image.new("RGB", (40, 20), (0, 0, 255))  # stored landscape, blue
    img.paste((255, 0, 0), (0, 0, 8, 8))  # red stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = load_rgb(_jpeg(img, exif=exif.tobytes()))
    assert out.shape == (40, 20, 3)  # displayed portrait
    top_right, top_left = out[2, 17].astype(int), out[2, 2].astype(int)
    assert top_right[0] > 200 and top_right[2] < 60, top_right  # red moved to the top-right corner
    assert top_left[2] > 200 and top_left[0] < 60, top_left


def test_unreadable_inputs(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        load_rgb(tmp_path / "none.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.jpg") as info:
        load_rgb(junk)
    assert len(str(info.value).splitlines()) == 1
    odd = tmp_path / "two\nlines.jpg"  # a legal file name: the message still names it in one line
    odd.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"two\\nlines.jpg") as info:
        load_rgb(odd)
    assert "\n" not in str(info.value)
