"""Issue 22, case 6: one line, never a traceback, for bad --out paths and a checkpoint claiming another model."""
from __future__ import annotations

import shutil

import pytest
import torch

from maskcls.checkpoint import CheckpointError, load_checkpoint
from maskcls.cli import main


@pytest.fixture(scope="module")
def liar(tiny_run, tmp_path_factory):
    """A copy of the tiny run whose checkpoints' configs claim resnet18 (the weights are still lite0's)."""
    run = tmp_path_factory.mktemp("liar") / "run"
    shutil.copytree(tiny_run, run)
    for which in ("best", "last"):
        path = run / "weights" / f"{which}.pt"
        state = torch.load(path, weights_only=True)
        state["config"]["model"]["name"] = "resnet18"
        torch.save(state, path)
    return run


def test_checkpoint_claiming_another_model_is_one_line(liar):
    with pytest.raises(CheckpointError, match=r"best.pt: its weights do not fit the model its config names "
                                              r"\(model.name=resnet18"):
        load_checkpoint(liar)


@pytest.mark.parametrize("argv", [["predict", "{run}", "--out", "{tmp}/p.csv"], ["serve", "{run}", "--port", "1"],
                                  ["train", "--resume", "{run}"], ["export", "{run}", "--out", "{tmp}/m.onnx"]])
def test_every_command_refuses_the_mixed_up_checkpoint_in_one_line(liar, tmp_path, capsys, monkeypatch, argv):
    import timm

    real = timm.create_model

    def no_download(name, pretrained=False, **kw):
        assert not pretrained, "tried to fetch the claimed model's pretrained weights"
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", no_download)
    code = main([a.format(run=liar, tmp=tmp_path) for a in argv] + ["-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "its weights do not fit" in err, err


@pytest.fixture
def outs(tmp_path):
    (tmp_path / "afile").write_text("x")
    return {"folder": tmp_path, "parent_is_file": tmp_path / "afile" / "out"}


@pytest.mark.parametrize("case", ["folder", "parent_is_file"])
def test_bad_out_is_one_line_for_predict_and_export(tiny_run, outs, capsys, case, tmp_path):
    for argv in (["predict", str(tiny_run), "--out", str(outs[case])], ["export", str(tiny_run), "--out", str(outs[case])]):
        assert main(argv + ["-q", *([f"data.cache_dir={tmp_path / 'c'}"] if argv[0] == "predict" else [])]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"maskcls: error: {outs[case]}: ") and err.count("\n") == 1, err


def test_bad_out_is_one_line_for_evaluate(tiny_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["evaluate", str(tiny_run), "--out", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"maskcls: error: {out}: ") and err.count("\n") == 1, err
