"""K-fold (person-disjoint folds, out-of-fold once per person, ensemble predict), Optuna tune, TTA."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import maskcls.engine as engine
import maskcls.kfold as kfold
from maskcls.cli import main
from maskcls.config import ConfigError, load_config
from maskcls.data.reader import read_eval, read_train
from maskcls.decision import decide
from maskcls.evaluation import evaluate_run, predict_source
from maskcls.models import create_model
from maskcls.predict import Predictor, expand_runs
from maskcls.run import Run


@pytest.fixture(autouse=True)
def no_confusion_png(monkeypatch):
    """Drawing the confusion matrix costs ~2 s of matplotlib per run; not what these tests check."""
    monkeypatch.setattr("maskcls.metrics.save_confusion_png", lambda cm, path: None)

def test_kfold_folds_are_person_disjoint_and_oof_covers_every_person_once(tiny_cfg, demo_root, monkeypatch):
    seen = []

    def spy_fit(cfg, *, splits=None, **kw):
        seen.append(splits)
        return engine.fit(cfg, splits=splits, **kw)

    monkeypatch.setattr(kfold, "fit", spy_fit)
    result = kfold.run_kfold(tiny_cfg("data.folds=2", "name=kf"))
    kdir = result["kfold_dir"]
    persons = set(read_train(demo_root)["person"])
    assert len(seen) == 2
    for train, val in seen:
        assert not set(train["person"]) & set(val["person"])  # a fold's val persons are never trained on
        assert set(train["person"]) | set(val["person"]) == persons
    oof = pd.read_csv(f"{kdir}/oof.csv", dtype={"person": str})
    assert oof.groupby("person")["fold"].nunique().eq(1).all()  # each person in exactly one fold
    assert set(oof["person"]) == persons and len(oof) == 12 * 7 and not oof["path"].duplicated().any()
    for k, (_, val) in enumerate(seen):
        assert set(oof.loc[oof["fold"] == k, "person"]) == set(val["person"])
    probs = oof[[f"p{c}" for c in range(18)]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-3) and (probs.argmax(1) == oof["pred"]).all()
    summary = json.loads(open(f"{kdir}/kfold.json").read())
    assert summary["persons"] == 12 and len(summary["fold_f1"]) == 2
    assert summary["oof_f1"] == pytest.approx(result["oof_f1"])

    assert len(expand_runs([kdir])) == 2  # the k-fold folder is a 2-model ensemble
    sub = predict_source([kdir], source=str(demo_root), progress=False)
    assert list(pd.read_csv(sub)["ImageID"]) == list(read_eval(demo_root)["ImageID"])
    m, _ = evaluate_run(kdir, answers=str(demo_root / "eval" / "answers.csv"), progress=False)
    assert m["images"] == 6 * 7

    # without --answers: each fold model scores only the persons its own split held out (out-of-fold)
    for k, (train, val) in enumerate(seen):
        split = pd.read_csv(f"{kdir}/fold{k}/split.csv", dtype=str)
        assert set(split.loc[split["part"] == "val", "person"]) == set(val["person"])
        assert set(split.loc[split["part"] == "train", "person"]) == set(train["person"])
    m, _ = evaluate_run(kdir, progress=False)
    preds = pd.read_csv(f"{kdir}/val_predictions.csv", dtype={"person": str})
    assert len(preds) == 12 * 7 and set(preds["person"]) == persons and not preds["path"].duplicated().any()
    decision = json.loads(open(f"{kdir}/decision.json").read())  # fitted on the out-of-fold probabilities
    oof = oof.assign(decided=decide(probs, decision))
    merged = preds.merge(oof[["path", "decided"]], on="path")
    assert len(merged) == len(oof) and (merged["pred"] == merged["decided"]).all()  # the fold model's own answer
    assert m.get("f1_without_bias", m["f1"]) == pytest.approx(result["oof_f1"])
    assert m["f1"] == pytest.approx(result["oof_f1_with_bias"], abs=1e-5)


SPACE = {
    "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "data.batch_size": {"low": 4, "high": 8, "int": True},
    "loss.name": {"choices": ["ce", "focal"]},
}


def test_tune_study_exports_a_yaml_that_trains(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.epochs=2", "train.max_batches=1")
    cfg.tune.space = SPACE
    from maskcls.tune import run_tune

    out = run_tune(cfg, n_trials=2, study="s1")
    folder = tmp_path / "runs" / "s1"
    assert out["trials"] == 2 and (folder / "study.db").is_file()
    import optuna

    study = optuna.load_study(study_name="s1", storage=out["storage"])
    assert all(sorted(t.intermediate_values) == [0, 1] for t in study.trials)  # per-epoch F1 reported
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert "tune" not in best and best["train"]["lr"] == out["best_params"]["train.lr"]
    assert best["data"]["batch_size"] == out["best_params"]["data.batch_size"]
    assert best["loss"]["name"] == out["best_params"]["loss.name"]
    assert best["train"]["epochs"] == 2 and "image_size" in best["data"]  # the non-default base values
    loaded = load_config(folder / "best.yaml")
    assert loaded.train.lr == out["best_params"]["train.lr"]
    assert main(["train", "-c", str(folder / "best.yaml"), "-q", "name=from_best"]) == 0
    assert (tmp_path / "runs" / "from_best" / "weights" / "best.pt").is_file()

    # a second worker joins the same study and runs only what the budget has left
    assert run_tune(cfg, n_trials=3, study="s1")["trials"] == 3
    assert len(optuna.load_study(study_name="s1", storage=out["storage"]).trials) == 3


def test_tune_rejects_a_bad_space_before_training(tiny_cfg):
    from maskcls.tune import run_tune

    cfg = tiny_cfg()
    cfg.tune.space = {"train.lrr": {"low": 1e-4, "high": 1e-2}}
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        run_tune(cfg)
    cfg.tune.space = {"train.lr": {"low": 1e-2, "high": 1e-4}}
    with pytest.raises(ConfigError, match="low < high"):
        run_tune(cfg)
    cfg.tune.space = {"loss.name": {"choices": ["ce", "hinge"]}}
    with pytest.raises(ConfigError, match="hinge"):
        run_tune(cfg)


# ----------------------------------------------------------------------------- test-time augmentation
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tf_efficientnet_lite0", pretrained=True).eval()


NORM = {"mean": [0.5] * 3, "std": [0.5] * 3}


def test_flip_tta_changes_nothing_for_a_flip_invariant_input(model, tiny_cfg):
    pred = Predictor(Run(model, tiny_cfg(), NORM))
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 48)).astype(np.float32)
    x = (x + x[..., ::-1]) / 2  # mirror-symmetric
    assert np.allclose(pred.batch(x, []), pred.batch(x, ["flip"]), atol=1e-6)
    y = np.random.default_rng(1).standard_normal((2, 3, 64, 48)).astype(np.float32)  # not symmetric: it can fail
    assert not np.allclose(pred.batch(y, []), pred.batch(y, ["flip"]), atol=1e-6)


def test_predictor_applies_eval_tta(model, tiny_cfg, demo_root, monkeypatch):
    import maskcls.predict as predict

    cfg = tiny_cfg("eval.tta=[flip]")
    pred = Predictor(Run(model, cfg, NORM))
    image = np.asarray(read_train(demo_root)["path"].iloc[:2])
    x = torch.from_numpy(np.stack([pred.transform(pred.decoder(p)) for p in image]))
    with torch.no_grad():
        expected = ((model.probs(x) + model.probs(x.flip(3))) / 2).numpy()
        plain = model.probs(x).numpy()
    got = pred.predict_images(list(image))
    assert np.allclose(got, expected, atol=1e-5) and not np.allclose(got, plain, atol=1e-6)
    assert np.allclose(pred.predict_images(list(image), tta=[]), plain, atol=1e-5)

    used = []
    real = predict.tta_views
    monkeypatch.setattr(predict, "tta_views", lambda x, tta: used.append(list(tta)) or real(x, tta))
    frame = read_train(demo_root).iloc[:3]
    probs, kept = pred.predict_frame(frame, progress=False)
    assert used and all(t == ["flip"] for t in used) and probs.shape == (3, 18)
