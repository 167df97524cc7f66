"""MODEL_CARD.md: written by fit, refreshed by evaluate, honest about drawn demo data and about limits."""
from __future__ import annotations

import json
import shutil

import pytest

from maskcls.cli import main
from maskcls.model_card import CARD, DEMO_MARKER, is_drawn_demo, write_model_card


@pytest.fixture
def run(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


def test_fit_writes_the_card_with_every_section(run, demo_root):
    card = (run / CARD).read_text()
    for section in ("## Model", "## Training data", "## Metrics", "## Intended use", "## Limits"):
        assert section in card, section
    assert "tf_efficientnet_lite0" in card and str(demo_root.resolve()) in card
    training = json.loads((run / "training_data.json").read_text())
    assert training["train_persons"] == 9 and training["val_persons"] == 3 and training["drawn_demo"] is True
    assert "9 persons" in card and "3 persons" in card
    assert "| val (validation persons" in card  # the best epoch's validation scores
    assert "must not be used to decide anything about a person" in card
    assert "drawn demo data" in card and "Warning" in card


def test_evaluate_refreshes_the_card_with_each_scored_set(run, demo_root, capsys):
    assert "| eval (" not in (run / CARD).read_text()
    assert main(["evaluate", str(run), "--answers", str(demo_root / "eval" / "answers.csv"), "-q"]) == 0
    assert f"model card: {run / CARD}" in capsys.readouterr().out
    card = (run / CARD).read_text()
    m = json.loads((run / "eval_metrics.json").read_text())
    assert "| eval (labelled eval set" in card and f"| {m['images']} | {m['f1']:.4f} |" in card
    assert "| val (" in card


def test_real_data_gets_no_demo_warning(run, tmp_path):
    (tmp_path / "photos").mkdir()
    assert is_drawn_demo(tmp_path / "photos") is False
    write_model_card(run, {"root": str(tmp_path / "photos"), "drawn_demo": False, "train_persons": 5,
                           "train_images": 35, "val_persons": 2, "val_images": 14})
    card = (run / CARD).read_text()
    assert "Warning" not in card and "drawn demo data (synthetic" not in card
    assert "must not be used to decide anything about a person" in card


def test_demo_data_is_marked(demo_root):
    assert (demo_root / DEMO_MARKER).is_file() and is_drawn_demo(demo_root)


def test_card_gives_accuracy_per_race_gender_and_age_band(run, demo_root):
    """The per-group table: persons, photos and each axis's accuracy, checked against the run's own answers."""
    import pandas as pd

    card = (run / CARD).read_text()
    assert "### By group of the validation persons" in card
    val = pd.read_csv(run / "val_answers.csv")  # fit's answers (evaluate's val_predictions.csv is not there yet)
    split = pd.read_csv(run / "split.csv")
    assert len(val) == (split["part"] == "val").sum()  # every held-out photo, once
    people = pd.read_csv(demo_root / "train" / "train.csv", dtype=str)
    race = val["person"].astype(str).str.zfill(6).map(dict(zip(people["id"], people["race"])))
    assert race.notna().all()
    for name in sorted(race.unique()):
        m = (race == name).to_numpy()
        lab, pred = val["label"][m], val["pred"][m]
        row = (f"| race: {name} | {val['person'][m].nunique()} | {int(m.sum())} | "
               f"{(lab // 6 == pred // 6).mean():.3f} | {(lab // 3 % 2 == pred // 3 % 2).mean():.3f} | "
               f"{(lab % 3 == pred % 3).mean():.3f} |")
        assert row in card, row
    female = (val["label"] // 3 % 2 == 1).to_numpy()
    assert f"| gender: female | {val['person'][female].nunique()} | {int(female.sum())} |" in card
    band = int(val["label"].iloc[0] % 3)
    same = (val["label"] % 3 == band).to_numpy()
    assert f"| age band: {['<30', '30-59', '>=60'][band]} | {val['person'][same].nunique()} | {int(same.sum())} |" in card
    m = json.loads((run / "val_metrics.json").read_text())
    assert f"| all | {val['person'].nunique()} | {len(val)} |" in card
    assert abs((val["label"] == val["pred"]).mean() - m["accuracy"]) < 1e-6  # the best epoch's answers


def test_shipped_card_says_how_the_run_used_its_data(tmp_path):
    """The packaged model's card is written from the run's config: realmasks held out or not, chin masks or none."""
    import yaml

    from maskcls.model_card import write_shipped_card

    def card(data: dict) -> str:
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": data}))
        return write_shipped_card(tmp_path / "shipped" / "MODEL_CARD.md", tmp_path).read_text()

    source = {"kind": "boxes", "path": "boxes.csv", "weight": 0.25}
    shipped = card({"sources": [source], "chin_masks": 0.5})
    assert "Chin masks**: 50%" in shipped and "outside the held-out 20 %" in shipped
    plain = card({"sources": [{**source, "holdout": False}]})
    assert "Chin masks" not in plain and "all of it is used for training" in plain
