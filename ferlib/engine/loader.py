"""Batches of uint8 images for the engine: seeded per-epoch order, DDP shards, exact mid-epoch resume.

Two ways to read a batch, same order, same targets:

- the uint8 cache (:class:`ferlib.data.cache.CachedDataset`, also inside a ``Subset``): one gather of
  ``[B,3,S,S]`` from the memmap per batch, no per-image Python work;
- any other dataset: ``dataset[i]`` per image, stacked by :func:`collate_uint8`.

Augmentation and normalisation happen afterwards, on the whole batch on the training device
(:func:`ferlib.data.transforms.build_batch_transform`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, Subset


class EpochSampler(Sampler):
    """A seeded random permutation per epoch (``set_epoch``), split across DDP ranks; ``start`` skips
    the first items of this rank's share when resuming mid-epoch.

    Rank r of W takes items r, r+W, r+2W … of the permutation, padded by wrapping to ⌈n/W⌉ each (as
    ``DistributedSampler``), so the union of the ranks' first batches of size B is the first W·B items.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        per = math.ceil(self.n / self.world)
        idx = (idx + idx[: per * self.world - self.n])[self.rank::self.world]
        return idx

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) - self.start


class ResumableSampler(Sampler):
    """Wraps a sampler with ``set_epoch(epoch)`` (``ferlib.data.samplers``) so that ``set_epoch(epoch, start)``
    also skips the first ``start`` items of the epoch, as :class:`EpochSampler` does."""

    def __init__(self, sampler):
        self.sampler, self.start = sampler, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.start):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


def collate_uint8(batch):
    """Stack uint8 [3,H,W] images (resizing odd sizes to the first one's) and their targets."""
    imgs, targets = zip(*batch)
    h, w = imgs[0].shape[-2:]
    if any(im.shape[-2:] != (h, w) for im in imgs):
        from torchvision.transforms.v2 import functional as TF

        imgs = [im if im.shape[-2:] == (h, w) else TF.resize(im, [h, w], antialias=True) for im in imgs]
    return torch.stack(imgs), stack_targets(targets)


def stack_targets(targets) -> torch.Tensor:
    """Index targets → long [B]; vector targets (FERPlus) → float [B,C]; ``None`` (unlabelled) → −1."""
    t0 = targets[0]
    if isinstance(t0, torch.Tensor):
        return torch.stack([torch.as_tensor(t) for t in targets])
    if t0 is None:
        return torch.full((len(targets),), -1, dtype=torch.long)
    return torch.as_tensor(targets, dtype=torch.long)


def cache_reader(dataset):
    """``(cached dataset, index map)`` when ``dataset`` reads from the uint8 cache (maybe via Subset), else None."""
    indices = None
    while isinstance(dataset, Subset):
        sub = np.asarray(dataset.indices)
        indices = sub if indices is None else sub[indices]
        dataset = dataset.dataset
    if hasattr(dataset, "batch") and hasattr(dataset, "images") and getattr(dataset, "transform", None) is None:
        return dataset, indices
    return None


class CachedBatches(Dataset):
    """Indexed by a list of item indices: ``(uint8 [B,3,S,S], targets)`` gathered from the cache memmap."""

    def __init__(self, dataset):
        self.cached, self.map = cache_reader(dataset)

    def __len__(self) -> int:
        return len(self.cached) if self.map is None else len(self.map)

    def __getitem__(self, idx):
        rows = np.asarray(idx, dtype=np.int64)
        if self.map is not None:
            rows = self.map[rows]
        return self.cached.batch(rows), stack_targets([self.cached.target(int(i)) for i in rows])


def make_loader(dataset, batch_size: int, sampler=None, num_workers: int = 0, pin_memory: bool = False,
                seed: int = 0, persistent: bool = False) -> DataLoader:
    """A DataLoader yielding ``(uint8 [B,3,H,W], targets)``; order = ``sampler`` (default: in order).

    The loader owns a generator, so creating an iterator never draws from the global torch RNG
    (the augmentations' stream), which keeps a resumed run identical to an uninterrupted one.
    """
    sampler = sampler if sampler is not None else range(len(dataset))
    gen = torch.Generator().manual_seed(seed)
    common = dict(num_workers=num_workers, pin_memory=pin_memory, generator=gen,
                  persistent_workers=persistent and num_workers > 0)
    if cache_reader(dataset) is not None:
        return DataLoader(CachedBatches(dataset), sampler=BatchSampler(sampler, batch_size, drop_last=False),
                          batch_size=None, **common)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_uint8, **common)


def train_sampler(recipe, train, seed: int, rank: int, world: int):
    """The recipe's sampler (``ferlib.data.samplers``) or a seeded shuffle, resumable mid-epoch."""
    if recipe.sampler:
        from ferlib.data import samplers

        return ResumableSampler(samplers.build_sampler(recipe.sampler, train, seed=seed, rank=rank,
                                                       num_replicas=world, **(recipe.sampler_kwargs or {})))
    return EpochSampler(len(train), seed, rank, world)


def batches_per_epoch(sampler, batch_size: int) -> int:
    """Batches of a whole epoch (``start`` ignored)."""
    return math.ceil((len(sampler) + sampler.start) / batch_size)
