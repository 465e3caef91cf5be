"""What a training run is: its settings (``TrainConfig``) and the run's learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    steps: int                           # optimizer steps (each of accum_steps batches)
    lr: float = 5e-5
    weight_decay: float = 0.05
    warmup: float = 0.05                 # fraction of steps with linear warm-up
    min_lr: float = 1e-8                 # end of the cosine, for a group at ``lr`` (other groups in proportion)
    grad_clip: float | None = 1.0        # max gradient norm per param group; None or 0 = no clipping
    accum_steps: int = 1
    seed: int = 0                        # data order and the run's own random stream (dropout)
    checkpoint_every: int = 500          # steps; the last step is always checkpointed
    keep_checkpoints: int = 2
    val_every: int = 0                   # steps; 0 = validate only at the end (when a val_loader is given)
    device: str | None = None            # None = cuda if available, else cpu
    bf16: bool = True                    # autocast to bfloat16 on CUDA (never on CPU)
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.accum_steps < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("steps, accum_steps, checkpoint_every and keep_checkpoints must be >= 1")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")


# Settings that change the trajectory: a resumed run must use the same ones.
RUN_FIELDS = ("steps", "lr", "weight_decay", "warmup", "min_lr", "grad_clip", "accum_steps", "seed")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of each group's base learning rate for optimizer step ``step`` (0-based): linear warm-up
    over ``cfg.warmup`` of the steps, then a cosine down to ``cfg.min_lr`` (the official recipe)."""
    warmup_steps = round(cfg.warmup * cfg.steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # starts above 0 so the first step already learns
    # the cosine leaves the peak right after warm-up and reaches min_lr at the last step
    progress = min(1.0, (step + 1 - warmup_steps) / max(1, cfg.steps - warmup_steps))
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
