"""torch inference: validation batches during training, and ``Run.probs`` of a torch run (numpy in and out)."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .labels import NUM_CLASSES


def is_channels_last(model: torch.nn.Module) -> bool:
    """Whether the model's convolutions hold NHWC weights (inputs should match)."""
    w = next((p for p in model.parameters() if p.ndim == 4), None)
    return w is not None and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def torch_probs(model: torch.nn.Module, batch: np.ndarray, device) -> np.ndarray:
    """(N, 18) probabilities of an NCHW float32 numpy batch: ``Run.probs`` of a torch run."""
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
    if is_channels_last(model):
        x = x.contiguous(memory_format=torch.channels_last)
    return model.probs(x).float().cpu().numpy()


@torch.no_grad()
def predict_probs(model, loader, device, *, progress=False, desc="eval") -> tuple[np.ndarray, np.ndarray]:
    """(N, 18) class probabilities and the labels of ``loader`` (validation during training; no TTA)."""
    model.eval()
    nhwc = is_channels_last(model)
    probs, labels = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        x = x.to(device)
        x = x.contiguous(memory_format=torch.channels_last) if nhwc else x
        probs.append(model.probs(x).float().cpu().numpy())
        labels.append(y.numpy())
    if not probs:
        return np.zeros((0, NUM_CLASSES), np.float32), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(labels)
