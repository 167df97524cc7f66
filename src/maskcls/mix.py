"""Batch mixing: CutMix of vertical halves, square CutMix, MixUp (soft targets)."""
from __future__ import annotations


def build_mixer(cfg, dataset, seed: int = 0):
    """None when mixing is off, else a callable ``(x, y) -> (x, soft y)``."""
    if cfg.name == "none":
        return None
    raise NotImplementedError(f"mix.name={cfg.name} is not implemented yet")
