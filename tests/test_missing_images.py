"""Unreadable and absent images at evaluation and prediction (issue #10, item 3): counted, marked, never hidden."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maskcls.cli import main
from maskcls.evaluation import evaluate_run
from maskcls.metrics import compute_metrics
from maskcls.predict import Ensemble


@pytest.fixture
def run(tiny_run, tmp_path):
    return str(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.fixture
def data(demo_root, tmp_path):
    return Path(shutil.copytree(demo_root, tmp_path / "data"))


def _damage(data: Path) -> tuple[str, str]:
    """Truncate the first eval image; point the second answers row at a file that does not exist."""
    answers = pd.read_csv(data / "eval" / "answers.csv", dtype=str)
    bad, gone = answers["ImageID"][0], answers["ImageID"][1]
    f = data / "eval" / "images" / bad
    f.write_bytes(f.read_bytes()[:150])
    (data / "eval" / "images" / gone).unlink()
    return bad, gone


def test_metrics_count_no_prediction_as_wrong_on_every_axis():
    t = np.array([0, 0, 17, 17])
    full = compute_metrics(t, np.array([0, -1, 17, -1]))
    assert full["images"] == 4 and full["unreadable"] == 2 and full["accuracy"] == 0.5
    assert full["mask_accuracy"] == full["gender_accuracy"] == full["age_accuracy"] == 0.5
    assert sum(map(sum, full["confusion"])) == 2  # no class receives the missing ones
    assert compute_metrics(t, t)["unreadable"] == 0


def test_evaluate_counts_unreadable_and_absent_images_as_wrong(run, data, tmp_path):
    answers = data / "eval" / "answers.csv"
    clean, _ = evaluate_run(run, answers=str(answers), out=str(tmp_path / "clean"), progress=False)
    bad, gone = _damage(data)
    m, path = evaluate_run(run, answers=str(answers), out=str(tmp_path / "damaged"), progress=False)
    n = len(pd.read_csv(answers))
    assert m["images"] == n == clean["images"] and m["unreadable"] == 2
    preds = pd.read_csv(tmp_path / "damaged" / "eval_predictions.csv", dtype={"ImageID": str})
    assert len(preds) == n
    assert set(preds.loc[preds["pred"] == -1, "ImageID"]) == {bad, gone}
    # the other images keep their answers; the two lost ones can only lower the score
    right_clean = round(clean["accuracy"] * n)
    assert round(m["accuracy"] * n) == right_clean - int((preds["ImageID"].isin([bad, gone]) &
                                                           (pd.read_csv(tmp_path / "clean" / "eval_predictions.csv",
                                                                        dtype={"ImageID": str}).set_index("ImageID")
                                                            .loc[preds["ImageID"], "pred"].to_numpy()
                                                            == preds["label"].to_numpy())).sum())
    assert json.loads(path.read_text())["unreadable"] == 2


def test_evaluate_held_out_counts_unreadable(tiny_run, tmp_path, demo_root):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    data = Path(shutil.copytree(demo_root, tmp_path / "data"))
    split = pd.read_csv(run / "split.csv", dtype=str)
    val = split[split["part"] == "val"]
    m0, _ = evaluate_run(run, out=str(tmp_path / "a"), overrides=[f"data.root={data}"], progress=False)
    frame = pd.read_csv(tmp_path / "a" / "val_predictions.csv")
    victim = Path(frame["path"][0])
    victim.write_bytes(b"not an image")
    m1, _ = evaluate_run(run, out=str(tmp_path / "b"), overrides=[f"data.root={data}"], progress=False)
    assert m1["images"] == m0["images"] == len(frame) and m1["unreadable"] == 1 and len(val) > 0


def test_predict_marks_unreadable_and_fails_unless_allowed(run, data, tmp_path, capsys):
    info = pd.read_csv(data / "eval" / "info.csv", dtype=str)
    victim = data / "eval" / "images" / info["ImageID"][3]
    victim.write_bytes(victim.read_bytes()[:100])
    out = tmp_path / "sub.csv"
    assert main(["predict", run, "--source", str(data), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "1 of 42 images could not be read" in err[-1] and "--allow-missing" in err[-1]
    sub = pd.read_csv(out, dtype={"ImageID": str})
    assert len(sub) == 42 and sub["ans"][3] == -1 and (sub["ans"].drop(3) >= 0).all()
    assert main(["predict", run, "--source", str(data), "--out", str(out), "--allow-missing", "-q"]) == 0
    assert pd.read_csv(out)["ans"][3] == -1


def test_predict_folder_mode_fails_on_unreadable_unless_allowed(run, data, tmp_path, capsys):
    folder = data / "eval" / "images"
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "pred.csv"
    assert main(["predict", run, "--source", str(folder), "--out", str(out), "-q"]) == 2
    assert "could not be read" in capsys.readouterr().err
    assert main(["predict", run, "--source", str(folder), "--out", str(out), "--allow-missing", "-q"]) == 0


def test_without_cache_a_bad_image_is_dropped_not_replaced(run, data):
    info = pd.read_csv(data / "eval" / "info.csv", dtype=str)
    frame = pd.DataFrame({"ImageID": info["ImageID"][:4], "path": [str(data / "eval" / "images" / i)
                                                                  for i in info["ImageID"][:4]]})
    Path(frame["path"][1]).write_bytes(b"junk")
    pred = Ensemble.load([run], device="cpu", overrides=["data.cache=false"])
    probs, kept = pred.predict_frame(frame, progress=False)
    assert kept["ImageID"].tolist() == [frame["ImageID"][i] for i in (0, 2, 3)]
    expected = pred.predict_images([frame["path"][i] for i in (0, 2, 3)])
    assert np.allclose(probs, expected, atol=1e-5)
