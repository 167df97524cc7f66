"""Every face of a photo or a video: faces.csv, annotated copies, tracks, interrupts and scene scores (issue 21)."""
from __future__ import annotations

import importlib.util
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from maskcls import labels as L
from maskcls.cli import main
from maskcls.data.demo import draw_face
from maskcls.predict import Ensemble, axis_probs
from maskcls.scenes import finder as finder_mod
from maskcls.scenes.output import COLORS, COLUMNS
from maskcls.scenes.pipeline import predict_scenes
from maskcls.scenes.scoring import match_photo
from maskcls.scenes.sources import resolve_source
from maskcls.scenes.tracking import Smoother, label_changes

BG = 200  # the canvas grey the stub detector looks past
FACES = [(20, 40, 116, 168), (180, 60, 276, 188)]  # where two drawn portraits are pasted (x0, y0, x1, y1)
needs_scenes = pytest.mark.skipif(importlib.util.find_spec("trackers") is None or
                                  importlib.util.find_spec("supervision") is None,
                                  reason="needs the scenes extra: pip install 'maskcls[scenes]'")


def two_faces(shift: int = 0, masks=(0, 2)) -> np.ndarray:
    """A 320x240 grey picture with two drawn portraits at ``FACES`` (moved right by ``shift`` px)."""
    rng = np.random.default_rng(0)
    canvas = np.full((240, 320, 3), BG, np.uint8)
    for (x0, y0, x1, y1), m in zip(FACES, masks):
        face = np.asarray(draw_face(rng, mask=m, gender=0, age=30, size=(x1 - x0, y1 - y0)))
        canvas[y0:y1, x0 + shift:x1 + shift] = face
    return canvas


def blobs(rgb: np.ndarray):
    """Stub detector: the boxes of what is not the grey background (the pasted portraits), score 0.9."""
    fg = (np.abs(rgb.astype(int) - BG).sum(2) > 30).astype(np.uint8)  # past video compression noise
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg)
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, a in stats[1:] if a > 500]).reshape(-1, 4)
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
    return boxes[order], np.full(len(boxes), 0.9)


@pytest.fixture
def stub_detector(monkeypatch):
    """The scene detector replaced by ``blobs`` (drawn faces are not what MTCNN was trained on)."""
    monkeypatch.setattr(finder_mod, "scene_detector", lambda name, side, video=False: ("haar", blobs))


@pytest.fixture
def run(tiny_run, tmp_path):
    return str(shutil.copytree(tiny_run, tmp_path / "run"))


def write_video(path, frames: int = 6, fps: float = 10.0):
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for k in range(frames):
        out.write(cv2.cvtColor(two_faces(shift=2 * (k % 20)), cv2.COLOR_RGB2BGR))
    out.release()
    return path


def read_video(path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, f = cap.read()
        if not ok:
            return frames
        frames.append(f)


@needs_scenes
def test_faces_csv_columns_boxes_and_annotated_photo(run, stub_detector, tmp_path, capsys):
    photo = tmp_path / "in" / "two.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), cv2.cvtColor(two_faces(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "o" / "faces.csv"
    assert main(["predict", run, "--source", str(photo), "--faces", "all", "--save", "--out", str(out), "-q"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 and table["file"].tolist() == ["two.png"] * 2 and (table["frame"] == 0).all()
    assert (table["track"] == "").all() and (table["error"] == "").all() and table["face"].tolist() == [0, 1]
    boxes = sorted(map(tuple, table[["x0", "y0", "x1", "y1"]].to_numpy().tolist()))
    assert boxes == sorted(FACES)  # original pixels
    # the answers are the ensemble's on the two faces framed like predict frames a face, in one batch
    ens = Ensemble.load([run])
    f = finder_mod.FaceFinder(ens)
    probs = ens.predict_images(f.crops(two_faces(), np.array(table[["x0", "y0", "x1", "y1"]])), photos=False)
    classes = ens.classes(probs)
    assert table["mask"].tolist() == [L.describe(c)["mask"] for c in classes]
    np.testing.assert_allclose(table["confidence"], probs[np.arange(2), classes], atol=1e-3)
    np.testing.assert_allclose(table["mask_confidence"], axis_probs(probs)[np.arange(2), classes // 6], atol=1e-3)
    # annotated copy: same size, each box drawn in its mask state's colour
    drawn = cv2.imread(str(tmp_path / "o" / "annotated" / "two.png"))
    assert drawn.shape == (240, 320, 3)
    for (_, r) in table.iterrows():
        colour = tuple(int(COLORS[r["mask"]][i:i + 2], 16) for i in (5, 3, 1))  # BGR
        assert tuple(drawn[(r["y0"] + r["y1"]) // 2, r["x1"] - 1]) == colour  # right edge of the box


def test_photo_without_face_and_unreadable_photo_get_error_rows(run, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(finder_mod, "scene_detector", lambda name, side, video=False: ("haar", lambda rgb: (np.zeros((0, 4), int), np.zeros(0))))
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((60, 80, 3), BG, np.uint8))
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "faces.csv"
    assert main(["predict", run, "--source", str(folder), "--faces", "all", "--out", str(out), "-q"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table["file"].tolist() == ["a.png", "b.jpg"] and (table["x0"] == "").all()
    assert table["error"][0] == "no face found" and table["error"][1] and table["error"][1] != "no face found"


@needs_scenes
def test_video_one_row_per_face_per_frame_tracks_and_mp4(run, stub_detector, tmp_path, capsys):
    video = write_video(tmp_path / "door.mp4", frames=6)
    out = tmp_path / "faces.csv"
    assert main(["predict", run, "--source", str(video), "--save", "--out", str(out), "scene.every=2", "-q"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COLUMNS
    assert table.groupby("frame").size().tolist() == [2] * 6  # one row per face per frame
    later = table[table["frame"] >= 2]  # ByteTrack confirms a face on its second detection
    assert (later["track"] != "").all() and later.groupby("frame")["track"].nunique().eq(2).all()
    assert later.groupby("track")["x0"].nunique().max() == 2  # boxes held between detections (every 2nd frame)
    frames = read_video(tmp_path / "annotated" / "door.mp4")
    assert len(frames) == 6 and frames[0].shape == (240, 320, 3)


@needs_scenes
def test_stream_stopped_midway_keeps_rows_and_a_readable_video(run, stub_detector, tmp_path):
    video = write_video(tmp_path / "door.mp4", frames=8)
    ens = Ensemble.load([run])

    seen = {}

    def stop(k):
        if k == 2:  # rows are on disk while the stream still runs (flushed per frame)
            seen["rows"] = len(pd.read_csv(tmp_path / "faces.csv"))
        if k == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_scenes(ens, resolve_source(str(video)), tmp_path / "faces.csv", save=tmp_path / "ann",
                       progress=False, on_frame=stop)
    table = pd.read_csv(tmp_path / "faces.csv")
    assert sorted(table["frame"].unique()) == [0, 1, 2, 3] and len(table) == 8 and seen["rows"] == 6
    assert len(read_video(tmp_path / "ann" / "door.mp4")) == 4


def test_missing_source_and_bad_source_are_one_line(run, tmp_path, capsys):
    for argv, needle in [([], "give --source: a photo, a folder"),
                         (["--source", str(tmp_path / "nowhere.jpg")], "not found; --source takes"),
                         (["--source", str(tmp_path / "*.png")], "matches no"),
                         (["--source", __file__], "neither a photo")]:
        assert main(["predict", run, *argv, "-q"]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("maskcls: error:") and needle in err[0], err


def test_single_photo_and_glob_keep_one_row_per_photo(run, demo_root, tmp_path, capsys):
    photos = sorted((demo_root / "eval" / "images").iterdir())
    out = tmp_path / "one.csv"
    assert main(["predict", run, "--source", str(photos[0]), "--out", str(out), "-q"]) == 0
    assert pd.read_csv(out)["file"].tolist() == [photos[0].name]
    assert main(["predict", run, "--source", str(demo_root / "eval" / "images" / "*.jpg"), "--out", str(out),
                 "-q"]) == 0
    assert len(pd.read_csv(out)) == len([p for p in photos if p.suffix == ".jpg"])


def test_smoother_averages_a_track_and_one_turns_it_off():
    a, b = np.eye(18, dtype=np.float32)[[0]], np.eye(18, dtype=np.float32)[[12]]
    s = Smoother(3)
    s(np.array([7]), a)
    mixed = s(np.array([7]), b)
    np.testing.assert_allclose(mixed[0, [0, 12]], [0.5, 0.5])
    assert s(np.array([-1]), b)[0, 12] == 1  # an unconfirmed face keeps its own answer
    off = Smoother(1)
    off(np.array([7]), a)
    assert off(np.array([7]), b)[0, 12] == 1


def test_label_changes_counts_flips_within_tracks():
    t = pd.DataFrame({"track": [1, 1, 1, 2, 2, ""], "frame": [0, 1, 2, 0, 1, 0],
                      "label": ["a", "b", "b", "c", "c", "z"]})
    assert label_changes(t) == pytest.approx(1 / 3)


def test_scene_matching_rules():
    truth = np.array([[0, 0, 40, 40], [100, 100, 120, 120], [200, 0, 300, 100]], float)  # 40 px, 20 px, 100 px
    found = np.array([[2, 2, 40, 40], [100, 100, 121, 121], [400, 400, 450, 450], [0, 0, 40, 40],
                      [101, 101, 121, 121]], float)
    hits, false = match_photo(truth, found)
    assert hits in ({0: 0}, {0: 3})  # the 20 px face is not counted, the 100 px face was missed
    # the far box and the second box on the 40 px face are false; both boxes on the 20 px face are ignored
    assert false.tolist().count(True) == 2 and not false[1] and not false[4] and false[2]


@pytest.mark.skipif(importlib.util.find_spec("mtcnnruntime") is None, reason="needs maskcls[mtcnn]")
def test_scene_mtcnn_boxes_are_in_original_pixels():
    small = two_faces(masks=(2, 2))
    big = cv2.resize(small, (960, 720), interpolation=cv2.INTER_CUBIC)  # larger than detect_side: found on a copy
    a, sa = finder_mod.SceneMtcnn(640).scored(small)
    b, sb = finder_mod.SceneMtcnn(640).scored(big)
    assert len(a) and len(b) and 0 < sa.min() <= 1
    assert np.abs(b[0] / 3 - a[0]).max() < 8  # the same face, in each picture's own pixels


def test_evaluate_scenes_writes_scores_by_size(run, stub_detector, tmp_path, capsys):
    folder = tmp_path / "scenes"
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "s.png"), cv2.cvtColor(two_faces(), cv2.COLOR_RGB2BGR))
    pd.DataFrame([["s.png", *FACES[0], 0], ["s.png", *FACES[1], 2], ["s.png", 290, 200, 310, 220, 0]],
                 columns=["file", "x0", "y0", "x1", "y1", "mask"]).to_csv(folder / "boxes.csv", index=False)
    assert main(["evaluate", run, "--scenes", str(folder), "--out", str(tmp_path / "m"), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "face recall 1.000" in printed and "false faces per photo 0.000" in printed
    import json

    m = json.loads((tmp_path / "m" / "scenes_scenes.json").read_text())
    assert m["faces"] == 2 and m["by_size"][">=96"]["faces"] == 2 and m["by_size"]["32-48"]["faces"] == 0
    assert (tmp_path / "m" / "scenes_scenes_faces.csv").is_file()


def test_serve_port_in_use_is_one_line_before_loading(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", str(tmp_path / "no-model-needed"), "--port", str(port), "-q"])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and f"port {port} on 127.0.0.1 is in use" in lines[0], err
    assert "serving" not in out  # nothing announced


def test_serve_binds_then_announces(monkeypatch, capsys):
    """The address is printed only once the socket listens; uvicorn gets that very socket."""
    import socket

    import uvicorn

    from maskcls.serve import app as app_mod

    seen = {}

    class FakeService:
        ensemble = type("E", (), {"members": [1]})()

    def fake_create_app(*a, **k):
        seen["bound_at_load"] = sock_state()
        return type("App", (), {"state": type("S", (), {"service": FakeService()})()})()

    def sock_state():
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", seen["port"])) == 0

    def fake_run(self, sockets=None):
        seen["ports"] = [s.getsockname()[1] for s in sockets]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        seen["port"] = s.getsockname()[1]
    monkeypatch.setattr(app_mod, "create_app", fake_create_app)
    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    app_mod.serve(["x"], port=seen["port"])
    assert seen["bound_at_load"] and seen["ports"] == [seen["port"]]
    assert f"http://127.0.0.1:{seen['port']}/" in capsys.readouterr().out


@needs_scenes
def test_killed_stream_process_keeps_rows_and_a_readable_video(run, tmp_path):
    """``kill`` (SIGTERM) on a real `maskcls predict` process ends it like Ctrl-C: rows and frames so far stay."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    video = write_video(tmp_path / "door.mp4", frames=400)
    out = tmp_path / "faces.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "maskcls.cli", "predict", run, "--source", str(video), "--save",
                             "--out", str(out), "scene.every=1", "-q"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while (not out.is_file() or len(out.read_text().splitlines()) < 6) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "interrupted after" in err, err
    table = pd.read_csv(out)
    frames = read_video(tmp_path / "annotated" / "door.mp4")
    assert 0 < table["frame"].nunique() < 400 and len(frames) == table["frame"].nunique()
