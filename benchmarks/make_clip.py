"""Make the scene benchmark clip: slow pans and zooms over realmasks street photos, 640x480, 25 fps.

No video ships with the data, so the clip is drawn from ../shared/realmasks
photos with 1-5 labelled faces of at least 32 px (held-out photos first).
Each photo gets ``--frames-per-photo`` frames: a 4:3 window that starts
zoomed in on one side and widens while it pans across. The clip is not
committed; this command makes it again, identical (fixed seed).

    python benchmarks/make_clip.py --out /tmp/scene_clip.mp4
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from maskcls.data.boxes import is_held_out, read_boxes, shorter_side

W, H = 640, 480


def pick_photos(csv: str, n: int) -> list[str]:
    """Paths of photos with 1-5 faces of >= 32 px; held-out ones first, then by file name."""
    t = read_boxes(csv)
    t = t.assign(big=shorter_side(t) >= 32)
    per = t.groupby("path").agg(faces=("big", "sum"), all=("big", "size"), file=("file", "first"))
    ok = per[(per["faces"] >= 1) & (per["all"] <= 5)].reset_index()
    ok["held"] = ok["file"].map(is_held_out)
    ok = ok.sort_values(["held", "file"], ascending=[False, True])
    return ok["path"].head(n).tolist()


def frames_of(img: np.ndarray, count: int, rng: np.random.Generator):
    """``count`` 640x480 views: a window from 60% to 100% of the largest 4:3 box, panning left to right."""
    h, w = img.shape[:2]
    full_w = min(w, h * 4 / 3)
    start, end = rng.uniform(0.55, 0.7), 1.0
    for k in range(count):
        a = k / max(1, count - 1)
        ww = full_w * (start + (end - start) * a)
        hh = ww * 3 / 4
        x = (w - ww) * (0.1 + 0.8 * a)
        y = (h - hh) * 0.5
        m = np.array([[W / ww, 0, -x * W / ww], [0, H / hh, -y * H / hh]], np.float32)
        yield cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", default="../shared/realmasks/boxes.csv")
    ap.add_argument("--out", default="/tmp/scene_clip.mp4")
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--frames-per-photo", type=int, default=60)
    ap.add_argument("--fps", type=float, default=25.0)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), args.fps, (W, H))
    n = 0
    for path in pick_photos(args.boxes, args.photos):
        img = cv2.imread(path)
        for frame in frames_of(img, args.frames_per_photo, rng):
            writer.write(frame)
            n += 1
    writer.release()
    print(f"written: {out} ({n} frames, {W}x{H}, {args.fps:g} fps)")


if __name__ == "__main__":
    main()
