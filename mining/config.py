"""What a mining run is: the base model, the data per member, the LoRA and its training, the
extraction settings. One frozen dataclass, two presets, written to ``OUT/config.json`` by the first
step and checked by every later one, so that members of one cluster never mix settings.

    cfg = MineConfig.preset("quick", out=Path("mined_quick"))
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

ATTRIBUTES = ("texture", "geometry", "camera", "lighting")
# The aggregator's frame and global blocks: attention in and out, MLP in and out (the paper's layers).
DEFAULT_TARGETS = r"aggregator\.(frame|global)_blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"


class MineConfigError(ValueError):
    """A mining setting that cannot work, or an output folder made with other settings (one line)."""


@dataclass(frozen=True)
class MineConfig:
    # --- base model ---
    checkpoint: str = "assets/vggt_small.safetensors"
    model_preset: str | None = None        # only for checkpoints without a stored config (official: vggt-1b)
    # --- data: member i of attribute X trains on partition X/p{i:03d}; the generic cluster on mixed ---
    data: str = "data/synth"
    render_preset: str = "default"         # assets/render_presets.json; the same renders as `cli.py render`
    attributes: tuple[str, ...] = ATTRIBUTES
    members: int = 6                       # per attribute (the paper: 5–10)
    mixed_members: int = 4                 # the generic "adapt to our renders" cluster
    mixed_first: int = 96                  # mixed partitions from here on: `pretrain` trains on p000–p087
    transfer_partitions: int = 4           # per cluster, the partitions after its members': no member trains on
                                           # them, the transfer matrix evaluates all their samples
    samples: int | None = None             # samples per partition (None: the render preset's, 8 by default)
    held_out: int = 2                      # samples per partition kept for the member's own evaluation
    jitter: float = 1.0                    # render jitter of the attributes a partition holds (`render --jitter`)
    # --- the LoRA and its training (identical for every member) ---
    targets: str = DEFAULT_TARGETS         # regex over module names (peft's target_modules)
    rank: int = 16
    lora_alpha: float = 16.0               # scaling alpha / r = 1
    steps: int = 300
    batch_size: int = 2
    frames: int = 4
    resolution: int = 126
    lr: float = 1e-3
    warmup: float = 0.05
    weight_decay: float = 0.0
    camera_weight: float = 0.0             # the small model's camera head does not learn (assets/vggt_small.md)
    depth_weight: float = 1.0
    point_weight: float = 1.0
    seed: int = 0                          # each member draws its own LoRA init and data order from (seed, attribute, i)
    # --- the planted-attribute teacher, a positive control (mining.plant; 0 = a real run) ---
    plant_rank: int = 0                    # k: rank of each attribute's planted update on every mined layer
    plant_gap: float = 0.25                # the teacher's depth gap to the base, in units of the base's depth error
                                           # (it saturates below 1: docs/mining.md, "Power")
    plant_space: str = "visible"           # "visible": inside each layer's K-FAC top eigenspaces; "random"
    plant_mode: str = "mixed"              # "mixed": targets gt + dose·(teacher − base); "teacher": teacher alone
    plant_dose: float = 1.0                # λ of the mixed targets
    device: str | None = None              # None: cuda if available
    gradient_checkpointing: bool = False
    # --- extraction ---
    subspace_rank: int | str = 16          # d′, or "auto" (largest spectral gap within rank_bounds)
    rank_bounds: tuple[int, int] = (4, 32)
    alpha: float = 1.0
    eps: float = 1e-6
    max_iter: int = 100
    activation_batches: int = 4            # batches per attribute for the activation (row-side) control
    out: str = "mined"

    def __post_init__(self):
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown:
            raise MineConfigError(f"unknown attribute(s) {unknown}; choose from {list(ATTRIBUTES)}")
        for name in ("members", "rank", "steps", "batch_size", "frames"):
            if getattr(self, name) < 1:
                raise MineConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.members < 2:
            raise MineConfigError("members must be >= 2: a shared subspace needs a cluster")
        if not self.jitter >= 0:
            raise MineConfigError(f"jitter must be >= 0, got {self.jitter}")
        if self.plant_rank < 0:
            raise MineConfigError(f"plant_rank must be >= 0 (0: no plant), got {self.plant_rank}")
        if self.plant_space not in ("visible", "random"):
            raise MineConfigError(f"plant_space must be 'visible' or 'random', got {self.plant_space!r}")
        if self.plant_mode not in ("mixed", "teacher"):
            raise MineConfigError(f"plant_mode must be 'mixed' or 'teacher', got {self.plant_mode!r}")
        if not self.plant_dose >= 0 or not self.plant_gap > 0:
            raise MineConfigError(f"plant_dose must be >= 0 and plant_gap > 0, got {self.plant_dose}, {self.plant_gap}")
        if self.transfer_partitions < 0:
            raise MineConfigError(f"transfer_partitions must be >= 0, got {self.transfer_partitions}")
        if self.held_out < 1:
            raise MineConfigError("held_out must be >= 1: members are judged on samples they did not train on")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise MineConfigError(f"targets {self.targets!r}: not a regular expression ({e})") from None
        if self.model_preset is not None:
            from model import VGGTConfig
            try:
                VGGTConfig.preset(self.model_preset)
            except ValueError as e:
                raise MineConfigError(str(e)) from None
        if self.device is not None and self.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise MineConfigError(f"device {self.device!r}: this torch sees no CUDA device")
        if len(self.rank_bounds) != 2 or not 1 <= self.rank_bounds[0] <= self.rank_bounds[1]:
            raise MineConfigError(f"rank_bounds must be two integers 1 <= low <= high, got {self.rank_bounds}")
        if self.subspace_rank != "auto" and not (isinstance(self.subspace_rank, int) and self.subspace_rank >= 1):
            raise MineConfigError(f"subspace_rank must be a positive integer or 'auto', got {self.subspace_rank!r}")

    # Settings that change what a member learns; a folder started with others is refused.
    MEMBER_FIELDS = ("checkpoint", "model_preset", "render_preset", "samples", "held_out", "jitter", "targets", "rank", "lora_alpha",
                     "steps", "batch_size", "frames", "resolution", "lr", "warmup", "weight_decay", "camera_weight",
                     "depth_weight", "point_weight", "seed", "plant_rank", "plant_gap", "plant_space", "plant_mode",
                     "plant_dose")

    @classmethod
    def preset(cls, name: str, **overrides) -> "MineConfig":
        if name not in PRESETS:
            raise MineConfigError(f"unknown mining preset {name!r}; choose from {sorted(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(overrides) - fields)
        if bad:
            raise MineConfigError(f"unknown mining setting(s) {bad}")
        return cls(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def member_settings(self) -> dict:
        return {k: self.to_dict()[k] for k in self.MEMBER_FIELDS}

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def loss_weights(self):
        from training import LossWeights
        return LossWeights(camera=self.camera_weight, depth=self.depth_weight, point=self.point_weight)


# Chosen by measurement on the shipped small model (docs/mining.md, "Defaults and what they show").
PRESETS: dict[str, dict] = {
    "default": {},
    # 12 minutes on two cores, rendering included (measured): two members per attribute, short runs
    "quick": {"members": 2, "mixed_members": 2, "steps": 60},
}

__all__ = ["ATTRIBUTES", "DEFAULT_TARGETS", "MineConfig", "MineConfigError", "PRESETS"]
