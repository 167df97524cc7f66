"""The model argument is optional: explicit MODEL > $MASKCLS_MODEL > the packaged maskcls/weights/maskcls.onnx.

Tests point MASKCLS_MODEL or the packaged path at a tiny exported demo model, never at the real file.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from maskcls import shipped
from maskcls.cli import main


@pytest.fixture(scope="module")
def tiny_onnx(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported, then copied alone, as the packaged file would be."""
    from maskcls.export import export_onnx

    folder = tmp_path_factory.mktemp("shipped")
    path = export_onnx(tiny_run, folder / "export" / "model.onnx", precision="fp16")
    (folder / "pkg").mkdir()
    return Path(shutil.copy(path, folder / "pkg" / "maskcls.onnx"))


@pytest.fixture
def photos(demo_root, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((demo_root / "eval" / "images").iterdir())[:3]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """Neither $MASKCLS_MODEL nor a packaged file, unless a test sets one."""
    monkeypatch.delenv(shipped.ENV, raising=False)
    monkeypatch.setattr(shipped, "PACKAGED", tmp_path / "absent" / "maskcls.onnx")
    monkeypatch.chdir(tmp_path)


def test_predict_uses_the_packaged_model(no_env, monkeypatch, tiny_onnx, photos, tmp_path):
    monkeypatch.setattr(shipped, "PACKAGED", tiny_onnx)
    assert main(["predict", "--source", str(photos), "-q"]) == 0
    table = pd.read_csv(tmp_path / "predictions.csv")  # in the working folder, not beside the packaged file
    assert sorted(table["file"]) == sorted(p.name for p in photos.iterdir())
    assert not (tiny_onnx.parent / "predictions.csv").exists()


def test_env_wins_over_the_packaged_model(no_env, monkeypatch, tiny_onnx, photos, tmp_path, capsys):
    monkeypatch.setattr(shipped, "PACKAGED", tmp_path / "broken.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    monkeypatch.setenv(shipped.ENV, str(tiny_onnx))
    assert main(["predict", "--source", str(photos), "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 3


def test_explicit_model_wins_over_env(no_env, monkeypatch, tiny_onnx, photos, tmp_path):
    monkeypatch.setenv(shipped.ENV, str(tmp_path / "missing.onnx"))
    assert main(["predict", str(tiny_onnx), "--source", str(photos), "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 3


def test_no_model_is_one_line_saying_how_to_build_it(no_env, photos, capsys):
    assert main(["predict", "--source", str(photos), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskcls: error: no model given")
    assert "make model" in err[0] and shipped.ENV in err[0]


def test_env_naming_a_missing_file_is_one_line(no_env, monkeypatch, tmp_path, photos, capsys):
    monkeypatch.setenv(shipped.ENV, str(tmp_path / "nowhere.onnx"))
    assert main(["predict", "--source", str(photos), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MASKCLS_MODEL=" in err[0] and "nowhere.onnx" in err[0]


def test_serve_without_model_loads_the_env_model(no_env, monkeypatch, tiny_onnx):
    import maskcls.serve.app as app

    seen = {}
    monkeypatch.setattr(app, "serve", lambda runs, **kw: seen.update(runs=runs, **kw))
    monkeypatch.setenv(shipped.ENV, str(tiny_onnx))
    assert main(["serve", "--port", "8123", "-q"]) == 0
    assert seen["runs"] == [str(tiny_onnx)] and seen["engine"] == "onnx" and seen["port"] == 8123


def test_evaluate_the_packaged_model_needs_out(no_env, monkeypatch, tiny_onnx, demo_root, tmp_path, capsys):
    monkeypatch.setattr(shipped, "PACKAGED", tiny_onnx)
    answers = str(demo_root / "eval" / "answers.csv")
    assert main(["evaluate", "--answers", answers, "-q"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["evaluate", "--answers", answers, "--out", str(tmp_path / "scores"), "-q"]) == 0
    m = json.loads((tmp_path / "scores" / "eval_metrics.json").read_text())
    assert m["images"] == len(pd.read_csv(answers))
    assert not (tiny_onnx.parent / "eval_metrics.json").exists()


def test_packaged_model_was_trained_with_configs_shipped_yaml():
    """The real packaged file carries its training config: its data recipe is the one configs/shipped.yaml names."""
    from maskcls.config import load_config
    from maskcls.run import Run

    if not shipped.PACKAGED.is_file():
        pytest.skip("no packaged model in this checkout")
    recipe = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "shipped.yaml"), []).data
    trained = Run.open(shipped.PACKAGED).cfg.data
    assert trained.chin_masks == recipe.chin_masks
    keys = ("kind", "weight", "holdout")  # the path differs by checkout
    assert [{k: s.get(k) for k in keys} for s in trained.sources] == [{k: s.get(k) for k in keys} for s in recipe.sources]
