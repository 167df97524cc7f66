"""One config system: dataclass defaults < YAML file < ``key=value`` overrides.

Every option of every command lives here with its default, so a YAML file
states only what differs. Unknown keys fail with a "did you mean" hint and
choices are checked before any work starts. The resolved config is written
to each run folder and stored in checkpoints, so a run can be rebuilt.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import io
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config key or value; the message says how to fix it."""


def choice(default: Any, *options: Any) -> Any:
    return field(default=default, metadata={"choices": options})


@dataclass
class DataConfig:
    root: str = "data/demo"  # folder with train/ and eval/ in the competition layout
    relabel: str | None = None  # CSV id,field,value[,image] of known wrong labels
    allow_duplicates: bool = False  # read repeated train.csv rows / shared ids / conflicting relabel rows (warn only)
    age_thresholds: list[int] = field(default_factory=lambda: [30, 60])  # true bands (evaluation)
    train_age_thresholds: list[int] | None = None  # bands used for training targets only
    drop_train_ages: list[int] = field(default_factory=list)  # ages left out of training, e.g. [57, 58, 59]
    val_fraction: float = 0.2  # share of persons held out; 0 trains on all
    folds: int = 5  # k of person-level stratified k-fold
    fold: int = 0  # which fold is validation (holdout: of round(1/val_fraction); kfold: of folds)
    decode_size: list[int] = field(default_factory=lambda: [256, 192])  # H, W after decoding (cached)
    image_size: list[int] = field(default_factory=lambda: [160, 128])  # H, W the model sees
    crop_fraction: float = 0.75  # centre crop of the portrait before resizing (1.0: the whole portrait)
    augment: str = choice("real", "none", "basic", "real")  # training augmentation preset (data/transforms.py; real: +0.24 realfaces mask acc)
    chin_masks: float = 0.0  # share of incorrect_mask training photos replaced by the person's mask pulled down to the chin (data/chin_masks.py)
    cache: bool = True  # decode each image once into a memory-mapped store
    cache_dir: str | None = None  # decode cache folder (None: $XDG_CACHE_HOME/maskcls or ~/.cache/maskcls)
    cache_max_gb: float = 10.0  # size cap of the cache folder; the oldest stores are evicted beyond it (0: no cap)
    batch_size: int = 32  # photos per optimizer step; under torchrun: over all processes (each takes 1/N)
    workers: int = 0  # DataLoader workers; 0 is fastest on 2 cores with the cache
    loader: str = choice("auto", "auto", "cpu", "gpu")  # gpu: augment batches on the device (auto: when on CUDA)
    sampler: str = choice("class", "none", "class", "person")  # weighted sampling (class: +0.04 F1, BENCHMARKS.md)
    sampler_power: float = 1.0  # balance strength: weight 1/count**power (1: equal classes, 0.5: square-root, 0: natural)
    max_persons: int = 0  # train on a fixed stratified subset of this many persons (0: all), e.g. for ablations
    sources: list[dict] = field(default_factory=list)  # extra labelled faces beside data.root: [{kind: boxes|voc, path, weight (expected share of each batch), classes, holdout}] (data/sources.py)


@dataclass
class PreprocessConfig:
    face_crop: bool = False  # crop to the detected face before decoding to decode_size
    detector: str = choice("auto", "auto", "haar", "dlib", "mtcnn", "centerface", "retinaface", "fast")  # auto: centerface (base install; finds small and masked faces in scenes), else retinaface, mtcnn, haar; fast: retinaface on a <= 640 px copy (video, ~5x faster); dlib: ".[dlib]", mtcnn: ".[mtcnn]"
    face_margin: float = 0.4  # margin around the face box, as a fraction of its size
    background: str = choice("none", "none", "grabcut", "rembg")  # background removal before decoding (rembg: extra)
    rembg_model: str | None = None  # path of an ONNX model for rembg (None: rembg's download)
    frame_photos: bool = True  # predict/serve on photos outside the competition layout: find the face, frame it like a training portrait


@dataclass
class ModelConfig:
    name: str = "tf_efficientnet_lite0"  # any timm model name
    head: str = choice("multi", "single", "multi")  # mask/gender/age heads (+0.05 F1) or one 18-way layer
    pretrained: bool = True  # packaged offline weights, else timm's hub
    weights: str | None = None  # a local state dict or checkpoint; beats everything else
    drop_rate: float = 0.2  # dropout before the classifier
    drop_path_rate: float = 0.1  # stochastic depth of the backbone's blocks (timm)
    freeze_blocks: int = 0  # keep the stem and the first N blocks at their pretrained weights (1.6x faster CPU steps, lower F1)
    age_head: str = choice("dist", "band", "dist")  # model.head=multi: 3 age bands, or a distribution over exact ages (bands summed from it; +0.035 F1)


@dataclass
class LossConfig:
    name: str = choice("ce", "ce", "focal", "smoothing", "f1")  # loss: cross-entropy, focal, label smoothing, soft F1
    label_smoothing: float = 0.1  # for "smoothing"
    gamma: float = 2.0  # for "focal"
    head_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.5])  # mask, gender, age


@dataclass
class MixConfig:
    name: str = choice("none", "none", "halves", "cutmix", "mixup")  # mixing of training images
    prob: float = 0.5  # share of batches that are mixed
    ratio: list[float] = field(default_factory=lambda: [0.4, 0.6])  # "halves": width share taken
    partners: str = choice("all", "all", "old", "same_mask")  # pool of the pasted half
    alpha: float = 1.0  # beta(alpha, alpha) for cutmix / mixup


@dataclass
class TrainConfig:
    epochs: int = 3  # passes over the training data
    optimizer: str = choice("adamw", "adamw", "sgd")  # optimizer
    lr: float = 1e-3  # peak learning rate (after warm-up)
    weight_decay: float = 1e-2  # on weights only, not on norms and biases
    scheduler: str = choice("cosine", "cosine", "none")  # learning-rate decay after warm-up: cosine to 1%, or constant
    warmup_epochs: float = 0.3  # linear warm-up length in epochs
    ema: bool = True  # validate, keep and ship an exponential moving average of the weights (timm ModelEmaV3)
    ema_decay: float = 0.998  # per optimizer step (with warm-up: early steps average less)
    patience: int = 0  # early stop after this many epochs without a better val F1 (0: off)
    seed: int = 42  # seeds data order, augmentation and initialisation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch threads per process; 0 = every core (split over train.processes)
    processes: int = 1  # data-parallel processes on this machine, torchrun started for you (CPU: 2 on 2 cores is 1.3x faster; CUDA: one per GPU)
    max_batches: int = 0  # cap on training batches per epoch (0: all), for smoke runs
    progress: bool = True  # progress bars


@dataclass
class EvalConfig:
    batch_size: int = 16  # small batches are faster on a 2-core CPU (cache); raise on a GPU
    tta: list[str] = field(default_factory=list)  # "flip", "shift"
    min_confidence: float = 0.5  # answers less sure than this are flagged low_confidence (CSV, service, page)
    class_bias: bool = False  # off: on 540 persons it cost 0.028 public F1 (BENCHMARKS.md); fit per-class biases for macro F1 on the val persons after training; apply them


@dataclass
class TuneConfig:
    space: dict = field(  # searched keys: {low, high[, log]} or {choices}
        default_factory=lambda: {
            "train.lr": {"low": 1e-4, "high": 3e-3, "log": True},
            "train.weight_decay": {"low": 1e-4, "high": 1e-1, "log": True},
            "train.optimizer": {"choices": ["adamw", "sgd"]},
            "loss.name": {"choices": ["ce", "focal", "smoothing"]},
            "mix.name": {"choices": ["none", "halves"]},
            "mix.prob": {"low": 0.2, "high": 0.8},  # used when the trial picks halves
        }
    )


@dataclass
class Config:
    name: str = "train"  # run folder name under project/ (made unique: train, train2, ...)
    project: str = "runs"  # folder that holds the run folders
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def copy(self) -> "Config":
        return from_dict(self.to_dict())


# Keys (and values) that were removed, so that runs, checkpoints and ONNX models saved with them still load.
# key -> (what to use instead, {old value: {key: value} it means now}); a value not listed is simply dropped.
REMOVED: dict[str, tuple[str, dict]] = {
    "data.preset": ("data.crop_fraction=1.0 for 'base' (no centre crop); 'custom' was the default",
                    {"base": {"data.crop_fraction": 1.0}}),
    "data.split": ("nothing: validation always holds out whole persons ('image' leaked faces into it)", {}),
    "train.step_size": ("train.scheduler=cosine or none (the 'step' schedule was removed)", {}),
    "train.step_gamma": ("train.scheduler=cosine or none (the 'step' schedule was removed)", {}),
    "train.momentum": ("nothing: train.optimizer=sgd uses Nesterov momentum 0.9", {}),
    "train.accumulate": ("data.batch_size or train.processes (gradient accumulation was removed)", {}),
    "train.amp": ("nothing: mixed precision is always on where CUDA is", {}),
    "train.channels_last": ("nothing: models always run channels-last (NHWC)", {}),
    "loss.class_weights": ("data.sampler=class (balancing classes in the sampler)", {}),
    "loss.age_l1": ("nothing: the exact-age head's L1 weight is fixed at 0.1", {}),
    "model.age_sigma": ("nothing: the exact-age head's label spread is fixed at 3 years", {}),
    "tune.n_trials": ("maskcls tune --n-trials N", {}),
    "tune.timeout": ("maskcls tune --timeout SECONDS", {}),
    "tune.storage": ("maskcls tune --storage URL", {}),
    "tune.study": ("maskcls tune --study NAME", {}),
}
# (key, removed value) -> (the value it is read as, why)
REMOVED_VALUES: dict[tuple[str, Any], tuple[Any, str]] = {
    ("train.scheduler", "step"): ("cosine", "the 'step' schedule was removed"),
}


def removed_key_message(key: str) -> str:
    """One line for a removed key given by a user: it was removed, and what to use."""
    instead, _ = REMOVED[key]
    return f"config key '{key}' was removed; use {instead}"


def drop_removed(values: dict, source: Any = "a saved run") -> dict:
    """A saved config (nested dict) without removed keys or values, each noted in one logged line.

    A removed key whose meaning survives is mapped (``data.preset=base`` ->
    ``data.crop_fraction=1.0``); others are dropped. Runs, checkpoints and
    exported models saved before a key was removed load this way, never crash.
    """
    import copy
    import logging

    log = logging.getLogger("maskcls")
    out = copy.deepcopy(values or {})
    mapped: dict[str, Any] = {}
    for key, (instead, meaning) in REMOVED.items():
        section, _, name = key.rpartition(".")
        holder = out.get(section) if section else out
        if not isinstance(holder, dict) or name not in holder:
            continue
        value = holder.pop(name)
        new = meaning.get(value, {}) if isinstance(value, (str, int, float, bool)) else {}
        mapped.update(new)
        read_as = f"; read as {', '.join(f'{k}={v}' for k, v in new.items())}" if new else "; dropped"
        log.warning("%s: config key %s=%s was removed (use %s)%s", source, key, value, instead, read_as)
    for (key, old), (new_value, why) in REMOVED_VALUES.items():
        section, _, name = key.rpartition(".")
        holder = out.get(section) if section else out
        if isinstance(holder, dict) and holder.get(name) == old:
            holder[name] = new_value
            log.warning("%s: %s=%s was removed (%s); read as %s=%s", source, key, old, why, key, new_value)
    for key, value in mapped.items():
        section, _, name = key.rpartition(".")
        out.setdefault(section, {})[name] = value
    return out


def from_saved(values: dict, source: Any = "a saved run") -> Config:
    """The config stored in a run folder, checkpoint or ONNX model, read after ``drop_removed``."""
    return from_dict(drop_removed(values, source))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against a field type, converting the harmless cases."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list like [1, 2], got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, inner, key) for v in value]
    if tp is Any:
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field of a config dataclass: its help text (read from the source)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (frozen app): no help texts, nothing breaks
        return {}
    helps: dict[str, str] = {}
    line_start = None  # field name of the statement being read
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.NAME and depth == 0 and tok.start[1] == 4 and line_start is None:
            line_start = tok.string
        elif tok.type == tokenize.COMMENT and line_start and line_start not in helps:
            helps[line_start] = tok.string.lstrip("#").strip()
        if tok.type in (tokenize.NEWLINE, tokenize.NL) and depth == 0:
            line_start = None
    return helps


def describe_keys(cfg: Config | None = None) -> list[dict]:
    """Every dotted key with its value in ``cfg``, default, type, choices and help (``maskcls cfg``)."""
    cfg = cfg or Config()
    out: list[dict] = []

    def walk(obj: Any, default: Any, prefix: str) -> None:
        helps = _field_comments(type(obj))
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value, dflt = getattr(obj, f.name), getattr(default, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, dflt, f"{prefix}{f.name}.")
                continue
            tp = hints[f.name]
            out.append({"key": prefix + f.name, "value": value, "default": dflt, "choices": f.metadata.get("choices"),
                        "type": tp.__name__ if isinstance(tp, type) and not typing.get_args(tp)
                        else str(tp).replace("typing.", ""),
                        "help": helps.get(f.name, "")})

    walk(cfg, Config(), "")
    return out


def leaf_keys() -> list[str]:
    return [k["key"] for k in describe_keys()]


def _unknown_top_level(head: str, names: dict) -> str:
    """Hint for an unknown top-level key: a bare section key (``epochs``) points to its section."""
    owners = [k for k in leaf_keys() if "." in k and k.rsplit(".", 1)[1] == head]
    if len(owners) == 1:
        return f"; did you mean '{owners[0]}'?"
    if owners:
        return f"; did you mean one of {', '.join(owners)}?"
    close = difflib.get_close_matches(head, names, n=1)
    if close:
        return f"; did you mean '{close[0]}'?"
    leaves = {k.rsplit(".", 1)[1]: k for k in leaf_keys() if "." in k}
    close = difflib.get_close_matches(head, leaves, n=1, cutoff=0.75)
    if close:
        return f"; did you mean '{leaves[close[0]]}'?"
    return f"; valid keys: {', '.join(names)} (see `maskcls cfg`)"


def _set(obj: Any, dotted: str, value: Any, prefix: str = "") -> None:
    head, _, rest = dotted.partition(".")
    names = {f.name: f for f in dataclasses.fields(obj)}
    key = prefix + head
    if head not in names and prefix + dotted in REMOVED:
        raise ConfigError(removed_key_message(prefix + dotted))
    if head not in names:
        if not prefix and not rest:
            raise ConfigError(f"unknown config key '{key}'{_unknown_top_level(head, names)}")
        close = difflib.get_close_matches(head, names, n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
        raise ConfigError(f"unknown config key '{key}'{hint}")
    f = names[head]
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if rest:
            return _set(current, rest, value, key + ".")
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of its keys")
        for k, v in value.items():
            _set(current, str(k), v, key + ".")
        return
    if rest:
        raise ConfigError(f"'{key}' has no sub-keys (it is a value)")
    hints = typing.get_type_hints(type(obj))
    value = _coerce(value, hints[head], key)
    options = f.metadata.get("choices")
    if options and value not in options:
        raise ConfigError(f"{key}: '{value}' is not supported; choose one of {', '.join(map(str, options))}")
    setattr(obj, head, value)


def from_dict(values: dict, base: Config | None = None) -> Config:
    cfg = base if base is not None else Config()
    for k, v in (values or {}).items():
        _set(cfg, str(k), v)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults, then the YAML file, then overrides (in that order)."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
        from_dict(values, cfg)
    if isinstance(overrides, dict):
        from_dict(overrides, cfg)
    else:
        for text in overrides or []:
            key, value = parse_override(text)
            _set(cfg, key, value)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that single fields cannot express."""
    name = str(cfg.name)
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ConfigError(f"name: {name!r} must be a plain folder name: runs are written under project/ "
                          f"({cfg.project}); change project= to write elsewhere")
    d = cfg.data
    for key in ("age_thresholds", "train_age_thresholds"):
        t = getattr(d, key)
        if t is not None and (len(t) != 2 or t[0] >= t[1]):
            raise ConfigError(f"data.{key}: expected two rising ages like [30, 60], got {t}")
    for key in ("decode_size", "image_size"):
        s = getattr(d, key)
        if len(s) != 2 or min(s) < 8:
            raise ConfigError(f"data.{key}: expected [height, width] of at least 8 pixels, got {s}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    if d.max_persons < 0:
        raise ConfigError(f"data.max_persons must be 0 (all) or a number of persons, got {d.max_persons}")
    if d.folds < 2 or not 0 <= d.fold < d.folds:
        raise ConfigError(f"data.fold must be in 0..{d.folds - 1} with data.folds >= 2")
    if len(cfg.loss.head_weights) != 3:
        raise ConfigError("loss.head_weights needs three weights: mask, gender, age")
    if not 0.0 <= cfg.model.drop_path_rate < 1.0 or not 0.0 < cfg.train.ema_decay < 1.0:
        raise ConfigError("model.drop_path_rate must be in [0, 1) and train.ema_decay in (0, 1)")
    if not 0.0 <= cfg.data.chin_masks <= 1.0:
        raise ConfigError(f"data.chin_masks is a share of photos in [0, 1], got {cfg.data.chin_masks}")
    if not 0.0 <= cfg.data.sampler_power <= 1.0:
        raise ConfigError(f"data.sampler_power is in [0, 1] (1: equal classes, 0: natural frequencies), "
                          f"got {cfg.data.sampler_power}")
    if cfg.data.chin_masks and cfg.preprocess.face_crop:
        raise ConfigError("data.chin_masks composes whole portraits; it cannot be used with preprocess.face_crop=true")
    if d.sources:
        check_source_entries(cfg)
    if cfg.train.processes < 1:
        raise ConfigError(f"train.processes must be 1 or more, got {cfg.train.processes}")
    if cfg.model.freeze_blocks < 0:
        raise ConfigError(f"model.freeze_blocks must be 0 or more, got {cfg.model.freeze_blocks}")
    if cfg.train.epochs < 1:
        raise ConfigError("train.epochs must be at least 1")
    if len(cfg.mix.ratio) != 2 or not 0 < cfg.mix.ratio[0] <= cfg.mix.ratio[1] < 1:
        raise ConfigError(f"mix.ratio: expected [low, high] inside (0, 1), got {cfg.mix.ratio}")
    if not 0.0 <= cfg.eval.min_confidence <= 1.0:
        raise ConfigError(f"eval.min_confidence must be in [0, 1], got {cfg.eval.min_confidence}")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        hint = "; for a GPU write cuda or cuda:0" if dev.lower() in ("gpu", "nvidia") else ""
        raise ConfigError(f"train.device={dev} is not a device; choose auto, cpu, cuda or cuda:N{hint}")
    for t in cfg.eval.tta:
        if t not in ("flip", "shift"):
            raise ConfigError(f"eval.tta: '{t}' is not supported; choose from flip, shift")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# data.sources entries (read by data/sources.py); checked here so validation needs no data code
SOURCE_KINDS = ("boxes", "voc")
SOURCE_ENTRY_KEYS = {"kind", "path", "weight", "classes", "holdout", "min_size", "name"}
SOURCE_MIN_SIZE = 16


def check_source_entries(cfg: Config) -> None:
    """The shape of every ``data.sources`` entry (files are checked when read); one line naming the entry."""
    total = 0.0
    for i, e in enumerate(cfg.data.sources):
        where = f"data.sources[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(f"{where}: expected a mapping like {{kind: boxes, path: boxes.csv, weight: 0.25}}, "
                              f"got {e!r}")
        unknown = sorted(set(e) - SOURCE_ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                              f"valid: {', '.join(sorted(SOURCE_ENTRY_KEYS))}")
        if e.get("kind") not in SOURCE_KINDS:
            raise ConfigError(f"{where}: kind {e.get('kind')!r} is not supported; choose one of {', '.join(SOURCE_KINDS)}")
        if not e.get("path"):
            raise ConfigError(f"{where}: needs a path (the boxes CSV, or the VOC folder)")
        w = e.get("weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < 1:
            raise ConfigError(f"{where}: weight {w!r} must be a number in (0, 1): the expected share of each "
                              f"training batch drawn from it")
        total += float(w)
        if not isinstance(e.get("holdout", True), bool):
            raise ConfigError(f"{where}: holdout must be true or false, got {e['holdout']!r}")
        m = e.get("min_size", SOURCE_MIN_SIZE)
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 1:
            raise ConfigError(f"{where}: min_size must be a number of pixels >= 1, got {m!r}")
        classes = e.get("classes") or {}
        if not isinstance(classes, dict) or any(v not in (0, 1, 2, None) for v in classes.values()):
            raise ConfigError(f"{where}: classes must map VOC object names to 0 (wear), 1 (incorrect), "
                              f"2 (not worn) or null (ignore), got {classes!r}")
        if classes and e["kind"] != "voc":
            raise ConfigError(f"{where}: classes applies to kind: voc only (a boxes CSV holds mask 0/1/2)")
    if total >= 1:
        raise ConfigError(f"data.sources: the weights add up to {total:g}; they are shares of each batch and must "
                          f"leave the competition photos a part (sum < 1)")
    if cfg.model.head != "multi":
        raise ConfigError("data.sources needs model.head=multi: the single 18-way head cannot learn from faces "
                          "whose gender or age is unknown (the multi head masks those axes out)")
    if cfg.preprocess.background != "none":
        raise ConfigError("data.sources frames faces from their boxes; it cannot be used with preprocess.background "
                          f"({cfg.preprocess.background})")
