"""Mask accuracy of a run on the held-out faces of a boxes CSV, overall and by face size (with counts).

The faces are framed as training frames them (``data.sources.BoxDecoder``
with the run's config: the framing ``predict`` gives a face it found), so
this scores the classifier alone, not the detector. Only photos that
``boxes.is_held_out`` picks are scored: a run trained with ``holdout: true``
never saw them.

    python benchmarks/sources_heldout.py RUN [--boxes ../shared/realmasks/boxes.csv] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from maskcls.data.boxes import is_held_out, read_boxes, shorter_side
from maskcls.data.sources import MIN_SIZE, BoxDecoder, box_item
from maskcls.devsets import mask_metrics
from maskcls.predict import Ensemble

BINS = ((16, 32), (32, 48), (48, 96), (96, 100_000))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--boxes", default="../shared/realmasks/boxes.csv")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    ens = Ensemble.load([args.run])
    cfg = ens.cfg
    table = read_boxes(args.boxes)
    table = table[table["file"].map(is_held_out) & (shorter_side(table) >= MIN_SIZE)].reset_index(drop=True)
    dec = BoxDecoder(cfg.data, cfg.preprocess)
    faces = [dec(box_item(p, (a, b, c, d))) for p, a, b, c, d in
             zip(table["path"], table["x0"], table["y0"], table["x1"], table["y1"])]
    pred = ens.classes(ens.predict_images(faces)) // 6
    truth = table["mask"].to_numpy()
    side = shorter_side(table).to_numpy()
    out = {"run": args.run, "boxes": args.boxes, "all": mask_metrics(truth, pred), "by_size": {}}
    for lo, hi in BINS:
        sel = (side >= lo) & (side < hi)
        out["by_size"][f"{lo}-{hi}" if hi < 100_000 else f">={lo}"] = mask_metrics(truth[sel], pred[sel])
    m = out["all"]
    r = m["mask_recall"]
    print(f"held-out faces {m['n']}: mask accuracy {m['mask_accuracy']:.3f}; recall wear {r['wear']}, "
          f"incorrect {r['incorrect']}, not_wear {r['not_wear']}; confusion {m['mask_confusion']}")
    for name, b in out["by_size"].items():
        print(f"  {name:>7} px: {b['n']:4d} faces, mask accuracy {b['mask_accuracy']:.3f}, recall {b['mask_recall']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
