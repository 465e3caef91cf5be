"""A run's checkpoints: what they hold (the trainable tensors and the run's state) and the folder that
keeps the newest few."""
from __future__ import annotations

from pathlib import Path

import torch

from common.atomic import atomic_path


class CheckpointFolder:
    """``step_XXXXXXXX.pt`` files in one folder: each written atomically, the newest ``keep`` kept."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = Path(folder), keep
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".step_*.tmp-*"):  # left by a save that was killed; never complete
            stale.unlink()

    def all(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))  # zero-padded steps sort numerically

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def load_latest(self, device: torch.device) -> dict | None:
        path = self.latest()
        return None if path is None else torch.load(path, map_location=device, weights_only=True)

    def save(self, step: int, state: dict) -> Path:
        path = self.folder / f"step_{step:08d}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        for old in self.all()[:-self.keep]:
            old.unlink()
        return path


def trainable_state(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The named trainable parameters and every persistent buffer (running statistics would otherwise be
    lost); a plain state dict, so ``model.checkpoint.load_checkpoint`` reads it too."""
    params = dict(model.named_parameters())
    buffers = {n for n, _ in model.named_buffers()}
    return {n: t.detach().clone() for n, t in model.state_dict().items() if n in buffers} | \
           {n: params[n].detach().clone() for n in names}


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for name, value in tensors.items():
            own[name].copy_(value)
