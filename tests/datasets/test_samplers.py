"""Samplers: class balance, seeding, set_epoch, and DDP sharding (disjoint ranks covering one epoch)."""
from collections import Counter

import numpy as np
import pytest
import torch

from ferlib.data.samplers import ClassBalancedSampler, ImbalancedDatasetSampler, build_sampler

# RAF-DB-like imbalance: class 3 dominates, class 1 is rare
TARGETS = [0] * 40 + [1] * 5 + [2] * 20 + [3] * 200 + [4] * 60


def test_class_balanced_counts_per_class():
    s = ClassBalancedSampler(TARGETS, n_per_class=30, seed=0)
    idx = list(s)
    assert len(idx) == len(s) == 150
    assert Counter(TARGETS[i] for i in idx) == {c: 30 for c in range(5)}
    # a class with ≥ 30 items is drawn without replacement; the rare class cycles through all its items
    assert len({i for i in idx if TARGETS[i] == 0}) == 30
    assert Counter(i for i in idx if TARGETS[i] == 1) == {i: 6 for i in range(40, 45)}


def test_soft_targets_use_argmax():
    soft = [np.eye(3)[t % 3] * 0.7 + 0.1 for t in range(30)]
    s = ClassBalancedSampler(soft, n_per_class=4, seed=1)
    assert Counter(int(np.argmax(soft[i])) for i in s) == {0: 4, 1: 4, 2: 4}


@pytest.mark.parametrize("cls,kw", [(ClassBalancedSampler, {"n_per_class": 25}), (ImbalancedDatasetSampler, {})])
def test_seeded_and_epoch_dependent(cls, kw):
    a, b = cls(TARGETS, seed=3, **kw), cls(TARGETS, seed=3, **kw)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(cls(TARGETS, seed=4, **kw)) != first


@pytest.mark.parametrize("cls,kw", [(ClassBalancedSampler, {"n_per_class": 25}), (ImbalancedDatasetSampler, {})])
def test_ddp_shards_partition_the_epoch(cls, kw):
    whole = cls(TARGETS, seed=7, **kw)
    whole.set_epoch(2)
    shards = []
    for rank in range(3):
        s = cls(TARGETS, seed=7, num_replicas=3, rank=rank, **kw)
        s.set_epoch(2)
        shards.append(list(s))
    assert len({len(x) for x in shards}) == 1 and len(shards[0]) == -(-len(whole) // 3)
    n = len(list(whole))
    merged = [shards[r][k] for k in range(len(shards[0])) for r in range(3)][:n]
    assert merged == list(whole)
    with pytest.raises(ValueError, match="rank 3"):
        cls(TARGETS, num_replicas=3, rank=3, **kw)


def test_imbalanced_sampler_balances_in_expectation():
    s = ImbalancedDatasetSampler(TARGETS, num_samples=20000, seed=0)
    counts = np.bincount([TARGETS[i] for i in s], minlength=5) / 20000
    np.testing.assert_allclose(counts, 0.2, atol=0.02)
    np.testing.assert_allclose(s.weights[:1].item(), 1 / 40)


def test_build_sampler_and_dataloader():
    class D(torch.utils.data.Dataset):
        targets = TARGETS

        def __len__(self):
            return len(TARGETS)

        def __getitem__(self, i):
            return i, TARGETS[i]

    assert build_sampler(None, D()) is None
    s = build_sampler("class_balanced", D(), seed=0, n_per_class=8)
    batches = list(torch.utils.data.DataLoader(D(), batch_size=10, sampler=s))
    assert sum(len(b[0]) for b in batches) == 40
    assert Counter(torch.cat([b[1] for b in batches]).tolist()) == {c: 8 for c in range(5)}
    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler("nope", D())
