"""Sizes of a VGGT, as one flat dataclass.

`VGGTConfig()` is the official VGGT-1B. Small presets keep the same architecture at CPU scale:
"tiny" (tests: every module, including the track head, in well under a second) and "small" (the base
model we pretrain on our renders). `from_official` reads the constructor arguments of the official
sub-modules, in the form the parity fixtures record them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# DINOv2 encoders the official aggregator can select by name: (embed_dim, depth, heads).
DINO_SIZES = {
    "dinov2_vits14_reg": (384, 12, 6),
    "dinov2_vitb14_reg": (768, 12, 12),
    "dinov2_vitl14_reg": (1024, 24, 16),
}
# A DINOv2 of the aggregator's width with dino_depth blocks and dino_heads heads (the parity fixtures
# build one smaller than ViT-S).
CUSTOM_DINO = "dinov2_custom"


@dataclass(frozen=True)
class VGGTConfig:
    # Aggregator: alternating frame/global attention over patch tokens plus camera and register tokens.
    img_size: int = 518              # size the patch embedder's position table was trained for
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24                  # frame/global block pairs
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qk_norm: bool = True
    rope_freq: float = 100.0         # 0 disables RoPE
    init_values: float = 0.01        # LayerScale init of the aggregator blocks

    # Patch embedder: "conv" (one strided convolution) or a DINOv2 ViT with registers.
    patch_embed: str = "dinov2_vitl14_reg"
    dino_depth: int | None = None    # override the named DINOv2 size (the parity fixtures do)
    dino_heads: int | None = None

    # Camera head: iterative refinement of the camera token, AdaLN-modulated trunk.
    camera_head: bool = True
    camera_trunk_depth: int = 4
    camera_heads: int = 16
    camera_iterations: int = 4
    camera_init_values: float = 0.01  # LayerScale init of the camera trunk's blocks

    # DPT heads for depth and world points.
    depth_head: bool = True
    point_head: bool = True
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, ...] = (4, 11, 17, 23)
    dpt_frames_chunk: int = 8

    # Track head: a DPT feature extractor and an iterative point tracker.
    track_head: bool = True
    track_features: int = 128
    track_iters: int = 4
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    track_hidden: int = 384
    track_out_channels: tuple[int, ...] | None = None   # None: same as the DPT heads
    track_layers: tuple[int, ...] | None = None

    def __post_init__(self):
        for name in ("dpt_out_channels", "dpt_layers", "track_out_channels", "track_layers"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if (self.embed_dim // self.num_heads) % 4 and self.rope_freq > 0:
            problems.append("2D RoPE needs a head dimension divisible by 4")
        if self.patch_embed not in ("conv", CUSTOM_DINO, *DINO_SIZES):
            problems.append(f"unknown patch_embed {self.patch_embed!r} (conv or one of {sorted(DINO_SIZES)})")
        elif self.patch_embed == CUSTOM_DINO and (self.dino_depth is None or self.dino_heads is None):
            problems.append(f"patch_embed {CUSTOM_DINO!r} needs dino_depth and dino_heads")
        if self.patch_embed != "conv" and self.dino_dim != self.embed_dim:
            problems.append(f"{self.patch_embed} gives {self.dino_dim}-d tokens but embed_dim is {self.embed_dim}")
        for name in ("dpt_layers", "track_layers"):
            layers = getattr(self, name) or ()
            if any(not 0 <= i < self.depth for i in layers):
                problems.append(f"{name} {layers} must index the {self.depth} aggregator layers")
        if len(self.dpt_out_channels) != 4 or len(self.dpt_layers) != 4:
            problems.append("DPT heads take exactly four layers and four channel counts")
        if problems:
            raise ValueError("invalid VGGTConfig: " + "; ".join(problems))

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def dim_out(self) -> int:
        """Width of the aggregator's outputs (frame and global tokens concatenated)."""
        return 2 * self.embed_dim

    @property
    def dino_dim(self) -> int:
        return DINO_SIZES[self.patch_embed][0] if self.patch_embed in DINO_SIZES else self.embed_dim

    @property
    def uses_dino(self) -> bool:
        return self.patch_embed != "conv"

    @property
    def dino_block_count(self) -> int:
        return self.dino_depth if self.dino_depth is not None else DINO_SIZES[self.patch_embed][1]

    @property
    def dino_head_count(self) -> int:
        return self.dino_heads if self.dino_heads is not None else DINO_SIZES[self.patch_embed][2]

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "VGGTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**PRESETS[name])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VGGTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VGGTConfig fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_official(cls, cfg: dict) -> "VGGTConfig":
        """Build from the official constructor arguments (the ``config`` block of a parity fixture:
        sub-dicts ``aggregator``, ``camera_head``, ``depth_head``, ``point_head``, ``track_head`` and
        optionally ``patch_embed_override`` and ``track_head_feature_extractor``)."""
        agg = cfg.get("aggregator", {})
        if agg.get("aa_order", ["frame", "global"]) != ["frame", "global"] or agg.get("aa_block_size", 1) != 1:
            raise ValueError("only aa_order [frame, global] with aa_block_size 1 is supported")
        kw: dict = dict(
            img_size=agg.get("img_size", 518), patch_size=agg.get("patch_size", 14),
            embed_dim=agg.get("embed_dim", 1024), depth=agg.get("depth", 24),
            num_heads=agg.get("num_heads", 16), mlp_ratio=agg.get("mlp_ratio", 4.0),
            num_register_tokens=agg.get("num_register_tokens", 4), qk_norm=agg.get("qk_norm", True),
            rope_freq=agg.get("rope_freq", 100), init_values=agg.get("init_values", 0.01),
            patch_embed=agg.get("patch_embed", "dinov2_vitl14_reg"),
        )
        override = cfg.get("patch_embed_override")
        if override:
            # The fixture swaps in a DINOv2 smaller than ViT-S; we express it as a size override.
            if override.get("embed_dim", kw["embed_dim"]) != kw["embed_dim"]:
                raise ValueError("patch_embed_override.embed_dim must equal the aggregator's embed_dim")
            kw["patch_embed"] = CUSTOM_DINO
            kw["dino_depth"] = override["depth"]
            kw["dino_heads"] = override["num_heads"]
        cam = cfg.get("camera_head")
        kw["camera_head"] = cam is not None
        if cam:
            if cam.get("pose_encoding_type", "absT_quaR_FoV") != "absT_quaR_FoV":
                raise ValueError("only the absT_quaR_FoV pose encoding is supported")
            kw.update(camera_trunk_depth=cam.get("trunk_depth", 4), camera_heads=cam.get("num_heads", 16))
        for key in ("depth_head", "point_head"):
            kw[key] = cfg.get(key) is not None
        dpt = cfg.get("depth_head") or cfg.get("point_head")
        if dpt:
            kw.update(dpt_features=dpt.get("features", 256),
                      dpt_out_channels=dpt.get("out_channels", (256, 512, 1024, 1024)),
                      dpt_layers=dpt.get("intermediate_layer_idx", (4, 11, 17, 23)))
        trk = cfg.get("track_head")
        kw["track_head"] = trk is not None
        if trk:
            kw.update(track_features=trk.get("features", 128), track_iters=trk.get("iters", 4),
                      track_corr_levels=trk.get("corr_levels", 7), track_corr_radius=trk.get("corr_radius", 4),
                      track_hidden=trk.get("hidden_size", 384))
            fx = cfg.get("track_head_feature_extractor")
            if fx:
                kw.update(track_out_channels=fx.get("out_channels"), track_layers=fx.get("intermediate_layer_idx"))
        return cls(**kw)


PRESETS: dict[str, dict] = {
    "vggt-1b": {},
    # Every module at toy size: for tests and the parity of code paths, not for predictions.
    "tiny": dict(
        img_size=56, embed_dim=64, depth=2, num_heads=2, patch_embed="conv",
        camera_trunk_depth=1, camera_heads=2,
        dpt_features=16, dpt_out_channels=(8, 16, 32, 32), dpt_layers=(0, 0, 1, 1),
        track_features=16, track_iters=2, track_corr_levels=2, track_corr_radius=1, track_hidden=32,
    ),
    # The CPU base model: ~126 px inputs (9x9 patches), pretrained on our mixed renders.
    "small": dict(
        img_size=126, embed_dim=192, depth=4, num_heads=3, patch_embed="conv",
        camera_trunk_depth=1, camera_heads=6,
        dpt_features=64, dpt_out_channels=(48, 96, 192, 192), dpt_layers=(0, 1, 2, 3),
        track_head=False,
    ),
}
