"""Decision settings: per-class biases fitted for macro F1, stored with the run, applied on every path."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskcls.checkpoint import load_checkpoint, save_checkpoint
from maskcls.cli import main
from maskcls.decision import class_bias, decide, fit_class_bias, macro_f1
from maskcls.evaluation import evaluate_run, predict_source
from maskcls.predict import Ensemble
from maskcls.run import Run


def skewed(n: int = 4000, seed: int = 0):
    """Probabilities of a model that under-predicts six rare classes (priors baked into its scores)."""
    rng = np.random.default_rng(seed)
    prior = np.ones(18)
    prior[[2, 5, 8, 11, 14, 17]] = 0.15  # the >=60 classes are rare
    prior /= prior.sum()
    labels = rng.choice(18, n, p=prior)
    logits = rng.normal(0, 1, (n, 18)) + np.log(prior)
    logits[np.arange(n), labels] += 1.5
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), labels


def test_fit_class_bias_raises_macro_f1_fast_and_deterministic():
    probs, labels = skewed()
    t0 = time.perf_counter()
    bias = fit_class_bias(probs, labels)
    assert time.perf_counter() - t0 < 2.0
    before, after = macro_f1(labels, probs.argmax(1)), macro_f1(labels, decide(probs, {"class_bias": bias}))
    assert after > before + 0.02, (before, after)
    assert bias[[2, 5, 8, 11, 14, 17]].mean() > bias[[0, 1, 3, 4]].mean()  # the rare classes were lifted
    assert np.array_equal(bias, fit_class_bias(probs, labels))
    # the fitted biases generalise to fresh data from the same model
    p2, l2 = skewed(seed=1)
    assert macro_f1(l2, decide(p2, {"class_bias": bias})) > macro_f1(l2, p2.argmax(1))


def test_decide_is_argmax_without_bias():
    probs, _ = skewed(50)
    assert np.array_equal(decide(probs, None), probs.argmax(1))
    assert np.array_equal(decide(probs, {"class_bias": [0.0] * 18}), probs.argmax(1))
    bias = np.zeros(18)
    bias[7] = 50.0
    assert (decide(probs, {"class_bias": bias}) == 7).all()


# ----------------------------------------------------------------------------- stored with the run, applied everywhere
@pytest.fixture(scope="module")
def biased(tiny_run, tmp_path_factory):
    """A copy of the tiny run whose best.pt holds a large bias towards one class that argmax never picks."""
    run = tmp_path_factory.mktemp("biased") / "run"
    shutil.copytree(tiny_run, run)
    state = load_checkpoint(run)
    assert len(state["decision"]["class_bias"]) == 18  # fit stored one
    plain = Ensemble.load([run], device="cpu", overrides=["eval.class_bias=false"])
    images = sorted(str(p) for p in (Path(plain.cfg.data.root) / "eval" / "images").iterdir())
    seen = set(plain.predict_images(images).argmax(1).tolist())
    target = next(c for c in range(18) if c not in seen)
    bias = [0.0] * 18
    bias[target] = 100.0
    state.pop("path")
    state["config"]["eval"]["class_bias"] = True  # as if trained with eval.class_bias=true (off by default)
    save_checkpoint({**state, "decision": {"class_bias": bias}}, run / "weights" / "best.pt")
    return run, target


def test_stored_bias_changes_predict_and_evaluate(biased, demo_root, tmp_path):
    run, target = biased
    sub = pd.read_csv(predict_source([run], source=str(demo_root), out=str(tmp_path / "a.csv"), progress=False))
    assert (sub["ans"] == target).all()
    off = pd.read_csv(predict_source([run], source=str(demo_root), out=str(tmp_path / "b.csv"),
                                     overrides=["eval.class_bias=false"], progress=False))
    assert not (off["ans"] == target).any()  # the override switches it off
    folder = pd.read_csv(predict_source([run], source=str(demo_root / "eval" / "images"),
                                        out=str(tmp_path / "c.csv"), progress=False))
    assert (folder["class_id"] == target).all()
    m, _ = evaluate_run(run, answers=str(demo_root / "eval" / "answers.csv"), out=str(tmp_path / "m"),
                        progress=False)
    preds = pd.read_csv(tmp_path / "m" / "eval_predictions.csv")
    assert (preds["pred"] == target).all() and "f1_without_bias" in m
    m, _ = evaluate_run(run, out=str(tmp_path / "v"), progress=False)  # held-out persons
    assert (pd.read_csv(tmp_path / "v" / "val_predictions.csv")["pred"] == target).all()


def test_stored_bias_reaches_onnx_and_the_service(biased, demo_root, tmp_path):
    from maskcls.serve.service import Service

    run, target = biased
    assert main(["export", str(run), "-q"]) == 0
    onnx_run = Run.open(run, engine="onnx")
    assert onnx_run.decision["class_bias"][target] == 100.0  # carried in the ONNX metadata
    sub = pd.read_csv(predict_source([run], source=str(demo_root), out=str(tmp_path / "o.csv"), engine="onnx",
                                     progress=False))
    assert (sub["ans"] == target).all()
    photo = np.asarray(Image.open(sorted((demo_root / "eval" / "images").iterdir())[0]).convert("RGB"))
    for engine in ("torch", "onnx"):
        assert Service.load([run], engine=engine).predict([photo])[0]["class_id"] == target, engine


def test_fit_stores_the_decision_in_best_and_last(tiny_cfg):
    from maskcls.engine import fit

    run = fit(tiny_cfg("eval.class_bias=true"))["run_dir"]
    for which in ("best", "last"):
        d = load_checkpoint(run, which)["decision"]
        assert len(d["class_bias"]) == 18 and "validation images" in d["fitted_on"]
        assert d["f1_with_bias"] >= d["f1_argmax"]


def test_class_bias_is_off_by_default(tiny_run):
    """BENCHMARKS.md: fitted on 540 persons it lowered the public F1, so argmax decides unless asked."""
    d = load_checkpoint(tiny_run)["decision"]
    assert not any(d["class_bias"]) and "class_bias=false" in d["fitted_on"]


def test_kfold_folder_applies_its_out_of_fold_bias(tmp_path, tiny_run):
    """A k-fold folder's decision.json beats the members' own biases."""
    kdir = tmp_path / "kf"
    for k in range(2):
        shutil.copytree(tiny_run, kdir / f"fold{k}")
    bias = [0.0] * 18
    bias[3] = 100.0
    (kdir / "decision.json").write_text(json.dumps({"class_bias": bias}))
    from maskcls.predict import Ensemble

    ens = Ensemble.load([kdir], device="cpu", overrides=["eval.class_bias=true"])  # off by default
    assert len(ens.members) == 2 and ens.decision["class_bias"] == bias
    assert (ens.classes(np.full((4, 18), 1 / 18)) == 3).all()
    members_only = Ensemble.load([kdir / "fold0", kdir / "fold1"], device="cpu", overrides=["eval.class_bias=true"])
    assert np.allclose(class_bias(members_only.decision), load_checkpoint(tiny_run)["decision"]["class_bias"])
