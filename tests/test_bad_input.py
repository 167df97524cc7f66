"""Bad labels, duplicates, stray paths and unsafe files (issue #10): one clear line each, nothing lost silently."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from maskcls import labels as L
from maskcls.cli import main
from maskcls.config import ConfigError, load_config
from maskcls.data.reader import DataError, Report, read_answers, read_eval, read_train
from maskcls.models import ModelError, create_model


@pytest.fixture
def copy_root(demo_root, tmp_path):
    return Path(shutil.copytree(demo_root, tmp_path / "data"))


def _csv(root: Path) -> Path:
    return root / "train" / "train.csv"


def _edit(root: Path, fn) -> None:
    table = pd.read_csv(_csv(root), dtype=str, keep_default_na=False)
    fn(table).to_csv(_csv(root), index=False)


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert len(msg.splitlines()) == 1, msg
    return msg


# ----------------------------------------------------------------------------- 4. label fields
@pytest.mark.parametrize("age,reason", [("-3", "outside 0..120"), ("250", "outside 0..120"), ("1e9", "outside"),
                                        ("inf", "not a finite number"), ("nan", "not a finite number"),
                                        ("31.5", "whole number"), ("", "not a number")])
def test_bad_age_is_skipped_with_one_line(copy_root, age, reason):
    def bad(t):
        t.loc[2, "age"] = age
        return t

    _edit(copy_root, bad)
    person = pd.read_csv(_csv(copy_root), dtype=str)["id"][2]
    report = Report()
    frame = read_train(copy_root, report=report)
    assert person not in set(frame["person"]) and len(frame) == 77
    assert len(report.warnings) == 1
    assert "train.csv:4" in report.warnings[0] and reason in report.warnings[0], report.warnings


@pytest.mark.parametrize("field,value,reason", [("gender", "robot", "unknown gender"), ("race", " ", "empty race"),
                                                ("id", "", "empty id"), ("path", "../escape", "not a folder name"),
                                                ("path", "/etc", "not a folder name")])
def test_every_label_field_is_checked(copy_root, field, value, reason):
    def bad(t):
        t.loc[0, field] = value
        return t

    _edit(copy_root, bad)
    report = Report()
    assert len(read_train(copy_root, report=report)) == 77
    assert len(report.warnings) == 1 and "train.csv:2" in report.warnings[0] and reason in report.warnings[0]


def test_parse_age():
    assert L.parse_age("42") == 42 and L.parse_age(" 7.0 ") == 7 and L.parse_age(0) == 0 and L.parse_age(120) == 120
    for bad in ("121", "-1", "inf", "-inf", "1e9", "abc", "2.5"):
        with pytest.raises(ValueError):
            L.parse_age(bad)


# ----------------------------------------------------------------------------- 4. duplicates
def test_duplicate_row_is_an_error_unless_allowed(copy_root):
    _edit(copy_root, lambda t: pd.concat([t, t.iloc[[3]]], ignore_index=True))
    with pytest.raises(DataError) as info:
        read_train(copy_root)
    msg = _one_line(info.value)
    assert "train.csv:14" in msg and "repeats line 5" in msg and "allow_duplicates" in msg
    report = Report()
    frame = read_train(copy_root, report=report, allow_duplicates=True)
    assert len(frame) == 84 and (frame.groupby("person").size() == 7).all()  # counted once
    assert len(report.warnings) == 1 and "skipped" in report.warnings[0]


def test_two_folders_sharing_one_id_is_an_error_unless_allowed(copy_root):
    table = pd.read_csv(_csv(copy_root), dtype=str)
    _edit(copy_root, lambda t: t.assign(id=[t["id"][0], *t["id"][1:]]).replace({"id": {t["id"][1]: t["id"][0]}}))
    with pytest.raises(DataError) as info:
        read_train(copy_root)
    msg = _one_line(info.value)
    assert f"id {table['id'][0]} is also on line 2" in msg and "merged into one person" in msg
    report = Report()
    frame = read_train(copy_root, report=report, allow_duplicates=True)
    assert (frame["person"] == table["id"][0]).sum() == 14 and len(report.warnings) == 1


def test_one_folder_under_two_ids_is_an_error(copy_root):
    _edit(copy_root, lambda t: pd.concat([t, t.iloc[[0]].assign(id="999999")], ignore_index=True))
    with pytest.raises(DataError, match="same folder as line 2"):
        read_train(copy_root)


def test_allow_duplicates_is_a_config_key_that_reaches_the_reader(copy_root, tmp_path):
    from maskcls.data.loading import load_train_frame

    _edit(copy_root, lambda t: pd.concat([t, t.iloc[[3]]], ignore_index=True))
    base = [f"data.root={copy_root}", f"project={tmp_path}"]
    with pytest.raises(DataError):
        load_train_frame(load_config(None, base), Report())
    assert len(load_train_frame(load_config(None, [*base, "data.allow_duplicates=true"]), Report())) == 84


# ----------------------------------------------------------------------------- 4./5. relabel
def _relabel(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "relabel.csv"
    p.write_text(text)
    return p


def test_relabel_row_matching_nothing_is_a_warning(demo_root, tmp_path, caplog):
    p = _relabel(tmp_path, "id,field,value,image\n424242,age,40,\n")
    report = Report()
    with caplog.at_level(logging.WARNING, logger="maskcls"):
        read_train(demo_root, relabel=p, report=report)
    assert len(report.warnings) == 1 and "424242" in report.warnings[0] and "nothing changed" in report.warnings[0]
    assert str(p) in report.warnings[0] and "line 2" in report.warnings[0]
    assert any(r.levelno == logging.WARNING and "424242" in r.message for r in caplog.records)


def test_conflicting_relabel_rows_are_an_error_unless_allowed(demo_root, tmp_path):
    pid = sorted(read_train(demo_root)["person"].unique())[0]
    p = _relabel(tmp_path, f"id,field,value,image\n{pid},age,61,\n{pid},age,62,\n")
    with pytest.raises(DataError) as info:
        read_train(demo_root, relabel=p)
    msg = _one_line(info.value)
    assert str(p) in msg and "lines 2 and 3" in msg and "allow_duplicates" in msg
    report = Report()
    frame = read_train(demo_root, relabel=p, report=report, allow_duplicates=True)
    assert set(frame[frame["person"] == pid]["age"]) == {62} and "last row wins" in report.warnings[0]


def test_repeated_identical_relabel_rows_are_fine(demo_root, tmp_path):
    pid = sorted(read_train(demo_root)["person"].unique())[0]
    p = _relabel(tmp_path, f"id,field,value,image\n{pid},age,61,\n{pid},age,61.0,\n")
    assert set(read_train(demo_root, relabel=p).query("person == @pid")["age"]) == {61}


@pytest.mark.parametrize("age", ["inf", "-3", "250", "1e9"])
def test_bad_relabel_age_is_one_line(demo_root, tmp_path, age):
    pid = sorted(read_train(demo_root)["person"].unique())[0]
    p = _relabel(tmp_path, f"id,field,value,image\n{pid},age,{age},\n")
    with pytest.raises(DataError) as info:
        read_train(demo_root, relabel=p)
    assert "line 2" in _one_line(info.value) and "age" in str(info.value)


def test_train_with_age_inf_is_one_line_not_a_traceback(copy_root, tmp_path, capsys, caplog):
    def inf(t):
        t.loc[:, "age"] = "inf"
        return t

    _edit(copy_root, inf)
    code = main(["train", f"data.root={copy_root}", f"project={tmp_path / 'runs'}", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "no usable photos" in err
    why = [r.message for r in caplog.records if "not a finite number" in r.message]  # one line per row says why
    assert len(why) == 12 and "train.csv:2: person" in why[0]


# ----------------------------------------------------------------------------- 5. answers
@pytest.mark.parametrize("text,reason", [("", "not a readable CSV"), ("ImageID,ans\n", "no rows"),
                                         ("ImageID,ans\na.jpg,18\n", ":2: ans '18'"),
                                         ("ImageID,ans\na.jpg,3\nb.jpg,x\n", ":3: ans 'x'"),
                                         ("ImageID,ans\n../a.jpg,3\n", "inside the images folder")])
def test_bad_answers_file_is_one_line(tmp_path, text, reason):
    p = tmp_path / "answers.csv"
    p.write_text(text)
    with pytest.raises(DataError) as info:
        read_answers(p, tmp_path)
    assert reason in _one_line(info.value) and str(p) in str(info.value)


def test_evaluate_with_empty_answers_is_one_line(tiny_run, tmp_path, capsys):
    p = tmp_path / "answers.csv"
    p.write_text("ImageID,ans\n")
    assert main(["evaluate", str(tiny_run), "--answers", str(p), "--out", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no rows" in err and len(err.strip().splitlines()) == 1


def test_eval_info_escaping_the_images_folder(copy_root):
    (copy_root / "eval" / "info.csv").write_text("ImageID\n../../train/train.csv\n")
    with pytest.raises(DataError, match="inside the images folder"):
        read_eval(copy_root)


# ----------------------------------------------------------------------------- 6. stray writes
@pytest.mark.parametrize("name", ["../escape", "a/b", "/tmp/x", "..", "."])
def test_run_name_must_stay_in_the_project_folder(name):
    with pytest.raises(ConfigError, match="plain folder name"):
        load_config(None, [f"name={name}"])


def test_train_name_escape_writes_nothing(demo_root, tmp_path, capsys):
    project = tmp_path / "proj" / "runs"
    code = main(["train", f"data.root={demo_root}", f"project={project}", "name=../escape", "-q"])
    assert code == 2 and "plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "proj" / "escape").exists() and not project.exists()


# ----------------------------------------------------------------------------- 5. unsafe pickles
class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil(path: Path, marker: Path, key: str = "model") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: Payload(marker), "config": {}}, path)
    return path


def test_unsafe_weights_file_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil(tmp_path / "evil.pt", marker)
    with pytest.raises(ModelError) as info:
        create_model("resnet10t", weights=str(evil))
    msg = _one_line(info.value)
    assert "refused" in msg and "weights_only" not in msg and not marker.exists()


def test_unsafe_files_are_refused_by_every_command(demo_root, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "evil_run"
    _evil(run / "weights" / "best.pt", marker)
    _evil(run / "weights" / "last.pt", marker)
    weights = _evil(tmp_path / "evil_weights.pt", marker, key="state_dict")
    data = [f"data.root={demo_root}", f"project={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.decode_size=[32,24]", "data.image_size=[32,24]", "train.progress=false"]
    commands = [["train", *data, f"model.weights={weights}", "model.name=resnet10t"], ["train", "--resume", str(run)],
                ["evaluate", str(run)], ["predict", str(run), "--source", str(demo_root)], ["export", str(run)],
                ["serve", str(run)], ["report", str(run)]]
    for argv in commands:
        assert main([*argv, "-q"]) == 2, argv
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert lines and "refused" in lines[-1] and "Traceback" not in err and "weights_only" not in err, (argv, err)
    assert not marker.exists()


# ----------------------------------------------------------------------------- 7. unreadable training images
def test_unreadable_training_images_reported_before_the_first_epoch(copy_root, tmp_path, caplog, monkeypatch):
    from maskcls import engine

    bad = sorted((copy_root / "train" / "images").iterdir())[1] / "mask2.jpg"
    bad.write_bytes(bad.read_bytes()[:200])

    class FirstEpoch(Exception):
        pass

    def no_training(*a, **k):
        raise FirstEpoch

    monkeypatch.setattr(engine, "train_one_epoch", no_training)
    cfg = load_config(None, [f"data.root={copy_root}", f"project={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'c'}",
                             "data.decode_size=[32,24]", "data.image_size=[32,24]", "train.progress=false",
                             "model.name=resnet10t", "model.pretrained=false"])
    with caplog.at_level(logging.WARNING, logger="maskcls"), pytest.raises(FirstEpoch):
        engine.fit(cfg)
    assert any("unreadable images will be skipped" in r.message and str(bad) in r.message for r in caplog.records)
# ----------------------------------------------------------------------------- kill between last.pt and log.csv
def test_kill_between_checkpoint_and_log_row_loses_no_row(tiny_cfg, monkeypatch):
    """benchmarks/kill_resume.py found it: SIGKILL right after last.pt left log.csv without that epoch."""
    from maskcls import engine

    class Killed(Exception):
        pass

    cfg = tiny_cfg("train.epochs=2", "train.max_batches=1")
    run = Path(cfg.project) / "k"
    real = engine.Logger.log

    def die(self, row):
        raise Killed

    monkeypatch.setattr(engine.Logger, "log", die)
    with pytest.raises(Killed):
        engine.fit(cfg, run_dir=run)
    assert (run / "weights" / "last.pt").is_file() and not (run / "log.csv").exists()
    monkeypatch.setattr(engine.Logger, "log", real)
    engine.fit(cfg, resume=run)
    log = pd.read_csv(run / "log.csv")
    history = torch.load(run / "weights" / "last.pt", weights_only=True)["history"]
    assert log["epoch"].tolist() == [1, 2] and log["train_loss"].tolist() == [h["train_loss"] for h in history]
