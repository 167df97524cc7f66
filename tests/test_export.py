"""ONNX export: same probabilities as PyTorch, dynamic batch, settings carried in the file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from maskcls.checkpoint import CheckpointError
from maskcls.cli import main
from maskcls.export import export_onnx
from maskcls.onnx_model import META_KEY
from maskcls.predict import Ensemble, Predictor
from maskcls.run import Run


@pytest.fixture(scope="module")
def onnx_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with weights/model.onnx written by the CLI."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run, run)
    assert main(["export", str(run), "-q"]) == 0
    return run


def images(root: Path, n: int) -> list[str]:
    return sorted(str(p) for p in (root / "eval" / "images").iterdir())[:n]


def test_export_writes_onnx_with_settings(onnx_run):
    path = onnx_run / "weights" / "model.onnx"
    model = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}[META_KEY])
    pre = meta["preprocessing"]
    assert pre["decode_size"] == [64, 48] and pre["image_size"] == [64, 48]
    assert pre["head"] == meta["config"]["model"]["head"] == "multi"  # the default layout
    assert {"mean", "std", "crop_fraction", "preprocess"} <= set(pre)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # dynamic, not a fixed 2


@pytest.mark.parametrize("n", [3, 1])
def test_onnx_matches_torch(onnx_run, demo_root, n):
    ort_pred, torch_pred = Ensemble.load([onnx_run], engine="onnx", threads=1), Ensemble.load([onnx_run], device="cpu")
    assert ort_pred.cfg.data.decode_size == torch_pred.cfg.data.decode_size
    assert ort_pred.members[0].decoder.settings() == torch_pred.members[0].decoder.settings()
    imgs = images(demo_root, n)
    a, b = ort_pred.predict_images(imgs), torch_pred.predict_images(imgs)
    assert a.shape == (n, 18)
    assert np.abs(a - b).max() < 1e-4
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)


def test_onnx_single_head_matches_torch(tiny_run, demo_root, tmp_path):
    """The one 18-way head layout exports its softmax too (the default is three heads)."""
    from maskcls.config import from_dict
    from maskcls.export import export_model
    from maskcls.models import create_model

    cfg = Ensemble.load([tiny_run], device="cpu").cfg
    cfg = from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "head": "single"}})
    model = create_model(cfg.model.name, head="single", pretrained=False).eval()
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    path = export_model(model, cfg, norm, tmp_path / "single.onnx")
    ort_pred = Ensemble.load([path])  # engine auto: an .onnx file opens with onnxruntime
    assert ort_pred.members[0].run.engine == "onnx"
    torch_pred = Predictor(Run(model, cfg, norm))
    imgs = images(demo_root, 2)
    assert np.abs(ort_pred.predict_images(imgs) - torch_pred.predict_images(imgs)).max() < 1e-4


def test_onnx_engine_in_predict(onnx_run, demo_root, tmp_path):
    """``maskcls predict --engine onnx`` path: same submission as the torch engine."""
    from maskcls.evaluation import predict_source

    cache = [f"data.cache_dir={tmp_path / 'cache'}"]
    a = predict_source([onnx_run], source=str(demo_root), out=str(tmp_path / "onnx.csv"), engine="onnx",
                       overrides=cache, progress=False)
    b = predict_source([onnx_run], source=str(demo_root), out=str(tmp_path / "torch.csv"), overrides=cache,
                       progress=False)
    assert a.read_text() == b.read_text() and len(a.read_text().splitlines()) > 10
    assert Ensemble.load([onnx_run], engine="onnx").members[0].run.engine == "onnx"


def test_missing_onnx_is_a_clear_error(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(CheckpointError, match="maskcls export"):
        Ensemble.load([run], engine="onnx")
    assert main(["predict", str(run), "--engine", "onnx", "-q"]) == 2
    assert "maskcls export" in capsys.readouterr().err


def test_export_custom_out(tiny_run, tmp_path):
    out = export_onnx(tiny_run, tmp_path / "x" / "m.onnx")
    assert out.is_file() and not any(out.parent.glob(".*.tmp"))
