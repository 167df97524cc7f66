"""Losses agree with torch's reference formulas and accept soft targets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskcls.config import load_config
from maskcls.losses import (CrossEntropy, FocalLoss, MultiHeadLoss, SoftF1Loss, build_loss,
                            head_targets, loss_from_config)


def _batch(n: int = 32, k: int = 18, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 2
    target = torch.randint(0, k, (n,), generator=g)
    return logits, target


@pytest.mark.parametrize("k", [18, 3])
def test_soft_f1_has_gradients(k):
    logits, target = _batch(k=k)
    logits.requires_grad_(True)
    loss = SoftF1Loss(k)(logits, target)
    assert 0 < loss.item() < 1
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # perfect confident predictions give a loss near 0 (every class present), wrong ones near 1
    every = torch.arange(2 * k) % k
    perfect = F.one_hot(every, k).float() * 50
    assert SoftF1Loss(k)(perfect, every).item() < 1e-3
    assert SoftF1Loss(k)(perfect, (every + 1) % k).item() > 0.99


@pytest.mark.parametrize("k", [18, 3])
def test_focal_gamma_zero_is_cross_entropy(k):
    logits, target = _batch(k=k, seed=1)
    ours = FocalLoss(k, gamma=0.0)(logits, target)
    assert torch.allclose(ours, F.cross_entropy(logits, target), atol=1e-6)
    assert torch.allclose(CrossEntropy(k)(logits, target), F.cross_entropy(logits, target), atol=1e-6)


def test_focal_down_weights_easy_examples():
    logits, target = _batch(seed=2)
    assert FocalLoss(18, gamma=2.0)(logits, target) < FocalLoss(18, gamma=0.0)(logits, target)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_matches_torch(eps):
    logits, target = _batch(seed=3)
    ours = build_loss("smoothing", 18, smoothing=eps)(logits, target)
    ref = F.cross_entropy(logits, target, label_smoothing=eps)
    assert torch.allclose(ours, ref, atol=1e-6), (ours, ref)


def test_class_weights_match_torch():
    logits, target = _batch(seed=4)
    w = torch.rand(18, generator=torch.Generator().manual_seed(5)) + 0.2
    ours = build_loss("ce", 18, weight=w)(logits, target)
    assert torch.allclose(ours, F.cross_entropy(logits, target, weight=w), atol=1e-6)
    focal = build_loss("focal", 18, gamma=0.0, weight=w)(logits, target)
    assert torch.allclose(focal, F.cross_entropy(logits, target, weight=w), atol=1e-6)


def test_smoothing_with_class_weights_matches_torch():
    logits, target = _batch(seed=6)
    w = torch.linspace(0.5, 2.0, 18)
    ours = build_loss("smoothing", 18, smoothing=0.1, weight=w)(logits, target)
    ref = F.cross_entropy(logits, target, weight=w, label_smoothing=0.1)
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)


@pytest.mark.parametrize("name", ["ce", "focal", "smoothing", "f1"])
def test_one_hot_soft_targets_equal_int_targets(name):
    logits, target = _batch(seed=7)
    loss = build_loss(name, 18, smoothing=0.1, gamma=2.0)
    assert torch.allclose(loss(logits, target), loss(logits, F.one_hot(target, 18).float()), atol=1e-6)


def test_soft_targets_are_the_mixture():
    logits, target = _batch(seed=8)
    other = (target + 5) % 18
    soft = 0.7 * F.one_hot(target, 18).float() + 0.3 * F.one_hot(other, 18).float()
    ce = build_loss("ce", 18)
    expected = 0.7 * ce(logits, target) + 0.3 * ce(logits, other)
    assert torch.allclose(ce(logits, soft), expected, atol=1e-6)


def test_head_targets_of_ids_and_soft():
    ids = torch.arange(18)
    m, g, a = head_targets(ids)
    assert m.tolist() == [c // 6 for c in range(18)]
    assert g.tolist() == [(c // 3) % 2 for c in range(18)]
    assert a.tolist() == [c % 3 for c in range(18)]
    sm, sg, sa = head_targets(F.one_hot(ids, 18).float())
    assert torch.equal(sm.argmax(1), m) and torch.equal(sg.argmax(1), g) and torch.equal(sa.argmax(1), a)


def test_multi_head_loss_head_weights_matter():
    logits, target = _batch(k=8, seed=9)
    target = torch.randint(0, 18, (32,), generator=torch.Generator().manual_seed(9))
    parts = [CrossEntropy(3), CrossEntropy(2), CrossEntropy(3)]
    m, g, a = head_targets(target)
    zm, zg, za = logits[:, :3], logits[:, 3:5], logits[:, 5:]
    base = MultiHeadLoss(parts, [1.0, 1.0, 1.0])(logits, target)
    ref = F.cross_entropy(zm, m) + F.cross_entropy(zg, g) + F.cross_entropy(za, a)
    assert torch.allclose(base, ref, atol=1e-6)
    weighted = MultiHeadLoss(parts, [1.0, 1.0, 3.0])(logits, target)
    assert torch.allclose(weighted, ref + 2 * F.cross_entropy(za, a), atol=1e-5)
    only_age = MultiHeadLoss(parts, [0.0, 0.0, 1.0])(logits, target)
    assert torch.allclose(only_age, F.cross_entropy(za, a), atol=1e-6)


@pytest.mark.parametrize("head", ["single", "multi"])
@pytest.mark.parametrize("name", ["ce", "focal", "smoothing", "f1"])
def test_loss_from_config_all_combinations(head, name):
    cfg = load_config(None, [f"loss.name={name}"])
    labels = torch.randint(0, 18, (64,), generator=torch.Generator().manual_seed(0))
    crit = loss_from_config(cfg.loss, head)
    k = 18 if head == "single" else 8
    logits = torch.randn(16, k, requires_grad=True)
    loss = crit(logits, labels[:16])
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    soft = crit(logits.detach(), F.one_hot(labels[:16], 18).float())
    assert torch.allclose(soft, loss.detach(), atol=1e-5)
