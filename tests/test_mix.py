"""Batch mixing: halves CutMix (geometry, label weights, partner pools), timm CutMix/MixUp, training with it."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from maskcls.config import ConfigError, MixConfig
from maskcls.engine import fit
from maskcls.mix import build_mixer

H, W = 16, 48


@pytest.fixture(autouse=True)
def no_confusion_png(monkeypatch):
    """Drawing the confusion matrix costs ~2 s of matplotlib per run; not what these tests check."""
    monkeypatch.setattr("maskcls.metrics.save_confusion_png", lambda cm, path: None)

class FakeDataset:
    """Labels in ``frame`` and images offset by +10, so pasted pixels never equal batch pixels."""

    def __init__(self, labels):
        self.frame = pd.DataFrame({"label": labels})
        self.images = torch.rand(len(labels), 3, H, W, generator=torch.Generator().manual_seed(1)) + 10

    def __len__(self):
        return len(self.frame)

    def __getitem__(self, i):
        return self.images[i], torch.tensor(int(self.frame["label"][i]))


def batch(labels):
    return torch.rand(len(labels), 3, H, W, generator=torch.Generator().manual_seed(2)), torch.tensor(labels)


def test_halves_pastes_one_side_and_weights_labels_by_area():
    ds = FakeDataset([3, 4, 10, 11, 15, 16])  # no class 0 or 1: a partner's label always differs
    mixer = build_mixer(MixConfig(name="halves", prob=1.0, ratio=[0.4, 0.6]), ds, seed=0)
    x, y = batch([0, 1, 0, 1, 0, 1, 0, 1])
    out, soft = mixer(x, y)
    assert soft.shape == (8, 18) and torch.allclose(soft.sum(1), torch.ones(8))
    assert len(mixer.last) == 8  # prob=1: every photo mixed
    sides = set()
    for rec in mixer.last:
        i, j, cols = rec["row"], rec["partner"], rec["cols"]
        changed = (out[i] != x[i]).any(dim=(0, 1)).numpy()  # per column
        assert changed.sum() == cols and 0.4 * W - 1 <= cols <= 0.6 * W + 1
        pasted = slice(0, cols) if rec["side"] == "left" else slice(W - cols, W)
        kept = slice(cols, W) if rec["side"] == "left" else slice(0, W - cols)
        assert changed[pasted].all() and not changed[kept].any()  # one contiguous edge strip, rest identical
        assert torch.equal(out[i, :, :, kept], x[i, :, :, kept])
        assert torch.equal(out[i, :, :, pasted], ds.images[j][:, :, pasted])
        area = cols * H / (H * W)  # real pasted pixel share
        assert math.isclose(soft[i, int(y[i])].item(), 1 - area, abs_tol=1e-6)
        assert math.isclose(soft[i, int(ds.frame["label"][j])].item(), area, abs_tol=1e-6)
        sides.add(rec["side"])
    assert sides == {"left", "right"}
    assert not torch.equal(out, x) and torch.equal(x, batch([0] * 8)[0])  # the input batch is not modified


def test_halves_prob_zero_rows_stay_one_hot():
    ds = FakeDataset([3, 4, 5])
    mixer = build_mixer(MixConfig(name="halves", prob=0.3), ds, seed=0)
    x, y = batch(list(range(12)))
    out, soft = mixer(x, y)
    mixed = {r["row"] for r in mixer.last}
    assert 0 < len(mixed) < 12
    for i in set(range(12)) - mixed:
        assert torch.equal(out[i], x[i]) and soft[i, i] == 1.0


def test_old_pool_draws_only_old_partners_from_the_dataset():
    labels = [0] * 40 + [2, 14] + [6] * 40  # two >=60 photos among 82
    ds = FakeDataset(labels)
    mixer = build_mixer(MixConfig(name="halves", prob=1.0, partners="old"), ds, seed=3)
    partners = set()
    for epoch in range(3):
        mixer.set_epoch(epoch)
        x, y = batch([0, 1, 6, 7] * 4)
        _, soft = mixer(x, y)
        for rec in mixer.last:
            partners.add(rec["partner"])
            assert labels[rec["partner"]] % 3 == 2
            assert soft[rec["row"], labels[rec["partner"]]] > 0.3  # the old class got its share
    assert partners == {40, 41}  # both rare photos used although no batch held them


def test_same_mask_pool_keeps_mask_state():
    labels = list(range(18)) * 3
    ds = FakeDataset(labels)
    mixer = build_mixer(MixConfig(name="halves", prob=1.0, partners="same_mask"), ds, seed=0)
    x, y = batch([0, 7, 13, 17, 2, 9])
    _, soft = mixer(x, y)
    assert len(mixer.last) == 6
    for rec in mixer.last:
        assert labels[rec["partner"]] // 6 == int(y[rec["row"]]) // 6
    assert torch.allclose(soft.view(-1, 3, 6).sum(2), torch.nn.functional.one_hot(y // 6, 3).float())


def test_old_pool_without_old_photos_is_a_config_error():
    with pytest.raises(ConfigError, match="no >=60"):
        build_mixer(MixConfig(name="halves", partners="old"), FakeDataset([0, 1, 3]), seed=0)


def test_mix_off_is_none():
    assert build_mixer(MixConfig(name="none"), FakeDataset([0]), seed=0) is None


@pytest.mark.parametrize("name", ["cutmix", "mixup"])
def test_timm_mixers_give_soft_targets_without_smoothing(name):
    mixer = build_mixer(MixConfig(name=name, prob=1.0, alpha=1.0), FakeDataset([0]), seed=0)
    assert mixer.mixup.label_smoothing == 0 and mixer.mixup.num_classes == 18
    mixer.set_epoch(5)
    x, y = batch([0, 5, 9, 17, 3, 12, 4])  # odd: the last photo stays unmixed
    out, soft = mixer(x, y)
    assert soft.shape == (7, 18) and torch.allclose(soft.sum(1), torch.ones(7))
    assert ((soft > 0).sum(1) <= 2).all()  # only the two mixed classes; no smoothing mass elsewhere
    assert soft[6, 4] == 1.0 and torch.equal(out[6], x[6])
    assert not torch.equal(out[:6], x[:6])
    assert torch.allclose(soft[:6, y[:6]].diagonal() + soft[:6, y[:6].flip(0)].diagonal(), torch.ones(6))


def _train_losses(run_dir: str) -> list[float]:
    with (Path(run_dir) / "log.csv").open() as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("overrides", [
    ["model.head=multi", "mix.name=halves", "mix.prob=1.0"],
    ["model.head=single", "mix.name=mixup", "mix.prob=1.0", "loss.name=focal"],
])
def test_training_step_with_mixing_has_finite_loss(tiny_cfg, overrides):
    result = fit(tiny_cfg(*overrides))
    losses = _train_losses(result["run_dir"])
    assert losses and all(np.isfinite(losses)) and losses[0] > 0
