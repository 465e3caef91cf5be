"""Batches epoch after epoch, in an order that depends only on (seed, epoch), and a stream of them that
can start at any batch number of a run, so that a resumed run sees exactly the batches it would have.

    loader = make_loader(dataset, batch_size=2)        # shuffled
    for batch in loader.batches(epoch=3, seed=0): ...  # epoch 3's order, whatever ran before
    for batch in loader: ...                           # epoch 0, seed 0
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class Loader:
    """A map-style dataset's batches (stacked by torch's default collate) for one epoch at a time.

    Shuffling permutes the sample indices with a generator seeded by (seed, epoch); nothing is drawn
    from any global generator, so loading never changes another run's randomness, and batch ``start``
    of an epoch is reached without loading the batches before it. ``num_workers`` > 0 loads in
    processes as torch's DataLoader does.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = True, num_workers: int = 0,
                 drop_last: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.num_workers, self.drop_last = num_workers, drop_last

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int = 0, seed: int = 0) -> list[list[int]]:
        """The sample indices of every batch of ``epoch``."""
        n = len(self.dataset)
        indices = np.random.default_rng((seed, epoch)).permutation(n) if self.shuffle else np.arange(n)
        return [indices[i:i + self.batch_size].tolist() for i in range(0, len(self) * self.batch_size, self.batch_size)]

    def batches(self, epoch: int = 0, seed: int = 0, start: int = 0) -> Iterator[dict]:
        """Batches ``start``, ``start + 1``, … of ``epoch``."""
        chunks = self.order(epoch, seed)[start:]
        if not chunks:
            return iter(())
        # The DataLoader gets its own generator: without one it draws its workers' base seed from
        # torch's global generator on every iteration.
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence((seed, epoch)).generate_state(1)[0]))
        return iter(DataLoader(self.dataset, batch_sampler=chunks, num_workers=self.num_workers, generator=generator))

    def __iter__(self) -> Iterator[dict]:
        return self.batches()


def make_loader(dataset: Dataset, batch_size: int = 1, shuffle: bool = True, num_workers: int = 0,
                drop_last: bool = True) -> Loader:
    """A :class:`Loader` over ``dataset`` (for training.data's sequences: the batch format there)."""
    return Loader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=drop_last)


class BatchStream:
    """A run's batches, epoch after epoch, from batch number ``first`` of the run on. Epoch e's order is
    ``loader.order(e, seed)``, so resuming at any batch reproduces the uninterrupted run."""

    def __init__(self, loader, seed: int, first: int = 0):
        if not hasattr(loader, "batches"):
            raise TypeError("train_loader must be a training.batches.Loader (make_loader), whose batch order "
                            "depends only on the run's seed, so that runs resume exactly")
        self.per_epoch = len(loader)
        if self.per_epoch == 0:
            raise ValueError("train_loader yields no batches (fewer samples than batch_size with drop_last?)")
        self.loader, self.seed, self.position = loader, seed, first
        self._iterator = None

    def __next__(self) -> dict:
        if self._iterator is None:
            epoch, offset = divmod(self.position, self.per_epoch)
            self._iterator = self.loader.batches(epoch, self.seed, offset)
        batch = next(self._iterator)
        self.position += 1
        if self.position % self.per_epoch == 0:
            self._iterator = None
        return batch
