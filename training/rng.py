"""Randomness a run owns, so that many runs share one process without touching each other.

Data order comes from generators seeded by (seed, epoch) (training.batches) and augmentation from
(seed, sample) (training.data), so neither needs global state. Dropout cannot be given a generator:
``torch.nn.functional.dropout`` (and peft's ``lora_dropout``) draw from torch's global generator. A run
therefore forks that generator (CPU and the run's CUDA device), seeds the fork from its own seed, saves
its state in checkpoints, and hands the caller's state back untouched when it ends.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class RunRandomness:
    """Context manager: torch's global generators belong to the run while it is active."""

    def __init__(self, seed: int, device: torch.device):
        self.seed, self.cuda = seed, cuda_indices(device)

    def __enter__(self) -> "RunRandomness":
        self._fork = torch.random.fork_rng(devices=self.cuda)
        self._fork.__enter__()
        torch.default_generator.manual_seed(self.seed)
        for index in self.cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)

    def state(self) -> dict:
        return {"torch": torch.get_rng_state(), "cuda": [torch.cuda.get_rng_state(i) for i in self.cuda]}

    def restore(self, state: dict) -> None:
        torch.set_rng_state(state["torch"].cpu())
        # a CUDA run resumed on the CPU (or the reverse) continues, just not bit for bit
        for index, saved in zip(self.cuda, state.get("cuda") or []):
            torch.cuda.set_rng_state(saved.cpu(), index)


def cuda_indices(device: str | torch.device) -> list[int]:
    """The CUDA device a run uses, as the list ``torch.random.fork_rng(devices=...)`` takes."""
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block (e.g. to initialise a model reproducibly) and restore
    the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
