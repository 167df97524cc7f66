"""The whole path on real faces (data/maskfaces, `make maskfaces`): slow, run with `make test-slow`.

A short training on a fixed subset of persons, then `evaluate` without
--answers (only the held-out persons), `predict` on the real eval set and
`export` + the ONNX engine, all through the CLI.
"""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import MASKFACES_ROOT, needs_maskfaces

from maskcls.cli import main

pytestmark = [pytest.mark.slow, needs_maskfaces]


def eval_subset(root, n: int):
    """The first ``n`` photos of the real eval set in the competition layout (predicting 6,300 takes minutes)."""
    info = pd.read_csv(MASKFACES_ROOT / "eval" / "info.csv").head(n)
    (root / "eval" / "images").mkdir(parents=True)
    for image_id in info["ImageID"]:
        shutil.copy(MASKFACES_ROOT / "eval" / "images" / image_id, root / "eval" / "images" / image_id)
    info.to_csv(root / "eval" / "info.csv", index=False)
    return root


def test_train_evaluate_predict_export_on_real_faces(tmp_path, capsys):
    run = tmp_path / "runs" / "real"
    common = [f"data.root={MASKFACES_ROOT}", f"data.cache_dir={tmp_path / 'cache'}", "-q"]
    assert main(["train", *common, f"project={tmp_path / 'runs'}", "name=real", "data.max_persons=40",
                 "data.val_fraction=0.25", "data.decode_size=[128,96]", "data.image_size=[96,72]",
                 "train.epochs=1", "train.max_batches=6", "data.batch_size=16"]) == 0
    split = pd.read_csv(run / "split.csv", dtype=str)
    val = set(split.loc[split["part"] == "val", "person"])
    assert len(val) == 10 and not val & set(split.loc[split["part"] == "train", "person"])
    assert main(["evaluate", str(run), "-q"]) == 0
    preds = pd.read_csv(run / "val_predictions.csv", dtype={"person": str})
    assert set(preds["person"]) == val and len(preds) == json.loads((run / "val_metrics.json").read_text())["images"]
    source = eval_subset(tmp_path / "evalsub", 80)
    assert main(["predict", str(run), *common, "--source", str(source), "--out", str(tmp_path / "s.csv")]) == 0
    sub = pd.read_csv(tmp_path / "s.csv")
    assert sub["ImageID"].tolist() == pd.read_csv(source / "eval" / "info.csv")["ImageID"].tolist()
    assert main(["export", str(run), "-q"]) == 0
    assert main(["predict", str(run), *common, "--engine", "onnx", "--source", str(source),
                 "--out", str(tmp_path / "o.csv")]) == 0
    agree = (pd.read_csv(tmp_path / "o.csv")["ans"] == sub["ans"]).mean()
    assert agree > 0.99, agree
    capsys.readouterr()
