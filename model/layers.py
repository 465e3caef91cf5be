"""Building blocks the backbone and every head share."""
from __future__ import annotations

import torch
import torch.nn as nn


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2. The exact (erf) GELU everywhere: the tanh approximation, which the CoTracker
    lineage uses in the tracker's attention blocks, does not reproduce the official outputs."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def sincos_1d(channels: int, pos: torch.Tensor, omega_0: float = 10000.0) -> torch.Tensor:
    """Positions [...] -> [M, channels] (M = pos.numel()): channels/2 sines then channels/2 cosines at
    frequencies omega_0^(-k / (channels/2)).

    Frequencies and phases are computed in float64 (float32 on MPS, which has no float64) and the
    result is cast to float32, as the official weights were trained with.
    """
    wide = torch.float32 if pos.device.type == "mps" else torch.float64
    k = torch.arange(channels // 2, dtype=wide, device=pos.device)
    omega = 1.0 / omega_0 ** (k / (channels / 2.0))
    phase = pos.reshape(-1, 1).to(wide) * omega[None]
    return torch.cat([phase.sin(), phase.cos()], dim=1).float()
