"""The HTML report: one self-contained file with every section, built from evaluate's files."""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from maskcls.cli import main
from maskcls.report import worst_errors, write_report


@pytest.fixture
def run(tiny_run, tmp_path):
    """A private copy: the report writes evaluation files into the run folder."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def test_report_evaluates_first_and_has_every_section(run):
    assert not (run / "val_predictions.csv").exists()
    path = write_report(run)
    assert path == run / "val_report.html"
    assert (run / "val_predictions.csv").is_file()  # evaluate_run ran on the val split
    page = path.read_text()
    for section in ("id='metrics'", "id='confusion'", "id='per-class'", "id='curves'", "id='errors'"):
        assert section in page
    assert "macro F1 (18 classes)" in page
    # self-contained: charts and thumbnails are embedded, nothing is fetched
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 3
    assert not re.search(r"(src|href)=['\"](https?:|/|\.\./)", page)
    preds = pd.read_csv(run / "val_predictions.csv")
    wrong = (preds["label"] != preds["pred"]).sum()
    assert page.count("<figure>") == min(wrong, 24)
    assert page.count("data:image/jpeg;base64,") == min(wrong, 24)


def test_worst_errors_most_confident_first():
    preds = pd.DataFrame({"ImageID": list("abcd"), "path": list("abcd"), "label": [0, 1, 2, 3],
                          "pred": [0, 5, 7, 9], "confidence": [0.99, 0.4, 0.9, 0.6]})
    assert worst_errors(preds)["ImageID"].tolist() == ["c", "d", "b"]


def test_report_cli_on_answers(run, demo_root, capsys):
    assert main(["report", str(run), "--answers", str(demo_root / "eval" / "answers.csv"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "eval_report.html" in out
    page = (run / "eval_report.html").read_text()
    assert "scored on <b>eval</b>" in page and "true:" in page


def test_evaluate_writes_report(run, demo_root, capsys):
    assert main(["evaluate", str(run), "--answers", str(demo_root / "eval" / "answers.csv"), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"report: {run / 'eval_report.html'}" in out
    assert (run / "eval_report.html").stat().st_size > 10_000
