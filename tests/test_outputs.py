"""End-of-run outputs are written atomically (temp file + rename) and never lose an older file (issue 22, 2 and 6)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maskcls import io as mio
from maskcls.io import OutputError, atomic_write, check_folder, check_output, write_text

SRC = Path(__file__).resolve().parents[1] / "src" / "maskcls"


def _frame(names):
    return pd.DataFrame({"ImageID": names, "path": names})


def _probs(n):
    p = np.full((n, 18), 0.01, np.float32)
    p[:, 3] = 0.83
    return p


def _writers(tmp_path):
    """(name, target file, function writing it) for each end-of-run writer."""
    from maskcls.config import Config, save_config
    from maskcls.metrics import compute_metrics, write_metrics
    from maskcls.model_card import write_model_card
    from maskcls.predict import write_folder_predictions, write_submission

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    m = compute_metrics(np.array([0, 3, 5]), np.array([0, 3, 4]))
    return [
        ("submission", tmp_path / "sub.csv", lambda p: write_submission(_frame(["a.jpg"]), _probs(1), p)),
        ("folder predictions", tmp_path / "pred.csv",
         lambda p: write_folder_predictions(_frame(["a.jpg"]), _probs(1), p, with_probs=True)),
        ("metrics json", run / "m.json", lambda p: write_metrics(m, p.parent, "m")),
        ("metrics txt", run / "m.txt", lambda p: write_metrics(m, p.parent, "m")),
        ("confusion png", run / "m_confusion.png", lambda p: write_metrics(m, p.parent, "m")),
        ("model card", run / "MODEL_CARD.md", lambda p: write_model_card(p.parent, {"persons": 3})),
        ("config", run / "config.yaml", lambda p: save_config(Config(), p)),
    ]


@pytest.mark.parametrize("which", range(7))
def test_end_of_run_output_is_not_written_in_place(tmp_path, monkeypatch, which):
    """A failure (or kill) before the final rename leaves the old file whole: the write went to a temporary file."""
    name, target, write = _writers(tmp_path)[which]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"old output\n")

    def killed(src, dst):  # the process dies after writing the new content, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(mio.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write(target)
    assert target.read_bytes() == b"old output\n", f"{name} was written in place"
    assert not [f for f in target.parent.iterdir() if ".tmp" in f.name], "temporary file left behind"
    monkeypatch.undo()
    write(target)  # and without the kill it is written
    assert target.read_bytes() != b"old output\n"


def test_atomic_write_keeps_the_old_file_when_the_writer_raises(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(out) as f:
        f.write("half of the new")
        raise RuntimeError("boom")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_non_utf8_names_are_escaped_not_a_traceback(tmp_path):
    name = os.fsdecode(b"bad\xff\xfe.jpg")  # what os.listdir gives for a Latin-1 name: surrogate escapes
    write_text(tmp_path / "x.txt", name)
    assert (tmp_path / "x.txt").read_text() == "bad\\udcff\\udcfe.jpg"
    from maskcls.predict import write_folder_predictions

    out = write_folder_predictions(_frame([name, "good.jpg"]), _probs(2), tmp_path / "p.csv")
    assert pd.read_csv(out)["file"].tolist() == ["bad\\udcff\\udcfe.jpg", "good.jpg"]


@pytest.mark.parametrize("case", ["folder", "parent_is_file", "read_only"])
def test_bad_output_path_is_one_line(tmp_path, monkeypatch, case):
    (tmp_path / "afile").write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    target = {"folder": tmp_path, "parent_is_file": tmp_path / "afile" / "out.csv", "read_only": ro / "out.csv"}[case]
    if case == "read_only" and os.access(ro, os.W_OK):  # root writes anywhere: answer as for any other user
        real = os.access
        monkeypatch.setattr(mio.os, "access", lambda p, m: False if Path(p) == ro else real(p, m))
    with pytest.raises(OutputError, match=re.escape(str(target))):
        check_output(target)
    with pytest.raises(OutputError):
        write_text(target, "x")
    if case == "parent_is_file":
        with pytest.raises(OutputError):
            check_folder(target)
    with pytest.raises(OutputError, match="is a file"):
        check_folder(tmp_path / "afile")


def test_every_end_of_run_write_goes_through_maskcls_io():
    """No module writes a CSV, JSON, text or figure in place (streamed logs and data preparation are listed)."""
    in_place = re.compile(r"\.write_text\(|\.to_csv\((?!f\b|tmp)|np\.save\((?!tmp)|savefig\((?!tmp|buf)")
    allowed = {"io.py", "data/demo.py", "demo_run.py"}  # data made for the demo, not a run's output
    found = []
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC).as_posix()
        if rel in allowed:
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if in_place.search(line):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "written in place (use maskcls.io.atomic_write / write_text / write_csv):\n" + "\n".join(found)


def test_predict_folder_with_a_non_utf8_name_keeps_going(tiny_run, tmp_path, demo_root):
    """Issue 22 case 4: the old out.csv was replaced by a header-only file after a 34-line traceback."""
    src = tmp_path / "d"
    src.mkdir()
    photo = next((Path(demo_root) / "eval" / "images").iterdir()).read_bytes()
    (src / "good.jpg").write_bytes(photo)
    with open(os.path.join(os.fsencode(src), b"bad\xff\xfe.jpg"), "wb") as f:
        f.write(photo)
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    from maskcls.cli import main

    assert main(["predict", str(tiny_run), "--source", str(src), "--out", str(out), "-q",
                 f"data.cache_dir={tmp_path / 'c'}"]) == 0
    assert sorted(pd.read_csv(out)["file"]) == ["bad\\udcff\\udcfe.jpg", "good.jpg"]
