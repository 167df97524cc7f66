"""Fit the per-class decision bias of an existing run on its held-out persons and store it in its checkpoints.

What ``fit`` does at the end of training with ``eval.class_bias=true``, for a
run trained without it (BENCHMARKS.md measures whether it pays):

    python benchmarks/refit_bias.py runs/full_default
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from maskcls.checkpoint import load_checkpoint, save_checkpoint
from maskcls.decision import decide, fit_class_bias, macro_f1


def main(run: Path) -> None:
    # held-out persons, plain argmax: writes val_probs.npy and val_predictions.csv into the run folder
    subprocess.run([sys.executable, "-m", "maskcls.cli", "evaluate", str(run), "-q", "eval.class_bias=false"],
                   check=True, capture_output=True)
    probs = np.load(run / "val_probs.npy")
    labels = pd.read_csv(run / "val_predictions.csv")["label"].to_numpy()
    bias = fit_class_bias(probs, labels)
    print(f"val macro F1 {macro_f1(labels, probs.argmax(1)):.4f} -> "
          f"{macro_f1(labels, decide(probs, {'class_bias': bias})):.4f} with the bias (same persons: optimistic)")
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(run / "weights" / name)
        state.pop("path", None)
        decision = {"class_bias": [float(b) for b in bias], "fitted_on": f"{len(labels)} validation images"}
        save_checkpoint({**state, "decision": decision}, run / "weights" / name)
    print("bias", np.round(bias, 2).tolist())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
