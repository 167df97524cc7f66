"""Would a prior on the "incorrect" mask state help? Sweep it on the held-out faces of a boxes CSV.

Multiplies each face's incorrect-mask probability (summed over gender and
age) by a factor, takes the most likely state, and prints mask accuracy and
recall per state for each factor. Faces are framed as training frames them
(as ``sources_heldout.py``); only photos ``boxes.is_held_out`` picks count,
so a model trained with ``holdout: true`` never saw them.

    python benchmarks/mask_prior.py MODEL [--boxes ../shared/realmasks/boxes.csv]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from maskcls.data.boxes import is_held_out, read_boxes, shorter_side
from maskcls.data.sources import MIN_SIZE, BoxDecoder, box_item
from maskcls.predict import Ensemble

FACTORS = (1, 1.5, 2, 3, 4, 6, 8, 12)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run folder, checkpoint or .onnx file")
    ap.add_argument("--boxes", default="../shared/realmasks/boxes.csv")
    args = ap.parse_args(argv)
    ens = Ensemble.load([args.model])
    table = read_boxes(args.boxes)
    table = table[table["file"].map(is_held_out) & (shorter_side(table) >= MIN_SIZE)].reset_index(drop=True)
    dec = BoxDecoder(ens.cfg.data, ens.cfg.preprocess)
    faces = [dec(box_item(p, (a, b, c, d))) for p, a, b, c, d in
             zip(table["path"], table["x0"], table["y0"], table["x1"], table["y1"])]
    mask = ens.predict_images(faces).reshape(len(faces), 3, 6).sum(2)  # class = mask * 6 + gender * 3 + age
    truth = table["mask"].to_numpy()
    for factor in FACTORS:
        pred = (mask * np.array([1.0, factor, 1.0])).argmax(1)
        hits = [int(((pred == k) & (truth == k)).sum()) for k in range(3)]
        counts = [int((truth == k).sum()) for k in range(3)]
        print(f"x{factor:<4} mask accuracy {np.mean(pred == truth):.3f}; recall wear {hits[0] / counts[0]:.3f}, "
              f"incorrect {hits[1] / counts[1]:.3f} ({hits[1]} of {counts[1]}), not wear {hits[2] / counts[2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
