"""Training targets as one soft matrix: 18 class columns, then (optionally) an age distribution.

Class ids alone throw away the exact age in each folder name. The "dist" age
head learns from a Gaussian label distribution over years around the true age
(DLDL, Gao et al. 2017), so a 58-year-old teaches "close to 60", not only
"30-59". Mixers (CutMix of halves, MixUp) mix whole rows of this matrix, so
mixing keeps working with every head layout.

With partial labels (``data.sources``: real faces labelled by mask only) two
columns follow: whether gender and age are known (1/0). The multi-head loss
weighs each sample's gender and age loss by them, so an unknown axis is left
out, never guessed; mixers never mix a row with an unknown axis
(``TargetEncoder.complete``), so these columns stay 0 or 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .labels import NUM_CLASSES


class TargetEncoder:
    """``y`` -> (N, 18 [+ age_bins]) soft targets.

    ``y`` is class ids (N,), ids with exact ages (N, 2) as a dataset yields them
    when ages are on, (ids, ages, known) rows (N, 3) with partial labels, or an
    already soft matrix of the right width.
    """

    def __init__(self, age_bins: int = 0, sigma: float = 3.0, partial: bool = False):
        self.age_bins, self.sigma, self.partial = int(age_bins), float(sigma), bool(partial)
        self.width = NUM_CLASSES + self.age_bins + 2 * self.partial

    def classes(self, y: torch.Tensor) -> torch.Tensor:
        """Class ids of ids or (ids, ages) rows."""
        return y[:, 0] if y.dim() == 2 else y

    def complete(self, y: torch.Tensor) -> torch.Tensor:
        """Rows whose every axis is known (always, without partial labels); only these may be mixed."""
        if y.dim() == 2 and y.is_floating_point() and self.partial:
            return (y[:, -2] > 0.5) & (y[:, -1] > 0.5)
        if y.dim() == 2 and y.shape[1] == 3 and not y.is_floating_point():
            return y[:, 2] == 3
        return torch.ones(len(y), dtype=torch.bool, device=y.device)

    def age_distribution(self, ages: torch.Tensor) -> torch.Tensor:
        years = torch.arange(self.age_bins, dtype=torch.float32, device=ages.device)
        a = ages.float().clamp(0, self.age_bins - 1)[:, None]
        d = torch.exp(-0.5 * ((years[None] - a) / self.sigma) ** 2)
        return d / d.sum(1, keepdim=True)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 2 and y.shape[1] == self.width and y.is_floating_point():
            return y.float()
        if y.dim() == 2 and y.shape[1] not in (2, 3):
            raise ValueError(f"targets of width {y.shape[1]} do not fit {self.width} (18 classes + {self.age_bins} ages"
                             f"{' + 2 known flags' if self.partial else ''})")
        if y.dim() == 2 and y.shape[1] == 3 and not self.partial:  # never train a placeholder gender or age
            raise ValueError("targets say which axes are known (data.sources) but the encoder ignores them: "
                             "build it with partial=True")
        parts = [F.one_hot(self.classes(y).long(), NUM_CLASSES).float()]
        if self.age_bins:
            if y.dim() != 2:
                raise ValueError("the 'dist' age head needs exact ages: the dataset must yield (class, age) pairs")
            parts.append(self.age_distribution(y[:, 1]))
        if self.partial:
            known = y[:, 2].long() if y.dim() == 2 and y.shape[1] == 3 else torch.full_like(self.classes(y).long(), 3)
            parts.append(torch.stack([known & 1, (known >> 1) & 1], dim=1).float())
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def encoder_from_config(cfg) -> TargetEncoder:
    from .models import AGE_BINS

    dist = cfg.model.head == "multi" and cfg.model.age_head == "dist"
    return TargetEncoder(AGE_BINS if dist else 0, partial=bool(cfg.data.sources))
