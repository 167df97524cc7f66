"""The tensor input path: same eval transform as albumentations, seeded train ops, loaders that feed the loops."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from maskcls.config import ConfigError, load_config
from maskcls.data.dataset import PhotoDataset
from maskcls.data.gpu_pipeline import (BatchTransform, RawImage, brightness, contrast, gpu_loader, hue, saturation,
                                       use_gpu_path)
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


def test_train_transform_is_seeded_and_random():
    data = _data("data.image_size=[160,128]")
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


def test_default_recipe_on_cuda_does_not_fall_back_silently(caplog):
    """The default augmentation (real) has no tensor version: on a (mocked) CUDA device auto says so, once."""
    assert load_config(None, []).data.augment == "real"
    with caplog.at_level("WARNING", logger="maskcls"):
        assert not use_gpu_path(load_config(None, []).data, torch.device("cuda"))
    assert len(caplog.messages) == 1 and "CPU input path" in caplog.messages[0] and "augment=real" in caplog.messages[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="maskcls"):
        use_gpu_path(load_config(None, []).data, torch.device("cpu"))  # no card: nothing to say
        use_gpu_path(_data(), torch.device("cuda"))  # basic: the tensor path
    assert not caplog.messages


def test_loader_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_gpu_path(_data(), cuda) and not use_gpu_path(_data(), cpu)  # auto follows the device
    assert use_gpu_path(_data("data.loader=gpu"), cpu)  # forced: runs on CPU tensors (tests)
    assert not use_gpu_path(_data("data.loader=cpu"), cuda)
    assert not use_gpu_path(_data("data.augment=real"), cuda)  # albumentations-only ops: auto keeps the CPU path
    with pytest.raises(ConfigError, match="data.augment"):
        use_gpu_path(_data("data.augment=real", "data.loader=gpu"), cpu)
    with pytest.raises(ConfigError, match="data.loader"):
        load_config(None, ["data.loader=tpu"])


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


def test_fit_on_the_tensor_path_resumes_like_uninterrupted(tiny_cfg, tmp_path):
    """data.loader=gpu on CPU tensors: trains, validates, and epoch seeds survive a resume (persistent loaders)."""
    from maskcls.checkpoint import load_checkpoint
    from maskcls.engine import fit

    class Stop(Exception):
        pass

    def stop(epoch, metrics):
        if epoch == 0:
            raise Stop

    cfg = tiny_cfg("data.loader=gpu", "data.augment=basic", "train.epochs=2", "train.max_batches=1", "mix.name=halves", "mix.prob=1.0")
    a = fit(cfg, run_dir=tmp_path / "a")
    assert 0.0 <= a["best_f1"] <= 1.0 and "f1" in a["metrics"]
    with pytest.raises(Stop):
        fit(cfg, run_dir=tmp_path / "b", on_epoch=stop)
    b = fit(cfg, resume=tmp_path / "b" / "weights" / "last.pt")
    wa, wb = load_checkpoint(a["run_dir"], "last")["model"], load_checkpoint(b["run_dir"], "last")["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    cpu = fit(tiny_cfg("data.loader=cpu", "data.augment=basic", "train.epochs=2", "train.max_batches=1", "mix.name=halves",
                       "mix.prob=1.0"), run_dir=tmp_path / "c")
    wc = load_checkpoint(cpu["run_dir"], "last")["model"]
    assert not all(torch.allclose(wa[k].float(), wc[k].float(), atol=1e-6) for k in wa)  # the path was switched
