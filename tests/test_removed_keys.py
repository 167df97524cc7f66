"""Removed config keys: a run, checkpoint or exported model saved with one still loads (one logged line, the key
dropped or mapped); a user who writes one gets one ConfigError line saying what to use instead."""
from __future__ import annotations

import json
import logging
import shutil

import onnx
import pytest
import yaml

from maskcls.checkpoint import load_checkpoint, save_checkpoint
from maskcls.cli import main
from maskcls.config import REMOVED, ConfigError, Config, leaf_keys, load_config
from maskcls.export import export_onnx
from maskcls.onnx_model import META_KEY
from maskcls.predict import Ensemble
from maskcls.run import Run

OLD = {"data": {"preset": "base", "split": "person"}, "train": {"accumulate": 2, "scheduler": "step", "step_size": 2,
                                                                "channels_last": False},
       "loss": {"class_weights": "balanced"}, "tune": {"n_trials": 5, "study": "old"}}


def _with_old_keys(config: dict) -> dict:
    out = json.loads(json.dumps(config))
    for section, values in OLD.items():
        out.setdefault(section, {}).update(values)
    return out


def test_the_surface_is_small():
    keys = leaf_keys()
    assert len(keys) <= 75, len(keys)  # issue #19: at most 75, the features of #20-#22 included
    assert not set(REMOVED) & set(keys)  # a removed key is gone from the config


def test_a_run_saved_with_removed_keys_loads_with_one_line_each(tiny_run, tmp_path, demo_root, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = load_checkpoint(run)
    state.pop("path")
    save_checkpoint({**state, "config": _with_old_keys(state["config"])}, run / "weights" / "best.pt")
    with caplog.at_level(logging.WARNING, logger="maskcls"):
        r = Run.open(run, device="cpu")
    assert r.cfg.data.crop_fraction == 1.0  # data.preset=base kept its meaning: no centre crop
    assert r.cfg.train.scheduler == "cosine"
    lines = [m for m in caplog.messages if "was removed" in m]
    for key in ("data.preset", "data.split", "train.accumulate", "train.step_size", "train.channels_last",
                "loss.class_weights", "tune.n_trials", "tune.study", "train.scheduler=step"):
        assert sum(key in m for m in lines) == 1, (key, lines)
    assert any("data.preset=base" in m and "data.crop_fraction=1.0" in m for m in lines)
    photo = str(sorted((demo_root / "eval" / "images").iterdir())[0])
    assert Ensemble.load([run], device="cpu").predict_images([photo]).shape == (1, 18)


def test_an_exported_model_with_removed_keys_loads(tiny_run, tmp_path, caplog):
    path = export_onnx(tiny_run, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    entry = next(p for p in proto.metadata_props if p.key == META_KEY)
    meta = json.loads(entry.value)
    entry.value = json.dumps({**meta, "config": _with_old_keys(meta["config"])})
    onnx.save(proto, str(path))
    with caplog.at_level(logging.WARNING, logger="maskcls"):
        r = Run.open(path, engine="onnx")
    assert r.cfg.data.crop_fraction == 1.0 and r.transform.crop == tuple(r.cfg.data.decode_size)
    assert any("data.preset=base" in m for m in caplog.messages)


@pytest.mark.parametrize("key,value,hint", [("data.preset", "base", "data.crop_fraction=1.0"),
                                            ("data.split", "image", "whole persons"),
                                            ("tune.n_trials", 5, "--n-trials"),
                                            ("train.channels_last", False, "channels-last")])
def test_a_removed_key_from_a_user_is_one_config_error(key, value, hint, tmp_path, capsys):
    with pytest.raises(ConfigError, match=f"'{key}' was removed; use .*{hint}"):
        load_config(None, [f"{key}={value}"])
    section, name = key.split(".")
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({section: {name: value}}))
    with pytest.raises(ConfigError, match=f"'{key}' was removed"):
        load_config(config)
    assert main(["train", "-c", str(config), "-q"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "was removed" in err[0], err


def test_unknown_keys_still_get_the_did_you_mean_hint():
    with pytest.raises(ConfigError, match="did you mean 'data.crop_fraction'"):
        load_config(None, ["data.crop_fractio=1"])
    assert Config().data.crop_fraction == 0.75
