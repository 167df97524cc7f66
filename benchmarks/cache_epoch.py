"""What the decode cache saves: one data pass and one training epoch, without and with it.

On a subset of a data root (default: 1500 maskfaces training photos, whole
persons), measures with data.cache=false and then true (fresh store in a
temporary folder, removed at the end):
  build  - the one-time decode into the store (0 without cache)
  data   - one pass over the training loader: decode (or read the store) + augmentation, no model
  epoch  - one training epoch of the configured model (same initial weights for both)
and for the cache its size on disk and the process memory after the pass
(the store is memory-mapped: its pages count as file-backed RSS, shared and
evictable, not as anonymous memory; "data RSS +MiB" is the growth over the
build and the pass). Preprocessing makes decoding dearer and
the cache's win larger: add e.g. preprocess.face_crop=true.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cache_epoch.py --images 1500
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cache_epoch.py --images 1500 preprocess.face_crop=true
    # quick check of the script itself on the demo data:
    .venv/bin/python benchmarks/cache_epoch.py --root data/demo --images 100 data.decode_size=[64,48] \\
        data.image_size=[64,48] train.max_batches=3
"""
from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from maskcls.config import load_config
from maskcls.data.dataset import PhotoDataset
from maskcls.data.decode import Decoder
from maskcls.data.imageset import image_set
from maskcls.data.loading import make_loader
from maskcls.data.reader import read_train
from maskcls.data.transforms import build_transform
from maskcls.engine import build_optimizer, train_one_epoch
from maskcls.losses import loss_from_config
from maskcls.models import data_config, model_from_config
from maskcls.runtime import resolve_device, setup_torch


def memory() -> dict:
    """Resident memory of this process in MiB: total, anonymous, file-backed (Linux)."""
    out = {}
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="data/maskfaces")
    ap.add_argument("--images", type=int, default=1500, help="about this many photos (whole persons)")
    ap.add_argument("--no-train", action="store_true", help="data passes only")
    ap.add_argument("-c", "--config")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    cfg = load_config(args.config, [f"data.root={args.root}", "train.progress=false", *args.overrides])
    setup_torch(cfg.train.threads)
    device = resolve_device(cfg.train.device)

    frame = read_train(args.root, age_thresholds=cfg.data.age_thresholds)
    persons = sorted(frame["person"].unique())[: math.ceil(args.images / 7)]
    frame = frame[frame["person"].isin(persons)].reset_index(drop=True)
    decoder = Decoder(cfg.data, cfg.preprocess)
    model0 = model_from_config(cfg)
    transform = build_transform(cfg.data, train=True, **data_config(model0))
    print(f"{len(frame)} photos of {len(persons)} persons from {args.root}; decode {cfg.data.decode_size}, "
          f"model input {cfg.data.image_size}, {cfg.model.name}, batch {cfg.data.batch_size}, "
          f"{torch.get_num_threads()} threads, {cfg.data.workers} loader workers, preprocess "
          f"{decoder.settings()['preprocess']}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="maskcls-cache-") as tmp:
        for cache in (False, True):
            cfg.data.cache, cfg.data.cache_dir = cache, tmp
            before = memory().get("VmRSS", 0.0)
            t = time.perf_counter()
            images = image_set(frame, decoder, cfg, progress=False)
            build = time.perf_counter() - t
            ds = PhotoDataset(images.frame, images.source, transform)
            t = time.perf_counter()
            for _ in make_loader(ds, cfg, train=True):
                pass
            row = {"data.cache": cache, "build s": round(build, 2), "data pass s": round(time.perf_counter() - t, 2),
                   "data RSS +MiB": round(memory().get("VmRSS", 0.0) - before, 1)}
            if not args.no_train:
                model = copy.deepcopy(model0).to(device)
                criterion = loss_from_config(cfg.loss, cfg.model.head).to(device)
                t = time.perf_counter()
                train_one_epoch(model, make_loader(ds, cfg, train=True), criterion, build_optimizer(model, cfg), None,
                                device, max_batches=cfg.train.max_batches, progress=False)
                row["epoch s"] = round(time.perf_counter() - t, 2)
            if cache:
                store = next(Path(tmp).iterdir())
                row["disk MiB"] = round(sum(f.stat().st_size for f in store.iterdir()) / 2**20, 1)
            rows.append({**row, **{f"{k} MiB": v for k, v in memory().items()}})
    print(pd.DataFrame(rows).set_index("data.cache").to_string())
    if cfg.train.max_batches:
        print(f"(epoch capped at train.max_batches={cfg.train.max_batches})")


if __name__ == "__main__":
    main()
