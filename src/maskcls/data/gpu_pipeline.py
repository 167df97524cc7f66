"""GPU input path: uint8 batches from the decode cache, augmented on the device, batched.

On one H200 the CPU loader capped training at ~1,500 images/s: every photo
went through albumentations on a CPU worker, and workers were forked anew each
epoch. Here loader workers only copy uint8 arrays out of the memory-mapped
cache (``RawImage``); the batch is pinned, moved with ``non_blocking`` and
transformed on the device by ``BatchTransform``, which runs the ops of the
albumentations presets in ``transforms.py`` on tensors, in the same order,
with the same ranges and probabilities (both read ``presets.py``) and one draw
of parameters per photo: centre crop and bilinear resize; ``basic``: flip,
colour jitter in random order, Gaussian noise; ``real`` (the default): affine
framing before the crop, then flip, jitter, gray, Gaussian or motion blur,
downscale, JPEG, noise and coarse dropout; then normalisation. So
``data.loader=auto`` on CUDA takes this path for every preset. The eval
transform matches the CPU one to rounding and the ``real`` statistics match
loosely (tests/test_gpu_pipeline.py), so a model trained on either path is
validated and served alike. The same code runs on CPU tensors, which is how
the tests run it; ``auto`` takes this path only when training on CUDA, and the
CPU path keeps albumentations.
"""
from __future__ import annotations

import logging
import math
from functools import partial
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.io import decode_jpeg, encode_jpeg

from ..config import ConfigError, DataConfig
from . import presets as P

log = logging.getLogger("maskcls")

GPU_AUGMENT = ("none", "basic", "real")  # data.augment values it implements (all of transforms.AUGMENT)


def use_gpu_path(data: DataConfig, device: torch.device) -> bool:
    """``data.loader``: gpu always, cpu never, auto when the model trains on CUDA (every preset has tensor ops)."""
    if data.loader == "auto":
        use = device.type == "cuda"
    else:
        use = data.loader == "gpu"
    if use and data.augment not in GPU_AUGMENT:  # a preset added to transforms.py only
        if data.loader == "auto":  # the CPU path, said out loud
            log.warning("data.loader=auto on %s: data.augment=%s has no tensor version, so training takes the CPU "
                        "input path (albumentations on CPU workers; slower on a GPU)", device, data.augment)
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


class Op(NamedTuple):
    """One random op of a preset: ``name`` is the albumentations transform it stands for, applied with ``p``."""
    name: str
    fn: Callable
    p: float

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.fn(x, g, p=self.p)


class BatchTransform:
    """(B, H, W, 3) uint8 at ``decode_size`` -> (B, 3, h, w) float model input, on the batch's device.

    ``train`` adds the random ops of the preset (``PRESETS``: before the crop,
    after the resize). Parameters are drawn from a generator on the batch's
    device, seeded by ``set_random_seed`` (fit does so every epoch), so a seed
    gives the same batches again.
    """

    def __init__(self, data: DataConfig, *, train: bool, mean, std):
        if train and data.augment not in GPU_AUGMENT:
            raise ConfigError(f"data.augment={data.augment}: no tensor version; use data.loader=cpu")
        self.size = tuple(data.image_size)
        dh, dw = data.decode_size
        self.crop = (int(dh * data.crop_fraction), int(dw * data.crop_fraction))
        self.before_crop, self.after_resize = PRESETS[data.augment if train else "none"]  # as build_transform
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
        before, after = (self.before_crop, self.after_resize) if len(x) else ((), ())
        g = self._generator(x.device) if before or after else None
        for op in before:
            x = op(x, g)
        if self.crop is not None:  # albumentations CenterCrop: top-left at (H - h) // 2, (W - w) // 2
            (h, w), (ch, cw) = x.shape[-2:], self.crop
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
        if tuple(x.shape[-2:]) != self.size:  # cv2.INTER_LINEAR: half-pixel centres, no antialias
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        for op in after:
            x = op(x, g)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


# ----------------------------------------------------------------------------- random ops on (N, 3, H, W) in [0, 1]
# Each draws its parameters for every photo (so a seed gives the same draws whatever was chosen), applies
# itself to the photos chosen with probability p, and leaves its input tensor as it was.
def _uniform(g: torch.Generator, n: int, low: float, high: float, dev, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, device=dev, generator=g)


def _chosen(g: torch.Generator, n: int, p: float, dev) -> torch.Tensor:
    return torch.rand(n, device=dev, generator=g) < p


def flip(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """HorizontalFlip."""
    return torch.where(_chosen(g, len(x), p, x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def jitter(x: torch.Tensor, g: torch.Generator, *, p: float, strength: tuple) -> torch.Tensor:
    """ColorJitter(brightness, contrast, saturation, hue = ``strength``): the four in a random order per photo."""
    n, dev = len(x), x.device
    chosen = _chosen(g, n, p, dev)
    b, c, s, h = strength
    factors = [_uniform(g, n, 1 - b, 1 + b, dev), _uniform(g, n, 1 - c, 1 + c, dev),
               _uniform(g, n, 1 - s, 1 + s, dev), _uniform(g, n, -h, h, dev)]
    neutral = [1.0, 1.0, 1.0, 0.0]
    factors = [torch.where(chosen, f, torch.full_like(f, v)) for f, v in zip(factors, neutral)]
    order = torch.rand(n, 4, device=dev, generator=g).argsort(1)  # a random order per photo, as albumentations
    ops = (brightness, contrast, saturation, hue)
    for step in range(4):
        for k, op in enumerate(ops):
            rows = (order[:, step] == k).nonzero().flatten()
            if len(rows):
                x = x.index_copy(0, rows, op(x[rows], factors[k][rows]))
    return x


def gray(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """ToGray: luma in all three channels."""
    return torch.where(_chosen(g, len(x), p, x.device).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)


def blur(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """OneOf(GaussianBlur, MotionBlur): a per-photo kernel (up to 7x7), one grouped convolution."""
    n, dev = len(x), x.device
    chosen, motion = _chosen(g, n, p, dev), _chosen(g, n, 0.5, dev)
    lo, hi = P.GAUSS_BLUR_KERNEL  # albumentations draws an integer in [lo, hi] and makes it odd
    g_size = torch.randint(lo, hi + 1, (n,), device=dev, generator=g) | 1
    sigma = _uniform(g, n, *P.GAUSS_BLUR_SIGMA, dev)
    lo, hi = P.MOTION_BLUR_KERNEL  # an odd size, uniform
    m_size = lo + 2 * torch.randint(0, (hi - lo) // 2 + 1, (n,), device=dev, generator=g)
    angle = _uniform(g, n, 0.0, 2 * math.pi, dev)
    direction = _uniform(g, n, -1.0, 1.0, dev)
    shift = _uniform(g, n, -1.0, 1.0, dev, 2) * (m_size // 2).unsqueeze(1) / 2
    rows = chosen.nonzero().flatten()
    if not len(rows):
        return x
    kernels = torch.where(motion.view(-1, 1, 1), motion_kernels(m_size, angle, direction, shift),
                          gaussian_kernels(g_size, sigma))
    return x.index_copy(0, rows, filter2d(x[rows], kernels[rows]))


def downscale(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """Downscale: nearest down to ``scale`` of the side, nearest back up (albumentations' default pair)."""
    n, (h, w) = len(x), x.shape[-2:]
    chosen, scale = _chosen(g, n, p, x.device), _uniform(g, n, *P.DOWNSCALE, x.device)
    rows = chosen.nonzero().flatten()
    if not len(rows):
        return x
    out = []
    for i, s in zip(rows.tolist(), scale[rows].tolist()):  # one size per photo
        small = F.interpolate(x[i:i + 1], size=(max(1, round(h * s)), max(1, round(w * s))), mode="nearest")
        out.append(F.interpolate(small, size=(h, w), mode="nearest"))
    return x.index_copy(0, rows, torch.cat(out))


def jpeg(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """ImageCompression: JPEG at a per-photo quality (torchvision encodes on the tensor's device, CPU or CUDA)."""
    n, dev = len(x), x.device
    chosen = _chosen(g, n, p, dev)
    lo, hi = P.JPEG_QUALITY
    quality = torch.randint(lo, hi + 1, (n,), device=dev, generator=g)
    rows = chosen.nonzero().flatten()
    if not len(rows):
        return x
    images = x[rows].mul(255).round_().to(torch.uint8).contiguous()
    encoded = [encode_jpeg(img, quality=q).cpu() for img, q in zip(images, quality[rows].tolist())]
    decoded = decode_jpeg(encoded, device=dev)  # bytes are read on the CPU, pixels decoded on ``dev``
    return x.index_copy(0, rows, torch.stack(decoded).float().div_(255.0))


def noise(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """GaussNoise: per-pixel, per-channel noise of a per-photo std (a fraction of the pixel range)."""
    n, dev = len(x), x.device
    chosen = _chosen(g, n, p, dev)
    sigma = _uniform(g, n, *P.NOISE_STD, dev) * chosen
    return (x + torch.randn(x.shape, device=dev, generator=g) * sigma.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def dropout(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """CoarseDropout: 1-2 rectangles per photo, each filled with one random colour."""
    n, dev, (h, w) = len(x), x.device, x.shape[-2:]
    chosen = _chosen(g, n, p, dev)
    lo, hi = P.DROPOUT_HOLES
    holes = torch.randint(lo, hi + 1, (n,), device=dev, generator=g)
    hh = (h * _uniform(g, n, *P.DROPOUT_SIDE, dev, hi)).long()
    ww = (w * _uniform(g, n, *P.DROPOUT_SIDE, dev, hi)).long()
    top = (torch.rand(n, hi, device=dev, generator=g) * (h - hh + 1)).long()
    left = (torch.rand(n, hi, device=dev, generator=g) * (w - ww + 1)).long()
    colour = torch.rand(n, hi, 3, 1, 1, device=dev, generator=g)
    yy, xx = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
    for k in range(hi):
        inside = ((chosen & (holes > k)).view(-1, 1, 1) & (yy >= top[:, k, None, None])
                  & (yy < (top + hh)[:, k, None, None]) & (xx >= left[:, k, None, None])
                  & (xx < (left + ww)[:, k, None, None]))
        x = torch.where(inside.unsqueeze(1), colour[:, k], x)
    return x


def frame(x: torch.Tensor, g: torch.Generator, *, p: float) -> torch.Tensor:
    """Affine before the crop: zoom per axis, shift, rotate about the centre; the border reflects."""
    n, dev, (h, w) = len(x), x.device, x.shape[-2:]
    chosen = _chosen(g, n, p, dev)
    scale = _uniform(g, n, *P.FRAMING_SCALE, dev, 2)
    shift = _uniform(g, n, -P.FRAMING_SHIFT, P.FRAMING_SHIFT, dev, 2)
    degrees = _uniform(g, n, -P.FRAMING_ROTATE, P.FRAMING_ROTATE, dev)
    rows = chosen.nonzero().flatten()
    if not len(rows):
        return x
    return x.index_copy(0, rows, warp(x[rows], affine_theta(scale[rows], shift[rows], degrees[rows], (h, w))))


def affine_theta(scale: torch.Tensor, shift: torch.Tensor, degrees: torch.Tensor, size: tuple) -> torch.Tensor:
    """(N, 2, 3) ``affine_grid`` matrices: output -> input, in [-1, 1] coordinates.

    The photo moves by q = R S p + t (pixels about the centre; ``scale`` and
    ``shift`` are (N, 2) as (x, y), ``shift`` a fraction of the side), so a
    sample at q reads p = S^-1 R^-1 (q - t); conjugated by the pixel scale.
    """
    h, w = size
    a = -torch.deg2rad(degrees)  # y points down: positive turns counter-clockwise on screen, as albumentations
    cos, sin = torch.cos(a), torch.sin(a)
    sx, sy = scale.unbind(1)
    m = torch.stack([torch.stack([cos / sx, sin / sx], 1), torch.stack([-sin / sy, cos / sy], 1)], 1)  # S^-1 R^-1
    half = torch.tensor([w / 2, h / 2], device=scale.device, dtype=scale.dtype)
    lin = m * half.view(1, 1, 2) / half.view(1, 2, 1)  # D^-1 M D
    offset = -(m @ (shift * 2 * half).unsqueeze(-1)).squeeze(-1) / half  # -D^-1 M t, t in pixels
    return torch.cat([lin, offset.unsqueeze(-1)], 2)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling by ``theta``; reflection at the border (cv2's BORDER_REFLECT, close to REFLECT_101)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# ----------------------------------------------------------------------------- blur kernels, 7x7 for every size
K = 7


def gaussian_kernels(size: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(N, K, K) normalised Gaussians of odd ``size`` (cut to it) and ``sigma``, as albumentations' kernel."""
    t = torch.arange(K, device=sigma.device, dtype=sigma.dtype) - K // 2
    k1 = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2) * (t.abs() <= (size // 2).view(-1, 1))
    k1 = k1 / k1.sum(1, keepdim=True)
    return k1.unsqueeze(2) * k1.unsqueeze(1)


def motion_kernels(size: torch.Tensor, angle: torch.Tensor, direction: torch.Tensor,
                   shift: torch.Tensor) -> torch.Tensor:
    """(N, K, K) line kernels as albumentations' ``create_motion_kernel``: ``size`` points along ``angle``
    (radians), biased forward or back by ``direction`` in [-1, 1], moved by ``shift`` (N, 2), clipped to the box."""
    n, dev = len(size), size.device
    half = (size // 2).float().view(-1, 1)
    start = -half * (1 - direction.clamp(min=0).view(-1, 1))
    end = half * (1 + direction.clamp(max=0).view(-1, 1))
    j = torch.arange(K, device=dev).view(1, -1)
    t = start + (end - start) * j / (size.view(-1, 1) - 1)
    # rounded in the size x size box, as albumentations (half to even: the parity of the centre matters), then centred
    box, centre = (torch.zeros_like(half), 2 * half), K // 2 - half
    xs = ((half + torch.cos(angle).view(-1, 1) * t + shift[:, :1]).round().clamp(*box) + centre).long()
    ys = ((half + torch.sin(angle).view(-1, 1) * t + shift[:, 1:]).round().clamp(*box) + centre).long()
    index = torch.where(j < size.view(-1, 1), ys * K + xs, (ys * K + xs)[:, :1])  # unused points repeat the first
    kernel = torch.zeros(n, K * K, device=dev).scatter_(1, index, 1.0).view(n, K, K)
    return kernel / kernel.sum((1, 2), keepdim=True)


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D per photo (correlation, BORDER_REFLECT_101): one grouped convolution for the batch."""
    n, c, h, w = x.shape
    r = kernels.shape[-1] // 2
    padded = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    weight = kernels.repeat_interleave(c, 0).unsqueeze(1).to(x.dtype)
    return F.conv2d(padded, weight, groups=n * c).view(n, c, h, w)


# ----------------------------------------------------------------------------- colour ops, per-photo factors
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


# ----------------------------------------------------------------------------- presets, in albumentations' order
PRESETS: dict[str, tuple[tuple[Op, ...], tuple[Op, ...]]] = {
    "none": ((), ()),
    "basic": ((), (Op("HorizontalFlip", flip, P.FLIP_P),
                   Op("ColorJitter", partial(jitter, strength=P.BASIC_JITTER), P.BASIC_JITTER_P),
                   Op("GaussNoise", noise, P.BASIC_NOISE_P))),
    "real": ((Op("Affine", frame, P.FRAMING_P),),
             (Op("HorizontalFlip", flip, P.FLIP_P),
              Op("ColorJitter", partial(jitter, strength=P.REAL_JITTER), P.REAL_JITTER_P),
              Op("ToGray", gray, P.GRAY_P),
              Op("OneOf", blur, P.BLUR_P),
              Op("Downscale", downscale, P.DOWNSCALE_P),
              Op("ImageCompression", jpeg, P.JPEG_P),
              Op("GaussNoise", noise, P.REAL_NOISE_P),
              Op("CoarseDropout", dropout, P.DROPOUT_P))),
}


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
