"""Data-parallel training under ``torchrun``: process group, rank roles, synchronised validation.

``torchrun --nproc_per_node=N -m maskcls.cli train ...`` starts N copies of
``maskcls train`` with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in the environment; ``setup`` turns them into a process
group (NCCL between GPUs, gloo on CPU) and gives each rank its device. A
plain ``maskcls train`` sees no such variables and gets a single-process
``Dist`` for which every helper here is a no-op, so ``fit`` calls them
unconditionally.

Roles: rank 0 alone writes the run folder, checkpoints, logs and model card;
the other ranks learn the run folder from it (``broadcast``). Validation is
split over the ranks with ``shard`` and put back together with ``gather_eval``,
so every validation photo is scored exactly once whatever the padding.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("maskcls")

RANK_SEED = 1_000_003  # rank r augments from seed + r * RANK_SEED: rank 0 draws what one process would


@dataclass
class Dist:
    """Where this process stands: rank among ``world`` processes, rank on its node, its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    owner: bool = False  # this setup() made the process group (and shutdown() ends it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(argv: list[str], processes: int, threads: int) -> int:
    """Run ``maskcls <argv>`` as ``processes`` torchrun workers on this machine; their exit code.

    What ``train.processes=N`` does, like Lightning's ``devices=N`` or
    Ultralytics' ``device=0,1``: the same command line, relaunched under
    ``torch.distributed.run --standalone`` with ``threads`` torch threads per
    worker (2 x 1 beats 1 x 2 on a 2-core CPU, BENCHMARKS.md). A worker that
    fails has printed its own error; this adds one line, not torchrun's traceback.
    """
    os.environ.setdefault("LOGLEVEL", "CRITICAL")  # torch.distributed.elastic's own loggers read it...
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # ...the others inherit this
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by each worker before torch starts its pools
    args = parse_args(["--standalone", f"--nproc_per_node={processes}", "-m", "maskcls.cli", *argv,
                       f"train.threads={threads}"])
    log.info("launching %d training processes x %d threads (torchrun --standalone)", processes, threads)
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = min(e.failures.items())
        print(f"maskcls: error: training process {rank} of {processes} exited with code {failure.exitcode} "
              "(its own error is above)", file=sys.stderr)
        return failure.exitcode if isinstance(failure.exitcode, int) and failure.exitcode > 0 else 1
    except SignalException as e:  # Ctrl-C / SIGTERM: torchrun has stopped the workers
        print(f"maskcls: interrupted ({e.sigval.name}; checkpoints written so far are kept)", file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup(device: torch.device) -> Dist:
    """Join the process group torchrun describes; ``device`` is the single-process choice (cpu/cuda)."""
    if not launched():
        return Dist(device=device)
    rank, world = env_rank(), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)  # one GPU per process: LOCAL_RANK picks it
        torch.cuda.set_device(device)
    owner = not dist.is_initialized()
    if owner:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        log.info("process group: %s, rank %d of %d (local %d), device %s", backend, rank, world, local, device)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=device, owner=owner)


def shutdown(d: Dist) -> None:
    if d.owner and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run folder it chose)."""
    if not d.enabled:
        return obj
    box = [obj if d.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(d: Dist, value: float) -> float:
    """The mean of ``value`` over ranks (each rank's training loss -> the epoch's loss)."""
    if not d.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device(d))
    dist.all_reduce(t)
    return float(t.item()) / d.world


@contextmanager
def local_first(d: Dist):
    """Local rank 0 of each node runs the block first (e.g. builds the decode cache); the others then reuse it."""
    if d.enabled and d.local_rank != 0:
        dist.barrier()
    try:
        yield
    finally:
        if d.enabled and d.local_rank == 0:
            dist.barrier()


def shard(n: int, rank: int, world: int) -> np.ndarray:
    """Indices of ``range(n)`` for ``rank``: padded with the first ones to a multiple of ``world``, every world-th.

    Every rank gets the same count (collectives need equal sizes); the padded
    repeats are dropped again by ``gather_eval``.
    """
    per = -(-n // world)
    order = np.arange(per * world) % max(n, 1) if n else np.zeros(0, int)
    return order[rank::world]


def gather_eval(d: Dist, n: int, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ranks' shards of the validation set -> (probs, labels) of its ``n`` photos in order, each once."""
    if not d.enabled:
        return probs, labels
    dev = _comm_device(d)
    p = torch.as_tensor(probs, dtype=torch.float32, device=dev)
    y = torch.as_tensor(labels, dtype=torch.int64, device=dev)
    ps, ys = [torch.empty_like(p) for _ in range(d.world)], [torch.empty_like(y) for _ in range(d.world)]
    dist.all_gather(ps, p)
    dist.all_gather(ys, y)
    index = np.concatenate([shard(n, r, d.world) for r in range(d.world)])
    _, first = np.unique(index, return_index=True)  # first occurrence of each photo, in photo order
    all_p = torch.cat(ps).cpu().numpy()
    all_y = torch.cat(ys).cpu().numpy()
    return all_p[first], all_y[first]


def wrap(d: Dist, model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (gradients averaged over ranks at each backward)."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [d.device.index] if d.device is not None and d.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (what checkpoints and evaluation use)."""
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) \
        else model


def _comm_device(d: Dist) -> torch.device:
    return d.device if d.device is not None and d.device.type == "cuda" else torch.device("cpu")
