"""Generalisation options: exact-age head, EMA, stochastic depth, augmentation presets, photo framing, real-photo scoring."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from maskcls.config import ConfigError, load_config
from maskcls.data.decode import Decoder
from maskcls.data.transforms import build_transform
from maskcls.devsets import mask_metrics, read_mask_set
from maskcls.losses import loss_from_config
from maskcls.mix import build_mixer
from maskcls.models import AGE_BINS, create_model, model_from_config
from maskcls.preprocess.framing import PORTRAIT_FACE, crop_padded, frame_photo, portrait_box
from maskcls.targets import TargetEncoder, encoder_from_config

NAME = "tf_efficientnet_lite0"


def test_age_distribution_targets_centre_on_the_exact_age():
    enc = TargetEncoder(AGE_BINS, sigma=2.0)
    t = enc(torch.tensor([[4, 58], [10, 25]]))  # class 4 = wear, female, 30-59
    assert t.shape == (2, 18 + AGE_BINS)
    assert t[0, 4] == 1 and t[0, :18].sum() == 1
    assert int(t[0, 18:].argmax()) == 58 and int(t[1, 18:].argmax()) == 25
    assert torch.allclose(t[:, 18:].sum(1), torch.ones(2))


def test_dist_head_bands_are_the_summed_age_distribution():
    model = create_model(NAME, head="multi", age_head="dist", pretrained=False, age_thresholds=(30, 60)).eval()
    assert model.head.out_features == 3 + 2 + AGE_BINS
    logits = torch.randn(4, 3 + 2 + AGE_BINS)
    p = model.probs_from_logits(logits)
    assert p.shape == (4, 18) and torch.allclose(p.sum(1), torch.ones(4), atol=1e-5)
    pa = torch.softmax(logits[:, 5:], 1)
    old = pa[:, 60:].sum(1)
    assert torch.allclose(p.view(4, 3, 2, 3)[..., 2].sum((1, 2)), old, atol=1e-5)
    ages = model.expected_age(logits)
    assert ages.shape == (4,) and (ages >= 0).all() and (ages <= 100).all()


def test_single_head_has_no_age_head_to_distribute():
    cfg = load_config(None, ["model.head=single", "model.age_head=dist", "model.pretrained=false"])
    assert model_from_config(cfg).head.out_features == 18
    assert encoder_from_config(cfg).age_bins == 0
    with pytest.raises(Exception, match="head=multi"):
        create_model(NAME, head="single", age_head="dist", pretrained=False)


def test_dist_loss_uses_the_exact_age(tiny_cfg):
    """Same band, other exact age -> another loss: the option does not silently fall back to bands."""
    cfg = tiny_cfg("model.age_head=dist")
    enc = encoder_from_config(cfg)
    assert enc.age_bins == AGE_BINS
    crit = loss_from_config(cfg.loss, "multi", enc)
    logits = torch.zeros(2, 3 + 2 + AGE_BINS)
    logits[:, 5 + 40] = 5.0
    a = crit(logits, torch.tensor([[4, 40], [4, 41]]))
    b = crit(logits, torch.tensor([[4, 55], [4, 56]]))
    assert b > a + 0.1


def test_fit_with_dist_head_feeds_ages_to_the_loss(tiny_cfg, monkeypatch):
    from maskcls import engine

    seen = []
    real = engine.train_one_epoch

    def spy(model, loader, criterion, *a, **kw):
        x, y = next(iter(loader))
        seen.append(tuple(y.shape))
        return real(model, loader, criterion, *a, **kw)

    monkeypatch.setattr(engine, "train_one_epoch", spy)
    result = engine.fit(tiny_cfg("model.age_head=dist", "mix.name=halves", "mix.prob=1.0"))
    assert seen and seen[0][1] == 2  # (class, age) pairs
    state = torch.load(result["best"], weights_only=True)
    assert state["model"]["head.weight"].shape[0] == 3 + 2 + AGE_BINS


def test_mixers_mix_age_distributions(tiny_cfg):
    enc = TargetEncoder(AGE_BINS, sigma=2.0)

    class DS:
        import pandas as pd
        frame = pd.DataFrame({"label": [0, 2, 4, 5]})

        def __getitem__(self, j):
            return torch.ones(3, 8, 6), torch.tensor([int(self.frame["label"][j]), 70])

    cfg = tiny_cfg("mix.name=halves", "mix.prob=1.0").mix
    mixer = build_mixer(cfg, DS(), seed=0, encoder=enc)
    x, t = mixer(torch.zeros(2, 3, 8, 6), torch.tensor([[0, 20], [1, 20]]))
    assert t.shape == (2, 18 + AGE_BINS)
    assert torch.allclose(t[:, 18:].sum(1), torch.ones(2), atol=1e-5)
    assert (t[:, 18 + 70] > 0).all()  # the partner's age is in the mix
    mix = build_mixer(tiny_cfg("mix.name=mixup", "mix.prob=1.0").mix, DS(), encoder=enc)
    _, t2 = mix(torch.rand(4, 3, 8, 6), torch.tensor([[0, 20], [1, 30], [2, 40], [3, 50]]))
    assert t2.shape == (4, 18 + AGE_BINS) and torch.allclose(t2.sum(1), 2 * torch.ones(4), atol=1e-5)


def test_ema_is_what_validation_scores_and_best_ships(tiny_cfg):
    from maskcls.engine import fit

    result = fit(tiny_cfg("train.ema=true", "train.ema_decay=0.5", "train.max_batches=3"))
    state = torch.load(result["best"], weights_only=True)
    last = torch.load(Path(result["run_dir"]) / "weights" / "last.pt", weights_only=True)
    assert "train_model" in last and "train_model" not in state  # raw weights are for resume; best.pt is slim
    diff = [k for k in state["model"] if state["model"][k].is_floating_point()
            and not torch.equal(state["model"][k], last["train_model"][k])]
    assert diff  # the shipped weights are the average, not the last step


def test_ema_off_ships_the_trained_weights(tiny_cfg):
    from maskcls.engine import fit

    state = torch.load(fit(tiny_cfg("train.ema=false"))["best"], weights_only=True)
    assert "train_model" not in state


def test_drop_path_reaches_the_backbone():
    cfg = load_config(None, ["model.pretrained=false", "model.drop_path_rate=0.2"])
    assert load_config(None, []).model.drop_path_rate > 0  # on by default
    model = model_from_config(cfg)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) > 0
    plain = model_from_config(load_config(None, ["model.pretrained=false", "model.drop_path_rate=0"]))
    assert not [m for m in plain.modules() if type(m).__name__ == "DropPath" and m.drop_prob > 0]


def test_freeze_blocks_keeps_the_stem_and_first_blocks():
    from maskcls.engine import build_optimizer

    cfg = load_config(None, ["model.pretrained=false", "model.freeze_blocks=2", "model.drop_path_rate=0"])
    assert load_config(None, []).model.freeze_blocks == 0
    model = model_from_config(cfg).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, cfg)
    for _ in range(2):  # BN statistics move in train mode unless the block is frozen
        model(torch.randn(4, 3, 64, 48)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    changed = {k for k in after if after[k].is_floating_point() and not torch.equal(before[k], after[k])}
    frozen = ("backbone.conv_stem", "backbone.bn1", "backbone.blocks.0.", "backbone.blocks.1.")
    assert not [k for k in changed if k.startswith(frozen)]
    assert any(k.startswith("backbone.blocks.2.") for k in changed) and any(k.startswith("head.") for k in changed)
    assert any("blocks.2." in k and "running_mean" in k for k in changed)


def test_freeze_blocks_is_checked():
    with pytest.raises(ConfigError, match="freeze_blocks"):
        load_config(None, ["model.freeze_blocks=-1"])
    with pytest.raises(Exception, match="only 7 blocks"):
        create_model(NAME, pretrained=False, freeze_blocks=9)


def test_frozen_run_reopens_for_prediction(tiny_cfg):
    from maskcls.engine import fit
    from maskcls.run import Run

    result = fit(tiny_cfg("model.freeze_blocks=1"))
    run = Run.open(result["run_dir"])
    assert run.cfg.model.freeze_blocks == 1 and run.model.frozen is not None


def _names(t):
    out = []
    for op in t.transforms:
        out.append(type(op).__name__)
        out += _names(op) if hasattr(op, "transforms") else []
    return out


def test_augment_presets_differ_and_eval_ignores_them():
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    real = load_config(None, ["data.augment=real"]).data
    basic = load_config(None, ["data.augment=basic"]).data
    names = _names(build_transform(real, train=True, **norm))
    for op in ("Affine", "Downscale", "ImageCompression", "CoarseDropout", "ToGray"):
        assert op in names
    assert "Downscale" not in _names(build_transform(basic, train=True, **norm))
    assert _names(build_transform(real, train=False, **norm)) == _names(build_transform(basic, train=False, **norm))
    img = np.random.default_rng(0).integers(0, 255, (256, 192, 3), dtype=np.uint8)
    ev = [build_transform(d, train=False, **norm)(image=img)["image"] for d in (real, basic)]
    assert torch.equal(*ev)
    tr = build_transform(real, train=True, **norm)
    tr.set_random_seed(1)
    assert not torch.equal(tr(image=img)["image"], ev[0])


def test_portrait_box_puts_the_face_where_portraits_have_it():
    x0, y0, x1, y1 = portrait_box((100, 100, 185, 185), aspect=4 / 3)
    w, h = x1 - x0, y1 - y0
    assert abs(h / w - 4 / 3) < 0.02
    geo = PORTRAIT_FACE["haar"]
    assert abs(85 / w - geo["width"]) < 0.02
    assert abs((142.5 - x0) / w - geo["cx"]) < 0.02 and abs((142.5 - y0) / h - geo["cy"]) < 0.02
    m = portrait_box((100, 100, 185, 185), aspect=4 / 3, detector="mtcnn")  # its boxes are tighter: a wider frame
    assert (m[2] - m[0]) / w == pytest.approx(geo["width"] / PORTRAIT_FACE["mtcnn"]["width"], rel=0.02)


def test_crop_padded_fills_outside_with_the_edge():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, -1] = 200
    out = crop_padded(img, (-5, -5, 15, 15))
    assert out.shape == (20, 20, 3)
    assert (out[:, -3:] == 200).all()
    assert frame_photo(img, None, 4 / 3).shape[0] > frame_photo(img, None, 4 / 3).shape[1]


def test_photo_decoder_frames_square_photos_differently():
    cfg = load_config(None, ["data.decode_size=[64,48]"])
    img = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    plain = Decoder(cfg.data, cfg.preprocess)(img)
    framed_dec = Decoder(cfg.data, cfg.preprocess, photos=True)
    framed = framed_dec(img)
    assert plain.shape == framed.shape == (64, 48, 3)
    assert not np.array_equal(plain, framed)
    assert framed_dec.settings() != Decoder(cfg.data, cfg.preprocess).settings()  # separate cache stores
    off = load_config(None, ["data.decode_size=[64,48]", "preprocess.frame_photos=false"])
    assert np.array_equal(Decoder(off.data, off.preprocess, photos=True)(img), plain)


def test_mask_metrics_and_set_reading(tmp_path):
    m = mask_metrics(np.array([0, 0, 1, 2]), np.array([0, 2, 1, 2]))
    assert m["mask_accuracy"] == 0.75 and m["mask_recall"]["wear"] == 0.5 and m["mask_confusion"][0] == [1, 0, 1]
    (tmp_path / "images").mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (40, 40), (i * 80, 0, 0)).save(tmp_path / "images" / f"{i}.jpg")
    (tmp_path / "labels.csv").write_text("file,mask\n0.jpg,0\n1.jpg,1\n2.jpg,2\n")
    frame = read_mask_set(tmp_path)
    assert len(frame) == 3
    r = mask_metrics(frame["mask"].to_numpy(), np.full(3, 2))  # always "not wear"
    assert r["mask_accuracy"] == pytest.approx(1 / 3, abs=1e-3) and r["mask_recall"]["not_wear"] == 1.0
    (tmp_path / "labels.csv").write_text("file,mask\n0.jpg,7\n")
    from maskcls.data.reader import DataError

    with pytest.raises(DataError, match="mask must be"):
        read_mask_set(tmp_path)


def _mask_set(root):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (60 + 20 * i, 60), (i * 80, 40, 0)).save(root / "images" / f"{i}.jpg")
    (root / "labels.csv").write_text("file,mask\n0.jpg,0\n1.jpg,1\n2.jpg,2\n")
    return root


def test_evaluate_mask_set_cli_frames_photos(tiny_run, tmp_path, monkeypatch):
    import json

    from maskcls import cli
    from maskcls.preprocess import framing

    calls = []
    real = framing.frame_photo
    monkeypatch.setattr(framing, "frame_photo", lambda *a, **k: calls.append(1) or real(*a, **k))
    root = _mask_set(tmp_path / "real")
    rc = cli.main(["evaluate", tiny_run, "--mask-set", str(root), "--out", str(tmp_path / "out"), "-q",
                   f"data.cache_dir={tmp_path / 'cache'}"])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "mask_set_real.json").read_text())
    assert m["n"] == 3 and len(m["mask_confusion"]) == 3
    assert len(calls) == 3  # every real photo was framed like a portrait
    assert m["framing"] in ("haar", "mtcnn", "centerface", "retinaface")  # which detector framed them: "auto" is stored resolved
    import shutil

    from maskcls.model_card import write_model_card

    run = shutil.copytree(tiny_run, tmp_path / "run")
    shutil.copy(tmp_path / "out" / "mask_set_real.json", run / "mask_set_real.json")
    card = write_model_card(run).read_text()
    assert "| real | 3 |" in card and "recall incorrect" in card


def test_predict_on_a_folder_frames_photos(tiny_run, tmp_path, monkeypatch):
    from maskcls.evaluation import predict_source
    from maskcls.preprocess import framing

    calls = []
    real = framing.frame_photo
    monkeypatch.setattr(framing, "frame_photo", lambda *a, **k: calls.append(1) or real(*a, **k))
    root = _mask_set(tmp_path / "photos")
    predict_source([tiny_run], source=str(root / "images"), out=str(tmp_path / "p.csv"), progress=False,
                   overrides=[f"data.cache_dir={tmp_path / 'cache'}"])
    assert len(calls) == 3
    calls.clear()
    predict_source([tiny_run], source=str(root / "images"), out=str(tmp_path / "p2.csv"), progress=False,
                   overrides=[f"data.cache_dir={tmp_path / 'cache2'}", "preprocess.frame_photos=false"])
    assert not calls


def test_new_defaults_are_the_measured_recipe():
    """BENCHMARKS.md's generalisation table chose these; cutting one changes the recipe it measured."""
    cfg = load_config(None, [])
    assert (cfg.model.head, cfg.model.age_head, cfg.train.ema, cfg.data.augment) == ("multi", "dist", True, "real")
    assert cfg.model.drop_path_rate == 0.1 and cfg.preprocess.frame_photos
