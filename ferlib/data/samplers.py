"""Samplers for imbalanced FER data; seeded, ``set_epoch``-driven and DDP-aware (each rank its own share).

- :class:`ClassBalancedSampler` — GReFEL's class-balanced selection (docs/papers/grefel.md §9.6): every epoch draws
  ``n_per_class`` images of every class (without replacement while a class has enough, then with), shuffled.
- :class:`RandomSubsetSampler` (``"subset"``) — ``num_samples`` items per epoch without replacement, the
  data's own class shares (the CPU demos' budget on the synthetic set).
- :class:`ImbalancedDatasetSampler` — the sampler FERMam's code ships (``torchsampler/``, unused there,
  docs/papers/fermam.md §12): ``num_samples`` indices drawn with replacement, weight of an index = 1 / its class count.

``build_sampler(recipe.sampler, dataset, seed=…, num_replicas=…, rank=…, **recipe.sampler_kwargs)`` makes one.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def class_indices(targets: Sequence) -> np.ndarray:
    """Integer class per item (argmax for soft targets)."""
    return np.array([int(np.argmax(t)) if isinstance(t, (list, tuple, np.ndarray, torch.Tensor)) else int(t)
                     for t in targets], dtype=np.int64)


class _EpochSampler(Sampler):
    def __init__(self, seed: int, num_replicas: int, rank: int):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.seed, self.num_replicas, self.rank, self.epoch = seed, num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (as with DistributedSampler) so every epoch draws a new, reproducible order."""
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def _global_order(self) -> torch.Tensor:
        raise NotImplementedError

    def _shard(self, order: torch.Tensor) -> list[int]:
        total = self.total_size
        if len(order) < total:  # pad by wrapping so every rank gets the same count
            order = torch.cat([order, order[: total - len(order)]])
        return order[self.rank:total:self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard(self._global_order()))

    def __len__(self) -> int:
        return self.total_size // self.num_replicas


class ClassBalancedSampler(_EpochSampler):
    """``n_per_class`` items of every class per epoch (classes with no items are left out)."""

    def __init__(self, targets: Sequence, n_per_class: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(seed, num_replicas, rank)
        labels = class_indices(targets)
        self.by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        self.by_class = [ix for ix in self.by_class if len(ix)]
        self.n_per_class = int(n_per_class)
        n = self.n_per_class * len(self.by_class)
        self.total_size = math.ceil(n / num_replicas) * num_replicas

    def _global_order(self) -> torch.Tensor:
        g = self._generator()
        picks = []
        for ix in self.by_class:
            ix = torch.as_tensor(ix)
            full, rest = divmod(self.n_per_class, len(ix))
            parts = [ix[torch.randperm(len(ix), generator=g)] for _ in range(full)]
            parts.append(ix[torch.randperm(len(ix), generator=g)[:rest]])
            picks.append(torch.cat(parts))
        allp = torch.cat(picks)
        return allp[torch.randperm(len(allp), generator=g)]


class ImbalancedDatasetSampler(_EpochSampler):
    """Indices drawn with replacement, probability ∝ 1 / (count of the item's class)."""

    def __init__(self, targets: Sequence, num_samples: int | None = None, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0):
        super().__init__(seed, num_replicas, rank)
        labels = class_indices(targets)
        counts = np.bincount(labels)
        self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)
        n = num_samples if num_samples is not None else len(labels)
        self.num_samples = n
        self.total_size = math.ceil(n / num_replicas) * num_replicas

    def _global_order(self) -> torch.Tensor:
        return torch.multinomial(self.weights, self.total_size, replacement=True, generator=self._generator())


class RandomSubsetSampler(_EpochSampler):
    """``num_samples`` items per epoch drawn without replacement, a new draw every epoch: the data's own
    class shares on a budget (the CPU demos of the large models see part of the synthetic set per epoch).
    A split smaller than ``num_samples`` is used whole (shuffled)."""

    def __init__(self, targets: Sequence, num_samples: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(seed, num_replicas, rank)
        self.n_items = len(targets)
        if int(num_samples) < 1:
            raise ValueError(f"subset sampler: num_samples must be at least 1, got {num_samples}")
        self.num_samples = min(int(num_samples), self.n_items)
        self.total_size = math.ceil(self.num_samples / num_replicas) * num_replicas

    def _global_order(self) -> torch.Tensor:
        return torch.randperm(self.n_items, generator=self._generator())[: self.num_samples]


SAMPLERS = {"class_balanced": ClassBalancedSampler, "imbalanced": ImbalancedDatasetSampler,
            "subset": RandomSubsetSampler}


def build_sampler(name: str | None, dataset, seed: int = 0, num_replicas: int = 1, rank: int = 0, **kwargs):
    """The sampler a recipe names (``None`` → None: the engine shuffles / uses DistributedSampler)."""
    if name is None:
        return None
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; available: {sorted(SAMPLERS)}")
    return SAMPLERS[name](dataset.targets, seed=seed, num_replicas=num_replicas, rank=rank, **kwargs)
