"""data.sources: extra faces from boxes CSVs and VOC folders, partial labels, draw shares, framing, held-out photos."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from maskcls.checkpoint import load_checkpoint
from maskcls.config import ConfigError, load_config
from maskcls.data.boxes import BoxesError, is_held_out, read_boxes, split_boxes
from maskcls.data.demo import draw_face
from maskcls.data.reader import DataError
from maskcls.losses import loss_from_config


# ----------------------------------------------------------------------------- fixtures
def make_photos(folder: Path, photos=(*range(10), 20, 23), seed: int = 0) -> Path:
    """``photos`` street-like photos with two drawn faces each and ``boxes.csv`` (mask only; gender/age blank)."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in photos:  # street_20 and street_23 are held out by their names' hash
        canvas = Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8))
        for k, x in enumerate((10, 110)):
            mask = int((p + k) % 3)
            face = draw_face(rng, mask=mask, gender=int(rng.integers(2)), age=30, size=(60, 80))
            canvas.paste(face, (x, 20))
            rows.append({"file": f"street_{p}.jpg", "x0": x + 12, "y0": 32, "x1": x + 48, "y1": 84, "mask": mask})
        canvas.save(images / f"street_{p}.jpg", quality=90)
    rows.append({"file": "street_0.jpg", "x0": 0, "y0": 0, "x1": 8, "y1": 8, "mask": 0})  # too small: skipped
    pd.DataFrame(rows).to_csv(folder / "boxes.csv", index=False)
    return folder / "boxes.csv"


@pytest.fixture(scope="module")
def boxes_csv(tmp_path_factory):
    csv = make_photos(tmp_path_factory.mktemp("street"))
    files = pd.read_csv(csv)["file"].unique()
    assert any(is_held_out(f) for f in files) and not all(is_held_out(f) for f in files)  # both sides present
    return csv


def source(csv, weight=0.3, **extra):
    entry = {"kind": "boxes", "path": str(csv), "weight": weight, **extra}
    return "data.sources=" + str([entry]).replace("'", '"').replace("True", "true").replace("False", "false")


# ----------------------------------------------------------------------------- partial labels: no gradient
@pytest.mark.parametrize("loss", ["ce", "focal", "smoothing", "f1"])
@pytest.mark.parametrize("age_head", ["dist", "band"])
def test_unknown_axis_sends_no_gradient_to_its_head(loss, age_head):
    from maskcls.models import AGE_BINS
    from maskcls.targets import TargetEncoder

    cfg = load_config(None, [f"loss.name={loss}", f"model.age_head={age_head}"])
    enc = TargetEncoder(AGE_BINS if age_head == "dist" else 0, partial=True)
    crit = loss_from_config(cfg.loss, "multi", enc)
    age_width = AGE_BINS if age_head == "dist" else 3
    logits = torch.randn(4, 5 + age_width, requires_grad=True)
    # rows: all known; mask only; gender known only; age known only
    y = torch.tensor([[7, 40, 3], [13, 0, 0], [4, 0, 1], [2, 70, 2]])
    crit(logits, y).backward()
    g = logits.grad
    gender, age = g[:, 3:5], g[:, 5:]
    assert g[:, :3].abs().sum(1).gt(0).all()  # the mask head learns from every row
    assert gender[1].abs().sum() == 0 and gender[3].abs().sum() == 0  # unknown gender: no gradient
    assert age[1].abs().sum() == 0 and age[2].abs().sum() == 0  # unknown age: no gradient
    assert gender[0].abs().sum() > 0 and gender[2].abs().sum() > 0 and age[0].abs().sum() > 0 and age[3].abs().sum() > 0


def test_a_batch_without_any_gender_is_finite_and_leaves_the_head_alone():
    from maskcls.targets import TargetEncoder

    crit = loss_from_config(load_config().loss, "multi", TargetEncoder(0, partial=True))
    logits = torch.randn(3, 8, requires_grad=True)
    loss = crit(logits, torch.tensor([[0, 0, 0], [6, 0, 0], [12, 0, 0]]))
    loss.backward()
    assert torch.isfinite(loss) and logits.grad[:, 3:].abs().sum() == 0


def test_full_labels_give_the_same_loss_with_and_without_partial_columns():
    """The known columns change nothing for fully labelled rows (the competition photos)."""
    from maskcls.models import AGE_BINS
    from maskcls.targets import TargetEncoder

    cfg = load_config()
    logits = torch.randn(5, 5 + AGE_BINS)
    y = torch.tensor([[1, 25], [8, 65], [13, 40], [17, 61], [3, 10]])
    plain = loss_from_config(cfg.loss, "multi", TargetEncoder(AGE_BINS))(logits, y)
    partial = loss_from_config(cfg.loss, "multi", TargetEncoder(AGE_BINS, partial=True))(
        logits, torch.cat([y, torch.full((5, 1), 3)], 1))
    assert torch.allclose(plain, partial)


def test_a_run_with_sources_masks_unknown_axes(boxes_csv):
    from maskcls.targets import TargetEncoder, encoder_from_config

    assert encoder_from_config(load_config(None, [source(boxes_csv)])).partial
    assert not encoder_from_config(load_config()).partial  # without sources: the targets of before
    with pytest.raises(ValueError, match="partial=True"):
        TargetEncoder()(torch.tensor([[12, 0, 0]]))


def test_dataset_yields_which_axes_are_known():
    from maskcls.data.dataset import PhotoDataset

    frame = pd.DataFrame({"label": [7, 12], "age": [40, 0], "gender_known": [True, False], "age_known": [True, False]})
    ds = PhotoDataset(frame, lambda i: np.zeros((4, 4, 3), np.uint8), lambda image: {"image": torch.zeros(1)})
    assert ds[0][1].tolist() == [7, 40, 3] and ds[1][1].tolist() == [12, 0, 0]


@pytest.mark.parametrize("name", ["halves", "cutmix", "mixup"])
def test_mixers_never_mix_a_row_with_an_unknown_axis(name):
    from maskcls.mix import build_mixer
    from maskcls.targets import TargetEncoder

    cfg = load_config(None, [f"mix.name={name}", "mix.prob=1.0"]).mix
    frame = pd.DataFrame({"label": [0, 7, 12, 13], "gender_known": [True, True, False, False],
                          "age_known": [True, True, False, False]})

    class DS:
        def __init__(self):
            self.frame = frame

        def __getitem__(self, j):
            return torch.full((3, 8, 8), float(j)), torch.tensor([int(frame["label"][j]), 30, 3])

    enc = TargetEncoder(0, partial=True)
    mixer = build_mixer(cfg, DS(), seed=1, encoder=enc)
    x = torch.stack([torch.full((3, 8, 8), 10.0 + i) for i in range(4)])
    y = torch.tensor([[0, 30, 3], [7, 30, 3], [12, 0, 0], [13, 0, 0]])
    for seed in range(5):
        if hasattr(mixer, "set_epoch"):
            mixer.set_epoch(seed)
        xm, soft = mixer(x, y)
        assert torch.equal(xm[2:], x[2:])  # the mask-only rows: pixels untouched ...
        assert torch.equal(soft[2:], enc(y)[2:])  # ... and labels untouched (no share of an invented gender)
        assert (soft[:, -2:] == soft[:, -2:].round()).all()  # known flags stay 0/1


# ----------------------------------------------------------------------------- draw shares
@pytest.mark.parametrize("weight", [0.25, 0.5])
@pytest.mark.parametrize("kind", ["class", "none", "person"])
def test_source_share_of_draws_follows_weight(weight, kind):
    from maskcls.data.sampling import EpochSampler

    rng = np.random.default_rng(0)
    comp = pd.DataFrame({"label": rng.integers(0, 18, 600), "person": rng.integers(0, 80, 600).astype(str),
                         "mask": 0, "source": "", "source_weight": 0.0})
    extra = pd.DataFrame({"label": 0, "mask": rng.choice([0, 0, 0, 1, 2], 300), "person": "p",
                          "source": "real", "source_weight": weight})
    frame = pd.concat([comp, extra], ignore_index=True)
    drawn = EpochSampler(kind, frame, seed=0).sequence().numpy()
    assert len(drawn) == round(600 / (1 - weight))  # the competition rows keep their draws per epoch
    assert abs((drawn >= 600).mean() - weight) < 0.04
    if kind == "class":  # within the source, mask states are balanced
        counts = np.bincount(frame["mask"].to_numpy()[drawn[drawn >= 600]], minlength=3)
        assert counts.min() > 0.6 * counts.max()


def test_two_sources_each_get_their_share():
    from maskcls.data.sampling import draw_weights

    frame = pd.DataFrame({"label": 0, "mask": 0, "person": [str(i) for i in range(300)],
                          "source": [""] * 100 + ["a"] * 100 + ["b"] * 100,
                          "source_weight": [0.0] * 100 + [0.1] * 100 + [0.3] * 100})
    w, draws = draw_weights("class", frame)
    assert np.isclose(w[100:200].sum(), 0.1) and np.isclose(w[200:].sum(), 0.3) and draws == round(100 / 0.6)


def test_without_sources_the_sampler_is_unchanged():
    from maskcls.data.sampling import draw_weights, sample_weights

    frame = pd.DataFrame({"label": [0, 0, 1, 2], "person": ["a", "b", "c", "d"]})
    w, n = draw_weights("class", frame)
    assert np.array_equal(w, sample_weights("class", frame)) and n == 4
    assert draw_weights("none", frame) == (None, 4)


# ----------------------------------------------------------------------------- framing
@pytest.mark.parametrize("face_crop", [False, True])
def test_box_framing_is_the_framing_predict_gives_a_found_face(boxes_csv, face_crop):
    """Training faces from boxes and a face a detector found at that box in predict: identical pixels."""
    from maskcls.data.decode import Decoder
    from maskcls.data.sources import BoxDecoder, box_item

    cfg = load_config(None, ["preprocess.detector=haar", f"preprocess.face_crop={str(face_crop).lower()}"])
    photo = boxes_csv.parent / "images" / "street_3.jpg"
    box = (110 + 12.0, 32.0, 110 + 48.0, 84.0)
    trained = BoxDecoder(cfg.data, cfg.preprocess)(box_item(photo, box))
    if face_crop:  # the service crops each found face (crop_box with face_margin), then decodes the crop
        from maskcls.data.images import load_rgb
        from maskcls.preprocess.faces import crop_box

        img = load_rgb(photo)
        x0, y0, x1, y1 = crop_box(tuple(int(v) for v in box), img.shape, cfg.preprocess.face_margin)
        import dataclasses

        predicted = Decoder(cfg.data, dataclasses.replace(cfg.preprocess, face_crop=False))(img[y0:y1, x0:x1])
    else:
        dec = Decoder(cfg.data, cfg.preprocess, photos=True)
        dec._framer.detector = lambda img: [box]  # a detector that finds exactly the labelled box
        predicted = dec(str(photo))
    assert trained.shape == (*cfg.data.decode_size, 3)
    assert np.array_equal(trained, predicted)


def test_box_framing_follows_the_detector_geometry(boxes_csv):
    from maskcls.data.sources import BoxDecoder, box_item

    item = box_item(boxes_csv.parent / "images" / "street_3.jpg", (122, 32, 158, 84))
    haar, mtcnn = (BoxDecoder(c.data, c.preprocess) for c in
                   (load_config(None, ["preprocess.detector=haar"]), load_config(None, ["preprocess.detector=mtcnn"])))
    assert not np.array_equal(haar(item), mtcnn(item))
    assert haar.digest() != mtcnn.digest()  # and the cache keeps them apart


def test_cache_key_holds_the_box(boxes_csv):
    from maskcls.data.sources import BoxDecoder, box_item

    cfg = load_config(None, ["preprocess.detector=haar"])
    dec = BoxDecoder(cfg.data, cfg.preprocess)
    photo = boxes_csv.parent / "images" / "street_3.jpg"
    assert dec.item_digest(box_item(photo, (1, 2, 30, 40))) != dec.item_digest(box_item(photo, (1, 2, 30, 41)))


# ----------------------------------------------------------------------------- held-out photos
def test_held_out_photos_are_never_trained_on(boxes_csv, caplog):
    from maskcls.data.sources import source_frames

    cfg = load_config(None, [source(boxes_csv)])
    train, held = source_frames(cfg)
    assert len(train) and len(held)
    assert not train["file"].map(is_held_out).any() and held["file"].map(is_held_out).all()
    assert not set(train["file"]) & set(held["file"])  # by photo
    assert not train["gender_known"].any() and not train["age_known"].any()
    assert any("1 of 25 boxes are smaller than 16 px" in r.message for r in caplog.records)  # counted, skipped
    every, none_held = source_frames(load_config(None, [source(boxes_csv, holdout=False)]))
    assert len(every) == len(train) + len(held) and not len(none_held)


def test_tensor_input_path_trains_with_a_source(tiny_cfg, boxes_csv):
    """data.loader=gpu (here on CPU tensors) draws through EpochSampler and carries the known flags."""
    from maskcls.engine import fit

    result = fit(tiny_cfg(source(boxes_csv, weight=0.5), "data.loader=gpu", "data.augment=basic",
                          "model.pretrained=false"))
    assert "real_mask_accuracy" in pd.read_csv(Path(result["run_dir"]) / "log.csv")


def test_fit_draws_the_source_and_scores_held_out_faces(tiny_cfg, boxes_csv, monkeypatch):
    import maskcls.data.feeds as feeds
    from maskcls.engine import fit

    drawn, frames = [], []

    class Spy(feeds.PhotoDataset):
        """Records the rows the training batches read (competition photos and the sources' faces)."""

        def __getitem__(self, i):
            if "source_weight" in self.frame and (self.frame["source_weight"] == 0).any():
                frames[:] = [self.frame]
                drawn.append(i)
            return super().__getitem__(i)

    monkeypatch.setattr(feeds, "PhotoDataset", Spy)
    result = fit(tiny_cfg(source(boxes_csv, weight=0.5), "train.epochs=2", "model.pretrained=false"))
    frame = frames[0]
    extra = frame.index[frame["source_weight"] > 0]
    assert len(extra) and not frame.loc[extra, "file"].map(is_held_out).any()  # no held-out photo in training
    assert np.isin(drawn, extra).mean() > 0.35  # drawn at about its weight
    log = pd.read_csv(Path(result["run_dir"]) / "log.csv")
    assert {"real_mask_accuracy", "real_recall_wear", "real_recall_incorrect", "real_recall_not_wear"} <= set(log)
    assert log["real_mask_accuracy"].between(0, 1).all()
    assert result["metrics"]["images"] == 21  # validation F1 stays on the competition persons
    (card,) = load_checkpoint(result["run_dir"], "best")["training_data"]["sources"]
    assert card["weight"] == 0.5 and card["train_faces"] == len(extra) and card["held_out_faces"] > 0


# ----------------------------------------------------------------------------- bad entries
@pytest.mark.parametrize("entry, message", [
    ('[{kind: csv, path: x.csv, weight: 0.2}]', "kind 'csv' is not supported"),
    ('[{kind: boxes, weight: 0.2}]', "needs a path"),
    ('[{kind: boxes, path: x.csv, weight: 1.5}]', "weight 1.5 must be a number in (0, 1)"),
    ('[{kind: boxes, path: x.csv}]', "weight None must be"),
    ('[{kind: boxes, path: a.csv, weight: 0.6}, {kind: boxes, path: b.csv, weight: 0.5}]', "add up to 1.1"),
    ('[{kind: boxes, path: x.csv, weight: 0.2, wieght: 1}]', "unknown key(s) wieght"),
    ('[{kind: boxes, path: x.csv, weight: 0.2, classes: {good: 0}}]', "classes applies to kind: voc only"),
    ('[{kind: voc, path: x, weight: 0.2, classes: {good: 5}}]', "classes must map VOC object names"),
    ('[boxes.csv]', "expected a mapping"),
])
def test_bad_entry_is_one_line(entry, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"data.sources={entry}"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_single_head_refuses_sources():
    with pytest.raises(ConfigError, match="needs model.head=multi"):
        load_config(None, ["model.head=single", "data.sources=[{kind: boxes, path: x.csv, weight: 0.2}]"])


def test_missing_boxes_file_is_one_line(tmp_path):
    from maskcls.data.sources import source_frames

    cfg = load_config(None, [source(tmp_path / "nope.csv")])
    with pytest.raises(DataError, match=r"nope.csv: boxes CSV not found"):
        source_frames(cfg)


def test_cli_names_the_bad_entry_in_one_line(tmp_path, demo_root):
    out = subprocess.run([sys.executable, "-m", "maskcls.cli", "train", f"data.root={demo_root}",
                          f"project={tmp_path}", "data.sources=[{kind: boxes, path: " + str(tmp_path / "no.csv")
                          + ", weight: 0.2}]", "train.progress=false"], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.splitlines() if "error" in x]
    assert len(lines) == 1 and "no.csv: boxes CSV not found" in lines[0] and "Traceback" not in out.stderr


# ----------------------------------------------------------------------------- VOC
def make_voc(folder: Path, names=("with_mask", "without_mask", "mask_weared_incorrect")) -> Path:
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    Image.new("RGB", (100, 80), (120, 90, 60)).save(folder / "JPEGImages" / "a.png")
    objects = "".join(f"<object><name>{n}</name><bndbox><xmin>{10 + 20 * i}</xmin><ymin>10</ymin>"
                      f"<xmax>{30 + 20 * i}</xmax><ymax>40</ymax></bndbox></object>" for i, n in enumerate(names))
    (folder / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{objects}</annotation>")
    return folder


def test_voc_default_class_map(tmp_path):
    from maskcls.data.sources import read_voc

    table = read_voc(make_voc(tmp_path / "voc"))
    assert table["mask"].tolist() == [0, 2, 1]
    assert Path(table["path"][0]).name == "a.png"  # a wrong suffix in <filename> still finds the image
    assert table["gender"].isna().all() and table["age"].isna().all()


def test_voc_unknown_class_names_it(tmp_path):
    from maskcls.data.sources import read_voc

    folder = make_voc(tmp_path / "voc", names=("with_mask", "face_shield"))
    with pytest.raises(DataError, match=r"a.xml: unknown VOC class name 'face_shield'; map it"):
        read_voc(folder)
    assert read_voc(folder, {"face_shield": None})["mask"].tolist() == [0]  # null: ignored
    assert read_voc(folder, {"face_shield": 1})["mask"].tolist() == [0, 1]


def test_voc_source_trains(tiny_cfg, tmp_path):
    from maskcls.data.sources import source_frames

    folder = make_voc(tmp_path / "voc")
    cfg = tiny_cfg(f'data.sources=[{{kind: voc, path: {folder}, weight: 0.2, holdout: false}}]')
    train, _ = source_frames(cfg)
    assert train["mask"].tolist() == [0, 2, 1] and train["source"].eq("voc").all()


# ----------------------------------------------------------------------------- maskcls.data.boxes
def test_read_boxes_errors_are_one_line(tmp_path):
    bad = {
        "missing.csv": None,
        "cols.csv": "file,x0,y0,x1,y1\na.jpg,1,2,3,4\n",
        "mask.csv": "file,x0,y0,x1,y1,mask\na.jpg,1,2,3,4,7\n",
        "empty_box.csv": "file,x0,y0,x1,y1,mask\na.jpg,5,2,3,4,0\n",
        "text.csv": "file,x0,y0,x1,y1,mask\na.jpg,one,2,3,4,0\n",
        "age.csv": "file,x0,y0,x1,y1,mask,gender,age\na.jpg,1,2,3,4,0,0,old\n",
    }
    expect = {"missing.csv": "boxes CSV not found", "cols.csv": "missing column(s) mask",
              "mask.csv": "mask must be 0/1/2", "empty_box.csv": "x1>x0", "text.csv": "is not a number",
              "age.csv": "is not a number"}
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(BoxesError) as e:
            read_boxes(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and expect[name] in str(e.value)
        assert "\n" not in str(e.value)


def test_read_boxes_optional_columns_and_paths(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "b.csv").write_text("file,x0,y0,x1,y1,mask,gender,age\na.jpg,1,2,3,4,0,1,\nb.jpg,1,2,3,4,2,,40\n")
    t = read_boxes(tmp_path / "b.csv")
    assert t["gender"].tolist()[0] == 1 and pd.isna(t["gender"][1]) and pd.isna(t["age"][0]) and t["age"][1] == 40
    assert t["path"][0] == str(tmp_path / "images" / "a.jpg")


def test_split_boxes_keeps_each_photo_on_one_side():
    files = [f"photo_{i}.jpg" for i in range(400) for _ in range(3)]
    table = pd.DataFrame({"file": files, "x0": 0, "y0": 0, "x1": 1, "y1": 1, "mask": 0})
    train, held = split_boxes(table)
    assert not set(train["file"]) & set(held["file"]) and len(train) + len(held) == len(table)
    assert 0.15 < held["file"].nunique() / 400 < 0.25  # about HOLDOUT_FRACTION of the photos
    assert held["file"].map(is_held_out).all()
