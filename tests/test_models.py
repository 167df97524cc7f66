"""timm backbones: packaged offline weights, heads, local weight files, clear errors."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from maskcls import models
from maskcls.models import MaskNet, ModelError, create_model, data_config, imagenet_model, logits_to_probs

NAME = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def packaged():
    return create_model(NAME, pretrained=True)


def test_packaged_weights_differ_from_random_init(packaged):
    assert models.packaged_weights_path(NAME) is not None
    torch.manual_seed(0)
    random = create_model(NAME, pretrained=False)
    a, b = packaged.backbone.state_dict(), random.backbone.state_dict()
    assert a.keys() == b.keys()
    assert not torch.allclose(a["conv_stem.weight"], b["conv_stem.weight"])
    # and they are the packaged ones: the 1000-class model's backbone holds the same tensors
    full = imagenet_model(NAME).state_dict()
    assert torch.equal(a["conv_stem.weight"], full["conv_stem.weight"])
    assert torch.equal(a["blocks.3.1.conv_pw.weight"], full["blocks.3.1.conv_pw.weight"])
    # efficientnet-lite was trained with mean=std=0.5
    assert data_config(packaged) == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def test_imagenet_model_recognises_grace_hopper():
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32)
    x = torch.from_numpy((img / 255.0 - 0.5) / 0.5).permute(2, 0, 1)[None]
    model = imagenet_model(NAME).eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax(1)) == 652  # military uniform


@pytest.mark.parametrize("head,outputs", [("single", 18), ("multi", 8)])
def test_heads_give_probs_over_18(packaged, head, outputs):
    model = create_model(NAME, head=head, pretrained=False).eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        logits, probs = model(x), model.probs(x)
    assert logits.shape == (3, outputs)
    assert probs.shape == (3, 18)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert (probs >= 0).all()


def test_multi_head_probs_are_the_product():
    logits = torch.randn(4, 8)
    p = logits_to_probs(logits, "multi")
    pm, pg, pa = logits[:, :3].softmax(1), logits[:, 3:5].softmax(1), logits[:, 5:].softmax(1)
    c = 2 * 6 + 1 * 3 + 1  # not wear, female, 30-59
    assert torch.allclose(p[:, c], pm[:, 2] * pg[:, 1] * pa[:, 1], atol=1e-6)
    assert torch.allclose(p.view(4, 3, 2, 3).sum((2, 3)), pm, atol=1e-6)


def test_weights_file_from_same_model(tmp_path, packaged):
    donor = create_model(NAME, pretrained=False)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(0.01)
    path = tmp_path / "donor.pt"
    torch.save({"model": {f"module.{k}": v for k, v in donor.state_dict().items()}}, path)  # DDP-style prefix
    model = create_model(NAME, weights=str(path), pretrained=True)
    got, want = model.backbone.state_dict(), donor.backbone.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not torch.equal(model.head.weight, donor.head.weight)  # the classifier is dropped, a new head is made


def test_weights_file_from_resnet18_timm_state_dict(tmp_path):
    import timm

    torch.manual_seed(1)
    donor = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save(donor.state_dict(), path)  # a bare state dict with an fc classifier of 10 classes
    model = create_model("resnet18", weights=str(path))
    sd = model.backbone.state_dict()
    assert not any(k.startswith("fc.") for k in sd)
    assert torch.equal(sd["conv1.weight"], donor.state_dict()["conv1.weight"])
    assert model.head.out_features == 18


def test_weights_of_another_model_are_refused(tmp_path):
    import timm

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(ModelError, match="do not fit"):
        create_model(NAME, weights=str(path))


def test_missing_weights_file():
    with pytest.raises(ModelError, match="weights file not found"):
        create_model(NAME, weights="/nonexistent/weights.pt")


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown timm model"):
        create_model("resnet_does_not_exist", pretrained=False)


def test_pretrained_offline_without_packaged_weights(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError) as info:
        create_model("resnet18", pretrained=True)
    msg = str(info.value)
    assert "resnet18" in msg and "model.pretrained=false" in msg and "model.weights" in msg
    assert len(msg.splitlines()) == 1
    # packaged weights still load with the hub unreachable
    assert isinstance(create_model(NAME, pretrained=True), MaskNet)
