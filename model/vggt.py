"""VGGT, written out top to bottom: attention blocks with 2D RoPE, the patch embedder, the aggregator
(alternating frame and global attention), the camera head and the full model.

The DPT heads (depth, points) live in dpt.py and the tracker in track_head.py. Module and parameter
names follow the official checkpoint so that its state dict loads unchanged; the numbers are checked
against fixtures produced by the official code (tests/test_model_vggt.py, docs/model.md).

Shapes: B sequences, S frames, P tokens per frame, C channels; images are [B,S,3,H,W] in [0,1].
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import VGGTConfig
from .dpt import DPTHead
from .layers import Mlp
from .track_head import TrackHead

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# 2D rotary position embedding
# ---------------------------------------------------------------------------------------------

def rope_2d(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate queries or keys x [N,heads,P,D] by token positions pos [N,P,2] = (row, col).

    The first half of each head's channels encodes the row, the second half the column. Within a
    half, channel k and k + D/4 form a rotated pair ("rotate half", not interleaved) turning at
    base^(-2k/(D/2)) radians per unit of position.
    """
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(0, half, 2, device=x.device, dtype=torch.float32) / half)
    out = []
    for axis, part in enumerate(x.split(half, dim=-1)):
        angles = pos[..., axis].to(torch.float32)[..., None] * inv_freq     # [N,P,half/2]
        angles = torch.cat([angles, angles], dim=-1)[:, None]               # [N,1,P,half]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        a, b = part.chunk(2, dim=-1)
        out.append(part * cos + torch.cat([-b, a], dim=-1) * sin)
    return torch.cat(out, dim=-1)


def patch_positions(n: int, rows: int, cols: int, special: int, device) -> torch.Tensor:
    """(row, col) of every token of a frame, [n, special + rows*cols, 2]: patches count from 1 so that
    the special tokens (camera, registers) alone sit at (0, 0)."""
    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    grid = torch.stack([r, c], dim=-1).reshape(-1, 2) + 1
    pos = torch.cat([torch.zeros(special, 2, dtype=grid.dtype, device=device), grid])
    return pos.expand(n, -1, -1)


# ---------------------------------------------------------------------------------------------
# Transformer block
# ---------------------------------------------------------------------------------------------

class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with optional LayerNorm on queries and keys and optional 2D RoPE."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = False, rope_freq: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope_freq = rope_freq

    def forward(self, x, pos=None):
        n, p, c = x.shape
        q, k, v = self.qkv(x).reshape(n, p, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_freq and pos is not None:
            q, k = rope_2d(q, pos, self.rope_freq), rope_2d(k, pos, self.rope_freq)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, p, c))


class Block(nn.Module):
    """Pre-norm ViT block with LayerScale: x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))."""

    def __init__(self, dim, heads, mlp_ratio=4.0, init_values=0.01, qk_norm=False, rope_freq=0.0, norm_eps=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qk_norm=qk_norm, rope_freq=rope_freq)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x, pos=None):
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------
# Patch embedders: [N,3,H,W] (ImageNet-normalised) -> patch tokens [N,(H/p)(W/p),C]
# ---------------------------------------------------------------------------------------------

class ConvPatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoEncoder(nn.Module):
    """A DINOv2 ViT with register tokens; only its normalised patch tokens are used.

    The learned position table covers (img_size/patch)^2 patches; other grids get it resized
    bicubically with antialiasing, as DINOv2 does with interpolate_offset 0.
    """

    def __init__(self, img_size: int, patch: int, dim: int, depth: int, heads: int, registers: int, mlp_ratio=4.0):
        super().__init__()
        self.patch = patch
        grid = img_size // patch
        self.patch_embed = ConvPatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # kept for checkpoint compatibility; unused
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, init_values=1.0, norm_eps=1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.registers = registers

    def position_table(self, rows: int, cols: int, dtype) -> torch.Tensor:
        table = self.pos_embed.float()
        cls_pos, patch_pos = table[:, :1], table[:, 1:]
        side = int(math.sqrt(patch_pos.shape[1]))
        if (rows, cols) != (side, side):
            grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
            patch_pos = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([cls_pos, patch_pos], dim=1).to(dtype)

    def forward(self, images):
        n, _, h, w = images.shape
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = x + self.position_table(h // self.patch, w // self.patch, x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.registers:]


# ---------------------------------------------------------------------------------------------
# Aggregator
# ---------------------------------------------------------------------------------------------

def first_and_rest(token: torch.Tensor, b: int, s: int) -> torch.Tensor:
    """token [1,2,X,C] -> [b*s,X,C]: index 0 for each sequence's first frame, index 1 for the others,
    which is how the model tells the reference frame apart."""
    first = token[:, :1].expand(b, 1, *token.shape[2:])
    rest = token[:, 1:].expand(b, s - 1, *token.shape[2:])
    return torch.cat([first, rest], dim=1).reshape(b * s, *token.shape[2:])


class Aggregator(nn.Module):
    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        c = cfg.embed_dim
        if cfg.uses_dino:
            self.patch_embed = DinoEncoder(cfg.img_size, cfg.patch_size, c, cfg.dino_block_count,
                                           cfg.dino_head_count, cfg.num_register_tokens, cfg.mlp_ratio)
        else:
            self.patch_embed = ConvPatchEmbed(cfg.patch_size, c)
        block = dict(heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, init_values=cfg.init_values,
                     qk_norm=cfg.qk_norm, rope_freq=cfg.rope_freq)
        self.frame_blocks = nn.ModuleList(Block(c, **block) for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(Block(c, **block) for _ in range(cfg.depth))
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, cfg.num_register_tokens, c) * 1e-6)
        self.patch_start_idx = 1 + cfg.num_register_tokens
        self.patch_size = cfg.patch_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.gradient_checkpointing = False

    def _run(self, block, x, pos):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, pos, use_reentrant=False)
        return block(x, pos)

    def forward(self, images: torch.Tensor, debug: dict | None = None) -> tuple[list[torch.Tensor], int]:
        """images [B,S,3,H,W] in [0,1] -> (list of depth tensors [B,S,P,2C], index of the first patch
        token). Output i is frame block i's tokens concatenated with global block i's."""
        b, s, _, h, w = images.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        x = ((images - self.mean) / self.std).reshape(b * s, 3, h, w)
        patches = self.patch_embed(x)
        if debug is not None:
            debug["patch_embed_out"] = patches
        tokens = torch.cat([first_and_rest(self.camera_token, b, s), first_and_rest(self.register_token, b, s),
                            patches], dim=1)
        p, c = tokens.shape[1:]
        pos = patch_positions(b * s, h // self.patch_size, w // self.patch_size, self.patch_start_idx, images.device)

        outputs = []
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks):
            # Frame attention: each frame on its own.
            tokens = self._run(frame_block, tokens.reshape(b * s, p, c), pos)
            frame_out = tokens.reshape(b, s, p, c)
            # Global attention: all tokens of a sequence together; positions carry no frame index.
            tokens = self._run(global_block, tokens.reshape(b, s * p, c), pos.reshape(b, s * p, 2))
            outputs.append(torch.cat([frame_out, tokens.reshape(b, s, p, c)], dim=-1))
        return outputs, self.patch_start_idx


# ---------------------------------------------------------------------------------------------
# Camera head
# ---------------------------------------------------------------------------------------------

class CameraHead(nn.Module):
    """Predicts the 9-d pose encoding [t (3), quaternion xyzw (4), fov_h, fov_w] from each frame's
    camera token, refining it over several iterations. Each iteration embeds the previous estimate
    (a learned empty token the first time), turns it into AdaLN shift/scale/gate for the normalised
    camera tokens, runs a small transformer across the frames and adds a predicted update."""

    def __init__(self, dim: int, trunk_depth: int, heads: int, mlp_ratio: float = 4.0, init_values: float = 0.01):
        super().__init__()
        self.token_norm = nn.LayerNorm(dim)
        self.trunk = nn.Sequential(*(Block(dim, heads, mlp_ratio, init_values) for _ in range(trunk_depth)))
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, 9))
        self.embed_pose = nn.Linear(9, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, 9)

    def forward(self, tokens_list: list[torch.Tensor], iterations: int = 4) -> list[torch.Tensor]:
        tokens = self.token_norm(tokens_list[-1][:, :, 0])   # camera tokens [B,S,C], fixed across iterations
        b, s, _ = tokens.shape
        pose, poses = None, []
        for _ in range(iterations):
            cond = self.empty_pose_tokens.expand(b, s, -1) if pose is None else pose.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(cond)).chunk(3, dim=-1)
            x = tokens + gate * (self.adaln_norm(tokens) * (1 + scale) + shift)
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            pose = delta if pose is None else pose + delta
            # Translation and rotation stay linear; field of view must be non-negative.
            poses.append(torch.cat([pose[..., :7], F.relu(pose[..., 7:])], dim=-1))
        return poses


# ---------------------------------------------------------------------------------------------
# VGGT
# ---------------------------------------------------------------------------------------------

class VGGT(nn.Module):
    def __init__(self, cfg: VGGTConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or VGGTConfig()
        self.aggregator = Aggregator(cfg)
        d = cfg.dim_out
        self.camera_head = (CameraHead(d, cfg.camera_trunk_depth, cfg.camera_heads, cfg.mlp_ratio,
                                       cfg.camera_init_values) if cfg.camera_head else None)
        dpt = dict(patch_size=cfg.patch_size, features=cfg.dpt_features, out_channels=cfg.dpt_out_channels,
                   intermediate_layer_idx=cfg.dpt_layers)
        self.point_head = DPTHead(d, output_dim=4, activation="inv_log", **dpt) if cfg.point_head else None
        self.depth_head = DPTHead(d, output_dim=2, activation="exp", **dpt) if cfg.depth_head else None
        self.track_head = None
        if cfg.track_head:
            extractor = DPTHead(d, patch_size=cfg.patch_size, features=cfg.track_features, feature_only=True,
                                down_ratio=2, pos_embed=False,
                                out_channels=cfg.track_out_channels or cfg.dpt_out_channels,
                                intermediate_layer_idx=cfg.track_layers or cfg.dpt_layers)
            self.track_head = TrackHead(d, patch_size=cfg.patch_size, features=cfg.track_features,
                                        iters=cfg.track_iters, stride=2, corr_levels=cfg.track_corr_levels,
                                        corr_radius=cfg.track_corr_radius, hidden_size=cfg.track_hidden,
                                        feature_extractor=extractor)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each aggregator block in the backward pass instead of keeping its activations."""
        self.aggregator.gradient_checkpointing = enabled

    def forward(self, images: torch.Tensor, query_points: torch.Tensor | None = None,
                debug: dict | None = None) -> dict:
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        tokens, start = self.aggregator(images, debug=debug)
        if debug is not None:
            debug["output"], debug["patch_start_idx"] = tokens, start

        out: dict = {}
        # The heads run in float32 even under bf16 autocast: small errors in exp-activated depth or
        # in the iterated camera update compound.
        with torch.autocast(device_type=images.device.type, enabled=False):
            tokens32 = [t.float() for t in tokens]
            if self.camera_head is not None:
                out["pose_enc_list"] = self.camera_head(tokens32, self.config.camera_iterations)
                out["pose_enc"] = out["pose_enc_list"][-1]
            if self.depth_head is not None:
                out["depth"], out["depth_conf"] = self.depth_head(
                    tokens32, images, start, frames_chunk_size=self.config.dpt_frames_chunk)
            if self.point_head is not None:
                out["world_points"], out["world_points_conf"] = self.point_head(
                    tokens32, images, start, frames_chunk_size=self.config.dpt_frames_chunk)
            if self.track_head is not None and query_points is not None:
                tracks, vis, conf = self.track_head(tokens32, images, start, query_points)
                out["track"], out["vis"], out["conf"] = tracks[-1], vis, conf
        if not self.training:
            out["images"] = images
        return out
