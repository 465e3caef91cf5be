"""Batches in an order fixed by (seed, epoch), reachable at any batch without loading the ones before,
and without drawing from any global generator."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from training.batches import BatchStream, Loader, make_loader


class Counting(Dataset):
    """Sample i is {"images": tensor(i)}; remembers which indices were loaded."""

    def __init__(self, n: int):
        self.n, self.loaded = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.loaded.append(i)
        return {"images": torch.tensor(i)}


def ids(batches) -> list[list[int]]:
    return [b["images"].tolist() for b in batches]


def test_order_depends_only_on_seed_and_epoch():
    loader = make_loader(Counting(10), batch_size=3)                  # drop_last: 3 batches of 3
    assert len(loader) == 3
    first = ids(loader.batches(epoch=0, seed=1))
    assert first == ids(loader.batches(epoch=0, seed=1)) == loader.order(0, 1)
    assert first != ids(loader.batches(epoch=1, seed=1)) and first != ids(loader.batches(epoch=0, seed=2))
    flat = sum(first, [])
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert ids(make_loader(Counting(7), batch_size=3, shuffle=False, drop_last=False)) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="batch_size"):
        Loader(Counting(3), batch_size=0)


def test_starting_mid_epoch_loads_only_the_batches_it_returns():
    data = Counting(12)
    loader = make_loader(data, batch_size=2)
    tail = ids(loader.batches(epoch=4, seed=0, start=4))
    assert tail == loader.order(4, 0)[4:] and sorted(data.loaded) == sorted(sum(tail, []))


def test_loading_draws_from_no_global_generator():
    states = lambda: (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: E731
    before = states()
    for workers in (0, 1):
        list(make_loader(Counting(6), batch_size=2, num_workers=workers).batches(epoch=2, seed=5))
    after = states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_a_stream_started_at_any_batch_continues_the_uninterrupted_one():
    loader = make_loader(Counting(7), batch_size=2)                   # 3 batches per epoch
    whole = BatchStream(loader, seed=3)
    reference = [next(whole)["images"].tolist() for _ in range(10)]   # crosses three epoch boundaries
    for first in (1, 3, 5, 8):
        resumed = BatchStream(loader, seed=3, first=first)
        assert [next(resumed)["images"].tolist() for _ in range(10 - first)] == reference[first:]
    with pytest.raises(ValueError, match="no batches"):
        BatchStream(make_loader(Counting(1), batch_size=2), seed=0)
    with pytest.raises(TypeError, match="make_loader"):
        BatchStream(torch.utils.data.DataLoader(Counting(4)), seed=0)
