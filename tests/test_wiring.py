"""Defaults stay connected: fit really draws from the sampler and trains on the mixer's output,
every shipped config builds, kfold and tune run from the CLI, bad set-ups fail before data is read."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

import maskcls.data.sampling as sampling
import maskcls.mix as mix
from maskcls.cli import main
from maskcls.config import Config, load_config
from maskcls.engine import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "src" / "maskcls" / "demo.yaml"]


@pytest.fixture(autouse=True)
def no_confusion_png(monkeypatch):
    monkeypatch.setattr("maskcls.metrics.save_confusion_png", lambda cm, path: None)


class SpyMixer:
    def __init__(self, inner, calls: list):
        self.inner, self.calls = inner, calls

    def set_epoch(self, seed: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(seed)

    def __call__(self, x, y):
        out = self.inner(x, y)
        self.calls.append(out[1])
        return out


def test_fit_draws_from_the_default_sampler_and_trains_on_mixed_batches(tiny_cfg, monkeypatch):
    assert Config().data.sampler == "class"  # the default this test guards
    kinds, powers, epochs, drawn, mixed, targets = [], [], [], [], [], []
    real_mixer = mix.build_mixer
    import maskcls.data.feeds as feeds
    import maskcls.engine as engine

    class SpyEpochSampler(sampling.EpochSampler):
        def __init__(self, kind, frame, **kw):
            kinds.append(kind)
            powers.append(kw.get("power"))
            super().__init__(kind, frame, **kw)

        def set_epoch(self, seed: int) -> None:
            epochs.append(seed)
            super().set_epoch(seed)

        def __iter__(self):
            for i in super().__iter__():
                drawn.append(int(i))
                yield i

    def spy_mixer(cfg, dataset, seed=0, **kw):
        inner = real_mixer(cfg, dataset, seed=seed, **kw)
        return None if inner is None else SpyMixer(inner, mixed)

    monkeypatch.setattr(feeds, "EpochSampler", SpyEpochSampler)
    monkeypatch.setattr(mix, "build_mixer", spy_mixer)
    for module in (engine, feeds):  # the modules that import it at module level
        if hasattr(module, "build_mixer"):
            monkeypatch.setattr(module, "build_mixer", spy_mixer)
    real_loss = engine.loss_from_config

    def spy_loss(*a, **kw):
        crit = real_loss(*a, **kw)
        forward = crit.forward
        crit.forward = lambda out, y: targets.append(y) or forward(out, y)
        return crit

    monkeypatch.setattr(engine, "loss_from_config", spy_loss)
    fit(tiny_cfg("train.epochs=2", "mix.name=halves", "mix.prob=1.0", "train.max_batches=2", "data.sampler_power=0.5"))
    assert kinds == ["class"] and len(set(epochs)) == 2  # the default kind, re-seeded every epoch
    assert powers == [0.5]  # data.sampler_power reaches it
    assert len(drawn) >= 2 * 2 * 8  # the loader drew its batches from it
    assert len(mixed) == 4 and len(targets) == 4  # every training batch went through the mixer ...
    assert all(t is m for t, m in zip(targets, mixed))  # ... and the loss saw the mixed targets
    assert all(t.dim() == 2 and (t.max(1).values < 1).any() for t in targets)  # soft: really mixed


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_builds(path):
    from maskcls.data.transforms import build_transform
    from maskcls.losses import loss_from_config
    from maskcls.models import check_model_name, data_config, model_from_config

    cfg = load_config(path)
    check_model_name(cfg.model.name)
    cfg.model.pretrained = False  # the architecture, not a download
    model = model_from_config(cfg)
    norm = data_config(model)
    for train in (True, False):
        t = build_transform(cfg.data, train=train, **norm)
        x = t(image=np.zeros((*cfg.data.decode_size, 3), np.uint8))["image"]
        assert tuple(x.shape[1:]) == tuple(cfg.data.image_size)
    loss_from_config(cfg.loss, cfg.model.head)
    with torch.no_grad():
        assert model.eval().probs(torch.zeros(1, 3, *cfg.data.image_size)).shape == (1, 18)


def _common(demo_root, tmp_path):
    return [f"data.root={demo_root}", f"project={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
            *TINY, "train.max_batches=1", "-q"]


def test_cli_kfold_smoke(demo_root, tmp_path, capsys):
    assert main(["kfold", *_common(demo_root, tmp_path), "data.folds=2", "name=kf"]) == 0
    summary = json.loads(capsys.readouterr().out)
    kdir = tmp_path / "runs" / "kf"
    assert summary["kfold_dir"] == str(kdir) and summary["folds_n"] == 2 and summary["persons"] == 12
    assert 0 <= summary["oof_f1"] <= summary["oof_f1_with_bias"] <= 1
    assert (kdir / "decision.json").is_file() and (kdir / "fold1" / "split.csv").is_file()


def test_cli_tune_smoke(demo_root, tmp_path, capsys):
    assert main(["tune", *_common(demo_root, tmp_path), "--n-trials", "1", "--study", "cli"]) == 0
    out = capsys.readouterr().out
    assert "best trial 0" in out and (tmp_path / "runs" / "cli" / "best.yaml").is_file()
    load_config(tmp_path / "runs" / "cli" / "best.yaml")


@pytest.mark.parametrize("mode", ["train", "kfold", "tune"])
@pytest.mark.parametrize("override,needle", [
    ("train.device=gpu", "cuda or cuda:0"),
    ("model.name=tf_efficientnet_lite00", "similar: tf_efficientnet_lite0"),
    ("data.root={tmp}/nowhere", "nowhere: data folder not found"),
    ("data.relabel={tmp}/fixes.csv", "fixes.csv: file not found"),
    pytest.param("train.device=cuda", "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_setup_fails_before_data_is_read(mode, override, needle, demo_root, tmp_path, capsys, monkeypatch):
    def no_reading(*a, **kw):
        raise AssertionError("the data was read before the set-up was checked")

    monkeypatch.setattr("maskcls.data.loading.read_train", no_reading)
    monkeypatch.setattr("maskcls.data.cache.build_cache", no_reading)
    argv = [mode, *_common(demo_root, tmp_path), override.format(tmp=tmp_path)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("maskcls: error:") and needle in lines[0], err
    assert "Traceback" not in out + err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder made


# ----------------------------------------------------------------------------- defaults no other test guards
def test_ema_follows_the_trained_weights(tiny_cfg):
    """train.ema (default on): best.pt ships the EMA, which moved from the start towards the raw weights.

    Guards ``ema.update`` in ``engine.train_one_epoch``: without it the EMA stays at the starting weights.
    """
    from maskcls.checkpoint import load_checkpoint
    from maskcls.models import model_from_config

    assert Config().train.ema
    cfg = tiny_cfg("train.max_batches=3", "data.val_fraction=0.25")
    start = model_from_config(cfg).state_dict()  # the packaged pretrained backbone, as fit starts from it
    last = load_checkpoint(fit(cfg)["run_dir"], "last")
    ema, raw = last["model"], last["train_model"]
    name = next(k for k, v in start.items() if v.ndim == 4)  # the stem's convolution: pretrained, not random
    moved, apart, gap = [(a - b).abs().sum().item() for a, b in
                         ((ema[name], start[name]), (ema[name], raw[name]), (start[name], raw[name]))]
    assert moved > 0  # the EMA left the start ...
    assert 0 < apart < gap  # ... towards the raw weights, without being them


def test_training_set_is_augmented_and_validation_is_not(tiny_cfg, demo_root):
    """Guards ``build_transform(cfg.data, train=True)`` (and the tensor path's ``BatchTransform(train=True)``) in
    ``data/feeds.py``: with train=False the training photos would be the plain validation pixels."""
    import maskcls.distributed as D
    from maskcls.data.feeds import Feeds
    from maskcls.data.loading import load_splits

    photo = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    src = lambda i: photo  # noqa: E731
    for loader in ("cpu", "gpu"):  # the tensor path runs on CPU tensors too
        cfg = tiny_cfg(f"data.loader={loader}", "data.augment=basic")
        train, val = load_splits(cfg)
        feeds = Feeds(cfg, D.Dist(), torch.device("cpu"), (train, src), (val, src), {"mean": [0.5] * 3, "std": [0.5] * 3})
        if loader == "cpu":
            draws = []
            for seed in range(4):
                feeds.train_ds.transform.set_random_seed(seed)
                draws.append(feeds.train_ds[0][0])
            assert any(not torch.equal(draws[0], d) for d in draws[1:])  # random: augmented
            assert torch.equal(feeds.val_ds[0][0], feeds.val_ds[0][0])
        else:
            x = torch.from_numpy(np.stack([photo] * 8))
            feeds.train_tf.set_random_seed(1)
            assert not torch.equal(feeds.train_tf(x)[0], feeds.train_tf(x)[0])


@pytest.mark.parametrize("installed", [True, False])
def test_auto_detector_is_mtcnn_exactly_where_it_is_installed(installed, monkeypatch):
    """Guards ``resolve_detector``'s ``auto`` choice with and without mtcnn-runtime, on any machine."""
    import importlib.util

    import maskcls.preprocess.faces as faces

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real("os") if installed else None) if name == "mtcnnruntime" else real(name, *a))
    built = []
    monkeypatch.setitem(faces.CANDIDATES, "mtcnn", lambda: built.append("mtcnn") or "mtcnn detector")
    assert faces.resolve_detector("auto") == ("mtcnn" if installed else "haar")
    assert faces.resolve_detector("haar") == "haar"
    detector = faces.build_detector("auto")
    assert (detector == "mtcnn detector") == installed and built == (["mtcnn"] if installed else [])
