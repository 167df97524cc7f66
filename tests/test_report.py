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
    for section in ("id='metrics'", "id='confusion'", "id='confusion-normalised'", "id='axis-confusion'",
                    "id='per-class'", "id='curves'", "id='errors'"):
        assert section in page
    assert "macro F1 (18 classes)" in page
    # self-contained: charts and thumbnails are embedded, nothing is fetched
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 5
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


def test_axis_confusions_fold_the_18_classes():
    from maskcls import labels as L
    from maskcls.metrics import axis_confusions, compute_metrics, normalise_rows

    t = [L.encode(0, 0, 0), L.encode(0, 1, 2), L.encode(2, 1, 1), L.encode(1, 0, 0)]
    p = [L.encode(0, 0, 1), L.encode(2, 1, 2), L.encode(2, 0, 1), L.encode(1, 0, 0)]
    ax = axis_confusions(compute_metrics(t, p)["confusion"])
    assert ax["mask"].tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert ax["gender"].tolist() == [[2, 0], [1, 1]]
    assert ax["age"].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    n = normalise_rows(ax["gender"])
    assert n.tolist() == [[1.0, 0.0], [0.5, 0.5]]
    assert normalise_rows([[0, 0], [1, 3]]).tolist() == [[0, 0], [0.25, 0.75]]  # an empty row stays 0


def test_confusion_charts_have_a_colour_bar(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from maskcls.metrics import plot_confusion

    fig, ax = plt.subplots()
    plot_confusion(ax, [[3, 1], [0, 4]], ["a", "b"], normalised=True)
    bars = [a for a in fig.axes if a is not ax]
    assert len(bars) == 1 and bars[0].get_ylabel() == "share of the true class"
    plt.close(fig)


def test_epoch_ticks_are_integers(tmp_path):
    from maskcls.report import curves_figure

    log = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_f1": [0.3, 0.4]}).to_csv(log, index=False)
    fig = curves_figure([log])
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
