"""Dense prediction (DPT) head: aggregator tokens -> per-pixel maps (depth, world points or features).

Four intermediate aggregator layers are turned back into image-like feature maps at four scales
(x4, x2, x1, x1/2 of the patch grid), fused coarse-to-fine by RefineNet-style fusion blocks, upsampled
to the image size (or image size / down_ratio) and decoded by a small convolutional output head.

Module and parameter names (norm, projects, resize_layers, scratch.layerN_rn, scratch.refinenetN,
scratch.output_conv1/2) follow the official checkpoint so that its state dict loads unchanged.

Shapes: B sequences, S frames, P tokens per frame, C channels, h x w patch grid, H x W image.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import sincos_1d

# ---------------------------------------------------------------------------------------------
# Output activations
# ---------------------------------------------------------------------------------------------

_PRED_ACTIVATIONS = {
    "exp": torch.exp,
    # Inverse of the log transform sign(y) * log(1 + |y|): large coordinates stay representable.
    "inv_log": lambda x: torch.sign(x) * torch.expm1(x.abs()),
    "linear": lambda x: x,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
}

_CONF_ACTIVATIONS = {
    "expp1": lambda x: 1.0 + torch.exp(x),  # confidence >= 1, as the confidence-weighted loss expects
    "expp0": torch.exp,
    "sigmoid": torch.sigmoid,
}


# ---------------------------------------------------------------------------------------------
# Sin/cos embedding of normalised image coordinates
# ---------------------------------------------------------------------------------------------

def uv_embedding(height: int, width: int, channels: int, aspect: float, device=None,
                 omega_0: float = 100.0) -> torch.Tensor:
    """Sin/cos embedding [channels, height, width] of a centred UV grid.

    The grid spans the image with the diagonal normalised to 1: u in +-aspect/diag, v in +-1/diag
    (diag = sqrt(aspect^2 + 1), aspect = W/H), sampled at pixel centres of a height x width map.
    The first channels/2 channels embed u, the others v.
    """
    diag = math.sqrt(aspect ** 2 + 1.0)
    span_u, span_v = aspect / diag, 1.0 / diag
    u = torch.linspace(-span_u * (width - 1) / width, span_u * (width - 1) / width, width, device=device)
    v = torch.linspace(-span_v * (height - 1) / height, span_v * (height - 1) / height, height, device=device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")  # [height, width] each
    emb = torch.cat([sincos_1d(channels // 2, uu, omega_0), sincos_1d(channels // 2, vv, omega_0)], dim=1)
    return emb.reshape(height, width, channels).permute(2, 0, 1)


def add_uv_embedding(x: torch.Tensor, image_width: int, image_height: int, scale: float = 0.1) -> torch.Tensor:
    """x [N,C,h,w] + scale * uv_embedding (channels first, broadcast over N)."""
    emb = uv_embedding(x.shape[2], x.shape[3], x.shape[1], image_width / image_height, device=x.device)
    return x + scale * emb.to(x.dtype)[None]


# ---------------------------------------------------------------------------------------------
# Fusion blocks
# ---------------------------------------------------------------------------------------------

class ResidualConvUnit(nn.Module):
    """Two 3x3 convolutions with a residual connection, pre-activated by ReLU.

    QUIRK (reproduced on purpose): the official unit applies an in-place ReLU to its input before the
    first convolution, so the residual branch adds relu(x) rather than x:
        out = conv2(relu(conv1(relu(x)))) + relu(x)
    We compute the same thing out of place. The official in-place ReLU also overwrites the caller's
    tensor, but in the fusion chain no tensor is used again after being passed to a unit, so that
    side effect changes no output and we do not reproduce it.
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FusionBlock(nn.Module):
    """RefineNet-style fusion: out_conv(upsample(rcu2(x + rcu1(skip)))).

    The coarsest block (refinenet4) has no skip input and hence no resConfUnit1. The upsampling goes
    to an explicit size (the next finer level's) or, without one, by a factor of 2.
    """

    def __init__(self, features: int, has_skip: bool = True):
        super().__init__()
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (2 * x.shape[2], 2 * x.shape[3])
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


# ---------------------------------------------------------------------------------------------
# DPT head
# ---------------------------------------------------------------------------------------------

class DPTHead(nn.Module):
    """DPT head over four intermediate aggregator layers.

    forward(tokens_list, images, patch_start_idx, frames_chunk_size=8):
        tokens_list: list of [B,S,P_tot,dim_in] aggregator outputs; images [B,S,3,H,W]
        returns (preds [B,S,H,W,output_dim-1], conf [B,S,H,W]) or, with feature_only=True,
        features [B,S,features,H/down_ratio,W/down_ratio].
    """

    def __init__(self, dim_in: int, patch_size: int = 14, output_dim: int = 4, activation: str = "inv_log",
                 conf_activation: str = "expp1", features: int = 256,
                 out_channels: Sequence[int] = (256, 512, 1024, 1024),
                 intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23), pos_embed: bool = True,
                 feature_only: bool = False, down_ratio: int = 1):
        super().__init__()
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError("DPTHead needs exactly four out_channels and four intermediate layers")
        if not feature_only and (activation not in _PRED_ACTIVATIONS or conf_activation not in _CONF_ACTIVATIONS):
            raise ValueError(f"unknown activation {activation!r} / {conf_activation!r}")
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        oc = tuple(out_channels)

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in oc)
        # Patch grid -> four scales: x4, x2, x1, x1/2.
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])

        scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        scratch.refinenet1 = FusionBlock(features)
        scratch.refinenet2 = FusionBlock(features)
        scratch.refinenet3 = FusionBlock(features)
        scratch.refinenet4 = FusionBlock(features, has_skip=False)
        if feature_only:
            scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, output_dim, 1),
            )
        self.scratch = scratch

    def forward(self, tokens_list: Sequence[torch.Tensor], images: torch.Tensor, patch_start_idx: int,
                frames_chunk_size: int | None = 8):
        S = images.shape[1]
        if not frames_chunk_size or frames_chunk_size >= S:
            return self._forward_frames(tokens_list, images, int(patch_start_idx))
        # Bound the memory of the full-resolution decoder by running chunks of frames (every frame is
        # decoded independently, so the result is the same).
        parts = [self._forward_frames([t[:, s:s + frames_chunk_size] for t in tokens_list],
                                      images[:, s:s + frames_chunk_size], int(patch_start_idx))
                 for s in range(0, S, frames_chunk_size)]
        if self.feature_only:
            return torch.cat(parts, dim=1)
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)

    def _forward_frames(self, tokens_list, images: torch.Tensor, patch_start_idx: int):
        B, S, _, H, W = images.shape
        h, w = H // self.patch_size, W // self.patch_size

        levels = []
        for project, resize, layer in zip(self.projects, self.resize_layers, self.intermediate_layer_idx):
            x = tokens_list[layer][:, :, patch_start_idx:]
            x = self.norm(x.reshape(B * S, x.shape[2], x.shape[3]))
            x = x.permute(0, 2, 1).reshape(B * S, x.shape[2], h, w)
            x = project(x)
            if self.pos_embed:
                x = add_uv_embedding(x, W, H)
            levels.append(resize(x))

        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1))
        x = sc.refinenet4(l4, size=l3.shape[2:])
        x = sc.refinenet3(x, l3, size=l2.shape[2:])
        x = sc.refinenet2(x, l2, size=l1.shape[2:])
        x = sc.refinenet1(x, l1)
        x = sc.output_conv1(x)

        out_h = int(h * self.patch_size / self.down_ratio)
        out_w = int(w * self.patch_size / self.down_ratio)
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=True)
        if self.pos_embed:
            x = add_uv_embedding(x, W, H)
        if self.feature_only:
            return x.reshape(B, S, *x.shape[1:])

        x = sc.output_conv2(x).permute(0, 2, 3, 1)  # [B*S, H, W, output_dim], channels last
        preds = _PRED_ACTIVATIONS[self.activation](x[..., :-1])
        conf = _CONF_ACTIVATIONS[self.conf_activation](x[..., -1])
        return preds.reshape(B, S, *preds.shape[1:]), conf.reshape(B, S, *conf.shape[1:])
