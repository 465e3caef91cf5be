"""Rendered partitions as VGGT training sequences (the official training batch format).

    from training import SynthSequences, find_partitions, make_loader
    ds = SynthSequences(find_partitions("data/synth/mixed"), num_frames=4, resolution=112)
    loader = make_loader(ds, batch_size=2)           # training.batches
    batch = next(iter(loader))
    batch["images"]        [B,S,3,H,W] float32 in [0,1]
    batch["depths"]        [B,S,H,W]   z-depth, 0 = no surface
    batch["extrinsics"]    [B,S,3,4]   OpenCV cam-from-world; camera 0 is [I|0] after normalisation
    batch["intrinsics"]    [B,S,3,3]   pixels, pixel centres at integer coordinates
    batch["cam_points"], batch["world_points"]   [B,S,H,W,3]   (0 where there is no surface)
    batch["point_masks"]   [B,S,H,W]   bool, depth > 1e-8
    batch["normals"]       [B,S,H,W,3] unit normals in each camera's frame (0 = no surface)   } with
    batch["instance_masks"] [B,S,H,W]  int32 instance ids (docs/format.md)                    } extras=True
    batch["transparent_masks"] [B,S,H,W] bool, the first surface is transparent    (transparent_masks=True)
    batch["ids"]           [B,S]       the view indices picked from the sample
    batch["seq_name"]      list of "attribute/pXXX/sXXXX"

One sample (V views of one scene state) is one sequence of S <= V of its views. Which views, in which
order (view ids[0] is the reference camera), and any colour jitter depend only on (seed, index), so the
dataset is deterministic whatever the loading order or worker count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from render.dataset import Sample, load_partition
from render.files import sample_name

PATCH_SIZE = 14  # VGGT's ViT patch: image sides must be multiples of it
MIN_DEPTH = 1e-8  # official validity threshold for depth / points


def find_partitions(root: str | Path) -> list[Path]:
    """Every complete partition (one with a ``manifest.json``) at or below ``root``, sorted by path.
    Partitions still being rendered have no manifest yet and are left out."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    return sorted(m.parent for m in root.rglob("manifest.json"))


class SynthSequences(Dataset):
    """One training sequence per rendered sample, over one or more partition folders.

    ``resolution``: ``None`` keeps the rendered size, an int gives a square image, ``(H, W)`` any size;
    both sides must be multiples of 14. ``color_jitter`` (0 = off) is the strength of per-frame
    brightness, contrast and saturation factors drawn from ``[1 - j, 1 + j]``. ``normalize`` applies
    :func:`normalize_sequence` (camera-0 frame, unit mean point distance), as official training does.
    ``extras`` adds the rendered normals and instance masks (the losses need neither; reading them
    costs about a third of the loading time). ``transparent_masks`` adds where the first surface is a
    transparent object (``render.dataset.Sample.transparent_masks``: transparent-scene partitions write
    them, docs/transparent.md; other partitions' glass is derived from their specs).

    Geometric multipliers (off by default; both keep every view's geometry exact):
    ``crop`` < 1 cuts one window of side fraction in ``[crop, 1]`` at a random place out of every view of
    the sequence and rescales it to the output size, the principal point moved and the focal lengths
    scaled with it; ``flip`` is the probability that the whole sequence is mirrored left-right, which is a
    reflection x -> -x in every camera's frame: principal point cx -> W - 1 - cx, rotation S R S and
    translation S t with S = diag(-1, 1, 1), normals' x negated. A mirrored scene is a valid scene; the
    cameras stay proper rotations.
    """

    def __init__(self, partitions: Sequence[str | Path], num_frames: int, resolution: int | tuple[int, int] | None = None,
                 seed: int = 0, color_jitter: float = 0.0, normalize: bool = True, extras: bool = False,
                 transparent_masks: bool = False, crop: float = 1.0, flip: float = 0.0):
        if not partitions:
            raise ValueError("no partitions given (find_partitions found none?)")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if not 0.0 <= color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {crop}")
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip must be a probability in [0, 1], got {flip}")
        self.crop, self.flip = crop, flip
        if resolution is not None:
            resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
            _check_patch_multiple(resolution, "resolution")
        self.num_frames, self.resolution, self.seed = num_frames, resolution, seed
        self.color_jitter, self.normalize, self.extras = color_jitter, normalize, extras
        self.transparent_masks = transparent_masks
        self.sample_dirs: list[Path] = []
        self.seq_names: list[str] = []
        for folder in partitions:
            part = load_partition(folder)
            views, render = part.manifest["views"], part.manifest["render"]
            if num_frames > views:
                raise ValueError(f"{part.path}: samples have {views} views, cannot pick num_frames={num_frames}")
            if resolution is None:
                _check_patch_multiple((render["height"], render["width"]), f"{part.path}: rendered size (H, W)",
                                      hint="; pass a resolution to resize")
            self.sample_dirs += [s.path for s in part.samples]
            self.seq_names += [f"{part.attribute}/{part.path.name}/{sample_name(i)}" for i in range(len(part.samples))]

    def __len__(self) -> int:
        return len(self.sample_dirs)

    def __getitem__(self, index: int) -> dict:
        # A fresh Sample per call: Sample caches its arrays, and a long epoch would keep every one alive.
        sample = Sample(self.sample_dirs[index])
        ids = np.random.default_rng((self.seed, index, 0)).choice(sample.num_views, self.num_frames, replace=False)
        images, depths = sample.images[ids], sample.depths[ids]
        extras = {"normals": sample.normals[ids], "instance_masks": sample.masks[ids].astype(np.int32)} \
            if self.extras else {}
        if self.transparent_masks:  # uint8 through the resize (cv2 has no bool images)
            extras["transparent_masks"] = sample.transparent_masks[ids].astype(np.uint8)
        intrinsics, extrinsics = sample.intrinsics[ids].astype(np.float64), sample.extrinsics[ids].astype(np.float64)
        size = self.resolution or depths.shape[1:]
        if self.crop < 1.0:
            images, depths, intrinsics, extras = _crop_views(images, depths, intrinsics, extras, self.crop,
                                                             np.random.default_rng((self.seed, index, 2)))
        if size != depths.shape[1:]:
            images, depths, intrinsics, extras = _resize_views(images, depths, intrinsics, size, extras)
        if self.flip and np.random.default_rng((self.seed, index, 3)).random() < self.flip:
            images, depths, intrinsics, extrinsics, extras = _flip_views(images, depths, intrinsics, extrinsics, extras)
        images = images.astype(np.float32) / 255.0
        if self.color_jitter:
            images = _jitter_colors(images, self.color_jitter, np.random.default_rng((self.seed, index, 1)))
        cam_points, world_points, point_masks = depth_to_points(torch.from_numpy(depths).double(),
                                                                torch.from_numpy(intrinsics),
                                                                torch.from_numpy(extrinsics))
        seq = {"depths": torch.from_numpy(depths).double(), "extrinsics": torch.from_numpy(extrinsics),
               "cam_points": cam_points, "world_points": world_points, "point_masks": point_masks}
        if self.normalize:
            seq = normalize_sequence(seq)
        seq = {k: v.float() if v.is_floating_point() else v for k, v in seq.items()}  # geometry in float64 until here
        return {"images": torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                **seq,
                "intrinsics": torch.from_numpy(intrinsics).float(),
                **{k: torch.from_numpy(v.astype(bool) if k == "transparent_masks" else v) for k, v in extras.items()},
                "ids": torch.from_numpy(ids).long(),
                "seq_name": self.seq_names[index]}


def depth_to_points(depths: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Back-project z-depth maps ``[..., H, W]`` with pinhole ``intrinsics [..., 3, 3]`` and OpenCV
    cam-from-world ``extrinsics [..., 3, 4]``. Returns cam_points, world_points ``[..., H, W, 3]`` (0 where
    there is no surface) and point_masks ``[..., H, W]`` (depth > 1e-8)."""
    H, W = depths.shape[-2:]
    v, u = torch.meshgrid(torch.arange(H, dtype=depths.dtype), torch.arange(W, dtype=depths.dtype), indexing="ij")
    fx, fy = intrinsics[..., 0, 0, None, None], intrinsics[..., 1, 1, None, None]
    cx, cy = intrinsics[..., 0, 2, None, None], intrinsics[..., 1, 2, None, None]
    cam_points = torch.stack([(u - cx) / fx * depths, (v - cy) / fy * depths, depths], dim=-1)
    R, t = extrinsics[..., :3, :3], extrinsics[..., None, :3, 3]
    # x_cam = R x_world + t  =>  x_world = R^T (x_cam - t), written row-vector style as (x_cam - t) R
    world_points = ((cam_points.flatten(-3, -2) - t) @ R).unflatten(-2, (H, W))
    point_masks = depths > MIN_DEPTH
    zero = torch.zeros((), dtype=depths.dtype)
    return (torch.where(point_masks[..., None], cam_points, zero), torch.where(point_masks[..., None], world_points, zero),
            point_masks)


def normalize_sequence(seq: dict) -> dict:
    """The official ground-truth normalisation, for one sequence ``[S, ...]`` or a batch ``[B, S, ...]``.

    Re-expresses the scene in camera 0's frame (extrinsics ``E_i @ inv(E_0)``, world points ``E_0 x``),
    then divides translations, depths, cam_points and world_points by the mean L2 norm of the valid
    world points (so that mean becomes 1). ``seq`` needs extrinsics, depths, cam_points, world_points and
    point_masks; other keys pass through. Returns a new dict. A sequence with no valid point keeps scale 1.
    """
    extrinsics, masks = seq["extrinsics"], seq["point_masks"]
    R0, t0 = extrinsics[..., :1, :3, :3], extrinsics[..., :1, :3, 3]  # keep the frame axis for broadcasting
    R, t = extrinsics[..., :3, :3], extrinsics[..., :3, 3]
    # E_i inv(E_0) with inv(E_0) = [R0^T | -R0^T t0]: rotation R_i R0^T, translation t_i - R_i R0^T t0
    R_rel = R @ R0.transpose(-1, -2)
    t_rel = t - (R_rel @ t0[..., None])[..., 0]
    world = seq["world_points"] @ R0[..., None, :, :].transpose(-1, -2) + t0[..., None, None, :]
    world = torch.where(masks[..., None], world, torch.zeros((), dtype=world.dtype))

    valid = masks.flatten(-3).to(world.dtype)  # [..., S*H*W]: one scale per sequence
    norm_sum = (world.norm(dim=-1).flatten(-3) * valid).sum(-1)
    count = valid.sum(-1)
    scale = torch.where(count > 0, norm_sum / count.clamp(min=1), torch.ones_like(norm_sum)).clamp(min=1e-8)
    per_frame = scale[..., None]  # [..., 1] against the frame axis

    out = dict(seq)
    out["extrinsics"] = torch.cat([R_rel, (t_rel / per_frame[..., None])[..., None]], dim=-1)
    out["depths"] = seq["depths"] / per_frame[..., None, None]
    out["cam_points"] = seq["cam_points"] / per_frame[..., None, None, None]
    out["world_points"] = world / per_frame[..., None, None, None]
    return out


def _check_patch_multiple(hw: tuple[int, int], what: str, hint: str = "") -> None:
    if any(side <= 0 or side % PATCH_SIZE for side in hw):
        raise ValueError(f"{what} {tuple(hw)} must be positive multiples of the patch size {PATCH_SIZE}{hint}")


def _resize_views(images, depths, intrinsics, hw: tuple[int, int], per_pixel: dict | None = None):
    """Resize every view to ``hw``: colour by area averaging, depth and the ``per_pixel`` arrays (normals,
    instance ids) by nearest neighbour (averaging would invent depths between surfaces). ``INTER_NEAREST_EXACT`` picks the
    source pixel under the target pixel's centre, matching the pixel-centre intrinsics below."""
    H, W = hw
    sx, sy = W / depths.shape[2], H / depths.shape[1]
    area, nearest = cv2.INTER_AREA, cv2.INTER_NEAREST_EXACT
    images = np.stack([cv2.resize(im, (W, H), interpolation=area) for im in images])
    depths = np.stack([cv2.resize(d, (W, H), interpolation=nearest) for d in depths])
    per_pixel = {k: np.stack([cv2.resize(a, (W, H), interpolation=nearest) for a in v])
                 for k, v in (per_pixel or {}).items()}
    intrinsics = intrinsics.copy()
    # Pixel centres sit at integers, so pixel edges at -0.5: scaling maps x -> (x + 0.5) s - 0.5.
    intrinsics[:, 0, 0] *= sx
    intrinsics[:, 1, 1] *= sy
    intrinsics[:, 0, 2] = (intrinsics[:, 0, 2] + 0.5) * sx - 0.5
    intrinsics[:, 1, 2] = (intrinsics[:, 1, 2] + 0.5) * sy - 0.5
    return images, depths, intrinsics, per_pixel


def _crop_views(images, depths, intrinsics, per_pixel: dict, smallest: float, rng: np.random.Generator):
    """One window, side fraction drawn from [smallest, 1], at one random place in every view; the
    principal point moves with the window's corner."""
    H, W = depths.shape[1:]
    scale = rng.uniform(smallest, 1.0)
    h, w = max(1, round(scale * H)), max(1, round(scale * W))
    y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    window = (slice(None), slice(y0, y0 + h), slice(x0, x0 + w))
    intrinsics = intrinsics.copy()
    intrinsics[:, 0, 2] -= x0
    intrinsics[:, 1, 2] -= y0
    return (np.ascontiguousarray(images[window]), np.ascontiguousarray(depths[window]), intrinsics,
            {k: np.ascontiguousarray(v[window]) for k, v in per_pixel.items()})


def _flip_views(images, depths, intrinsics, extrinsics, per_pixel: dict):
    """Mirror every view left-right: x -> -x in each camera's frame (S = diag(-1, 1, 1)), so the world is
    mirrored too and cam-from-world becomes [S R S | S t]."""
    W = depths.shape[2]
    S = np.diag([-1.0, 1.0, 1.0])
    intrinsics = intrinsics.copy()
    intrinsics[:, 0, 2] = W - 1 - intrinsics[:, 0, 2]
    extrinsics = np.concatenate([S @ extrinsics[:, :, :3] @ S, (S @ extrinsics[:, :, 3:])], axis=-1)
    flipped = {}
    for k, v in per_pixel.items():
        v = v[:, :, ::-1]
        if k == "normals":                  # camera-frame vectors: their x flips with the image
            v = v * np.array([-1, 1, 1], dtype=v.dtype)
        flipped[k] = np.ascontiguousarray(v)
    return (np.ascontiguousarray(images[:, :, ::-1]), np.ascontiguousarray(depths[:, :, ::-1]), intrinsics,
            extrinsics, flipped)


def _jitter_colors(images: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame brightness, contrast and saturation factors in [1 - strength, 1 + strength];
    ``images`` [S,H,W,3] float in [0,1]."""
    out = []
    for image in images:
        brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
        image = image * brightness
        gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        image = (image - gray.mean()) * contrast + gray.mean()
        gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        image = gray[..., None] + (image - gray[..., None]) * saturation
        out.append(np.clip(image, 0.0, 1.0).astype(np.float32))
    return np.stack(out)
