"""Training and inference speed of the default backbone at a few input sizes (2 threads, synthetic batch).

    .venv/bin/python benchmarks/train_speed.py [--model tf_efficientnet_lite0] [--threads 2] [--freeze 3]

Times optimizer steps on a random batch of 32 (channels-last, as training
does) and eval forward passes, so the numbers are the model's cost alone.
"""
from __future__ import annotations

import argparse
import time

import torch

from maskcls.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="160x128,192x144,224x160")
    ap.add_argument("--freeze", type=int, default=0, help="model.freeze_blocks")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for text in args.sizes.split(","):
        h, w = map(int, text.split("x"))
        m = create_model(args.model, freeze_blocks=args.freeze).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], 1e-3)
        x = torch.randn(32, 3, h, w).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 8, (32,))
        m.train()
        for i in range(6):
            if i == 2:
                t = time.time()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train = 32 * 4 / (time.time() - t)
        m.eval()
        with torch.no_grad():
            t = time.time()
            for _ in range(3):
                m(x)
        print(f"{args.model} {h}x{w} freeze {args.freeze}: train {train:.1f} images/s, eval {96 / (time.time() - t):.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
