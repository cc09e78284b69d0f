"""Distributed data parallel set-up: the same `lgdram train` runs under `torchrun`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; each process then trains on its own slice of
the sample stream, gradients are averaged by DistributedDataParallel (NCCL on GPUs, gloo on
CPU), and only rank 0 writes checkpoints and metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lgdram_cli.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    #: In a process group (launched by torchrun), even one of a single process: so that
    #: `--nproc-per-node 1` runs the very code path of N processes (DDP, NCCL on one GPU).
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched by torchrun; return the world and this process's device."""
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:  # a plain process
        return World(), device
    world = World(
        int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")),
        enabled=True,
    )
    if device.type == "cuda":
        # every process checks (not only the one without a GPU), so all stop with the same line
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world.local_rank + 1))
        if local > torch.cuda.device_count():
            raise UserError(
                f"torchrun started {local} processes on this machine but it has {torch.cuda.device_count()} "
                f"CUDA device(s), one per process; use --nproc-per-node {torch.cuda.device_count()} or --device cpu"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device


def backend() -> str:
    """The process group's backend ('nccl', 'gloo'), for the start-up log."""
    return str(dist.get_backend())


def teardown(world: World) -> None:
    """Leave together: a rank that tears down while rank 0 still evaluates and saves aborts gloo."""
    if world.enabled and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if not world.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # Some loss mixes leave parts unused (e.g. no policy term → the location net); let DDP cope.
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def mean(value: float, world: World, device: torch.device) -> float:
    """The mean of a scalar over all processes (for logging)."""
    if not world.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world.size
