"""Built-in demo data: drawn faces in the competition layout.

Every cue the real task has is drawn: the mask covers nose and mouth (worn),
only mouth and chin (incorrect) or nothing; long hair marks the female
persons; hair turns grey and lines appear with age. It is small and learnable
in a minute on a CPU, so ``make demo`` and the tests run anywhere.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .. import labels as L

STEMS = ["mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal"]
RACES = ["Asian", "White", "Black"]
SKIN = [(234, 192, 160), (200, 150, 110), (140, 95, 60), (245, 210, 185)]
MASK_COLORS = [(90, 150, 220), (240, 240, 240), (40, 40, 40), (120, 190, 140), (220, 120, 150)]


def draw_face(rng: np.random.Generator, *, mask: int, gender: int, age: int, size=(96, 128),
              mask_style: int = 0) -> Image.Image:
    """One portrait (W x H = ``size``) of a person with the given labels."""
    w, h = size
    bg = tuple(int(v) for v in rng.integers(60, 220, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    cx = w / 2 + rng.normal(0, w * 0.03)
    cy = h * 0.5 + rng.normal(0, h * 0.02)
    fw, fh = w * rng.uniform(0.50, 0.58), h * rng.uniform(0.52, 0.6)
    band = int(L.age_band(age))
    hair = [(40, 28, 20), (95, 80, 70), (215, 215, 215)][band]
    hair = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in hair)
    if gender == 1:  # long hair behind the face
        d.rectangle([cx - fw * 0.62, cy - fh * 0.55, cx + fw * 0.62, cy + fh * 0.62], fill=hair)
    skin = SKIN[int(rng.integers(len(SKIN)))]
    d.ellipse([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2], fill=skin)
    d.chord([cx - fw * 0.52, cy - fh * 0.6, cx + fw * 0.52, cy - fh * 0.05], 180, 360, fill=hair)
    eye_y = cy - fh * 0.08
    for sx in (-1, 1):
        ex = cx + sx * fw * 0.2
        d.ellipse([ex - 4, eye_y - 3, ex + 4, eye_y + 3], fill=(255, 255, 255))
        d.ellipse([ex - 2, eye_y - 2, ex + 2, eye_y + 2], fill=(30, 30, 30))
    if band >= 1:  # forehead lines
        for k in range(band * 2):
            y = cy - fh * 0.22 - k * 3
            d.line([cx - fw * 0.2, y, cx + fw * 0.2, y], fill=(150, 100, 80), width=1)
    nose_y, mouth_y = cy + fh * 0.08, cy + fh * 0.25
    d.polygon([(cx, eye_y + 4), (cx - 5, nose_y + 4), (cx + 5, nose_y + 4)], fill=(190, 120, 100))
    d.line([cx - fw * 0.15, mouth_y, cx + fw * 0.15, mouth_y], fill=(150, 40, 50), width=3)
    if mask != L.Mask.NOT_WEAR:
        color = MASK_COLORS[mask_style % len(MASK_COLORS)]
        top = eye_y + 6 if mask == L.Mask.WEAR else nose_y + 7  # incorrect: nose stays out
        d.rounded_rectangle([cx - fw * 0.47, top, cx + fw * 0.47, cy + fh * 0.47], radius=8, fill=color)
        for sx in (-1, 1):  # ear loops
            d.line([cx + sx * fw * 0.47, top + 3, cx + sx * fw * 0.55, eye_y], fill=(200, 200, 200), width=2)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))
    arr = np.asarray(img).astype(np.int16) + rng.normal(0, 5, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    bands = rng.choice(3, size=n, p=[0.45, 0.4, 0.15])
    return np.array([rng.integers(*[(18, 30), (30, 60), (60, 80)][b]) for b in bands])


def make_demo_data(out: str | Path, *, persons: int = 60, eval_persons: int = 24, size=(96, 128), seed: int = 0) -> Path:
    """Write ``out/train`` and ``out/eval`` (with answers.csv) in the competition layout."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    images = out / "train" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    ages = _ages(rng, persons + eval_persons)
    genders = rng.integers(0, 2, persons + eval_persons)
    for i in range(persons):
        pid = f"{i:06d}"
        gender, age = int(genders[i]), int(ages[i])
        race = RACES[i % len(RACES)]
        folder = f"{pid}_{'female' if gender else 'male'}_{race}_{age}"
        (images / folder).mkdir(exist_ok=True)
        for k, stem in enumerate(STEMS):
            mask = L.mask_from_stem(stem)
            draw_face(rng, mask=mask, gender=gender, age=age, size=size, mask_style=k).save(
                images / folder / f"{stem}.jpg", quality=92)
        rows.append([pid, "female" if gender else "male", race, age, folder])
    with (out / "train" / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["id", "gender", "race", "age", "path"], *rows])
    ev = out / "eval" / "images"
    ev.mkdir(parents=True, exist_ok=True)
    info, answers = [], []
    for i in range(persons, persons + eval_persons):
        gender, age = int(genders[i]), int(ages[i])
        for k, stem in enumerate(STEMS):
            mask = L.mask_from_stem(stem)
            name = hashlib.sha1(f"{seed}-{i}-{stem}".encode()).hexdigest()[:16] + ".jpg"
            draw_face(rng, mask=mask, gender=gender, age=age, size=size, mask_style=k + 2).save(ev / name, quality=92)
            label = L.encode(mask, gender, L.age_band(age))
            info.append([name, 0])
            answers.append([name, label, f"{i:06d}"])
    order = rng.permutation(len(info))
    with (out / "eval" / "info.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["ImageID", "ans"], *[info[j] for j in order]])
    with (out / "eval" / "answers.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["ImageID", "ans", "person"], *[answers[j] for j in order]])
    from ..model_card import DEMO_MARKER

    (out / DEMO_MARKER).write_text("Drawn demo faces made by maskcls (data.demo.make_demo_data), not photos of people.\n"
                                   "Models trained on them are flagged as such by predict, serve and MODEL_CARD.md.\n")
    return out
