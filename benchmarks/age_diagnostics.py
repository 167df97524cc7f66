"""Where age errors come from: band accuracy by distance to the nearest threshold, and exact-age error.

Scores a run on the persons it held out (its split.csv; they carry exact
ages in their folder names, the public eval split does not):

    python benchmarks/age_diagnostics.py runs/maskfaces_default

It also splits band accuracy by mask state (does the mask cost age?) and
gives the accuracy of a per-person vote over each person's photos (would
seeing the person's other photos help?). ``--predictions`` does those two on
the public split from ``evaluate --answers``' ``eval_predictions.csv``:

    python benchmarks/age_diagnostics.py --predictions runs/maskfaces_default/eval_predictions.csv
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import torch

from maskcls.data.dataset import PhotoDataset
from maskcls.data.imageset import image_set
from maskcls.data.loading import make_loader
from maskcls.inference import is_channels_last
from maskcls.run import Run


MASKS = ("wear", "incorrect", "not_wear")


def by_mask_and_person(mask, person, true_band, pred_band) -> dict:
    """Band accuracy per mask state, and that of the mode of each person's predicted bands."""
    f = pd.DataFrame({"mask": mask, "person": person, "true": true_band, "pred": pred_band})
    f["ok"] = f["true"] == f["pred"]
    vote = f.groupby("person")["pred"].agg(lambda s: s.mode().iloc[0])
    return {"band_accuracy_by_mask": {MASKS[int(k)]: round(float(v), 4) for k, v in f.groupby("mask")["ok"].mean().items()},
            "person_vote_band_accuracy": round(float((f["person"].map(vote) == f["true"]).mean()), 4),
            "persons_with_two_bands_predicted": round(float((f.groupby("person")["pred"].nunique() > 1).mean()), 3)}


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--predictions", help="eval_predictions.csv of `maskcls evaluate RUN --answers ...`")
    a = ap.parse_args()
    if a.predictions:
        p = pd.read_csv(a.predictions)  # label / pred are class ids: mask*6 + gender*3 + band
        print(json.dumps({"images": len(p), **by_mask_and_person(p["label"] // 6, p["person"], p["label"] % 3,
                                                                p["pred"] % 3)}, indent=1))
        return
    if not a.run:
        ap.error("give a run folder, or --predictions CSV")
    torch.set_num_threads(a.threads)
    run = Run.open(a.run, device="cpu")
    frame = run.held_out_frame()
    images = image_set(frame, run.decoder, run.cfg, progress=False)
    loader = make_loader(PhotoDataset(images.frame, images.source, run.transform), run.cfg, train=False)
    model, nhwc = run.model, is_channels_last(run.model)
    bands, ages = [], []
    for x, _ in loader:
        x = x.contiguous(memory_format=torch.channels_last) if nhwc else x
        logits = model(x)
        bands.append(model.probs_from_logits(logits).view(-1, 3, 2, 3).sum((1, 2)).argmax(1).numpy())
        e = model.expected_age(logits)
        ages.append(e.numpy() if e is not None else np.full(len(x), np.nan))
    kept = images.frame
    pred, exp_age = np.concatenate(bands), np.concatenate(ages)
    true_age, true_band = kept["age"].to_numpy(), kept["age_band"].to_numpy()
    lo, hi = run.cfg.data.age_thresholds
    dist = np.minimum(np.abs(true_age - lo + 0.5), np.abs(true_age - hi + 0.5)) - 0.5  # years to the nearest band edge
    out = {"images": int(len(kept)), "persons": int(kept["person"].nunique()),
           "band_accuracy": round(float((pred == true_band).mean()), 4)}
    for name, sel in (("within 2 years of a threshold", dist <= 2), ("3-5 years", (dist > 2) & (dist <= 5)),
                      ("over 5 years", dist > 5)):
        out[name] = {"share": round(float(sel.mean()), 3), "band_accuracy": round(float((pred[sel] == true_band[sel]).mean()), 4)}
    out.update(by_mask_and_person(kept["mask"], kept["person"], true_band, pred))
    if not np.isnan(exp_age).all():
        out["age_mae_years"] = round(float(np.abs(exp_age - true_age).mean()), 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
