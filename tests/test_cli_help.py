"""A discoverable CLI: `maskcls cfg` lists every key, each mode explains itself, bare keys get a hint."""
from __future__ import annotations

import argparse

import pytest

from maskcls.cli import build_parser, main
from maskcls.config import Config, ConfigError, describe_keys, load_config

MODES = ["train", "evaluate", "predict", "demo", "kfold", "tune", "prepare", "export", "serve", "report", "cfg",
         "cache"]
TRAINING_MODES = {"train", "demo", "kfold", "tune", "cfg"}  # where train.* keys make sense as an example


def test_every_config_key_has_help():
    keys = describe_keys()
    assert len(keys) > 60
    missing = [k["key"] for k in keys if not k["help"]]
    assert not missing, f"config keys without a # comment in config.py: {missing}"
    by_key = {k["key"]: k for k in keys}
    assert by_key["train.epochs"]["default"] == Config().train.epochs
    assert by_key["train.epochs"]["help"] == "passes over the training data"
    assert by_key["loss.name"]["choices"] == ("ce", "focal", "smoothing", "f1")


def test_cfg_lists_every_key_with_default_and_help(capsys):
    assert main(["cfg"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for k in describe_keys():
        line = next((ln for ln in lines if ln.startswith(k["key"] + "=")), None)
        assert line is not None, k["key"]
        assert k["help"] in out
    assert any(ln.startswith("train.epochs=3 ") and "passes over the training data" in ln for ln in lines)
    assert any(ln.startswith("loss.name=ce ") and "choices: ce, focal, smoothing, f1" in ln for ln in lines)


def test_cfg_filters_and_shows_overrides(capsys):
    assert main(["cfg", "train", "train.epochs=7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(ln.startswith("train.") or ln.startswith(" ") for ln in lines)
    epochs = next(ln for ln in lines if ln.startswith("train.epochs="))
    assert epochs.startswith("train.epochs=7") and "default: 3" in epochs
    assert main(["cfg", "nosuchkey"]) == 2
    assert "no config key contains 'nosuchkey'" in capsys.readouterr().err


@pytest.mark.parametrize("override,hint", [
    ("epochs=3", "did you mean 'train.epochs'"),
    ("lr=0.1", "did you mean 'train.lr'"),
    ("face_crop=true", "did you mean 'preprocess.face_crop'"),
    ("batch_size=8", "did you mean one of data.batch_size, eval.batch_size"),
    ("trian.epochs=3", "did you mean 'train'"),
])
def test_bare_key_points_to_its_section(override, hint):
    with pytest.raises(ConfigError, match=hint):
        load_config(None, [override])


def test_train_epochs_hint_on_the_command_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "maskcls: error: unknown config key 'epochs'; did you mean 'train.epochs'?"
    assert not (tmp_path / "runs").exists()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_mode_and_argument_has_help():
    subs = _subparsers(build_parser())
    assert sorted(subs) == sorted(MODES)
    for mode, p in subs.items():
        assert p.description and len(p.description) > 40, mode
        assert p.epilog and f"maskcls {mode}" in p.epilog, mode  # examples of this very mode
        for action in p._actions:
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help and len(action.help) > 8, (mode, action.dest)
        text = p.format_help()
        if mode not in TRAINING_MODES:
            assert "train.epochs" not in text, f"`maskcls {mode} --help` suggests a training key"
    serve = subs["serve"].format_help()
    for needle in ("address to listen on", "TCP port", "inference engine", "run folder"):
        assert needle in serve


def test_mode_without_overrides_refuses_them(capsys):
    assert main(["export", "runs/x", "train.epochs=3"]) == 2
    assert "unrecognized arguments: train.epochs=3" in capsys.readouterr().err
