"""The tensor input path: same eval transform as albumentations, seeded train ops, loaders that feed the loops."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from maskcls.config import ConfigError, load_config
from maskcls.data.dataset import PhotoDataset
from maskcls.data import gpu_pipeline as G
from maskcls.data import presets as P
from maskcls.data.gpu_pipeline import (PRESETS, BatchTransform, RawImage, brightness, contrast, gpu_loader, hue,
                                       saturation, use_gpu_path)
from maskcls.data.transforms import build_transform

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _photos(n: int = 4, size=(256, 192), seed: int = 0) -> np.ndarray:
    """Smooth photos plus one of pure noise (the hardest case for matching interpolation)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    out = []
    for i in range(n - 1):
        a, b, c = rng.uniform(0.01, 0.1, 3)
        img = np.stack([np.sin(a * yy + i), np.cos(b * xx), np.sin(c * (xx + yy))], -1) * 110 + 128
        out.append(img.clip(0, 255).astype(np.uint8))
    out.append(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return np.stack(out)


def _data(*overrides: str):
    return load_config(None, ["data.decode_size=[256,192]", "data.augment=basic", *overrides]).data


@pytest.mark.parametrize("crop,size", [(0.75, [160, 128]), (0.75, [224, 176]), (1.0, [160, 128]), (0.75, [192, 144])])
def test_tensor_eval_transform_equals_albumentations(crop, size):
    """Both input paths validate, predict and serve on the same pixels (to uint8 rounding in cv2)."""
    data = _data(f"data.crop_fraction={crop}", f"data.image_size={size}")
    photos = _photos()
    cpu = build_transform(data, train=False, **IMAGENET)
    expected = torch.stack([cpu(image=p)["image"] for p in photos])
    got = BatchTransform(data, train=False, **IMAGENET)(torch.from_numpy(photos))
    assert got.shape == expected.shape == (len(photos), 3, *size)
    diff = (got - expected).abs()
    # cv2 works in fixed point: 11-bit weights (~0.25 level on a 0/255 edge) and output rounded to uint8
    # (0.5 level), so up to 0.75 level = 0.75 / 255 / 0.225 = 0.013 after normalisation, on the noise photo
    assert diff.max() < 1.5e-2, diff.max()
    assert diff.mean() < 6e-3, diff.mean()  # rounding alone averages 0.25 level = 0.0044
    # and the comparison can fail: another interpolation is far off on the noise photo
    nearest = torch.nn.functional.interpolate(torch.from_numpy(photos).permute(0, 3, 1, 2).float(), size=size)
    assert (((nearest / 255 - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1))
             / torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)) - expected).abs().max() > 0.1


@pytest.mark.parametrize("augment", ["basic", "real"])
def test_train_transform_is_seeded_and_random(augment):
    data = _data("data.image_size=[160,128]", f"data.augment={augment}")
    x = torch.from_numpy(_photos(8))
    t = BatchTransform(data, train=True, **IMAGENET)
    t.set_random_seed(7)
    first = [t(x), t(x)]
    t.set_random_seed(7)
    again = [t(x), t(x)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # same seed, same batches
    other = BatchTransform(data, train=True, **IMAGENET)
    other.set_random_seed(7)
    assert torch.equal(other(x), first[0])  # the seed, not the object, decides
    assert not torch.equal(first[0], first[1])  # the next batch draws anew
    t.set_random_seed(8)
    assert not torch.equal(t(x), first[0])
    plain = BatchTransform(data, train=False, **IMAGENET)(x)
    assert first[0].shape == plain.shape and not torch.allclose(first[0], plain)
    # no augmentation: train equals eval
    base = _data("data.augment=none", "data.image_size=[160,128]")
    assert torch.equal(BatchTransform(base, train=True, **IMAGENET)(x), BatchTransform(base, train=False, **IMAGENET)(x))


def test_train_ops_match_torchvision():
    """Per-photo factors give what torchvision's (= albumentations' torchvision-style) colour ops give one by one."""
    x = torch.from_numpy(_photos(3, (32, 24))).permute(0, 3, 1, 2).float() / 255
    f = torch.tensor([0.8, 1.0, 1.2])
    for ours, theirs in [(brightness, TF.adjust_brightness), (contrast, TF.adjust_contrast),
                         (saturation, TF.adjust_saturation)]:
        expected = torch.stack([theirs(x[i], float(f[i])) for i in range(3)])
        assert torch.allclose(ours(x, f), expected, atol=1e-5), ours.__name__
    shift = torch.tensor([-0.02, 0.0, 0.3])
    expected = torch.stack([TF.adjust_hue(x[i], float(shift[i])) for i in range(3)])
    assert torch.allclose(hue(x, shift), expected, atol=1e-4)


def test_train_augmentation_flips_about_half_and_keeps_range():
    data = _data("data.image_size=[64,48]")
    t = BatchTransform(data, train=True, mean=(0.0,) * 3, std=(1.0,) * 3)
    x = torch.from_numpy(np.repeat(_photos(1)[-1:], 400, 0))  # one noise photo, 400 times
    t.set_random_seed(0)
    out = t(x)
    assert 0.0 <= out.min() and out.max() <= 1.0
    plain = BatchTransform(data, train=False, mean=(0.0,) * 3, std=(1.0,) * 3)(x[:1])
    corr_plain = [float(torch.corrcoef(torch.stack([o[1].flatten(), plain[0, 1].flatten()]))[0, 1]) for o in out]
    corr_flip = [float(torch.corrcoef(torch.stack([o[1].flatten(), plain[0, 1].flip(-1).flatten()]))[0, 1])
                 for o in out]
    flipped = np.array(corr_flip) > np.array(corr_plain)
    assert 0.4 < flipped.mean() < 0.6  # HorizontalFlip(p=0.5)


def test_default_recipe_on_cuda_takes_the_tensor_path(caplog):
    """The default augmentation (real) has tensor ops: on a (mocked) CUDA device auto takes the GPU path, silently."""
    assert load_config(None, []).data.augment == "real"
    with caplog.at_level("WARNING", logger="maskcls"):
        assert use_gpu_path(load_config(None, []).data, torch.device("cuda"))
        assert not use_gpu_path(load_config(None, []).data, torch.device("cpu"))  # no card: albumentations
    assert not caplog.messages


def test_loader_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for augment in ("none", "basic", "real"):  # every preset: auto follows the device
        data = _data(f"data.augment={augment}")
        assert use_gpu_path(data, cuda) and not use_gpu_path(data, cpu)
    assert use_gpu_path(_data("data.loader=gpu", "data.augment=real"), cpu)  # forced: runs on CPU tensors (tests)
    assert not use_gpu_path(_data("data.loader=cpu"), cuda)
    with pytest.raises(ConfigError, match="data.loader"):
        load_config(None, ["data.loader=tpu"])


# ----------------------------------------------------------------------------- the real preset's tensor ops
@pytest.mark.parametrize("augment", ["none", "basic", "real"])
def test_presets_run_the_albumentations_ops_in_order_with_their_p(augment):
    """The two paths list the same random ops, in the same order, with the same probabilities."""
    ops = build_transform(_data(f"data.augment={augment}"), train=True, **IMAGENET).transforms
    fixed = {"CenterCrop", "Resize", "Normalize", "ToTensorV2"}
    theirs = [(type(t).__name__, t.p) for t in ops if type(t).__name__ not in fixed]
    before, after = PRESETS[augment]
    assert [(op.name, op.p) for op in (*before, *after)] == theirs
    assert [type(t).__name__ for t in ops][len(before)] == "CenterCrop"  # framing comes before the crop


def test_framing_warp_moves_pixels_as_albumentations_affine():
    """Identity leaves the photo as it is; a shift moves it right/down; +90 degrees turns it as A.Affine does."""
    x = torch.rand(2, 3, 8, 6)
    one, zero = torch.ones(2, 2), torch.zeros(2, 2)
    assert torch.allclose(G.warp(x, G.affine_theta(one, zero, torch.zeros(2), (8, 6))), x, atol=1e-6)
    mark = torch.zeros(1, 3, 8, 6)
    mark[0, :, 1, 2] = 1.0
    moved = G.warp(mark, G.affine_theta(one[:1], torch.tensor([[2 / 6, 3 / 8]]), torch.zeros(1), (8, 6)))
    assert torch.allclose(moved[..., 3:, 2:], mark[..., :-3, :-2], atol=1e-6)  # 2 px right, 3 px down
    assert moved[0, 0, 4, 4] == 1.0 and moved[0, 0, 1, 4] == 1.0  # and the border reflects it back in
    square = torch.zeros(1, 3, 8, 8)
    square[0, :, 1, 5] = 1.0
    turned = G.warp(square, G.affine_theta(one[:1], zero[:1], torch.tensor([90.0]), (8, 8)))
    assert torch.allclose(turned, square.rot90(1, (-2, -1)), atol=1e-5)  # A.Affine(rotate=90): (1, 5) -> (2, 1)
    zoom = G.warp(x[:1], G.affine_theta(torch.tensor([[2.0, 1.0]]), zero[:1], torch.zeros(1), (8, 6)))
    assert torch.allclose(zoom[..., :, 2:4].mean(), x[:1, ..., :, 2:4].mean(), atol=0.2)  # sanity: centre stays
    assert not torch.allclose(zoom, x[:1], atol=0.05)


def test_batch_transform_frames_the_decoded_photo(monkeypatch):
    """The preset's framing op runs inside BatchTransform (on the decode-size photo, before the crop)."""
    monkeypatch.setitem(PRESETS, "real", ((G.Op("Affine", G.frame, 1.0),), ()))  # framing alone, every photo
    data = _data("data.image_size=[80,64]", "data.augment=real")
    x = torch.from_numpy(_photos(6))
    out = BatchTransform(data, train=True, **IMAGENET)(x)
    plain = BatchTransform(data, train=False, **IMAGENET)(x)
    assert all(not torch.allclose(o, q, atol=0.05) for o, q in zip(out, plain))


def _noise_batch(n: int, size=(32, 24), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _op(name: str) -> G.Op:
    return next(op for op in (*PRESETS["real"][0], *PRESETS["real"][1]) if op.name == name)


def _high_frequency(x: torch.Tensor) -> torch.Tensor:
    """Per photo: mean absolute difference of neighbouring pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))


def test_blur_kernels_are_albumentations_and_lower_high_frequencies():
    from albumentations.augmentations.blur import functional as fblur
    import random
    size, sigma = torch.tensor([3, 5]), torch.tensor([0.7, 1.9])
    ours = G.gaussian_kernels(size, sigma)
    for k in range(2):
        k1 = torch.from_numpy(fblur.create_gaussian_kernel_1d(float(sigma[k]), int(size[k]))).float()
        pad = (7 - int(size[k])) // 2
        assert torch.allclose(ours[k], torch.nn.functional.pad(torch.outer(k1, k1), (pad,) * 4), atol=1e-6)
    for ksize, degrees, direction in [(3, 0.0, 0.0), (5, 30.0, 0.5), (7, 200.0, -1.0), (7, 95.0, 0.3)]:
        theirs = fblur.create_motion_kernel(ksize, degrees, direction, allow_shifted=False,
                                            random_state=random.Random(0))
        pad = (7 - ksize) // 2
        theirs = torch.nn.functional.pad(torch.from_numpy(theirs / theirs.sum()).float(), (pad,) * 4)
        got = G.motion_kernels(torch.tensor([ksize]), torch.tensor([np.deg2rad(degrees)]), torch.tensor([direction]),
                               torch.zeros(1, 2))[0]
        assert torch.allclose(got, theirs, atol=1e-6), (ksize, degrees, direction)
    x = _noise_batch(16)
    out = G.blur(x, torch.Generator().manual_seed(0), p=1.0)
    assert out.shape == x.shape and bool((_high_frequency(out) < 0.8 * _high_frequency(x)).all())
    assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=0.02)  # normalised kernels keep the brightness


def test_downscale_jpeg_gray_noise_and_dropout_do_what_they_say(monkeypatch):
    x = _noise_batch(8)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    down = G.downscale(x, g(), p=1.0)
    assert down.shape == x.shape and (down[..., 1:] == down[..., :-1]).float().mean() > 0.3  # blocks of pixels
    for name, fn in [("gray", G.gray), ("noise", G.noise), ("jpeg", G.jpeg), ("dropout", G.dropout)]:
        out = fn(x, g(), p=1.0)
        assert out.shape == x.shape and 0.0 <= out.min() and out.max() <= 1.0, name
    assert torch.equal(G.gray(x, g(), p=1.0)[:, 0], G.gray(x, g(), p=1.0)[:, 2])
    spread = (G.noise(x, g(), p=1.0) - x).std((1, 2, 3))
    assert bool(((spread > 0.015) & (spread < 0.06)).all())  # std 0.02-0.06 of the range, a little lost to clipping
    smooth = torch.from_numpy(_photos(8, (64, 48))[:-1]).permute(0, 3, 1, 2).float() / 255  # no noise photo
    errors = {}
    for q in (10, 95):
        monkeypatch.setattr(P, "JPEG_QUALITY", (q, q))
        out = G.jpeg(smooth, g(), p=1.0)
        assert torch.equal(out * 255, (out * 255).round())  # decoded uint8
        errors[q] = (out - smooth).abs().mean()
    assert errors[95] < 0.01 < errors[10]  # low quality: visible artefacts
    monkeypatch.setattr(P, "DROPOUT_HOLES", (1, 1))
    out = G.dropout(torch.zeros(64, 3, 50, 40), g(), p=1.0)
    for photo in out:
        hole = photo.sum(0) > 0
        ys, xs = hole.nonzero().unbind(1)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert hole.sum() == h * w and 4 <= h <= 10 and 3 <= w <= 8  # one rectangle, 8-20 % of each side
        assert (photo[:, hole] == photo[:, hole][:, :1]).all()  # one colour


@pytest.mark.parametrize("name", ["Affine", "HorizontalFlip", "ColorJitter", "ToGray", "OneOf", "Downscale",
                                  "ImageCompression", "GaussNoise", "CoarseDropout"])
def test_each_real_op_touches_about_p_of_the_photos(name):
    op = _op(name)
    x = _noise_batch(400, (24, 16))
    out = op(x, torch.Generator().manual_seed(3))
    touched = (out - x).abs().flatten(1).amax(1) > 1e-4
    assert abs(float(touched.float().mean()) - op.p) < 0.08, (name, float(touched.float().mean()), op.p)


def test_real_statistics_match_albumentations():
    """Same photos through both train transforms: per-channel mean/std and high-frequency energy agree loosely."""
    data = _data("data.decode_size=[128,96]", "data.image_size=[80,64]", "data.augment=real")
    photos = _photos(256, (128, 96))
    mean, std = torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1), torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)
    cpu, gpu = [], []
    for seed in (0, 1):
        t = build_transform(data, train=True, **IMAGENET)
        t.set_random_seed(seed)
        cpu.append(torch.stack([t(image=p)["image"] for p in photos]))
        b = BatchTransform(data, train=True, **IMAGENET)
        b.set_random_seed(seed)
        gpu.append(b(torch.from_numpy(photos)))
    cpu, gpu = torch.cat(cpu) * std + mean, torch.cat(gpu) * std + mean  # back to [0, 1]
    assert torch.allclose(cpu.mean((0, 2, 3)), gpu.mean((0, 2, 3)), atol=0.04)
    assert torch.allclose(cpu.std((0, 2, 3)), gpu.std((0, 2, 3)), atol=0.04)
    ratio = _high_frequency(gpu).mean() / _high_frequency(cpu).mean()
    assert 0.85 < ratio < 1.15, ratio


def test_gpu_loader_yields_model_batches_on_the_device():
    photos = _photos(10, (64, 48))
    frame = pd.DataFrame({"path": [f"p{i}" for i in range(10)], "label": np.arange(10) % 18})
    ds = PhotoDataset(frame, lambda i: photos[i], RawImage())
    data = _data("data.decode_size=[64,48]", "data.image_size=[32,24]")
    loader = gpu_loader(ds, BatchTransform(data, train=False, **IMAGENET), torch.device("cpu"), batch_size=4,
                        workers=0)
    batches = list(loader)
    assert len(loader) == 3 and [len(x) for x, _ in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 24) and y.tolist() == [0, 1, 2, 3]
    cpu = build_transform(data, train=False, **IMAGENET)
    assert torch.allclose(x[1], cpu(image=photos[1])["image"], atol=1.5e-2)
    persistent = gpu_loader(ds, BatchTransform(data, train=False, **IMAGENET), torch.device("cpu"), batch_size=4,
                            workers=2)
    assert persistent.loader.persistent_workers and not persistent.loader.pin_memory  # pinned only for CUDA


def test_fit_on_the_tensor_path_resumes_like_uninterrupted(tiny_cfg, tmp_path, augment="real"):
    """data.loader=gpu on CPU tensors: trains, validates, and epoch seeds survive a resume (persistent loaders)."""
    from maskcls.checkpoint import load_checkpoint
    from maskcls.engine import fit

    class Stop(Exception):
        pass

    def stop(epoch, metrics):
        if epoch == 0:
            raise Stop

    cfg = tiny_cfg("data.loader=gpu", f"data.augment={augment}", "train.epochs=2", "train.max_batches=1", "mix.name=halves", "mix.prob=1.0")
    a = fit(cfg, run_dir=tmp_path / "a")
    assert 0.0 <= a["best_f1"] <= 1.0 and "f1" in a["metrics"]
    with pytest.raises(Stop):
        fit(cfg, run_dir=tmp_path / "b", on_epoch=stop)
    b = fit(cfg, resume=tmp_path / "b" / "weights" / "last.pt")
    wa, wb = load_checkpoint(a["run_dir"], "last")["model"], load_checkpoint(b["run_dir"], "last")["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    cpu = fit(tiny_cfg("data.loader=cpu", f"data.augment={augment}", "train.epochs=2", "train.max_batches=1", "mix.name=halves",
                       "mix.prob=1.0"), run_dir=tmp_path / "c")
    wc = load_checkpoint(cpu["run_dir"], "last")["model"]
    assert not all(torch.allclose(wa[k].float(), wc[k].float(), atol=1e-6) for k in wa)  # the path was switched
