"""Point tracking head: a DPT feature extractor plus an iterative, CoTracker/VGGSfM-style tracker.

TrackHead turns aggregator tokens into dense feature maps at half resolution (a feature-only DPTHead),
then the tracker refines, for every query point of frame 0, its position in every frame: each
iteration looks up local feature correlations around the current estimates and lets a transformer
(attention over time per track, and across tracks through a small set of "virtual" tracks) predict
position and feature updates.

Module and parameter names (tracker.corr_mlp, tracker.updateformer.virual_tracks - sic -, time_blocks,
space_virtual_blocks, space_point2virtual_blocks, space_virtual2point_blocks, ...) follow the official
checkpoint so that its state dict loads unchanged.

Shapes: B sequences, S frames, N query points, C feature channels, h x w feature map.
Point coordinates are (x, y) in pixels throughout.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dpt import DPTHead
from .layers import Mlp, sincos_1d

# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------


def bilinear_sample(maps: torch.Tensor, xy: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Sample maps [M,C,h,w] at pixel positions xy [M,...,2] (x, y; pixel centres at integers).

    Bilinear with align_corners=True semantics; xy [M,N,2] -> [M,C,N], xy [M,h',w',2] -> [M,C,h',w'].
    """
    h, w = maps.shape[-2:]
    # Pixel -> [-1, 1]: x * 2/(w-1) - 1 (guarding 1-pixel-wide maps), multiplied in float32 like the
    # reference so that rounding matches.
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=xy.device, dtype=xy.dtype)
    grid = xy * scale - 1.0
    squeeze = grid.dim() == 3
    if squeeze:  # grid_sample wants [M,Hout,Wout,2]
        grid = grid.unsqueeze(2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.squeeze(-1) if squeeze else out


def sample_points(maps: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """maps [B,C,h,w], xy [B,N,2] -> features [B,N,C].

    Border padding (the nearest edge value outside the map), unlike the correlation windows, which
    read zeros outside. It matters: a query at x > W-2 image pixels lies up to half a feature pixel
    beyond the last column of the stride-2 map (parity_tiny2 has one), and the fixtures only match
    with border padding here and zeros there.
    """
    return bilinear_sample(maps, xy, padding_mode="border").transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------


def flow_embedding(flows: torch.Tensor, channels: int) -> torch.Tensor:
    """flows [...,2] -> [..., 2*channels]: interleaved sin/cos per axis, x block then y block.

    Channel 2k is sin(v * f_k), channel 2k+1 cos(v * f_k), with f_k = 2k * 1000/channels (these
    frequencies grow with k, unlike the usual geometric ladder; kept as trained).
    """
    freq = torch.arange(0, channels, 2, device=flows.device, dtype=torch.float32) * (1000.0 / channels)
    parts = []
    for axis in range(2):
        phase = flows[..., axis:axis + 1] * freq
        parts.append(torch.stack([phase.sin(), phase.cos()], dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


def grid_sincos_embedding(channels: int, h: int, w: int, device=None) -> torch.Tensor:
    """2-D sin/cos embedding [1, channels, h, w] of integer pixel positions: x half, then y half."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    emb = torch.cat([sincos_1d(channels // 2, xs), sincos_1d(channels // 2, ys)], dim=1)
    return emb.reshape(1, h, w, channels).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# Correlation pyramid
# ---------------------------------------------------------------------------------------------


class CorrelationPyramid:
    """Correlations between track features and a feature-map pyramid, sampled on a local window.

    Level 0 is the feature map itself, level l its 2^l average-pooled version. For each level the
    full correlation volume (dot products / sqrt(C)) is sampled on a (2r+1)^2 window of integer
    offsets around coords / 2^l.
    """

    def __init__(self, fmaps: torch.Tensor, levels: int, radius: int):
        self.radius = radius
        self.pyramid = [fmaps]
        for _ in range(levels - 1):
            B, S, C, h, w = self.pyramid[-1].shape
            pooled = F.avg_pool2d(self.pyramid[-1].reshape(B * S, C, h, w), kernel_size=2, stride=2)
            self.pyramid.append(pooled.reshape(B, S, C, *pooled.shape[-2:]))
        # Window offsets. QUIRK (reproduced): the reference builds them as (dy, dx) pairs from an
        # "ij" meshgrid and adds them to (x, y) coordinates, i.e. the first offset component moves x
        # and the flattened window runs x-major. The window is square, so this only permutes the
        # order of the sampled features, but the trained corr_mlp depends on that order.
        d = torch.arange(-radius, radius + 1, dtype=fmaps.dtype, device=fmaps.device)
        first, second = torch.meshgrid(d, d, indexing="ij")
        self.offsets = torch.stack([first, second], dim=-1)  # [2r+1, 2r+1, 2], added to (x, y)

    def sample(self, feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """feats [B,S,N,C], coords [B,S,N,2] -> [B,S,N,levels*(2r+1)^2]."""
        B, S, N, C = feats.shape
        k = 2 * self.radius + 1
        out = []
        for level, fmaps in enumerate(self.pyramid):
            h, w = fmaps.shape[-2:]
            corr = torch.matmul(feats, fmaps.reshape(B, S, C, h * w)) / math.sqrt(C)  # [B,S,N,h*w]
            corr = corr.reshape(B * S * N, 1, h, w)
            centre = coords.reshape(B * S * N, 1, 1, 2) / (2 ** level)
            window = bilinear_sample(corr, centre + self.offsets.to(coords.dtype).reshape(1, k, k, 2))
            out.append(window.reshape(B, S, N, k * k))
        return torch.cat(out, dim=-1)


# ---------------------------------------------------------------------------------------------
# Update transformer
# ---------------------------------------------------------------------------------------------


class SelfAttnBlock(nn.Module):
    """QUIRK (reproduced): norm1 *replaces* the residual stream instead of feeding only the attention:
        x = norm1(x); x = x + attn(x); x = x + mlp(norm2(x))
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        # Called as attn(x, x, x) with the default need_weights=True, like the reference, so that the
        # same (fast-path) kernel and rounding are used in eval mode.
        x = x + self.attn(x, x, x)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Queries x attend to a context; same residual quirk as SelfAttnBlock (x = norm1(x) first)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context)[0]
        return x + self.mlp(self.norm2(x))


class UpdateTransformer(nn.Module):
    """Tokens [B,N,S,in_dim] (one per track and frame) -> updates [B,N,S,out_dim].

    Each layer attends over time within every track; after it (every layer, as there are as many
    space layers as time layers) the tracks exchange information through `virtual_tracks` learned
    tokens: virtual <- points (cross), virtual <-> virtual (self), points <- virtual (cross). This
    keeps the cross-track cost linear in N.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int = 6, heads: int = 8,
                 mlp_ratio: float = 4.0, virtual_tracks: int = 64):
        super().__init__()
        self.input_norm = nn.LayerNorm(in_dim)
        self.input_transform = nn.Linear(in_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, out_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, virtual_tracks, 1, hidden))  # (sic) checkpoint name
        self.time_blocks = nn.ModuleList(SelfAttnBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(SelfAttnBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)  # start close to "no update"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        B, N, S, D = tokens.shape
        V = self.virual_tracks.shape[1]
        tokens = torch.cat([tokens, self.virual_tracks.expand(B, V, S, D).to(tokens.dtype)], dim=1)
        for time_blk, v2p, virt, p2v in zip(self.time_blocks, self.space_virtual2point_blocks,
                                            self.space_virtual_blocks, self.space_point2virtual_blocks):
            tokens = time_blk(tokens.reshape(B * (N + V), S, D)).reshape(B, N + V, S, D)
            space = tokens.permute(0, 2, 1, 3).reshape(B * S, N + V, D)
            points, virtual = space[:, :N], space[:, N:]
            virtual = v2p(virtual, points)
            virtual = virt(virtual)
            points = p2v(points, virtual)
            tokens = torch.cat([points, virtual], dim=1).reshape(B, S, N + V, D).permute(0, 2, 1, 3)
        tokens = tokens[:, :N] + init_tokens
        return self.flow_head(self.output_norm(tokens))


# ---------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------


class Tracker(nn.Module):
    """Iterative track refinement on feature maps (stride `stride` relative to image pixels)."""

    def __init__(self, latent_dim: int = 128, stride: int = 2, corr_levels: int = 7, corr_radius: int = 4,
                 hidden_size: int = 384, depth: int = 6, max_scale: float = 518, predict_conf: bool = True):
        super().__init__()
        self.latent_dim = latent_dim
        self.stride = stride
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.max_scale = max_scale
        self.flows_emb_dim = latent_dim // 2
        # flow embedding (2 * flows_emb_dim) + raw flow twice (4) + correlation feats + track feats
        self.transformer_dim = 3 * latent_dim + 4

        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        # Added to the tokens of frame 0 (index 0) and of all later frames (index 1).
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = UpdateTransformer(self.transformer_dim, hidden_size, latent_dim + 2, depth=depth)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        # GroupNorm with one group over a [M, C] input = LayerNorm over C; the name matches the checkpoint.
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1)) if predict_conf else None

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 4):
        """query_points [B,N,2] (pixels, in frame 0), fmaps [B,S,C,h,w].

        Returns (list of coords [B,S,N,2] in pixels, one per iteration; vis [B,S,N]; conf [B,S,N] or None).
        """
        B, N, _ = query_points.shape
        _, S, C, h, w = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

        queries = query_points / float(self.stride)                       # feature-map pixels
        coords = queries.reshape(B, 1, N, 2).repeat(1, S, 1, 1)             # [B,S,N,2]
        track_feats = sample_points(fmaps[:, 0], queries).unsqueeze(1).repeat(1, S, 1, 1)  # [B,S,N,C]
        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)

        # Constant over iterations: position embedding at the query location [B*N,1,D] and the
        # frame-0 / later-frame tokens [1,S,D].
        grid_emb = grid_sincos_embedding(self.transformer_dim, h, w, fmaps.device).to(fmaps.dtype)
        pos = sample_points(grid_emb.expand(B, -1, -1, -1), queries).reshape(B * N, 1, -1)
        ref = torch.cat([self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, S - 1, -1)], dim=1)
        ref = ref.to(pos.dtype)

        # The transformer works on tokens laid out [B*N, S, .] (track-major). The whole update is kept
        # in that layout, with the reference's operation order: the tracker amplifies rounding
        # differences strongly (the flow embedding has frequencies up to ~1000 rad/pixel, so a 1e-6
        # change of a coordinate is a 1e-3 change of a phase), and we keep the arithmetic as close
        # to the reference's as we can.
        def track_major(t: torch.Tensor) -> torch.Tensor:  # [B,S,N,k] -> [B*N,S,k]
            return t.permute(0, 2, 1, 3).reshape(B * N, S, t.shape[-1])

        coord_preds = []
        for _ in range(iters):
            coords = coords.detach()
            corr = self.corr_mlp(track_major(pyramid.sample(track_feats, coords)))  # [B*N,S,latent]
            flows = track_major(coords - coords[:, :1])
            flow_emb = torch.cat([flow_embedding(flows, self.flows_emb_dim),
                                  flows / self.max_scale, flows / self.max_scale], dim=-1)
            feats = track_major(track_feats)
            x = torch.cat([flow_emb, corr, feats], dim=-1)
            x = x + pos
            x = x + ref
            delta = self.updateformer(x.reshape(B, N, S, -1)).reshape(B * N, S, -1)

            feats = feats.reshape(B * N * S, self.latent_dim)
            feat_update = self.ffeat_updater(self.ffeat_norm(delta[..., 2:].reshape(B * N * S, self.latent_dim)))
            feats = feat_update + feats
            track_feats = feats.reshape(B, N, S, self.latent_dim).permute(0, 2, 1, 3)
            coords = coords + delta[..., :2].reshape(B, N, S, 2).permute(0, 2, 1, 3)
            # Frame 0 is where the queries live: its positions are not refined.
            coords = torch.cat([queries.unsqueeze(1), coords[:, 1:]], dim=1)
            coord_preds.append(coords * self.stride)

        flat = track_feats.reshape(B * S * N, self.latent_dim)
        vis = torch.sigmoid(self.vis_predictor(flat).reshape(B, S, N))
        conf = None
        if self.conf_predictor is not None:
            conf = torch.sigmoid(self.conf_predictor(flat).reshape(B, S, N))
        return coord_preds, vis, conf


# ---------------------------------------------------------------------------------------------
# Track head
# ---------------------------------------------------------------------------------------------


class TrackHead(nn.Module):
    """DPT features at half resolution + Tracker.

    forward(tokens_list, images [B,S,3,H,W], patch_start_idx, query_points [B,N,2], iters=None)
        -> (list of coords [B,S,N,2] per iteration, vis [B,S,N], conf [B,S,N] or None)

    feature_extractor: optional prebuilt feature-only DPTHead (e.g. with other out_channels /
    intermediate layers); by default one with the standard DPT layout is built.
    """

    def __init__(self, dim_in: int, patch_size: int = 14, features: int = 128, iters: int = 4,
                 predict_conf: bool = True, stride: int = 2, corr_levels: int = 7, corr_radius: int = 4,
                 hidden_size: int = 384, feature_extractor: DPTHead | None = None):
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = feature_extractor or DPTHead(
            dim_in, patch_size=patch_size, features=features, feature_only=True, down_ratio=2, pos_embed=False)
        self.tracker = Tracker(latent_dim=features, stride=stride, corr_levels=corr_levels,
                               corr_radius=corr_radius, hidden_size=hidden_size, predict_conf=predict_conf)

    def forward(self, tokens_list, images: torch.Tensor, patch_start_idx: int, query_points: torch.Tensor,
                iters: int | None = None, frames_chunk_size: int | None = 8):
        fmaps = self.feature_extractor(tokens_list, images, patch_start_idx, frames_chunk_size=frames_chunk_size)
        return self.tracker(query_points, fmaps, iters=self.iters if iters is None else iters)
