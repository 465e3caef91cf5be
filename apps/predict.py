"""Run a VGGT on a set of images and write what it sees: per-image depth (.npy and a colourised PNG),
cameras (K and OpenCV world-to-camera from ``pose_enc``, in frame 0's coordinates) and a fused point
cloud (PLY) of the confident pixels.

    python cli.py predict photos/ --out pred/              # our shipped small model
    python cli.py predict a.jpg b.jpg --checkpoint vggt-1b.pt --preset vggt-1b --out pred/

Images are resized to the model's width (126 px for ``small``, 518 for ``vggt-1b``) with the height
rounded to a multiple of the patch size; all outputs are at that size and K is in its pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from common.atomic import atomic_path, write_bytes, write_json
from common.images import IMAGE_SUFFIXES, depth_to_color, encode_png
from model.pose import pose_encoding_to_extrinsics_intrinsics
from training.data import depth_to_points


class PredictError(ValueError):
    """Bad input to ``predict``: the message names the file and the problem."""


def find_images(inputs: list[str | Path]) -> list[Path]:
    """Image files given directly or inside folders (sorted by name, not recursive), in argument order."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            inside = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not inside:
                raise PredictError(f"{item}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif item.is_file():
            found.append(item)
        else:
            raise PredictError(f"{item}: no such file or folder")
    if not found:
        raise PredictError("no images given")
    return found


def model_input_size(hw: tuple[int, int], width: int, patch: int) -> tuple[int, int]:
    """(height, width) for an image of size ``hw``: the given width, the height keeping the aspect ratio,
    both multiples of the patch size."""
    width = max(patch, round(width / patch) * patch)
    height = max(patch, round(hw[0] * width / hw[1] / patch) * patch)
    return height, width


def load_images(paths: list[Path], width: int, patch: int) -> torch.Tensor:
    """Read images as RGB in [0, 1], resized (area filter) to one common model size -> [S, 3, H, W].
    The size comes from the first image; the others are resized to it (views of one scene usually match)."""
    arrays = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise PredictError(f"{path}: not a readable image")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        scale = 65535.0 if image.dtype == np.uint16 else 255.0
        arrays.append(image.astype(np.float32) / scale)
    height, width = model_input_size(arrays[0].shape[:2], width, patch)
    resized = [cv2.resize(a, (width, height), interpolation=cv2.INTER_AREA) for a in arrays]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).clamp(0, 1).contiguous()


@dataclass
class Prediction:
    images: np.ndarray          # [S, H, W, 3] uint8 as the model saw them
    depth: np.ndarray           # [S, H, W] float32, the model's scale
    depth_conf: np.ndarray      # [S, H, W] float32, >= 1
    intrinsics: np.ndarray      # [S, 3, 3] pixels
    extrinsics: np.ndarray      # [S, 3, 4] OpenCV world-to-camera, frame 0 = identity (approximately)


@torch.no_grad()
def predict(model, images: torch.Tensor, device: str | torch.device = "cpu") -> Prediction:
    model.eval().to(device)
    out = model(images.to(device))
    hw = images.shape[-2:]
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(out["pose_enc"][0].float().cpu(), hw)
    return Prediction(images=(images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8),
                      depth=out["depth"][0, ..., 0].float().cpu().numpy(),
                      depth_conf=out["depth_conf"][0].float().cpu().numpy(),
                      intrinsics=intrinsics.numpy(), extrinsics=extrinsics.numpy())


def fused_points(pred: Prediction, keep: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """World points and colours of the ``keep`` most confident pixels over all views (by depth_conf),
    back-projected from the predicted depth with the predicted cameras."""
    if not 0 < keep <= 1:
        raise PredictError(f"keep must be in (0, 1], got {keep}")
    _, world, valid = depth_to_points(torch.from_numpy(pred.depth).double(), torch.from_numpy(pred.intrinsics).double(),
                                      torch.from_numpy(pred.extrinsics).double())
    world, valid = world.numpy(), valid.numpy()
    threshold = np.quantile(pred.depth_conf[valid], 1 - keep) if valid.any() else np.inf
    chosen = valid & (pred.depth_conf >= threshold)
    return world[chosen].astype(np.float32), pred.images[chosen]


def write_outputs(pred: Prediction, names: list[Path], out: Path, keep: float = 0.5) -> dict:
    """Write depth/, cameras.json and points.ply under ``out`` (each file atomically). Returns a summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    stems = [f"{i:03d}_{p.stem}" for i, p in enumerate(names)]
    for stem, depth in zip(stems, pred.depth):
        with atomic_path(out / "depth" / f"{stem}.npy") as tmp:
            np.save(tmp, depth.astype(np.float32))
        write_bytes(out / "depth" / f"{stem}.png", encode_png(depth_to_color(depth)))
    height, width = pred.depth.shape[1:]
    cameras = {"convention": "OpenCV: x right, y down, z forward; w2c maps world to camera; K in pixels",
               "width": int(width), "height": int(height),
               "frames": [{"image": str(p), "K": k.tolist(), "w2c": e.tolist()}
                          for p, k, e in zip(names, pred.intrinsics.astype(float), pred.extrinsics.astype(float))]}
    write_json(out / "cameras.json", cameras)
    points, colors = fused_points(pred, keep)
    write_bytes(out / "points.ply", ply_bytes(points, colors))
    return {"views": len(names), "height": int(height), "width": int(width), "points": int(len(points))}


def ply_bytes(points: np.ndarray, colors: np.ndarray) -> bytes:
    """A binary little-endian PLY with float xyz and uchar rgb (what MeshLab, Open3D and trimesh read)."""
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    rows = np.empty(len(points), dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    rows["xyz"], rows["rgb"] = points, colors
    return header.encode() + rows.tobytes()
