"""``maskcls prepare STEP``: offline data preparation steps, each in its own module."""
from __future__ import annotations

from .config import Config


def run(step: str, cfg: Config, *, copies: int = 2, out: str | None = None) -> int:
    if step == "upsample":
        from .data.upsample import upsample

        upsample(cfg, copies=copies)
        return 0
    if step in ("faces", "background"):
        from .preprocess.offline import prepare_root

        prepare_root(step, cfg, out=out)
        return 0
    raise ValueError(f"unknown prepare step '{step}'")
