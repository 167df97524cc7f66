"""Data-parallel pieces: sharded sampling keeps the weighting, validation is gathered once per photo."""
from __future__ import annotations

import os
import socket

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from maskcls import distributed as D
from maskcls.data.sampling import EpochSampler, sample_weights


def _frame(n: int = 63) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"label": rng.choice([0, 0, 0, 0, 1, 1, 5, 17], n), "person": rng.integers(0, 9, n)})


@pytest.mark.parametrize("kind", ["class", "person", "none"])
def test_epoch_sampler_shards_are_the_single_process_draw(kind):
    frame = _frame()
    one = EpochSampler(kind, frame, seed=3)
    full = list(one)
    assert len(full) == 63
    shards = [EpochSampler(kind, frame, rank=r, world=2, seed=3) for r in range(2)]
    parts = [list(s) for s in shards]
    assert [len(p) for p in parts] == [32, 32] == [len(s) for s in shards]  # padded to equal length
    # batch k of each rank (4 photos) together = batch k of one process with batch 8
    for k in range(7):
        union = sorted(parts[0][4 * k:4 * k + 4] + parts[1][4 * k:4 * k + 4])
        assert union == sorted(full[8 * k:8 * k + 8])
    if kind == "none":
        assert sorted(full) == list(range(63))
    else:  # the weighted draw of torch's WeightedRandomSampler from the same seed
        weights = torch.as_tensor(sample_weights(kind, frame), dtype=torch.double)
        assert full == list(torch.utils.data.WeightedRandomSampler(weights, 63, generator=torch.Generator().manual_seed(3)))
    one.set_epoch(4)
    assert list(one) != full  # another epoch, another order


def test_class_weighting_survives_sharding():
    frame = _frame(600)
    counts = np.zeros(18)
    for epoch in range(5):
        for r in range(2):
            s = EpochSampler("class", frame, rank=r, world=2, seed=epoch)
            counts += np.bincount(frame["label"].to_numpy()[list(s)], minlength=18)
    seen = counts[counts > 0] / counts.sum()
    assert len(seen) == 4 and np.allclose(seen, 0.25, atol=0.03)  # every class about equally often


def test_shard_covers_each_index_and_pads_evenly():
    for n, world in [(5, 2), (6, 2), (7, 3), (1, 2), (0, 2)]:
        parts = [D.shard(n, r, world) for r in range(world)]
        assert len({len(p) for p in parts}) == 1
        assert set(np.concatenate(parts).tolist()) == set(range(n))


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    d = D.setup(torch.device("cpu"))
    n = 5  # 2 ranks: 3 photos each, photo 0 twice
    rows = D.shard(n, d.rank, d.world)
    probs = np.stack([np.full(18, i / 10, np.float32) for i in rows])
    labels = rows * 2
    p, y = D.gather_eval(d, n, probs, labels)
    out[rank] = {"p": [round(float(v), 3) for v in p[:, 0]], "y": y.tolist(), "run": D.broadcast(d, f"runs/from{d.rank}"),
                 "mean": D.mean(d, float(d.rank)), "main": d.main}
    D.shutdown(d)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~30 s of process start-up; test_ddp_training covers the same calls end to end
def test_gloo_gather_broadcast_mean():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
        out = dict(out)
    for rank in (0, 1):
        assert out[rank]["p"] == [0.0, 0.1, 0.2, 0.3, 0.4]  # every photo once, in order, padding dropped
        assert out[rank]["y"] == [0, 2, 4, 6, 8]
        assert out[rank]["run"] == "runs/from0" and out[rank]["mean"] == 0.5
    assert out[0]["main"] and not out[1]["main"]
    assert D.setup(torch.device("cpu")).world == 1  # no torchrun variables: single process, helpers no-ops


def test_sampler_power_reaches_the_data_parallel_sampler(tiny_cfg):
    """Every process draws from Feeds' EpochSampler: it must soften the balance by data.sampler_power."""
    from maskcls.data.feeds import Feeds
    from maskcls.data.loading import load_splits
    from maskcls.data.sampling import sample_weights

    frame = _frame(200)
    assert list(EpochSampler("class", frame, seed=3, power=0.5)) != list(EpochSampler("class", frame, seed=3))
    cfg = tiny_cfg("data.sampler_power=0.5")
    train, val = load_splits(cfg)
    src = lambda i: np.zeros((8, 8, 3), np.uint8)  # noqa: E731 - Feeds reads no photo when built
    feeds = Feeds(cfg, D.Dist(), torch.device("cpu"), (train, src), (val, src), {"mean": [0.5] * 3, "std": [0.5] * 3})
    np.testing.assert_allclose(feeds.sampler.weights.numpy(), sample_weights("class", feeds.train_frame, 0.5))
    assert not np.allclose(feeds.sampler.weights.numpy(), sample_weights("class", feeds.train_frame, 1.0))
