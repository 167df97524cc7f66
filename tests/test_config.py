"""Config: defaults < YAML < overrides, helpful errors, and a saved config that reloads."""
from __future__ import annotations

import pytest
import yaml

from maskcls.config import Config, ConfigError, load_config, save_config


def _yaml(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.data.age_thresholds == [30, 60]


def test_yaml_then_overrides_order(tmp_path):
    p = _yaml(tmp_path, "train:\n  epochs: 7\n  lr: 0.01\nmodel:\n  head: multi\n")
    cfg = load_config(p)
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.head) == (7, 0.01, "multi")
    assert cfg.train.optimizer == "adamw"  # untouched default
    cfg = load_config(p, ["train.epochs=3", "data.image_size=[96,64]", "model.weights=null"])
    assert cfg.train.epochs == 3  # override beats YAML
    assert cfg.train.lr == 0.01  # YAML beats default
    assert cfg.data.image_size == [96, 64]
    assert cfg.model.weights is None
    # later overrides win over earlier ones
    assert load_config(None, ["train.epochs=2", "train.epochs=5"]).train.epochs == 5
    # dict overrides too
    assert load_config(p, {"train": {"epochs": 9}}).train.epochs == 9


def test_int_becomes_float_and_number_becomes_str():
    cfg = load_config(None, ["train.lr=1", "name=123"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.name == "123"


@pytest.mark.parametrize(
    "override,hint",
    [("train.epoch=3", "did you mean 'train.epochs'"), ("trian.epochs=3", "did you mean 'train'"),
     ("model.nmae=resnet18", "did you mean 'model.name'")],
)
def test_unknown_key_did_you_mean(override, hint):
    with pytest.raises(ConfigError, match=hint):
        load_config(None, [override])


def test_unknown_key_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'data.batch_size'"):
        load_config(_yaml(tmp_path, "data:\n  batchsize: 4\n"))


def test_bad_choice_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["loss.name=hinge"])
    msg = str(info.value)
    assert "loss.name" in msg and "hinge" in msg
    for option in ("ce", "focal", "smoothing", "f1"):
        assert option in msg


@pytest.mark.parametrize(
    "override,match",
    [("train.epochs=three", "train.epochs: expected int"), ("train.epochs=2.5", "expected int"),
     ("train.epochs=true", "expected int"), ("train.lr=fast", "expected float"),
     ("data.image_size=224", "expected a list"), ("data.image_size=[a,b]", "expected int"),
     ("train.ema=maybe", "expected bool"), ("train=3", "mapping"), ("train.epochs.x=1", "no sub-keys"),
     ("epochs", "key=value")],
)
def test_type_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override,match",
    [("data.age_thresholds=[60,30]", "rising"), ("data.image_size=[4,4]", "8 pixels"),
     ("data.val_fraction=1.5", "val_fraction"), ("data.fold=7", "data.fold"), ("train.epochs=0", "at least 1"),
     ("eval.tta=[rotate]", "flip, shift"), ("loss.head_weights=[1,2]", "three"),
     ("train.processes=0", "train.processes")],
)
def test_cross_field_checks(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_yaml(tmp_path, "train: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_yaml(tmp_path, "- 1\n- 2\n"))


def test_saved_config_reloads_equal(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "model.head=multi", "data.relabel=fix.csv", "eval.tta=[flip]",
                             "data.train_age_thresholds=[30,58]", "loss.head_weights=[1,2,3]"])
    path = tmp_path / "saved.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == yaml.safe_load(path.read_text())
    assert cfg.copy() == cfg and cfg.copy() is not cfg


def test_more_processes_than_gpus_is_one_config_error(demo_root, monkeypatch, capsys):
    import torch

    from maskcls import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.main(["train", "train.processes=2", f"data.root={demo_root}"]) == 2  # before any worker starts
    err = capsys.readouterr().err
    assert "train.processes=2 but 1 CUDA device(s)" in err and err.count("maskcls: error:") == 1
