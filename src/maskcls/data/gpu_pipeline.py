"""GPU input path: uint8 batches from the decode cache, augmented on the device, batched.

On one H200 the CPU loader capped training at ~1,500 images/s: every photo
went through albumentations on a CPU worker, and workers were forked anew each
epoch. Here loader workers only copy uint8 arrays out of the memory-mapped
cache (``RawImage``); the batch is pinned, moved with ``non_blocking`` and
transformed on the device by ``BatchTransform``, which runs the same ops as the
albumentations presets in ``transforms.py`` (centre crop, bilinear resize,
and for ``data.augment=basic`` flip, colour jitter in random order, Gaussian
noise; then normalisation) with one draw of parameters per photo. The
``real`` preset's ops (affine framing, blur, JPEG, dropout) exist only in
albumentations: with it ``auto`` keeps the CPU path. The eval transform matches the CPU one to
rounding (tests/test_gpu_pipeline.py), so a model trained on either path is
validated and served alike. The same code runs on CPU tensors, which is how
the tests run it; ``data.loader=auto`` takes this path only when training on
CUDA, and the CPU path keeps albumentations.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..config import ConfigError, DataConfig

log = logging.getLogger("maskcls")

GPU_AUGMENT = ("none", "basic")  # data.augment values it implements ("real": albumentations only, CPU path)


def use_gpu_path(data: DataConfig, device: torch.device) -> bool:
    """``data.loader``: gpu always, cpu never, auto when the model trains on CUDA."""
    if data.loader == "auto":
        use = device.type == "cuda"
    else:
        use = data.loader == "gpu"
    if use and data.augment not in GPU_AUGMENT:
        if data.loader == "auto":  # augmentation only albumentations has: the CPU path, said out loud
            log.warning("data.loader=auto on %s: data.augment=%s has no tensor version, so training takes the CPU "
                        "input path (albumentations on CPU workers; slower on a GPU). data.augment=basic runs on the "
                        "device", device, data.augment)
            return False
        raise ConfigError(f"data.loader=gpu: data.augment={data.augment} has no tensor "
                          f"version; use data.loader=cpu, or data.augment={' or '.join(GPU_AUGMENT)}")
    return use


class RawImage:
    """``PhotoDataset`` transform that leaves the decoded uint8 HxWx3 array as it is (``collate_raw`` stacks it)."""

    def __call__(self, *, image: np.ndarray) -> dict:
        return {"image": image}

    def set_random_seed(self, seed: int) -> None:  # randomness lives in BatchTransform
        pass


class BatchTransform:
    """(B, H, W, 3) uint8 at ``decode_size`` -> (B, 3, h, w) float model input, on the batch's device.

    ``train`` adds the random ops of the preset. Parameters are drawn from a
    generator on the batch's device, seeded by ``set_random_seed`` (fit does so
    every epoch), so a seed gives the same batches again.
    """

    def __init__(self, data: DataConfig, *, train: bool, mean, std):
        if train and data.augment not in GPU_AUGMENT:
            raise ConfigError(f"data.augment={data.augment}: no tensor version; use data.loader=cpu")
        self.size = tuple(data.image_size)
        dh, dw = data.decode_size
        self.crop = (int(dh * data.crop_fraction), int(dw * data.crop_fraction))
        self.augment = train and data.augment == "basic"  # as transforms.build_transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.seed = 0
        self._gen: torch.Generator | None = None

    def set_random_seed(self, seed: int) -> None:
        self.seed, self._gen = seed, None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # NHWC uint8 -> NCHW in [0, 1]
        if self.crop is not None:  # albumentations CenterCrop: top-left at (H - h) // 2, (W - w) // 2
            (h, w), (ch, cw) = x.shape[-2:], self.crop
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
        if tuple(x.shape[-2:]) != self.size:  # cv2.INTER_LINEAR: half-pixel centres, no antialias
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        if self.augment and len(x):
            x = self._augment(x, self._generator(x.device))
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """HorizontalFlip(0.5), ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.8), GaussNoise((0.02, 0.06), p=0.3)."""
        n, dev = len(x), x.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, device=dev, generator=g)

        flip = torch.rand(n, device=dev, generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        jitter = torch.rand(n, device=dev, generator=g) < 0.8
        factors = [uniform(0.8, 1.2), uniform(0.8, 1.2), uniform(0.8, 1.2), uniform(-0.02, 0.02)]
        neutral = [1.0, 1.0, 1.0, 0.0]
        factors = [torch.where(jitter, f, torch.full_like(f, v)) for f, v in zip(factors, neutral)]
        order = torch.rand(n, 4, device=dev, generator=g).argsort(1)  # a random order per photo, as albumentations
        ops = (brightness, contrast, saturation, hue)
        for step in range(4):
            for k, op in enumerate(ops):
                rows = (order[:, step] == k).nonzero().flatten()
                if len(rows):
                    x[rows] = op(x[rows], factors[k][rows])
        noisy = torch.rand(n, device=dev, generator=g) < 0.3
        sigma = uniform(0.02, 0.06) * noisy  # a fraction of the pixel range, per photo
        noise = torch.randn(x.shape, device=dev, generator=g)
        return (x + noise * sigma.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- colour ops on (N, 3, H, W) in [0, 1]
def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # torchvision's weights


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp(0.0, 1.0)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp(0.0, 1.0)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _gray(x)).clamp(0.0, 1.0)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` turns (torchvision's adjust_hue, per photo)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    v = maxc
    i = torch.floor(h * 6.0)
    fpart = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * fpart), v * (1 - s * (1 - fpart))
    i = i.long() % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (cr, cg, cb) in enumerate(choices):
        m = (i == k).unsqueeze(1)
        out = torch.where(m, torch.stack([cr, cg, cb], 1), out)
    return out


# ----------------------------------------------------------------------------- loaders
def collate_raw(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """One copy from the (read-only) cache rows into a fresh (B, H, W, 3) uint8 batch."""
    return torch.from_numpy(np.stack([x for x, _ in items])), torch.stack([y for _, y in items])


class DeviceLoader:
    """Iterates a uint8 DataLoader as ``(model input on device, labels)``.

    Training and evaluation loops call ``.to(device)`` on the input, which is
    then a no-op, so they need not know which input path feeds them; labels
    stay where the loader put them (pinned), as on the CPU path.
    """

    def __init__(self, loader: DataLoader, transform: BatchTransform, device: torch.device):
        self.loader, self.transform, self.device = loader, transform, device
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        non_blocking = self.device.type == "cuda"  # the copy overlaps the previous step's compute
        for x, y in self.loader:
            yield self.transform(x.to(self.device, non_blocking=non_blocking)), y


def gpu_loader(dataset, transform: BatchTransform, device: torch.device, *, batch_size: int, workers: int,
               sampler=None) -> DeviceLoader:
    """A loader made once per run: workers stay alive across epochs, batches are pinned for the copy.

    ``dataset`` yields uint8 HxWx3 tensors (``PhotoDataset`` with ``RawImage``);
    ``sampler`` decides the order (an ``EpochSampler``, re-seeded per epoch;
    None: in order, for evaluation).
    """
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=False,
                        collate_fn=collate_raw,
                        prefetch_factor=4 if workers > 0 else None)
    return DeviceLoader(loader, transform, device)
