"""A seeded short fit on the drawn demo data gives the probabilities saved before the predictor refactor.

The refactor of prediction (one engine-neutral predictor, issue #19) must change
no result: the same seed, data and config give the same training and the same
(N, 18) probabilities, through the image path and the table path, with TTA.
Regenerate ``data/pinned_probs.npz`` only for a change that is meant to move results:
``MASKCLS_PIN=write pytest tests/test_pinned.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import TINY

from maskcls.config import load_config
from maskcls.data.demo import make_demo_data
from maskcls.engine import fit
from maskcls.export import export_onnx
from maskcls.predict import Ensemble

PINNED = Path(__file__).parent / "data" / "pinned_probs.npz"


def test_seeded_fit_predicts_the_pinned_probabilities(tmp_path):
    root = make_demo_data(tmp_path / "data", persons=12, eval_persons=4, size=(48, 64))
    cfg = load_config(None, [f"data.root={root}", f"project={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'c'}",
                             "data.val_fraction=0.25", "train.seed=7", *TINY])
    run = fit(cfg)["run_dir"]
    ens = Ensemble.load([run], device="cpu")
    photos = sorted(str(p) for p in (root / "eval" / "images").iterdir())
    got = {
        "images": ens.predict_images(photos, tta=[]),
        "images_tta": ens.predict_images(photos, tta=["flip", "shift"]),
        "frame": ens.predict_frame(pd.DataFrame({"ImageID": photos, "path": photos}), progress=False)[0],
    }
    if os.environ.get("MASKCLS_PIN") == "write":
        PINNED.parent.mkdir(exist_ok=True)
        np.savez(PINNED, **got)
    pinned = np.load(PINNED)
    for key, value in got.items():
        assert value.shape == pinned[key].shape == (len(photos), 18), key
        np.testing.assert_allclose(value, pinned[key], rtol=0, atol=2e-5, err_msg=key)
    # the exported model through ONNX Runtime: the same probabilities within float noise of the two runtimes
    export_onnx(run)
    onnx = Ensemble.load([run], engine="onnx", threads=1)
    np.testing.assert_allclose(onnx.predict_images(photos, tta=["flip", "shift"]), pinned["images_tta"], rtol=0,
                               atol=1e-4)
    np.testing.assert_allclose(onnx.predict_frame(pd.DataFrame({"ImageID": photos, "path": photos}),
                                                  progress=False)[0], pinned["frame"], rtol=0, atol=1e-4)
