"""export --precision: smaller files that carry the same settings and open like the fp32 one."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from maskcls.cli import main
from maskcls.config import ConfigError
from maskcls.export import META_KEY, export_onnx
from maskcls.predict import Ensemble


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision")
    for p in ("fp32", "fp16", "int8"):
        assert main(["export", str(tiny_run), "--precision", p, "--out", str(folder / f"{p}.onnx"), "-q"]) == 0
    return folder


def meta(path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[META_KEY])


def photos(demo_root, n=6) -> list[str]:
    return sorted(str(p) for p in (demo_root / "eval" / "images").iterdir())[:n]


@pytest.mark.parametrize("precision, ratio", [("fp16", 0.55), ("int8", 0.35)])
def test_smaller_file_same_settings(exported, precision, ratio):
    full, small = meta(exported / "fp32.onnx"), meta(exported / f"{precision}.onnx")
    size = (exported / f"{precision}.onnx").stat().st_size / (exported / "fp32.onnx").stat().st_size
    assert size < ratio
    assert small["precision"] == precision and full["precision"] == "fp32"
    assert {k: v for k, v in small.items() if k != "precision"} == {k: v for k, v in full.items() if k != "precision"}


def test_fp16_answers_like_fp32(exported, demo_root):
    a = Ensemble.load([exported / "fp32.onnx"], engine="onnx", threads=1).predict_images(photos(demo_root))
    b = Ensemble.load([exported / "fp16.onnx"], engine="onnx", threads=1).predict_images(photos(demo_root))
    assert np.abs(a - b).max() < 0.01
    assert (a.argmax(1) == b.argmax(1)).all()


def test_int8_is_quantised_and_opens_like_fp32(exported, demo_root):
    model = onnx.load(str(exported / "int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    pred = Ensemble.load([exported / "int8.onnx"], engine="onnx", threads=1)
    assert pred.cfg.data.image_size == [64, 48]
    p = pred.predict_images(photos(demo_root))
    assert p.shape == (6, 18)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)  # the softmax stays float


def test_unknown_precision_is_a_config_error(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        export_onnx(tiny_run, tmp_path / "x.onnx", precision="fp8")


def test_int8_calibration_folder_without_photos_is_one_line(tiny_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["export", str(tiny_run), "--precision", "int8", "--calibration", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "x.onnx"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "int8 calibration needs images" in err[0]
    assert not (tmp_path / "x.onnx").exists()
