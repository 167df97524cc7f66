"""Sample photos for ``make demo``: drawn people in a scene, made on the spot (no photo to license or download).

``make demo`` runs the shipped model on them with ``--faces all --save``, so a
fresh install shows the whole path (find every face, frame it, classify it,
draw it) in seconds. They are drawn faces, not photos: for real use point
``--source`` at your own photos, a video or a camera.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .demo import draw_face

# (mask, gender, age) of the people drawn: one of each mask state
PEOPLE = [(0, 1, 34), (1, 0, 52), (2, 1, 23)]


def scene(rng: np.random.Generator, people=PEOPLE, size=(640, 480), face_width: int = 150) -> Image.Image:
    """A street-like backdrop with one drawn person per entry of ``people``, side by side."""
    w, h = size
    img = Image.new("RGB", size, (150, 160, 170))
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(h * 0.7), w, h], fill=(95, 95, 100))  # pavement
    for k in range(6):  # shop fronts
        x = k * w // 6
        d.rectangle([x + 8, 30, x + w // 6 - 8, int(h * 0.62)], fill=tuple(int(v) for v in rng.integers(90, 220, 3)))
    step = w // len(people)
    for k, (mask, gender, age) in enumerate(people):
        face = draw_face(rng, mask=mask, gender=gender, age=age, size=(96, 128), mask_style=k)
        fh = int(face_width * 128 / 96)
        face = face.resize((face_width, fh), Image.LANCZOS)
        x = k * step + (step - face_width) // 2
        img.paste(face, (x, int(h * 0.42) - fh // 2))
    return img


def make_sample_photos(folder: str | Path, seed: int = 0) -> list[Path]:
    """Write the sample photos into ``folder`` (made if needed); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = [folder / "street.jpg", folder / "portrait.jpg"]
    scene(rng).save(out[0], quality=92)
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
