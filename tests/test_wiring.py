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
# shipped.yaml waits for data.sources (sources branch) and its mixing weight (the lead): drop this filter then
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "shipped.yaml") + \
    [ROOT / "src" / "maskcls" / "demo.yaml"]


@pytest.fixture(autouse=True)
def no_confusion_png(monkeypatch):
    monkeypatch.setattr("maskcls.metrics.save_confusion_png", lambda cm, path: None)


class SpySampler(torch.utils.data.Sampler):
    def __init__(self, inner, drawn: list):
        self.inner, self.drawn = inner, drawn

    def __iter__(self):
        for i in self.inner:
            self.drawn.append(int(i))
            yield i

    def __len__(self):
        return len(self.inner)


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
    kinds, powers, drawn, mixed, targets = [], [], [], [], []
    real_sampler, real_mixer = sampling.make_sampler, mix.build_mixer

    def spy_sampler(kind, frame, seed, power=1.0):
        kinds.append(kind)
        powers.append(power)
        inner = real_sampler(kind, frame, seed=seed, power=power)
        return None if inner is None else SpySampler(inner, drawn)

    def spy_mixer(cfg, dataset, seed=0, **kw):
        inner = real_mixer(cfg, dataset, seed=seed, **kw)
        return None if inner is None else SpyMixer(inner, mixed)

    monkeypatch.setattr(sampling, "make_sampler", spy_sampler)
    monkeypatch.setattr(mix, "build_mixer", spy_mixer)
    import maskcls.data.feeds as feeds
    import maskcls.engine as engine

    for module in (engine, feeds):  # the modules that import them at module level
        for name, spy in (("make_sampler", spy_sampler), ("build_mixer", spy_mixer)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, spy)
    real_loss = engine.loss_from_config

    def spy_loss(*a, **kw):
        crit = real_loss(*a, **kw)
        forward = crit.forward
        crit.forward = lambda out, y: targets.append(y) or forward(out, y)
        return crit

    monkeypatch.setattr(engine, "loss_from_config", spy_loss)
    fit(tiny_cfg("train.epochs=2", "mix.name=halves", "mix.prob=1.0", "train.max_batches=2", "data.sampler_power=0.5"))
    assert kinds == ["class", "class"]  # one sampler per epoch, of the default kind
    assert powers == [0.5, 0.5]  # data.sampler_power reaches it
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
    labels = np.arange(18).repeat(2)
    loss_from_config(cfg.loss, cfg.model.head, labels)
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
    assert main(["tune", *_common(demo_root, tmp_path), "--n-trials", "1", "tune.study=cli"]) == 0
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
