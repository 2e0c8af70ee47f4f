"""Data parallelism (DDP) under ``torchrun``: the process group, each rank's part of the val set, the reductions.

Owns: `setup_distributed` (device and process group of this process), `world_and_rank`, `is_distributed`,
`val_shard` (rank r evaluates every world-th val image from r), `sum_over_processes` (all-reduce of counts and
sums), `gather_shards` (per-image values back in the val set's order), `with_sync_bn`, `wrap_ddp`. The trainer
(``gv3lite.train``) calls these; without a process group every function leaves its input unchanged.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from gv3lite.utils import ddp_timeout, resolve_device


def setup_distributed(device="cpu") -> torch.device:
    """The device of this process: ``gv3lite.utils.resolve_device(device)``; under ``torchrun`` (``WORLD_SIZE`` > 1)
    it also starts the process group (NCCL on CUDA, else Gloo; a process waits at most ``gv3lite.utils.ddp_timeout()``
    for the others, 10 min unless ``GV3LITE_DDP_TIMEOUT_MIN`` says otherwise) and picks the GPU ``LOCAL_RANK``. Call
    it before the model is moved to the device."""
    device = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=ddp_timeout())
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    return device


def world_and_rank() -> tuple[int, int]:
    """(number of processes, this process's rank) from ``torchrun``'s environment; (1, 0) without it."""
    return int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))


def is_distributed() -> bool:
    """True inside an initialized process group of more than one process (DDP under ``torchrun``)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_processes(values: list[float], device) -> list[float]:
    """``values`` summed over the DDP processes (all-reduce, float64); unchanged without a process group."""
    if not is_distributed():
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def gather_shards(values: torch.Tensor) -> torch.Tensor:
    """The per-image ``values`` (N_rank,) of every DDP process put back in the val set's order (rank r holds images
    r, r + world, ... -- see `val_shard`); unchanged without a process group."""
    if not is_distributed():
        return values
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, values.cpu())
    full = torch.empty(sum(len(x) for x in shards), dtype=values.dtype)
    for rank, shard in enumerate(shards):
        full[rank::len(shards)] = shard
    return full


def val_shard(dataset, world: int, rank: int):
    """Rank ``rank``'s part of the val set under DDP: every ``world``-th image from ``rank`` (each image exactly once
    over all processes, no padding -- unlike ``DistributedSampler`` -- so summed counts are exact)."""
    return dataset if world == 1 else torch.utils.data.Subset(dataset, range(rank, len(dataset), world))


def with_sync_bn(model: torch.nn.Module, sync_bn: bool, world: int, device) -> torch.nn.Module:
    """``model`` with every BatchNorm turned into ``torch.nn.SyncBatchNorm`` (batch statistics over the global batch
    of all ``world`` processes) when ``sync_bn`` and ``world`` > 1; else ``model`` unchanged. The parameters stay the
    same objects (an optimizer built before keeps working). Raises ``ValueError`` for ``sync_bn`` on a CPU device:
    torch's SyncBatchNorm runs on GPUs only."""
    if not sync_bn or world == 1:
        return model
    if torch.device(device).type != "cuda":
        raise ValueError("--sync-bn: torch's SyncBatchNorm runs on GPUs only; use --device cuda, or drop --sync-bn "
                         "(each process then normalizes with the statistics of its own part of the batch)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_ddp(model: torch.nn.Module, sync_bn: bool, world: int, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` (after `with_sync_bn`) when ``world`` > 1; else ``model``."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(with_sync_bn(model, sync_bn, world, device),
                                                     device_ids=[device] if device.type == "cuda" else None)
