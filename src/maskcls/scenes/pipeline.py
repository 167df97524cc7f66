"""``maskcls predict --faces all``: every face of every photo or video frame into faces.csv (+ annotated copies).

Video runs detection and classification on every ``scene.every``-th frame
and holds each face's box and (smoothed) answer on the frames between: the
common 640x480 door camera then runs in real time on two CPU cores
(notes/scenes.md). Rows are appended and flushed per frame, so an
interrupted stream keeps what it has written.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from .finder import FaceFinder, Faces
from ..summary import summarize
from .output import Annotator, FacesCsv, VideoOut, error_row, face_rows, write_image
from .sources import Source, Stream

log = logging.getLogger("maskcls")

NO_FACE = "no face found"


class Timer:
    """Seconds per stage of each frame (``frames``: one dict per frame), by ``clock`` (wall time by default)."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.frames: deque = deque(maxlen=100_000)  # the last hour or so: a camera may run for days
        self.now: dict = defaultdict(float)

    def stage(self, name: str, t0: float) -> float:
        t = self.clock()
        self.now[name] += t - t0
        return t

    def next_frame(self) -> None:
        self.frames.append(dict(self.now))
        self.now = defaultdict(float)


def _stop_on_sigterm():
    """SIGTERM (``kill``, ``docker stop``) ends a stream like Ctrl-C: rows and video frames so far are kept.

    Returns the function that puts the previous handler back (a no-op outside the main thread).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, previous)


class SceneRunner:
    """Finds, classifies (and on video tracks) every face; writes faces.csv and, with ``save``, annotated copies."""

    def __init__(self, ensemble, *, max_faces: int = 0, save: str | Path | None = None, video: bool = False):
        sc = ensemble.cfg.scene
        self.ensemble, self.scene = ensemble, sc
        self.finder = FaceFinder(ensemble, side=sc.detect_side, max_faces=max_faces, video=video)
        self.save = Path(save) if save else None
        self.annotate = Annotator() if save else None
        self.thresholds = ensemble.cfg.data.age_thresholds
        self.timer = Timer()

    def answers(self, probs: np.ndarray) -> list[dict]:
        return summarize(probs, decision=self.ensemble.decision, thresholds=self.thresholds) if len(probs) else []

    def photos(self, source: Source, out: str | Path, progress: bool = True) -> dict:
        """One row per face of each photo; a photo without a face (or unreadable) gets one row saying why."""
        from tqdm import tqdm

        from ..data.images import ImageReadError, load_rgb

        counts = {"photos": 0, "faces": 0, "errors": 0}
        with FacesCsv(out) as table:
            for path in tqdm(source.paths, desc="photos", unit="photo", disable=not progress):
                name = source.file_name(path)
                counts["photos"] += 1
                try:
                    rgb = load_rgb(path)
                except ImageReadError as e:
                    table.write([error_row(name, 0, e.reason)])
                    counts["errors"] += 1
                    continue
                faces = self.finder(rgb)
                answers = self.answers(faces.probs)
                table.write(face_rows(name, 0, faces, answers) if len(faces) else [error_row(name, 0, NO_FACE)])
                counts["faces"] += len(faces)
                if self.save:
                    write_image(self.save / name, self.annotate(rgb, faces, answers))
        return counts

    def stream(self, source: Source, out: str | Path, progress: bool = True, on_frame=None) -> dict:
        """One row per face per frame, with track ids; ``on_frame(k)`` is called after frame k is written."""
        from tqdm import tqdm

        from .tracking import FaceTracker

        sc = self.scene
        frames = Stream(source)
        tracker = FaceTracker(frames.fps, sc.every, sc.smooth)
        video = None
        counts = {"frames": 0, "faces": 0}
        last = (np.zeros(0, int), Faces(np.zeros((0, 4), int), np.zeros(0), np.zeros((0, 18), np.float32)), [])
        bar = tqdm(total=frames.frames or None, desc="frames", unit="frame", disable=not progress)
        restore = _stop_on_sigterm()
        try:
            with FacesCsv(out) as table:
                t = self.timer.clock()
                for k, rgb in enumerate(frames):
                    t = self.timer.stage("read", t)
                    if k % max(1, sc.every) == 0:
                        boxes, scores = self.finder.find(rgb)
                        t = self.timer.stage("detect", t)
                        faces = Faces(boxes, scores, self.finder.classify(rgb, boxes))
                        t = self.timer.stage("classify", t)
                        tracks, faces = tracker.update(faces)
                        last = (tracks, faces, self.answers(faces.probs))
                        t = self.timer.stage("track", t)
                    tracks, faces, answers = last
                    rows = face_rows(source.name, k, faces, answers, tracks)
                    table.write(rows or [error_row(source.name, k, NO_FACE)])
                    t = self.timer.stage("write", t)
                    if self.save:
                        if video is None:
                            video = VideoOut(self.save / f"{Path(source.name).stem or 'camera'}.mp4", frames.fps,
                                             (rgb.shape[1], rgb.shape[0]))
                        video.write(self.annotate(rgb, faces, answers, tracks))
                        t = self.timer.stage("annotate", t)
                    counts["frames"] += 1
                    counts["faces"] += len(faces)
                    self.timer.next_frame()
                    bar.update(1)
                    if on_frame is not None:
                        on_frame(k)
                    t = self.timer.clock()
        except KeyboardInterrupt:
            log.warning("interrupted after %d frames: %s keeps their rows%s", counts["frames"], out,
                        f", {video.path} their frames" if video else "")
            raise
        finally:
            restore()
            bar.close()
            if video is not None:
                video.close()
        if counts["frames"] == 0:
            from ..data.reader import DataError

            raise DataError(f"{source.name}: no frame could be read")
        return counts


def predict_scenes(ensemble, source: Source, out: str | Path = "faces.csv", *, save: str | Path | None = None,
                   progress: bool = True, max_faces: int = 0, on_frame=None) -> Path:
    """faces.csv for photos or a stream; ``save``: folder for annotated copies (photos, or <video>.mp4)."""
    for w in ensemble.warnings():
        log.warning("warning: %s", w)
    scenes = SceneRunner(ensemble, max_faces=max_faces, save=save, video=source.kind != "photos")
    if source.kind == "photos":
        counts = scenes.photos(source, out, progress)
        log.info("%d faces in %d photos (%d unreadable)", counts["faces"], counts["photos"], counts["errors"])
    else:
        counts = scenes.stream(source, out, progress, on_frame)
        log.info("%d face rows over %d frames", counts["faces"], counts["frames"])
    if save:
        log.info("annotated copies: %s", save)
    return Path(out)
