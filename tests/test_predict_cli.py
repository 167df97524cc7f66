"""predict / evaluate / train / demo through ``maskcls.cli.main``, and one-line errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from maskcls import labels as L
from maskcls.cli import main
from maskcls.data.demo import make_demo_data
from maskcls.decision import decide
from maskcls.predict import Ensemble


@pytest.fixture
def run(tiny_run, tmp_path):
    """A private copy of the shared tiny run (commands write into run folders)."""
    return str(shutil.copytree(tiny_run, tmp_path / "run"))


def _ok(argv, capsys) -> str:
    code = main([*argv, "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_predict_submission_in_info_order(run, demo_root, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    printed = _ok(["predict", run, "--source", str(demo_root), "--out", str(out)], capsys)
    assert str(out) in printed
    sub = pd.read_csv(out)
    info = pd.read_csv(demo_root / "eval" / "info.csv")
    assert list(sub.columns) == ["ImageID", "ans"]
    assert sub["ImageID"].tolist() == info["ImageID"].tolist()
    assert sub["ans"].between(0, 17).all()
    # the same answers as the Python API on the same files
    pred = Ensemble.load([run], device="cpu")
    probs = pred.predict_images([str(demo_root / "eval" / "images" / i) for i in info["ImageID"][:5]])
    assert decide(probs, pred.decision).tolist() == sub["ans"][:5].tolist()  # the run's class bias applied


def test_predict_default_out_and_probs(run, demo_root, capsys):
    _ok(["predict", run, "--source", str(demo_root), "--probs"], capsys)
    assert (Path(run) / "submission.csv").is_file()
    probs = pd.read_csv(Path(run) / "submission_probs.csv")
    assert [f"p{k}" for k in range(18)] == [c for c in probs.columns if c.startswith("p") and c[1:].isdigit()]
    assert len(probs) == 42


def test_predict_folder_mode(run, demo_root, tmp_path, capsys):
    folder = demo_root / "eval" / "images"
    out = tmp_path / "pred.csv"
    _ok(["predict", run, "--source", str(folder), "--out", str(out)], capsys)
    table = pd.read_csv(out)
    axes = ["p_mask_wear", "p_mask_incorrect", "p_mask_not_wear", "p_gender_male", "p_gender_female",
            "p_age_under30", "p_age_30_59", "p_age_60plus"]
    # the mask and its own confidence lead (issue #20): what a person looks at first
    base = ["file", "mask", "mask_confidence", "class_id", "gender", "age", "confidence", "low_confidence", "error",
            "warning", *axes]
    assert list(table.columns) == base
    assert sorted(table["file"]) == sorted(p.name for p in folder.glob("*.jpg"))
    for row in table.itertuples():
        d = L.describe(row.class_id)
        assert (row.mask, row.gender, row.age) == (d["mask"], d["gender"], d["age"])
    assert table["confidence"].between(0, 1).all()

    out_p = tmp_path / "pred_probs.csv"
    _ok(["predict", run, "--source", str(folder), "--out", str(out_p), "--probs"], capsys)
    withp = pd.read_csv(out_p)
    cols = [f"p{k}" for k in range(18)]
    assert list(withp.columns) == [*base, *cols]
    p = withp[cols].to_numpy()
    assert np.allclose(p.sum(1), 1, atol=1e-3)
    decision = Ensemble.load([run], device="cpu").decision
    assert (decide(p, decision) == withp["class_id"].to_numpy()).all()
    assert np.allclose(p[np.arange(len(p)), withp["class_id"]], withp["confidence"], atol=1e-3)  # of the chosen class
    # per-axis columns are the marginals of the 18 classes
    cube = p.reshape(-1, 3, 2, 3)
    assert np.allclose(withp[axes[:3]].to_numpy(), cube.sum((2, 3)), atol=1e-4)
    mask_ids = withp["class_id"].to_numpy() // 6  # the decided class's mask state, with its marginal probability
    assert np.allclose(withp["mask_confidence"], cube.sum((2, 3))[np.arange(len(p)), mask_ids], atol=1e-3)
    assert np.allclose(withp[axes[3:5]].to_numpy(), cube.sum((1, 3)), atol=1e-4)
    assert np.allclose(withp[axes[5:]].to_numpy(), cube.sum((1, 2)), atol=1e-4)
    assert (withp["low_confidence"] == (withp["confidence"] < 0.5)).all()
    assert withp["warning"].str.contains("drawn demo data").all()  # the tiny run trained on drawn faces


def test_predict_csv_has_a_row_per_unreadable_file(run, demo_root, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((demo_root / "eval" / "images").iterdir())[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "a_truncated.jpg").write_bytes((folder / p.name).read_bytes()[:200])
    (folder / "z_text.png").write_text("not a picture")
    out = tmp_path / "pred.csv"
    assert main(["predict", run, "--source", str(folder), "--out", str(out), "-q"]) == 2  # said, not hidden
    assert "2 of 5 images could not be read" in capsys.readouterr().err
    _ok(["predict", run, "--source", str(folder), "--out", str(out), "--allow-missing"], capsys)
    table = pd.read_csv(out)
    assert table["file"].tolist() == sorted(p.name for p in folder.iterdir())  # every file, in folder order
    bad = table.set_index("file").loc[["a_truncated.jpg", "z_text.png"]]
    assert bad["class_id"].isna().all() and bad["mask"].isna().all()
    assert "corrupt or truncated" in bad.loc["a_truncated.jpg", "error"]
    assert "not an image" in bad.loc["z_text.png", "error"]
    good = table[table["error"].isna()]
    assert len(good) == 3 and good["class_id"].notna().all()


def test_evaluate_answers(run, demo_root, tmp_path, capsys):
    out = tmp_path / "metrics"
    printed = _ok(["evaluate", run, "--answers", str(demo_root / "eval" / "answers.csv"), "--out", str(out)], capsys)
    assert "macro F1" in printed
    for name in ("eval_metrics.json", "eval_metrics.txt", "eval_metrics_confusion.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    m = json.loads((out / "eval_metrics.json").read_text())
    assert m["images"] == 42 and 0 <= m["f1"] <= 1
    preds = pd.read_csv(out / "eval_predictions.csv")
    answers = pd.read_csv(demo_root / "eval" / "answers.csv")
    assert (preds["label"].to_numpy() == answers["ans"].to_numpy()).all()
    assert m["accuracy"] == pytest.approx(float((preds["label"] == preds["pred"]).mean()))


def test_evaluate_validation_split(run, tmp_path, capsys):
    _ok(["evaluate", run, "--out", str(tmp_path / "v")], capsys)
    m = json.loads((tmp_path / "v" / "val_metrics.json").read_text())
    assert m["images"] == 21  # 3 of 12 persons held out


def test_cli_train_and_resume(demo_root, tmp_path, capsys):
    common = [f"data.root={demo_root}", f"project={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
              "data.val_fraction=0.25", *TINY, "train.max_batches=1"]
    printed = _ok(["train", *common, "name=cli"], capsys)
    run = tmp_path / "runs" / "cli"
    assert str(run) in printed and (run / "weights" / "best.pt").is_file()
    _ok(["train", "--resume", str(run), "train.epochs=2"], capsys)
    assert pd.read_csv(run / "log.csv")["epoch"].tolist() == [1, 2]


def test_cli_train_on_all_persons_says_there_is_no_validation(demo_root, tmp_path, capsys):
    printed = _ok(["train", f"data.root={demo_root}", f"project={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'c'}",
                   "data.val_fraction=0", *TINY, "train.max_batches=1"], capsys)
    assert "no validation persons (data.val_fraction=0)" in printed and "val F1: -" not in printed


def test_cli_demo_on_tiny_data(tmp_path, capsys):
    data = make_demo_data(tmp_path / "demo", persons=12, eval_persons=6, size=(48, 64))
    printed = _ok(["demo", "--data", str(data), f"project={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
                   "data.val_fraction=0.25", *TINY], capsys)
    assert "demo done" in printed and "eval macro F1" in printed
    run = tmp_path / "runs" / "demo"
    assert (run / "weights" / "best.pt").is_file()
    assert (run / "eval_metrics.json").is_file()
    card = (run / "MODEL_CARD.md").read_text()
    assert "drawn demo data" in card and "| eval (labelled eval set" in card and "| val (" in card
    sub = pd.read_csv(run / "submission.csv")
    assert sub["ImageID"].tolist() == pd.read_csv(data / "eval" / "info.csv")["ImageID"].tolist()


@pytest.mark.parametrize(
    "argv,needle",
    [(["predict", "/nonexistent/run"], "checkpoint not found"),
     (["evaluate", "/nonexistent/run"], "checkpoint not found"),
     (["train", "train.epochs=many"], "train.epochs"),
     (["train", "train.epoch=3"], "did you mean"),
     (["train", "--bogus"], "unrecognized arguments"),
     (["train", "data.root=/nonexistent/data", "train.progress=false"], "/nonexistent/data"),
     (["train", "-c", "/nonexistent.yaml"], "config file not found"),
     (["frobnicate"], "invalid choice"),
     (["predict"], "required")],
)
def test_bad_input_is_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing lands in the repository
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("maskcls: error:") and needle in lines[0]
    assert "Traceback" not in err + out


def test_bad_source_and_answers_are_one_line(run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["predict", run, "--source", str(empty)], "no .jpg"),
             (["predict", run, "--source", str(tmp_path / "nowhere")], "not found"),
             (["evaluate", run, "--answers", str(tmp_path / "answers.csv")], "answers.csv")]
    for argv, needle in cases:
        code = main([*argv, "-q"])
        out, err = capsys.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("maskcls: error:") and needle in lines[0], lines[0]
