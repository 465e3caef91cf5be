"""Users' own RGB-D captures (a generic sequence layout) as training / evaluation sequences.

    ROOT/<sequence>/frames.json
        {"label": "live" | "spoof",            optional; absent = unknown
         "depth_scale": 1000.0,                optional: 16-bit PNG depth units per scene unit
         "frames": [{"rgb": "rgb/000.png", "depth": "depth/000.png" | "depth/000.npy" | "depth/000.exr",
                     "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                     "w2c": 3x4 or 4x4 OpenCV world-to-camera}, ...]}

Paths are relative to the sequence folder. Depth is z along the optical axis; 0 = unknown. A 16-bit
PNG holds ``depth * depth_scale`` (so 1000 = millimetres for metres); ``.npy`` (float, 2-D) and
``.exr`` (one float channel) hold scene units directly. Cameras are OpenCV (x right, y down, z forward,
``x_cam = R x_world + t``) with pixel centres at integer coordinates — the renderer's conventions
(docs/format.md). The full description, with a conversion example: docs/rgbd.md.

    from finetune.rgbd import RGBDSequences, write_rgbd_sequence
    ds = RGBDSequences("captures/", num_frames=4, resolution=(224, 168))
    seq = ds[0]      # training.data.SynthSequences' format, plus "label": 1 live, 0 spoof, -1 unknown

Items: one per sequence, as SynthSequences gives one per rendered sample. ``num_frames`` distinct
frames are drawn from ``(seed, index)`` exactly as SynthSequences draws views (a random subset in a
random order; the first is the reference camera), so a rendered partition converted to this layout
yields the same tensors as SynthSequences on it (tested). Resizing and the normalisation are
training.data's own functions, imported, so the same trainer, losses and metrics apply.

Every problem with the data raises :class:`RGBDError`, one line naming the file. frames.json files are
read and checked (paths exist, K and w2c well-formed) when the dataset is built; pixels are read, and
checked (decodable, sizes), when an item is loaded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.atomic import atomic_path, write_bytes, write_json
from common.images import encode_png
# _resize_views and _check_patch_multiple are private to training.data; they are imported, not copied,
# so that these sequences are resized exactly like rendered ones.
from training.data import PATCH_SIZE, _check_patch_multiple, _resize_views, depth_to_points, normalize_sequence

__all__ = ["RGBDError", "RGBDSequences", "FrameInfo", "SequenceInfo", "find_sequences", "read_sequence",
           "load_frame", "write_rgbd_sequence", "FRAMES_FILE", "DEFAULT_DEPTH_SCALE", "LABELS"]

FRAMES_FILE = "frames.json"
DEFAULT_DEPTH_SCALE = 1000.0
LABELS = {"live": 1, "spoof": 0}
UNKNOWN_LABEL = -1
DEPTH_SUFFIXES = (".png", ".npy", ".exr")
PNG_DEPTH_MAX = 65535  # 0 is "unknown", so the largest storable depth is 65535 / depth_scale


class RGBDError(ValueError):
    """Bad RGB-D data: the message is one line, ``<file>: <problem>``."""


@dataclass(frozen=True)
class FrameInfo:
    rgb: Path
    depth: Path
    K: np.ndarray      # [3,3] float64
    w2c: np.ndarray    # [3,4] float64


@dataclass(frozen=True)
class SequenceInfo:
    path: Path
    name: str
    label: int                 # 1 live, 0 spoof, -1 unknown
    depth_scale: float
    frames: tuple[FrameInfo, ...]


# ----------------------------------------------------------------------------------- reading frames.json
def find_sequences(root: str | Path) -> list[Path]:
    """The sequence folders of ``root``: ``root`` itself if it holds a frames.json, else every
    subfolder (sorted by name; hidden ones, such as interrupted writers' temporaries, skipped), each of
    which must hold one."""
    root = Path(root)
    if not root.is_dir():
        raise RGBDError(f"{root}: not a folder")
    if (root / FRAMES_FILE).is_file():
        return [root]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise RGBDError(f"{root}: no sequences (expected {root}/<sequence>/{FRAMES_FILE})")
    for folder in folders:
        if not (folder / FRAMES_FILE).is_file():
            raise RGBDError(f"{folder / FRAMES_FILE}: missing (every folder under {root} is read as a sequence)")
    return folders


def read_sequence(folder: str | Path) -> SequenceInfo:
    """Parse and check ``folder/frames.json`` (structure, label, depth scale, cameras, that every file
    it names exists); reads no pixels."""
    folder = Path(folder)
    path = folder / FRAMES_FILE
    data = _read_json(path)
    label = _label(path, data.get("label"))
    depth_scale = data.get("depth_scale", DEFAULT_DEPTH_SCALE)
    if isinstance(depth_scale, bool) or not isinstance(depth_scale, (int, float)) \
            or not math.isfinite(depth_scale) or depth_scale <= 0:
        raise RGBDError(f"{path}: depth_scale must be a positive number, got {depth_scale!r}")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise RGBDError(f"{path}: needs a non-empty list \"frames\"")
    infos = tuple(_frame_info(folder, path, i, f) for i, f in enumerate(frames))
    return SequenceInfo(path=folder, name=folder.name, label=label, depth_scale=float(depth_scale), frames=infos)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RGBDError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RGBDError(f"{path}: unreadable ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise RGBDError(f"{path}: not a JSON object")
    return data


def _label(path: Path, value) -> int:
    if value is None:
        return UNKNOWN_LABEL
    if value not in LABELS:
        raise RGBDError(f"{path}: label must be \"live\" or \"spoof\" (or absent), got {value!r}")
    return LABELS[value]


def _frame_info(folder: Path, path: Path, i: int, frame) -> FrameInfo:
    where = f"{path}: frame {i}"
    if not isinstance(frame, dict):
        raise RGBDError(f"{where}: not a JSON object")
    missing = [k for k in ("rgb", "depth", "K", "w2c") if k not in frame]
    if missing:
        raise RGBDError(f"{where}: missing {', '.join(missing)}")
    rgb, depth = (_existing_file(folder, where, frame[k], k) for k in ("rgb", "depth"))
    if depth.suffix.lower() not in DEPTH_SUFFIXES:
        raise RGBDError(f"{depth}: depth must be one of {', '.join(DEPTH_SUFFIXES)}")
    return FrameInfo(rgb=rgb, depth=depth, K=_intrinsics(where, frame["K"]), w2c=_extrinsics(where, frame["w2c"]))


def _existing_file(folder: Path, where: str, name, key: str) -> Path:
    if not isinstance(name, str) or not name:
        raise RGBDError(f"{where}: {key} must be a file path, got {name!r}")
    file = folder / name
    if not file.is_file():
        raise RGBDError(f"{file}: missing ({key} of {where})")
    return file


def _matrix(where: str, key: str, value) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RGBDError(f"{where}: {key} must be a matrix of numbers") from None
    if not np.isfinite(m).all():
        raise RGBDError(f"{where}: {key} has non-finite entries")
    return m


def _intrinsics(where: str, value) -> np.ndarray:
    K = _matrix(where, "K", value)
    if K.shape != (3, 3):
        raise RGBDError(f"{where}: K must be 3x3, got shape {K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise RGBDError(f"{where}: K needs positive focal lengths fx, fy")
    # The back-projection (training.data.depth_to_points) ignores skew: refuse it rather than misread it.
    if abs(K[0, 1]) > 1e-9 * K[0, 0] or K[1, 0] != 0 or not np.allclose(K[2], [0, 0, 1]):
        raise RGBDError(f"{where}: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
    return K


def _extrinsics(where: str, value) -> np.ndarray:
    w2c = _matrix(where, "w2c", value)
    if w2c.shape not in ((3, 4), (4, 4)):
        raise RGBDError(f"{where}: w2c must be 3x4 or 4x4, got shape {w2c.shape}")
    if w2c.shape == (4, 4) and not np.allclose(w2c[3], [0, 0, 0, 1], atol=1e-6):
        raise RGBDError(f"{where}: w2c's last row must be [0, 0, 0, 1]")
    R = w2c[:3, :3]
    # A scaled or reflected matrix would silently bend every point cloud; float32 exports stay well inside.
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0:
        raise RGBDError(f"{where}: w2c's 3x3 block is not a rotation (a rigid world-to-camera transform)")
    return w2c[:3].copy()


# ----------------------------------------------------------------------------------- reading pixels
def load_frame(frame: FrameInfo, depth_scale: float = DEFAULT_DEPTH_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """One frame's RGB [H,W,3] uint8 and depth [H,W] float32 in scene units (0 = unknown, which is also
    what negative and non-finite depths become)."""
    rgb = cv2.imread(str(frame.rgb), cv2.IMREAD_COLOR)
    if rgb is None:
        raise RGBDError(f"{frame.rgb}: missing or not an image")
    rgb = np.ascontiguousarray(rgb[..., ::-1])
    depth = _read_depth(frame.depth, depth_scale)
    if depth.shape != rgb.shape[:2]:
        raise RGBDError(f"{frame.depth}: depth is {_hw(depth.shape)} (HxW) but {frame.rgb.name} is {_hw(rgb.shape)}")
    with np.errstate(invalid="ignore"):
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return rgb, depth


def _hw(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def _read_depth(path: Path, depth_scale: float) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _read_png_depth(path, depth_scale)
    if suffix == ".npy":
        return _read_npy_depth(path)
    return _read_exr_depth(path)


def _read_png_depth(path: Path, depth_scale: float) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise RGBDError(f"{path}: missing or not a PNG")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise RGBDError(f"{path}: depth PNGs must be 16-bit single-channel, got {raw.dtype} with {channels} channel(s)")
    return raw.astype(np.float32) / np.float32(depth_scale)


def _read_npy_depth(path: Path) -> np.ndarray:
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise RGBDError(f"{path}: unreadable array ({e.__class__.__name__}: {e})") from None
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or not (np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)):
        raise RGBDError(f"{path}: depth must be a 2-D array of numbers, got {depth.dtype} of shape {depth.shape}")
    return depth.astype(np.float32)


# Channels tried, in order, in a multi-channel EXR (after any "layer." prefix); a single channel is
# always used.
EXR_DEPTH_CHANNELS = ("z", "depth", "y", "r")


def _read_exr_depth(path: Path) -> np.ndarray:
    try:
        import OpenEXR
    except ImportError:
        raise RGBDError(f"{path}: reading .exr depth needs the OpenEXR package (pip install OpenEXR); "
                        "or store depth as .npy") from None
    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            channels = {name: ch.pixels for part in f.parts for name, ch in part.channels.items()}
    except Exception as e:  # OpenEXR raises plain RuntimeError (and others) for unreadable files
        raise RGBDError(f"{path}: unreadable EXR ({e.__class__.__name__}: {e})") from None
    if len(channels) == 1:
        return np.asarray(next(iter(channels.values())), np.float32)
    by_short = {name.rsplit(".", 1)[-1].lower(): name for name in channels}
    for wanted in EXR_DEPTH_CHANNELS:
        if wanted in by_short:
            return np.asarray(channels[by_short[wanted]], np.float32)
    raise RGBDError(f"{path}: no depth channel among {sorted(channels)} (want one channel, or Z / depth / Y / R)")


# ----------------------------------------------------------------------------------- the dataset
class RGBDSequences(Dataset):
    """One training sequence per RGB-D sequence folder under ``root``, in training.data.SynthSequences'
    format plus ``label`` (int64: 1 live, 0 spoof, -1 unknown).

    ``resolution``: ``None`` keeps the captured size (every frame of a sequence the same size, both
    sides multiples of 14), an int gives a square image, ``(H, W)`` any size (multiples of 14; frames
    of different sizes are each resized). ``num_frames`` frames are drawn from ``(seed, index)`` as
    SynthSequences draws views. ``normalize`` applies training.data.normalize_sequence.
    """

    def __init__(self, root: str | Path, num_frames: int, resolution: int | tuple[int, int] | None = None,
                 seed: int = 0, normalize: bool = True):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if resolution is not None:
            resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
            _check_patch_multiple(resolution, "resolution")
        self.root, self.num_frames, self.resolution = Path(root), num_frames, resolution
        self.seed, self.normalize = seed, normalize
        self.sequences: list[SequenceInfo] = [read_sequence(f) for f in find_sequences(root)]
        for s in self.sequences:
            if len(s.frames) < num_frames:
                raise RGBDError(f"{s.path / FRAMES_FILE}: has {len(s.frames)} frames, "
                                f"cannot pick num_frames={num_frames}")

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def labels(self) -> list[int]:
        """Every sequence's label (1 live, 0 spoof, -1 unknown), without reading any pixels."""
        return [s.label for s in self.sequences]

    def __getitem__(self, index: int) -> dict:
        info = self.sequences[index]
        # The same draw as SynthSequences (same generator, same seed tuple): converted renders match it.
        ids = np.random.default_rng((self.seed, index, 0)).choice(len(info.frames), self.num_frames, replace=False)
        frames = [info.frames[i] for i in ids]
        images, depths = self._load(frames, info.depth_scale)
        intrinsics = np.stack([f.K for f in frames])
        extrinsics = np.stack([f.w2c for f in frames])
        images, depths, intrinsics = self._resize(frames, images, depths, intrinsics)
        return {**_sequence_tensors(images, depths, intrinsics, extrinsics, ids, self.normalize),
                "seq_name": info.name, "label": torch.tensor(info.label, dtype=torch.long)}

    def _load(self, frames: list[FrameInfo], depth_scale: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
        pairs = [load_frame(f, depth_scale) for f in frames]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _resize(self, frames, images, depths, intrinsics):
        """Stacked arrays at ``resolution`` (or the captured size, which must then be shared and valid)."""
        if self.resolution is None:
            hw = depths[0].shape
            for f, d in zip(frames, depths):
                if d.shape != hw:
                    raise RGBDError(f"{f.rgb}: is {_hw(d.shape)} (HxW) but {frames[0].rgb.name} is {_hw(hw)}; "
                                    "pass a resolution to resize")
                if any(side % PATCH_SIZE for side in hw):
                    raise RGBDError(f"{f.rgb}: size {_hw(hw)} (HxW) is not a multiple of the patch size "
                                    f"{PATCH_SIZE}; pass a resolution to resize")
            return np.stack(images), np.stack(depths), intrinsics
        out_images, out_depths, out_k = [], [], []
        for image, depth, K in zip(images, depths, intrinsics):
            if depth.shape != self.resolution:
                # One frame at a time, so that frames of different sizes each get their own intrinsics.
                resized_image, resized_depth, resized_k, _ = _resize_views(image[None], depth[None], K[None],
                                                                           self.resolution)
                image, depth, K = resized_image[0], resized_depth[0], resized_k[0]
            out_images.append(image)
            out_depths.append(depth)
            out_k.append(K)
        return np.stack(out_images), np.stack(out_depths), np.stack(out_k)


def _sequence_tensors(images: np.ndarray, depths: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray,
                      ids: np.ndarray, normalize: bool) -> dict:
    """uint8 images [S,H,W,3], depths [S,H,W] and cameras -> the tensors of SynthSequences.__getitem__,
    built the same way (geometry in float64 until normalised, then float32)."""
    depths64 = torch.from_numpy(depths).double()
    intrinsics = intrinsics.astype(np.float64)
    extrinsics64 = torch.from_numpy(extrinsics.astype(np.float64))
    cam_points, world_points, point_masks = depth_to_points(depths64, torch.from_numpy(intrinsics), extrinsics64)
    seq = {"depths": depths64, "extrinsics": extrinsics64, "cam_points": cam_points, "world_points": world_points,
           "point_masks": point_masks}
    if normalize:
        seq = normalize_sequence(seq)
    seq = {k: v.float() if v.is_floating_point() else v for k, v in seq.items()}
    images = images.astype(np.float32) / 255.0
    return {"images": torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
            **seq,
            "intrinsics": torch.from_numpy(intrinsics).float(),
            "ids": torch.from_numpy(ids).long()}


# ----------------------------------------------------------------------------------- writing
def write_rgbd_sequence(root: str | Path, name: str, images: np.ndarray, depths: np.ndarray, K: np.ndarray,
                        w2c: np.ndarray, label: str | None = None, depth_format: str = "png",
                        depth_scale: float = DEFAULT_DEPTH_SCALE) -> Path:
    """Write one sequence in the layout above: ``root/name/rgb/000.png``, ``depth/000.png`` (or
    ``.npy``) and ``frames.json`` (last, so a folder without it is an unfinished write).

    ``images`` [S,H,W,3] RGB, uint8 or float in [0,1]; ``depths`` [S,H,W] z-depth in scene units
    (0, negative or non-finite = unknown); ``K`` [3,3] (shared) or [S,3,3]; ``w2c`` [S,3,4] or [S,4,4]
    OpenCV world-to-camera; ``label`` "live", "spoof" or None. PNG depth stores
    ``round(depth * depth_scale)`` in 16 bits (error <= 0.5 / depth_scale); depths beyond
    65535 / depth_scale are refused rather than clipped. Returns the sequence folder."""
    images, depths, K, w2c = _check_write_inputs(images, depths, K, w2c)
    if depth_format not in ("png", "npy"):
        raise ValueError(f"depth_format must be 'png' or 'npy', got {depth_format!r}")
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be 'live', 'spoof' or None, got {label!r}")
    if not (math.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"depth_scale must be a positive number, got {depth_scale}")
    folder = Path(root) / name
    frames = []
    for i, (image, depth) in enumerate(zip(images, depths)):
        rgb_rel, depth_rel = f"rgb/{i:03d}.png", f"depth/{i:03d}.{depth_format}"
        write_bytes(folder / rgb_rel, encode_png(image), durable=False)
        _write_depth(folder / depth_rel, depth, depth_format, depth_scale)
        frames.append({"rgb": rgb_rel, "depth": depth_rel, "K": K[i].tolist(), "w2c": w2c[i].tolist()})
    header = {"label": label} if label is not None else {}
    if depth_format == "png":
        header["depth_scale"] = float(depth_scale)
    write_json(folder / FRAMES_FILE, {**header, "frames": frames})
    return folder


def _check_write_inputs(images, depths, K, w2c):
    images, depths = np.asarray(images), np.asarray(depths, np.float64)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [S,H,W,3], got shape {images.shape}")
    if depths.shape != images.shape[:3]:
        raise ValueError(f"depths must be [S,H,W] = {images.shape[:3]}, got shape {depths.shape}")
    if images.dtype != np.uint8:
        images = np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    S = len(images)
    K = np.asarray(K, np.float64)
    K = np.broadcast_to(K, (S, 3, 3)) if K.shape == (3, 3) else K
    if K.shape != (S, 3, 3):
        raise ValueError(f"K must be [3,3] or [{S},3,3], got shape {K.shape}")
    w2c = np.asarray(w2c, np.float64)
    if w2c.shape not in ((S, 3, 4), (S, 4, 4)):
        raise ValueError(f"w2c must be [{S},3,4] or [{S},4,4], got shape {w2c.shape}")
    w2c = np.concatenate([w2c[:, :3], np.broadcast_to([[[0.0, 0.0, 0.0, 1.0]]], (S, 1, 4))], axis=1)
    return images, depths, K, w2c


def _write_depth(path: Path, depth: np.ndarray, depth_format: str, depth_scale: float) -> None:
    with np.errstate(invalid="ignore"):
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
    if depth_format == "npy":
        with atomic_path(path, durable=False) as tmp:
            np.save(tmp, depth.astype(np.float32))
        return
    units = np.round(depth * depth_scale)
    if units.max(initial=0) > PNG_DEPTH_MAX:
        raise ValueError(f"{path}: depth {depth.max():.6g} exceeds {PNG_DEPTH_MAX / depth_scale:.6g}, the most "
                         f"a 16-bit PNG holds at depth_scale={depth_scale:g}; lower depth_scale or use "
                         "depth_format='npy'")
    write_bytes(path, encode_png(units.astype(np.uint16)), durable=False)
