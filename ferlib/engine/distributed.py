"""Several processes (``torchrun --nproc-per-node N -m ferlib train …``): process group, rank, reductions.

One process is the same code with ``world_size() == 1``: every helper here is then the identity.
"""
from __future__ import annotations

import os
import threading
import time
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


class BatchSplitError(ValueError):
    """The global batch does not split evenly over the processes (nothing was touched)."""


def per_process_batch(global_batch: int, world: int) -> int:
    """Each process's share of the global batch (the card's ``batch_size``, the authors' batch over all GPUs).

    Raises :class:`BatchSplitError` when ``global_batch`` is not a multiple of ``world``: another split would
    train with another batch than the one asked for.
    """
    if world <= 1:
        return int(global_batch)
    if global_batch % world:
        lower = global_batch // world * world
        choices = " or ".join(str(b) for b in (lower, lower + world) if b > 0)
        raise BatchSplitError(
            f"the global batch of {global_batch} images does not split over {world} processes ({global_batch} / "
            f"{world} is not a whole number); nothing was touched. Pass --batch-size {choices} (batch_size=…, the "
            f"global batch: each process takes batch_size / {world}), or start a number of processes that divides "
            f"{global_batch}")
    return global_batch // world


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 without torchrun), known before the
    process group is joined."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank0_first(fn, what: str, heartbeat_s: float = 30.0, stall_timeout_s: float = 600.0, report_every_s: float = 300.0):
    """``fn()`` on rank 0 first, then on the other ranks (which read what rank 0 wrote: the generated synthetic
    set, a new cache); returns ``fn()``'s value on every rank. One process: just ``fn()``.

    No fixed time limit on rank 0's work (a first AffectNet cache build can take hours; ``python -m ferlib prepare``
    builds it ahead of time): while rank 0 works, a thread of it sends a heartbeat every ``heartbeat_s`` on a
    separate gloo group, and the waiting ranks only give up when no heartbeat came for ``stall_timeout_s``
    (rank 0 gone). Rank 1 prints a line every ``report_every_s`` saying what it waits for. When ``fn`` fails on
    rank 0 the others raise at once instead of repeating it.
    """
    if not is_distributed():
        return fn()
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=stall_timeout_s))
    rank = dist.get_rank()
    try:
        if rank == 0:
            return _work_with_heartbeat(fn, group, heartbeat_s)
        _wait_for_rank0(group, what, rank, report_every_s)
        return fn()
    finally:
        dist.destroy_process_group(group)


_WORKING, _DONE, _FAILED = 0.0, 1.0, 2.0


def _work_with_heartbeat(fn, group, heartbeat_s: float):
    outcome = {"state": _WORKING}
    finished = threading.Event()

    def beat():
        while True:
            finished.wait(heartbeat_s)
            state = torch.tensor([outcome["state"]], dtype=torch.float64)
            dist.broadcast(state, src=0, group=group)
            if state.item() != _WORKING:
                return

    thread = threading.Thread(target=beat, name="ferlib-rank0-heartbeat", daemon=True)
    thread.start()
    try:
        value = fn()
        outcome["state"] = _DONE
        return value
    except BaseException:
        outcome["state"] = _FAILED
        raise
    finally:
        finished.set()
        thread.join()


def _wait_for_rank0(group, what: str, rank: int, report_every_s: float) -> None:
    start = last_report = time.monotonic()
    while True:
        state = torch.zeros(1, dtype=torch.float64)
        dist.broadcast(state, src=0, group=group)
        if state.item() == _DONE:
            return
        if state.item() == _FAILED:
            raise RuntimeError(f"rank 0 failed to {what}; its error is above (rank {rank} stops too)")
        now = time.monotonic()
        if rank == 1 and now - last_report >= report_every_s:
            print(f"rank 1: waiting {(now - start) / 60:.0f} min for rank 0 to {what} (rank 0 shows its progress)",
                  flush=True)
            last_report = now
