"""Several processes (``torchrun --nproc-per-node N -m ferlib train …``): process group, rank, reductions.

One process is the same code with ``world_size() == 1``: every helper here is then the identity.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` …) when
    ``WORLD_SIZE`` > 1: NCCL on CUDA, gloo on CPU. Returns ``(rank, world_size)``; no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    use_cuda = torch.cuda.is_available() and str(device) != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: dict, device: torch.device) -> dict:
    """Sum each number of ``values`` over the ranks (float64 on the process group's device)."""
    if not is_distributed():
        return dict(values)
    dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return dict(zip(values, t.tolist()))


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params) -> None:
    """Average ``.grad`` over the ranks for parameters DDP does not see (e.g. a loss's learnable centres)."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


@torch.no_grad()
def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (BatchNorm running statistics drift apart
    under DDP, since each rank updates them from its own batches; evaluation uses rank 0's, as saved)."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
