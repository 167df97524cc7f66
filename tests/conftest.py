"""Shared fixtures: tiny drawn data made once per session, and a config shrunk for tests."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from maskcls.config import Config, load_config
from maskcls.data.demo import make_demo_data

torch.set_num_threads(1)

# The rendered real-face benchmark (`make maskfaces`); tests that need it are marked slow and skip without it.
MASKFACES_ROOT = Path(os.environ.get("MASKCLS_MASKFACES", Path(__file__).resolve().parents[1] / "data" / "maskfaces"))
needs_maskfaces = pytest.mark.skipif(not (MASKFACES_ROOT / "train" / "images").is_dir(),
                                     reason=f"{MASKFACES_ROOT} not present (make maskfaces, or set MASKCLS_MASKFACES)")

TINY = [
    "data.decode_size=[64,48]",
    "data.image_size=[64,48]",
    "data.batch_size=8",
    "eval.batch_size=32",
    "train.epochs=1",
    "train.max_batches=2",
    "train.progress=false",
    "train.threads=1",
]


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The default decode cache ($XDG_CACHE_HOME/maskcls) points into a temporary folder, never into the real home."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield os.environ["XDG_CACHE_HOME"]
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """12 train persons (84 photos) and 6 eval persons in the competition layout."""
    return make_demo_data(tmp_path_factory.mktemp("demo") / "data", persons=12, eval_persons=6, size=(48, 64))


@pytest.fixture
def tiny_cfg(tmp_path, demo_root):
    """A config that trains in seconds on one core, writing under tmp_path."""

    def make(*overrides: str) -> Config:
        return load_config(None, [f"data.root={demo_root}", f"project={tmp_path / 'runs'}",
                                  f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.25", *TINY,
                                  *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_root):
    """One tiny trained run (engine.fit, ~10 s) shared by the export, serve, report and browser tests.

    Tests that write into a run folder should copy it first.
    """
    from maskcls.engine import fit

    base = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(None, [f"data.root={demo_root}", f"project={base / 'runs'}", f"data.cache_dir={base / 'cache'}",
                             "data.val_fraction=0.25", *TINY])
    return fit(cfg)["run_dir"]
