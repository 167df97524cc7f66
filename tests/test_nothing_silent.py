"""Every path under --source that is not read gets a row or a counted warning; repeated rows are said (issue 22, 8)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from maskcls.cli import main
from maskcls.data.listing import list_images
from maskcls.data.reader import DataError, read_answers


@pytest.fixture
def messy(tmp_path, demo_root) -> Path:
    """good.jpg, a dangling link, a symlink loop, a link to a folder, a text file and a folder that cannot be listed."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "locked").mkdir()
    photo = sorted((demo_root / "eval" / "images").iterdir())[0]
    shutil.copy(photo, src / "good.jpg")
    shutil.copy(photo, src / "sub" / "b.jpg")
    shutil.copy(photo, src / "locked" / "c.jpg")
    os.symlink(src / "gone.jpg", src / "dangling.jpg")
    os.symlink(src / "loop.jpg", src / "loop.jpg")
    os.symlink(src / "sub", src / "linked")
    (src / "notes.txt").write_text("not a photo")
    return src


@pytest.fixture
def locked_folder(monkeypatch, messy):
    """``locked/`` cannot be listed (chmod 000 does not stop root, so the listing itself is refused)."""
    real = os.scandir

    def scandir(path="."):
        if Path(path) == messy / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return messy / "locked"


def test_every_path_not_read_is_a_row_or_a_counted_warning(messy, locked_folder, caplog):
    caplog.set_level(logging.WARNING, "maskcls")
    names = [p.relative_to(messy).as_posix() for p in list_images(messy)]
    assert names == ["dangling.jpg", "good.jpg", "loop.jpg", "sub/b.jpg"]  # the bad links are rows
    text = caplog.text
    assert "1 folder(s) could not be listed; their photos get no row, e.g. " in text and "locked" in text
    assert "1 link(s) to folders were not followed" in text
    assert "1 file(s) are not photos" in text and "notes.txt" in text


def test_predict_gives_bad_links_error_rows(messy, locked_folder, tiny_run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    code = main(["predict", str(tiny_run), "--source", str(messy), "--out", str(out), "-q",
                 f"data.cache_dir={tmp_path / 'c'}"])
    err = capsys.readouterr().err
    assert code == 2 and "2 of 4 images could not be read" in err and "Traceback" not in err
    rows = pd.read_csv(out).set_index("file")["error"].fillna("")
    assert rows["dangling.jpg"] == "broken link: its target is missing"
    assert rows["loop.jpg"] == "cannot read it: Too many levels of symbolic links"
    assert rows["good.jpg"] == "" and rows["sub/b.jpg"] == ""


def test_repeated_image_in_answers_is_one_line(tmp_path):
    """Issue 22 case 6: evaluate --answers with a repeated ImageID ended in a shape-mismatch ValueError."""
    answers = tmp_path / "answers.csv"
    answers.write_text("ImageID,ans\na.jpg,1\nb.jpg,2\na.jpg,1\n")
    with pytest.raises(DataError, match=r"answers.csv:4: ImageID a.jpg repeats line 2 \(1 repeated row\(s\) in all\)"):
        read_answers(answers, tmp_path)


def test_repeated_info_row_is_a_counted_warning_and_kept(tiny_run, demo_root, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(demo_root / "eval", root / "eval")
    info = root / "eval" / "info.csv"
    lines = info.read_text().splitlines()
    info.write_text("\n".join(lines + [lines[1], lines[2]]) + "\n")
    caplog.set_level(logging.WARNING, "maskcls")
    out = tmp_path / "sub.csv"
    assert main(["predict", str(tiny_run), "--source", str(root), "--out", str(out), "-q",
                 f"data.cache_dir={tmp_path / 'c'}"]) == 0
    assert "2 repeated ImageID row(s) in info.csv" in caplog.text
    sub = pd.read_csv(out)
    assert len(sub) == len(lines) + 1  # every info.csv row, in its order
    assert sub["ans"].iloc[-1] == sub["ans"].iloc[1]
