"""The run folder as the interface: Run.open, overrides (rebuilt or refused), the saved split."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from maskcls.checkpoint import load_checkpoint
from maskcls.cli import main
from maskcls.config import ConfigError
from maskcls.data.reader import read_train
from maskcls.predict import Ensemble
from maskcls.run import Run, run_folder


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_open_folder_or_checkpoint_gives_one_run(run):
    a, b = Run.open(run), Run.open(run / "weights" / "best.pt", device="cpu")
    assert a.folder == b.folder == run == run_folder(run / "weights" / "last.pt")
    assert a.cfg == b.cfg and a.norm == load_checkpoint(run)["norm"]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    split = a.split
    assert set(split.columns) >= {"part", "person", "image"}
    train, val = (set(split.loc[split["part"] == p, "person"]) for p in ("train", "val"))
    assert len(train) == 9 and len(val) == 3 and not train & val


def test_split_is_saved_and_evaluate_scores_only_held_out_persons(run, demo_root, capsys):
    split = pd.read_csv(run / "split.csv", dtype=str)
    val = set(split.loc[split["part"] == "val", "person"])
    assert main(["evaluate", str(run), "-q"]) == 0
    preds = pd.read_csv(run / "val_predictions.csv", dtype={"person": str})
    assert set(preds["person"]) == val and len(preds) == 7 * len(val)
    frame = read_train(demo_root)
    assert set(frame.loc[frame["path"].isin(preds["path"]), "person"]) == val  # the paths agree with the persons
    m = json.loads((run / "val_metrics.json").read_text())
    assert m["images"] == len(preds)


def test_without_split_file_evaluate_asks_for_answers(run, capsys):
    (run / "split.csv").unlink()
    assert main(["evaluate", str(run), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maskcls: error:") and "split.csv" in err and "--answers" in err and "\n" not in err


def _seen_inputs(pred: Ensemble, images) -> torch.Tensor:
    """The tensor the model receives for ``images`` (spying on ``probs``)."""
    seen = []
    model = pred.members[0].run.model
    real = model.probs
    model.probs = lambda x: seen.append(x.detach().clone()) or real(x)
    pred.predict_images(images, tta=[])
    return seen[0]


def test_predict_time_override_changes_the_pixels_the_model_sees(run, demo_root, tmp_path, capsys):
    images = sorted(str(p) for p in (demo_root / "eval" / "images").iterdir())[:3]
    plain = _seen_inputs(Ensemble.load([run], device="cpu"), images)
    for override in ("data.crop_fraction=1.0", "data.decode_size=[96,72]", "preprocess.background=grabcut"):
        pred = Ensemble.load([run], device="cpu", overrides=[override])
        other = _seen_inputs(pred, images)
        assert other.shape == plain.shape and not torch.allclose(other, plain), override
    bigger = _seen_inputs(Ensemble.load([run], device="cpu", overrides=["data.image_size=[96,72]"]), images)
    assert bigger.shape[-2:] == (96, 72)
    # through the CLI: the written probabilities change with the override
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    folder = str(demo_root / "eval" / "images")
    assert main(["predict", str(run), "--source", folder, "--out", str(a), "--probs", "-q"]) == 0
    assert main(["predict", str(run), "data.crop_fraction=1.0", "--source", folder, "--out", str(b), "--probs",
                 "-q"]) == 0
    cols = [f"p{k}" for k in range(18)]
    assert not np.allclose(pd.read_csv(a)[cols].to_numpy(), pd.read_csv(b)[cols].to_numpy(), atol=1e-4)


@pytest.mark.parametrize("override,needle", [("model.head=single", "model.head"),
                                             ("model.name=resnet18", "model.name"),
                                             ("data.age_thresholds=[20,50]", "data.age_thresholds"),
                                             ("data.val_fraction=0.5", "split.csv"),
                                             ("train.lr=0.1", "only changes training")])
def test_override_that_cannot_apply_is_refused_in_one_line(run, override, needle, capsys):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        Run.open(run, [override])
    assert main(["predict", str(run), override, "-q"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("maskcls: error:") and needle in lines[0], err


def test_allowed_overrides_apply(run):
    same = Run.open(run, ["model.head=multi"])  # equal to the trained value: nothing to refuse
    assert same.cfg.model.head == "multi"
    r = Run.open(run, ["eval.tta=[flip]", "eval.batch_size=4", "train.threads=1", "data.cache=false"])
    assert r.cfg.eval.tta == ["flip"] and r.cfg.eval.batch_size == 4 and not r.cfg.data.cache
    assert not next(p for p in r.model.parameters() if p.ndim == 4).is_contiguous()  # always NHWC


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device,needle", [("cuda", "CUDA is not available"), ("gpu", "cuda or cuda:0")])
def test_bad_device_at_predict_time_is_one_line(run, device, needle, capsys):
    assert main(["predict", str(run), f"train.device={device}", "-q"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
