"""Sample photos for ``make demo``, made on the spot: nothing to license or download.

``street.jpg`` puts one real face three times side by side: bare, with a mask
pulled down under the nose, and with a mask worn correctly. The face is the
public-domain NASA portrait of astronaut Eileen Collins that scikit-image
ships in its wheel (``skimage.data.astronaut``; scikit-image comes with the
base install's face detector), the masks are drawn over it. ``portrait.jpg`` is a
drawn demo face. ``make demo`` runs the shipped model on them with ``--faces
all --save``: a fresh install shows the whole path (find every face, frame it,
classify it, draw it) in seconds. For real use point ``--source`` at your own
photos, a video or a camera.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .demo import draw_face

# The astronaut's face box (x0, y0, x1, y1) in the 512x512 portrait, forehead to chin (CenterFace, calibrated)
FACE = (179, 74, 272, 188)


def masked(img: Image.Image, state: int, color=(70, 120, 200)) -> Image.Image:
    """``img`` with a mask drawn on the face at ``FACE``: 0 worn (nose and mouth covered), 1 under the nose, 2 none."""
    if state == 2:
        return img
    out = img.copy()
    d = ImageDraw.Draw(out)
    x0, y0, x1, y1 = FACE
    w, h = x1 - x0, y1 - y0
    top = y0 + (0.45 if state == 0 else 0.64) * h  # over the bridge of the nose, or below its tip (mouth covered)
    d.rounded_rectangle([x0 - 0.06 * w, top, x1 + 0.06 * w, y1 + 0.08 * h], radius=int(0.25 * w), fill=color)
    for k in (1, 2):  # pleats
        y = top + k * (y1 + 0.08 * h - top) / 3
        d.line([x0 + 0.05 * w, y, x1 - 0.05 * w, y], fill=tuple(int(c * 0.8) for c in color), width=2)
    return out


def street(states=(2, 1, 0)) -> Image.Image:
    """Three copies of the astronaut's portrait side by side, one per mask state (1536x512)."""
    from skimage import data

    face = Image.fromarray(data.astronaut())
    img = Image.new("RGB", (512 * len(states), 512))
    for k, state in enumerate(states):
        img.paste(masked(face, state), (512 * k, 0))
    return img


def make_sample_photos(folder: str | Path, seed: int = 0) -> list[Path]:
    """Write the sample photos into ``folder`` (made if needed); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = [folder / "street.jpg", folder / "portrait.jpg"]
    street().save(out[0], quality=92)
    draw_face(rng, mask=0, gender=0, age=41, size=(240, 320)).save(out[1], quality=92)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default="data/samples")
    args = ap.parse_args(argv)
    for p in make_sample_photos(args.folder):
        print(p)


if __name__ == "__main__":
    main()
