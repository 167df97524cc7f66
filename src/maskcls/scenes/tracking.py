"""Faces linked across video frames (ByteTrack from Roboflow's ``trackers``) and each track's answer smoothed.

A per-frame classifier flickers: the same face reads "mask" in one frame and
"no mask" in the next. Averaging a track's class probabilities over its
last ``window`` classified frames steadies the label; ``window`` 1 (or 0)
turns smoothing off so its effect can be measured (``label_changes``).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from .finder import Faces

HINT = "video needs the scenes extra (tracking by Roboflow's trackers): pip install 'maskcls[scenes]'"


def bytetrack(fps: float, every: int):
    """A ByteTrack tracker that keeps a lost face about one second (in detection steps, one per ``every`` frames)."""
    try:
        import supervision  # noqa: F401
        from trackers import ByteTrackTracker
    except ImportError as e:
        from ..data.reader import DataError

        raise DataError(f"{HINT} (no module '{e.name}')") from None
    steps = max(2, math.ceil(fps / max(1, every)))
    return ByteTrackTracker(lost_track_buffer=steps, frame_rate=fps / max(1, every), track_activation_threshold=0.5,
                            minimum_consecutive_frames=1, high_conf_det_threshold=0.5)


class Smoother:
    """Mean class probabilities of each track over its last ``window`` classified frames (0 or 1: off)."""

    FORGET = 300  # calls after which a track not seen again is dropped (a camera may run for days)

    def __init__(self, window: int):
        self.window = max(1, int(window))
        self.history: dict[int, deque] = {}
        self.seen: dict[int, int] = {}
        self.calls = 0

    def __call__(self, tracks: np.ndarray, probs: np.ndarray) -> np.ndarray:
        if self.window == 1:
            return probs
        self.calls += 1
        out = probs.copy()
        for k, t in enumerate(tracks):
            if t < 0:  # not (yet) a confirmed track: its own answer
                continue
            h = self.history.setdefault(int(t), deque(maxlen=self.window))
            h.append(probs[k])
            self.seen[int(t)] = self.calls
            out[k] = np.mean(h, axis=0)
        if self.calls % self.FORGET == 0:
            for t in [t for t, c in self.seen.items() if self.calls - c > self.FORGET]:
                del self.history[t], self.seen[t]
        return out


class FaceTracker:
    """``update(faces)`` -> (track ids, faces in the tracker's order); -1 = a face not yet confirmed as a track."""

    def __init__(self, fps: float, every: int = 1, smooth: int = 5):
        self.tracker = bytetrack(fps, every)
        self.smoother = Smoother(smooth)

    def update(self, faces: Faces) -> tuple[np.ndarray, Faces]:
        import supervision as sv

        n = len(faces)
        scores = faces.scores if n and not np.isnan(faces.scores).any() else None  # Haar/dlib: no scores
        found = self.tracker.update(sv.Detections(xyxy=faces.boxes.astype(float).reshape(-1, 4), confidence=scores,
                                                  data={"index": np.arange(n)}))
        index = np.asarray(found.data.get("index", np.arange(0)), int) if len(found) else np.arange(0)
        tracks = np.asarray(found.tracker_id if len(found) else [], int)
        ordered = Faces(faces.boxes[index], faces.scores[index], faces.probs[index])
        ordered.probs = self.smoother(tracks, ordered.probs)
        return tracks, ordered


def label_changes(table: pd.DataFrame, column: str = "label") -> float:
    """Share of a track's frames (after its first) whose ``column`` differs from the track's previous frame."""
    t = table[table["track"].notna() & (table["track"].astype(str) != "")].sort_values(["track", "frame"])
    same_track = t["track"].eq(t["track"].shift())
    changed = same_track & t[column].ne(t[column].shift())
    return float(changed.sum() / max(1, same_track.sum()))
