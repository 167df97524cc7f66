"""Input path against model speed on one GPU: is the loader or the model the limit?

    PYTHONPATH=src python benchmarks/gpu_input.py --root data/maskfaces [--workers 14] [--device cuda]

Prints, per input size: (1) the model alone (synthetic batch, AMP, channels-last,
optimizer steps), (2) the old CPU loader alone (albumentations on ``--workers``
processes), (3) the tensor path alone (uint8 from the decode cache, pinned,
``BatchTransform`` on the device), and (4) the largest eval difference between
the tensor path on the device and albumentations. Training end to end is
timed by ``benchmarks/gpu_check.sh`` through ``maskcls train``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from maskcls.config import load_config
from maskcls.data.dataset import PhotoDataset
from maskcls.data.decode import Decoder
from maskcls.data.gpu_pipeline import BatchTransform, RawImage, gpu_loader
from maskcls.data.imageset import image_set
from maskcls.data.loading import load_train_frame, make_loader
from maskcls.data.transforms import build_transform
from maskcls.models import create_model, data_config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_alone(size, batch: int, device: torch.device, steps: int = 30) -> float:
    m = create_model("tf_efficientnet_lite0", head="single", pretrained=False).to(device)  # 18 logits
    m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 18, (batch,), device=device)
    for i in range(steps + 5):
        if i == 5:
            sync(device)
            t = time.time()
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync(device)
    return steps * batch / (time.time() - t)


def loader_rate(loader, device: torch.device, max_batches: int, to_device: bool) -> float:
    n, t = 0, None
    for i, (x, _) in enumerate(loader):
        if to_device:
            x = x.to(device, non_blocking=True)
        if i == 2:  # workers started, first batches out
            sync(device)
            t, n = time.time(), 0
        elif t is not None:
            n += len(x)
        if i >= max_batches + 2:
            break
    sync(device)
    return n / (time.time() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="data/maskfaces")
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--sizes", default="160x128:32,224x176:64")
    args = ap.parse_args()
    device = torch.device(args.device)
    for spec in args.sizes.split(","):
        text, batch = spec.split(":")
        size = tuple(map(int, text.split("x")))
        batch = int(batch)
        cfg = load_config(None, [f"data.root={args.root}", f"data.image_size={list(size)}", f"data.batch_size={batch}",
                                 f"data.workers={args.workers}", "data.augment=basic"])  # the ops both paths have
        frame = load_train_frame(cfg)
        images = image_set(frame, Decoder(cfg.data, cfg.preprocess), cfg, progress=False)
        norm = data_config(create_model("tf_efficientnet_lite0", pretrained=False))
        model_rate = model_alone(size, batch, device)
        old = PhotoDataset(images.frame, images.source, build_transform(cfg.data, train=True, **norm))
        old_rate = loader_rate(make_loader(old, cfg, train=True), device, args.batches, to_device=True)
        raw = PhotoDataset(images.frame, images.source, RawImage())
        tf = BatchTransform(cfg.data, train=True, **norm)
        sampler = torch.utils.data.RandomSampler(raw, generator=torch.Generator().manual_seed(0))
        new_rate = loader_rate(gpu_loader(raw, tf, device, batch_size=batch, workers=args.workers, sampler=sampler),
                               device, args.batches, to_device=False)
        photos = np.stack([images.source(i) for i in range(min(64, len(images.frame)))])
        cpu_eval = build_transform(cfg.data, train=False, **norm)
        expected = torch.stack([cpu_eval(image=p)["image"] for p in photos])
        got = BatchTransform(cfg.data, train=False, **norm)(torch.from_numpy(photos).to(device)).cpu()
        print(f"{text} batch {batch}: model alone {model_rate:.0f} images/s | CPU loader ({args.workers} workers, "
              f"albumentations) {old_rate:.0f} images/s | tensor path {new_rate:.0f} images/s | "
              f"eval max |diff| {float((got - expected).abs().max()):.4f}", flush=True)


if __name__ == "__main__":
    main()
