"""ClearPose (Chen et al., ECCV 2022: transparent objects, RealSense L515 RGB-D) in its published layout,
as multi-view training / evaluation sequences for the transparent-object fine-tuning task.

    ROOT/set<k>/scene<m>/metadata.mat        one MATLAB struct per frame, keyed by the frame name
                         000000-color.png     8-bit RGB, 640x480
                         000000-depth.png     raw L515 depth, 16-bit, units of 1/factor_depth m (mm)
                         000000-depth_true.png  ground truth: the raw depth with every annotated object's
                                              rendered depth pasted over it (the target)
                         000000-normal_true.png 8-bit RGB normals estimated from depth_true (not read)
                         000000-label.png     8-bit per-pixel object id, 0 = not an annotated object
    ROOT/model/<object>/<object>.obj         object meshes (not read)

Per frame ``metadata.mat["000123"]`` is a 1x1 struct with (as the authors' own loaders read it)
``cls_indexes`` (n x 1 uint8, visible objects' ids), ``center`` (n x 2), ``factor_depth`` ([[1000]]),
``intrinsic_matrix`` (3x3; the README calls it ``camera_intrinsics``, both are accepted), ``poses``
(3 x 4 x n object-to-camera) and ``rotation_translation_matrix`` (3x4 ``[R|t]``: the camera pose,
CAMERA-TO-WORLD with OpenCV axes -- the annotation tool renders with it as the camera node's pose and
writes object-in-camera poses as ``inv([R|t]) @ object_to_world``). The loader inverts it into the
project's OpenCV world-to-camera ``w2c``. :func:`check_camera_convention` re-derives the convention from
a downloaded scene (static objects must stay put in the world). Sources and what is unverified:
docs/clearpose.md.

    from finetune.tasks.clearpose import ClearPoseSequences, paper_split_scenes
    ds = ClearPoseSequences(paper_split_scenes("data/clearpose", "train"), num_frames=4,
                            resolution=(336, 448), stride=10)
    seq = ds[0]   # training.data.SynthSequences' format + transparent_masks [S,H,W] bool,
                  # object_labels [S,H,W] int32 (raw_depth=True adds raw_depths [S,H,W])

Items: the frames of each scene (in metadata order) are cut into consecutive blocks of
``num_frames * stride``; each block is one item, a short clip of ``num_frames`` frames ``stride`` apart
starting at a jitter in ``[0, stride)`` drawn from ``(seed, index)``, in temporal order (the first frame
is the reference camera). Resizing and normalisation are training.data's, through finetune.rgbd's
helpers, exactly as for users' RGB-D captures.

Every problem with the data raises :class:`ClearPoseError` (an RGBDError, so a ValueError), one line
naming the file. metadata.mat files are read and checked, and the frame files each item needs are
checked to exist, when the dataset is built; pixels are decoded, and their sizes checked, per item.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.atomic import write_bytes
from common.images import encode_png
from finetune.rgbd import RGBDError, _intrinsics, _sequence_tensors
from training.data import PATCH_SIZE, _check_patch_multiple, _resize_views

__all__ = ["ClearPoseError", "ClearPoseFrame", "ClearPoseScene", "ClearPoseSequences", "FixtureScene",
           "find_clearpose_scenes", "read_clearpose_metadata", "read_clearpose_scene", "load_clearpose_frame",
           "check_camera_convention", "paper_split_scenes", "write_clearpose_fixture", "METADATA_FILE",
           "FRAME_SUFFIXES", "TRANSPARENT_IDS", "OBJECT_NAMES", "PAPER_SPLITS", "DEFAULT_STRIDE",
           "REQUIRED_FILES"]

METADATA_FILE = "metadata.mat"
# Per-frame files: "<frame><suffix>" in the scene folder.
FRAME_SUFFIXES = {"color": "-color.png", "depth": "-depth.png", "depth_true": "-depth_true.png",
                  "normal_true": "-normal_true.png", "label": "-label.png"}
REQUIRED_FILES = ("color", "depth_true", "label")  # what an item reads ("depth" too with raw_depth=True)
DEFAULT_STRIDE = 10

# The 63 transparent objects and their label ids (the repository's data/objects.csv; the FFB6D branch's
# config lists the same). ClearPose also annotates some opaque YCB / HOPE distractors (set8 scenes 1-3);
# their ids are not in this table (the authors' Xu et al. loader keeps only ids < 200), so they do not
# count as transparent. 0 is everything not annotated: table, background, walls.
OBJECT_NAMES = (
    "beaker_1", "dropper_1", "dropper_2", "flask_1", "funnel_1", "graduated_cylinder_1", "graduated_cylinder_2",
    "pan_1", "pan_2", "pan_3", "reagent_bottle_1", "reagent_bottle_2", "stick_1", "syringe_1", "bottle_1",
    "bottle_2", "bottle_3", "bottle_4", "bottle_5", "bowl_1", "bowl_2", "bowl_3", "bowl_4", "bowl_5", "bowl_6",
    "container_1", "container_2", "container_3", "container_4", "container_5", "fork_1", "knife_1", "knife_2",
    "mug_1", "mug_2", "pitcher_1", "plate_1", "plate_2", "spoon_1", "spoon_2", "water_cup_1", "water_cup_2",
    "water_cup_3", "water_cup_4", "water_cup_5", "water_cup_6", "water_cup_7", "water_cup_8", "water_cup_9",
    "water_cup_10", "water_cup_11", "water_cup_12", "water_cup_13", "water_cup_14", "wine_cup_1", "wine_cup_2",
    "wine_cup_3", "wine_cup_4", "wine_cup_5", "wine_cup_6", "wine_cup_7", "wine_cup_8", "wine_cup_9")
TRANSPARENT_IDS = frozenset(range(1, len(OBJECT_NAMES) + 1))

# The paper's split (repository README): set -> scene numbers, None = every scene of the set.
PAPER_SPLITS: dict[str, dict[str, tuple[int, ...] | None]] = {
    "train": {"set1": (1, 2, 3, 4), "set4": (1, 2, 3, 4, 5), "set5": (1, 2, 3, 4, 5), "set6": (1, 2, 3, 4, 5),
              "set7": (1, 2, 3, 4, 5)},
    "test_heavy_occlusion": {"set2": None, "set3": None},
    "test_new_background": {"set1": (5,), "set4": (6,), "set5": (6,), "set6": (6,), "set7": (6,)},
    "test_opaque_distractors": {"set8": (1, 2, 3)},
    "test_translucent_cover": {"set8": (4,), "set9": (7, 8)},
    "test_non_planar": {"set8": (5,), "set9": (11, 12)},
    "test_liquid": {"set8": (6,), "set9": (9, 10)},
}

_K_FIELDS = ("intrinsic_matrix", "camera_intrinsics")  # the loaders' name first, the README's second
_POSE_FIELD, _DEPTH_FIELD, _IDS_FIELD, _OBJ_POSES_FIELD = ("rotation_translation_matrix", "factor_depth",
                                                          "cls_indexes", "poses")
_SET_RE, _SCENE_RE = re.compile(r"set\d+"), re.compile(r"scene\d+")
_ROTATION_TOL = 1e-3  # SLAM poses stored in float64 are orthonormal far below this


class ClearPoseError(RGBDError):
    """Bad ClearPose data: one line, ``<file>: <problem>``."""


@dataclass(frozen=True)
class ClearPoseFrame:
    name: str                    # "000123": files are <name>-color.png, ...
    K: np.ndarray                # [3,3] pixels
    w2c: np.ndarray              # [3,4] OpenCV world-to-camera (inverted from the stored camera-to-world)
    factor_depth: float          # PNG depth units per metre (1000)
    object_ids: tuple[int, ...]  # cls_indexes: the objects visible in this frame
    object_poses: np.ndarray | None  # [n,3,4] object-to-camera, or None when the file has no "poses"
    stored_pose: np.ndarray      # [3,4] rotation_translation_matrix as stored


@dataclass(frozen=True)
class ClearPoseScene:
    path: Path
    name: str                    # "set1/scene1"
    frames: tuple[ClearPoseFrame, ...]

    def file(self, frame: ClearPoseFrame | str, kind: str) -> Path:
        name = frame if isinstance(frame, str) else frame.name
        return self.path / f"{name}{FRAME_SUFFIXES[kind]}"


# ----------------------------------------------------------------------------------- finding scenes
def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_natural_key)


def find_clearpose_scenes(root: str | Path) -> list[Path]:
    """The scene folders under ``root``: ``root`` itself if it holds a metadata.mat; else its
    ``scene<N>`` folders (``root`` is a set) and those of its ``set<N>`` folders (``root`` is the dataset),
    in natural order. Other folders (``model/``, hidden ones) are skipped. Every scene folder found must
    hold a metadata.mat."""
    root = Path(root)
    if not root.is_dir():
        raise ClearPoseError(f"{root}: not a folder")
    if (root / METADATA_FILE).is_file():
        return [root]
    children = _subfolders(root)
    scenes = [p for p in children if _SCENE_RE.fullmatch(p.name)]
    for set_folder in (p for p in children if _SET_RE.fullmatch(p.name)):
        scenes += [p for p in _subfolders(set_folder) if _SCENE_RE.fullmatch(p.name)]
    if not scenes:
        raise ClearPoseError(f"{root}: no ClearPose scenes (expected {root}/set<k>/scene<m>/{METADATA_FILE}, "
                             "or a set or scene folder)")
    for scene in scenes:
        if not (scene / METADATA_FILE).is_file():
            raise ClearPoseError(f"{scene / METADATA_FILE}: missing (every scene<m> folder is read as a scene)")
    return scenes


def paper_split_scenes(root: str | Path, split: str) -> list[Path]:
    """The scene folders of one of the paper's splits (:data:`PAPER_SPLITS`; ``"test"`` is every test
    split together) under the dataset folder ``root``. A listed scene that is missing is an error."""
    root = Path(root)
    names = [s for s in PAPER_SPLITS if s.startswith("test")] if split == "test" else [split]
    if any(n not in PAPER_SPLITS for n in names):
        raise ValueError(f"split must be one of {', '.join(['test', *PAPER_SPLITS])}; got {split!r}")
    scenes: list[Path] = []
    for name in names:
        for set_name, numbers in PAPER_SPLITS[name].items():
            set_folder = root / set_name
            if numbers is None:
                if not set_folder.is_dir():
                    raise ClearPoseError(f"{set_folder}: missing (split {name})")
                found = [p for p in _subfolders(set_folder) if _SCENE_RE.fullmatch(p.name)]
            else:
                found = [set_folder / f"scene{n}" for n in numbers]
            for scene in found:
                if not (scene / METADATA_FILE).is_file():
                    raise ClearPoseError(f"{scene / METADATA_FILE}: missing (split {name})")
                if scene not in scenes:
                    scenes.append(scene)
    return scenes


def _scene_name(folder: Path) -> str:
    return f"{folder.parent.name}/{folder.name}" if _SET_RE.fullmatch(folder.parent.name) else folder.name


# ----------------------------------------------------------------------------------- reading metadata.mat
def _unwrap(value):
    """Strip MATLAB's 1x1 cell / object wrappers around a value."""
    for _ in range(16):
        if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
            value = value.reshape(-1)[0]
        else:
            break
    return value


def _struct_fields(value) -> dict | None:
    """A MATLAB struct (as loadmat gives it, in any of its nestings) as {field: value}; None if not one."""
    value = _unwrap(value)
    if isinstance(value, dict):
        return value
    if isinstance(value, np.ndarray) and value.dtype.names:
        if value.size != 1:
            return None
        value = value.reshape(-1)[0]
    if isinstance(value, np.void) and value.dtype.names:
        return {n: value[n] for n in value.dtype.names}
    if hasattr(value, "_fieldnames"):  # scipy.io.matlab.mat_struct (struct_as_record=False)
        return {n: getattr(value, n) for n in value._fieldnames}
    return None


def _numeric(where: str, key: str, value) -> np.ndarray:
    value = _unwrap(value)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ClearPoseError(f"{where}: {key} must be numeric, got {type(value).__name__}") from None
    if not np.isfinite(array).all():
        raise ClearPoseError(f"{where}: {key} has non-finite entries")
    return array


def _load_mat(path: Path) -> dict:
    if not path.is_file():
        raise ClearPoseError(f"{path}: missing")
    try:
        from scipy.io import loadmat
        return loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError, NotImplementedError (v7.3), ...
        detail = " ".join(str(e).split())[:200]
        raise ClearPoseError(f"{path}: unreadable MATLAB file ({e.__class__.__name__}: {detail})") from None


def _frame_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (0, int(n), n) if n.isdigit() else (1, 0, n))


def read_clearpose_metadata(path: str | Path, pose_convention: str = "c2w") -> list[ClearPoseFrame]:
    """Every frame of one scene's metadata.mat, in frame order, checked. ``pose_convention`` says what
    ``rotation_translation_matrix`` is: ``"c2w"`` (ClearPose, verified -- docs/clearpose.md) or
    ``"w2c"``; either way the frames carry OpenCV world-to-camera ``w2c``."""
    if pose_convention not in ("c2w", "w2c"):
        raise ValueError(f"pose_convention must be 'c2w' or 'w2c', got {pose_convention!r}")
    path = Path(path)
    data = _load_mat(path)
    names = _frame_order([k for k in data if not k.startswith("__")])
    if not names:
        raise ClearPoseError(f"{path}: no frame entries (expected one struct per frame, named like '000000')")
    return [_frame(path, name, data[name], pose_convention) for name in names]


def _frame(path: Path, name: str, entry, pose_convention: str) -> ClearPoseFrame:
    where = f"{path}: frame {name}"
    fields = _struct_fields(entry)
    if fields is None:
        raise ClearPoseError(f"{where}: not a 1x1 struct (got {type(entry).__name__} "
                             f"{getattr(entry, 'shape', '')})")
    k_field = next((k for k in _K_FIELDS if k in fields), None)
    missing = [f for f in (_IDS_FIELD, _DEPTH_FIELD, _POSE_FIELD) if f not in fields] + \
        ([" or ".join(_K_FIELDS)] if k_field is None else [])
    if missing:
        raise ClearPoseError(f"{where}: missing field(s) {', '.join(missing)} (has {', '.join(sorted(fields))})")
    try:
        K = _intrinsics(where, _numeric(where, k_field, fields[k_field]))
    except ClearPoseError:
        raise
    except RGBDError as e:
        raise ClearPoseError(str(e)) from None
    factor = _numeric(where, _DEPTH_FIELD, fields[_DEPTH_FIELD])
    if factor.size != 1 or not factor.reshape(-1)[0] > 0:
        raise ClearPoseError(f"{where}: {_DEPTH_FIELD} must be one positive number, got {factor.tolist()}")
    stored = _pose(where, _numeric(where, _POSE_FIELD, fields[_POSE_FIELD]))
    R, t = stored[:, :3], stored[:, 3]
    w2c = np.concatenate([R.T, (-R.T @ t)[:, None]], axis=1) if pose_convention == "c2w" else stored.copy()
    ids = _numeric(where, _IDS_FIELD, fields[_IDS_FIELD]).reshape(-1)
    if (ids != np.round(ids)).any() or (ids < 0).any():
        raise ClearPoseError(f"{where}: {_IDS_FIELD} must be non-negative integers, got {ids.tolist()}")
    object_ids = tuple(int(i) for i in ids)
    poses = _object_poses(where, fields.get(_OBJ_POSES_FIELD), len(object_ids))
    return ClearPoseFrame(name=name, K=K, w2c=w2c, factor_depth=float(factor.reshape(-1)[0]),
                          object_ids=object_ids, object_poses=poses, stored_pose=stored)


def _pose(where: str, m: np.ndarray) -> np.ndarray:
    if m.shape not in ((3, 4), (4, 4)):
        raise ClearPoseError(f"{where}: {_POSE_FIELD} must be 3x4 (or 4x4), got shape {m.shape}")
    if m.shape == (4, 4) and not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise ClearPoseError(f"{where}: {_POSE_FIELD}'s last row must be [0, 0, 0, 1]")
    R = m[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=_ROTATION_TOL) or np.linalg.det(R) <= 0:
        raise ClearPoseError(f"{where}: {_POSE_FIELD}'s 3x3 block is not a rotation")
    return m[:3].copy()


def _object_poses(where: str, value, n: int) -> np.ndarray | None:
    if value is None:
        return None
    poses = _numeric(where, _OBJ_POSES_FIELD, value)
    if poses.size == 0 and n == 0:
        return np.zeros((0, 3, 4))
    if poses.shape == (3, 4):  # MATLAB drops a trailing singleton dimension
        poses = poses[..., None]
    if poses.ndim != 3 or poses.shape[:2] != (3, 4) or poses.shape[2] != n:
        raise ClearPoseError(f"{where}: {_OBJ_POSES_FIELD} must be 3 x 4 x {n} (one per cls_indexes entry), "
                             f"got shape {poses.shape}")
    return np.ascontiguousarray(poses.transpose(2, 0, 1))


def read_clearpose_scene(folder: str | Path, pose_convention: str = "c2w",
                         required: Iterable[str] = REQUIRED_FILES) -> ClearPoseScene:
    """One scene: its metadata.mat read and checked, and the ``required`` files (keys of
    :data:`FRAME_SUFFIXES`) of every frame checked to exist; reads no pixels."""
    folder = Path(folder)
    frames = read_clearpose_metadata(folder / METADATA_FILE, pose_convention)
    scene = ClearPoseScene(path=folder, name=_scene_name(folder), frames=tuple(frames))
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    for frame in frames:
        for kind in required:
            file = scene.file(frame, kind)
            if file.name not in present:
                raise ClearPoseError(f"{file}: missing (frame {frame.name} of {folder / METADATA_FILE})")
    return scene


def check_camera_convention(scene: ClearPoseScene | str | Path) -> dict[str, float]:
    """Which convention ``rotation_translation_matrix`` follows, from the data itself: ClearPose's
    objects do not move during a scene, so composing the camera pose with the object-to-camera
    ``poses`` must give the same object position in the world in every frame under the right
    convention. Returns, per hypothesis (``"c2w"``, ``"w2c"``), the median over objects seen in at least
    two frames of the RMS spread of their world positions, in metres. On real ClearPose scenes c2w
    should give millimetres (annotation noise), w2c decimetres."""
    if not isinstance(scene, ClearPoseScene):
        scene = read_clearpose_scene(scene, required=())
    positions: dict[str, dict[int, list[np.ndarray]]] = {"c2w": {}, "w2c": {}}
    for frame in scene.frames:
        if frame.object_poses is None:
            continue
        stored = np.vstack([frame.stored_pose, [0, 0, 0, 1]])
        cams = {"c2w": stored, "w2c": np.linalg.inv(stored)}
        for obj, pose in zip(frame.object_ids, frame.object_poses):
            for hyp, c2w in cams.items():
                positions[hyp].setdefault(obj, []).append(c2w[:3, :3] @ pose[:, 3] + c2w[:3, 3])
    out = {}
    for hyp, per_object in positions.items():
        spreads = [np.sqrt(((np.stack(p) - np.mean(p, axis=0)) ** 2).sum(-1).mean())
                   for p in per_object.values() if len(p) >= 2]
        if not spreads:
            raise ClearPoseError(f"{scene.path / METADATA_FILE}: cannot check the camera convention: no object "
                                 "has a pose in two frames")
        out[hyp] = float(np.median(spreads))
    return out


# ----------------------------------------------------------------------------------- reading pixels
def load_clearpose_frame(scene: ClearPoseScene, frame: ClearPoseFrame, raw_depth: bool = False) -> dict:
    """One frame's pixels: ``rgb`` [H,W,3] uint8, ``depth`` [H,W] float32 metres from depth_true
    (0 = unknown), ``label`` [H,W] int32 and, with ``raw_depth``, ``raw_depth`` [H,W] float32 metres
    from the sensor's -depth.png."""
    color = scene.file(frame, "color")
    rgb = cv2.imread(str(color), cv2.IMREAD_COLOR)
    if rgb is None:
        raise ClearPoseError(f"{color}: missing or not an image")
    out = {"rgb": np.ascontiguousarray(rgb[..., ::-1])}
    kinds = ["depth_true", "label"] + (["depth"] if raw_depth else [])
    for kind in kinds:
        file = scene.file(frame, kind)
        raw = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ClearPoseError(f"{file}: missing or not a PNG")
        if raw.ndim != 2:
            raise ClearPoseError(f"{file}: must be single-channel, got {raw.shape[2]} channels")
        if raw.shape != rgb.shape[:2]:
            raise ClearPoseError(f"{file}: is {raw.shape[0]}x{raw.shape[1]} (HxW) but {color.name} is "
                                 f"{rgb.shape[0]}x{rgb.shape[1]}")
        if kind == "label":
            if not np.issubdtype(raw.dtype, np.integer):
                raise ClearPoseError(f"{file}: labels must be an integer PNG, got {raw.dtype}")
            out["label"] = raw.astype(np.int32)
            continue
        if raw.dtype != np.uint16:
            raise ClearPoseError(f"{file}: depth must be a 16-bit PNG, got {raw.dtype}")
        out["depth" if kind == "depth_true" else "raw_depth"] = raw.astype(np.float32) / np.float32(frame.factor_depth)
    H, W = rgb.shape[:2]
    cx, cy = frame.K[0, 2], frame.K[1, 2]
    if not (-0.5 <= cx <= W - 0.5 and -0.5 <= cy <= H - 0.5):
        raise ClearPoseError(f"{scene.path / METADATA_FILE}: frame {frame.name}: principal point ({cx:g}, {cy:g}) "
                             f"lies outside the {H}x{W} (HxW) image {color.name}: intrinsics of another resolution?")
    return out


# ----------------------------------------------------------------------------------- the dataset
class ClearPoseSequences(Dataset):
    """Short multi-view clips of ClearPose scenes in training.data.SynthSequences' format, plus
    ``transparent_masks`` [S,H,W] bool (label in ``transparent_ids``) and ``object_labels`` [S,H,W]
    int32 (ClearPose's per-pixel ids, 0 = not annotated); ``raw_depth=True`` adds ``raw_depths`` [S,H,W]
    (the sensor's depth, scaled like ``depths``; 0 = no return).

    ``root_or_scenes``: a dataset, set or scene folder, or a list of scene folders (e.g.
    :func:`paper_split_scenes`). Each scene's frames (metadata order) are cut into blocks of
    ``num_frames * stride`` frames, one item each (a scene shorter than one block still gives one item
    if ``(num_frames - 1) * stride + 1`` frames fit). An item's frames are ``start + j + stride * i``
    (i < num_frames) with ``j`` in ``[0, stride)`` drawn from ``(seed, index)``: nearby, overlapping views
    of a hand-held clip, in temporal order, the first the reference camera. ``resolution`` as in
    RGBDSequences (None keeps 640x480, which is not a multiple of 14: pass e.g. (336, 448) or (462, 616)).
    ``depths`` are depth_true / factor_depth in metres before normalisation; ``normalize`` applies
    training.data.normalize_sequence.
    """

    def __init__(self, root_or_scenes: str | Path | Sequence[str | Path], num_frames: int,
                 resolution: int | tuple[int, int] | None = None, seed: int = 0, normalize: bool = True,
                 stride: int = DEFAULT_STRIDE, transparent_ids: Iterable[int] = TRANSPARENT_IDS,
                 raw_depth: bool = False, pose_convention: str = "c2w"):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        if resolution is not None:
            resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
            _check_patch_multiple(resolution, "resolution")
        self.num_frames, self.resolution, self.seed, self.normalize = num_frames, resolution, seed, normalize
        self.stride, self.raw_depth = stride, raw_depth
        self.transparent_ids = np.array(sorted(int(i) for i in transparent_ids), dtype=np.int64)
        if isinstance(root_or_scenes, (str, Path)):
            folders = find_clearpose_scenes(root_or_scenes)
        else:
            folders = [Path(p) for p in root_or_scenes]
            if not folders:
                raise ClearPoseError("no ClearPose scene folders given")
        required = REQUIRED_FILES + (("depth",) if raw_depth else ())
        self.scenes: list[ClearPoseScene] = [read_clearpose_scene(f, pose_convention, required) for f in folders]
        span, block = (num_frames - 1) * stride + 1, num_frames * stride
        # (scene index, first frame position of the block): one item each
        self.windows: list[tuple[int, int]] = []
        for s, scene in enumerate(self.scenes):
            n = len(scene.frames)
            if n < span:
                raise ClearPoseError(f"{scene.path / METADATA_FILE}: has {n} frames, cannot pick num_frames="
                                     f"{num_frames} at stride={stride} (needs {span})")
            self.windows += [(s, b * block) for b in range((n - span) // block + 1)]
        self.sample_dirs: list[Path] = [self.scenes[s].path for s, _ in self.windows]
        if resolution is None:
            self._check_native_size(self.scenes[0], self.scenes[0].frames[0])

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def scene_names(self) -> list[str]:
        """Per item, the scene it comes from ("set1/scene1")."""
        return [self.scenes[s].name for s, _ in self.windows]

    def frame_ids(self, index: int) -> np.ndarray:
        """The positions, in its scene's frame list, of item ``index``'s frames (reference first)."""
        if not 0 <= index < len(self.windows):
            raise IndexError(f"index {index} out of range for {len(self.windows)} items")
        s, start = self.windows[index]
        n, span = len(self.scenes[s].frames), (self.num_frames - 1) * self.stride + 1
        jitter = int(np.random.default_rng((self.seed, index, 0)).integers(0, min(self.stride, n - span - start + 1)))
        return start + jitter + self.stride * np.arange(self.num_frames)

    def __getitem__(self, index: int) -> dict:
        ids = self.frame_ids(index)
        scene = self.scenes[self.windows[index][0]]
        frames = [scene.frames[i] for i in ids]
        loaded = [load_clearpose_frame(scene, f, self.raw_depth) for f in frames]
        images, depths, K, extras = self._resize(scene, frames, loaded)
        extrinsics = np.stack([f.w2c for f in frames])
        seq = _sequence_tensors(images, depths, K, extrinsics, ids, self.normalize)
        labels = extras["label"]
        seq["transparent_masks"] = torch.from_numpy(np.isin(labels, self.transparent_ids))
        seq["object_labels"] = torch.from_numpy(labels.astype(np.int32))
        if self.raw_depth:
            seq["raw_depths"] = (torch.from_numpy(extras["raw_depth"]).double() / self._scale(depths, seq)).float()
        seq["seq_name"] = f"{scene.name}/{frames[0].name}"
        return seq

    @staticmethod
    def _scale(depths: np.ndarray, seq: dict) -> float:
        """The factor normalize_sequence divided the depths by (1 without normalisation)."""
        valid = seq["point_masks"].numpy()
        normalized = seq["depths"].double().numpy()[valid]
        return float(depths.astype(np.float64)[valid].sum() / normalized.sum()) if valid.any() else 1.0

    def _check_native_size(self, scene: ClearPoseScene, frame: ClearPoseFrame, hw: tuple[int, int] | None = None):
        color = scene.file(frame, "color")
        if hw is None:
            image = cv2.imread(str(color), cv2.IMREAD_COLOR)
            if image is None:
                raise ClearPoseError(f"{color}: missing or not an image")
            hw = image.shape[:2]
        if any(side % PATCH_SIZE for side in hw):
            raise ClearPoseError(f"{color}: size {hw[0]}x{hw[1]} (HxW) is not a multiple of the patch size "
                                 f"{PATCH_SIZE}; pass a resolution, e.g. (336, 448) for ClearPose's 480x640")

    def _resize(self, scene, frames, loaded):
        keys = ["label"] + (["raw_depth"] if self.raw_depth else [])
        if self.resolution is None:
            hw = loaded[0]["depth"].shape
            for f, item in zip(frames, loaded):
                if item["depth"].shape != hw:
                    raise ClearPoseError(f"{scene.file(f, 'color')}: is {item['depth'].shape[0]}x"
                                         f"{item['depth'].shape[1]} (HxW) but {scene.file(frames[0], 'color').name} "
                                         f"is {hw[0]}x{hw[1]}; pass a resolution to resize")
                self._check_native_size(scene, f, hw)
            return (np.stack([i["rgb"] for i in loaded]), np.stack([i["depth"] for i in loaded]),
                    np.stack([f.K for f in frames]), {k: np.stack([i[k] for i in loaded]) for k in keys})
        out = {"rgb": [], "depth": [], "K": [], **{k: [] for k in keys}}
        for f, item in zip(frames, loaded):
            rgb, depth, K = item["rgb"][None], item["depth"][None], f.K[None]
            per_pixel = {k: item[k][None] for k in keys}
            if depth.shape[1:] != self.resolution:
                # labels resized by nearest pixel as uint16 (cv2 does not resize int32)
                per_pixel["label"] = per_pixel["label"].astype(np.uint16)
                rgb, depth, K, per_pixel = _resize_views(rgb, depth, K, self.resolution, per_pixel)
            for key, value in (("rgb", rgb), ("depth", depth), ("K", K), *per_pixel.items()):
                out[key].append(value[0])
        extras = {k: np.stack(out[k]) for k in keys}
        extras["label"] = extras["label"].astype(np.int32)
        return np.stack(out["rgb"]), np.stack(out["depth"]), np.stack(out["K"]), extras


# ----------------------------------------------------------------------------------- a synthetic fixture
@dataclass
class FixtureScene:
    """What :func:`write_clearpose_fixture` wrote for one scene (the truth to check a reader against)."""
    path: Path
    frame_names: list[str]
    K: np.ndarray                   # [3,3]
    c2w: np.ndarray                 # [F,4,4] as stored (rotation_translation_matrix)
    w2c: np.ndarray                 # [F,4,4] OpenCV world-to-camera
    objects: dict[int, dict] = field(default_factory=dict)  # id -> {"centre", "radius", "transparent"}
    table_half: float = 0.0         # the table is |x|, |y| < table_half on z = 0 (world, metres)


FIXTURE_TRANSPARENT_ID = 7      # graduated_cylinder_2: a glass sphere in the fixture
FIXTURE_OPAQUE_ID = 201         # an opaque distractor (outside 1-63, as ClearPose's YCB / HOPE objects)


def _look_at(centre: np.ndarray, target: np.ndarray, down=(0.0, 0.0, -1.0)) -> np.ndarray:
    z = target - centre
    z = z / np.linalg.norm(z)
    y = np.asarray(down) - np.dot(down, z) * z
    y = y / np.linalg.norm(y)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([np.cross(y, z), y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ centre
    return w2c


def _ray_cast(K, w2c, hw, table_half, objects):
    """Per pixel: z-depth and id of the nearest surface (0 = table, -1 = nothing) and the depth seen
    when transparent objects are ignored (what the sensor returns through glass)."""
    H, W = hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    R, t = w2c[:3, :3], w2c[:3, 3]
    centre, dirs = -R.T @ t, rays @ R        # world ray directions; parameter = camera z-depth
    hits = []                                # (depth [H,W] inf = miss, id, transparent)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_table = np.where(dirs[..., 2] < 0, -centre[2] / dirs[..., 2], np.inf)
    point = centre + d_table[..., None] * dirs
    d_table = np.where((np.abs(point[..., :2]) < table_half).all(-1), d_table, np.inf)
    hits.append((d_table, 0, False))
    for obj_id, obj in objects.items():
        oc = centre - obj["centre"]
        a, b, c = (dirs ** 2).sum(-1), 2 * (dirs @ oc), oc @ oc - obj["radius"] ** 2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore"):
            root = (-b - np.sqrt(disc)) / (2 * a)
        hits.append((np.where((disc > 0) & (root > 0), root, np.inf), obj_id, obj["transparent"]))
    depth_all = np.stack([h[0] for h in hits])
    ids = np.array([h[1] for h in hits])
    nearest = depth_all.argmin(0)
    depth = np.take_along_axis(depth_all, nearest[None], 0)[0]
    label = np.where(np.isfinite(depth), ids[nearest], -1)
    opaque = np.array([not h[2] for h in hits])
    seen = np.where(opaque[:, None, None], depth_all, np.inf).min(0)
    return np.where(np.isfinite(depth), depth, 0.0), label, np.where(np.isfinite(seen), seen, 0.0), dirs


def write_clearpose_fixture(root: str | Path, scenes: int = 2, frames: int = 6, hw: tuple[int, int] = (42, 56),
                            seed: int = 0) -> list[FixtureScene]:
    """Write ``scenes`` small synthetic scenes, ``root/set1/scene<m>/``, in exactly ClearPose's
    published layout (see the module docstring): a table top (label 0) with a transparent glass sphere
    (id 7) and an opaque sphere (id 201), seen by a camera moving on an arc around them, ``hw`` pixels.

    ``-depth_true.png`` is the exact ray-cast z-depth in millimetres; ``-depth.png`` is what a sensor
    returns through glass: on the transparent sphere's pixels the table behind it (or nothing), with a
    third of them dropped to 0; elsewhere it equals depth_true (as in ClearPose, whose depth_true is the
    raw depth with the objects' rendered depth pasted in). ``-normal_true.png`` holds the analytic
    camera-frame normals ((n + 1) * 255 / 2), ``-label.png`` the ids, ``-color.png`` a shaded checker
    table. metadata.mat is written with scipy.io.savemat with ClearPose's field names, nesting and dtypes
    (``rotation_translation_matrix`` camera-to-world, ``poses`` object-to-camera), last. Returns the
    truth per scene."""
    root = Path(root)
    H, W = hw
    out = []
    for m in range(scenes):
        rng = np.random.default_rng((seed, m))
        folder = root / "set1" / f"scene{m + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        K = np.array([[0.9 * W, 0, W / 2 - 0.5 + rng.uniform(-1, 1)], [0, 0.9 * W, H / 2 - 0.5 + rng.uniform(-1, 1)],
                      [0, 0, 1.0]])
        glass, opaque = 0.05 + 0.01 * rng.random(), 0.035 + 0.01 * rng.random()
        objects = {FIXTURE_TRANSPARENT_ID: {"centre": np.array([0.04 + 0.02 * rng.random(), 0.0, glass]),
                                            "radius": glass, "transparent": True},
                   FIXTURE_OPAQUE_ID: {"centre": np.array([-0.07, 0.05 + 0.02 * rng.random(), opaque]),
                                       "radius": opaque, "transparent": False}}
        table_half = 0.35
        angle0, step = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(4, 7))
        names, c2ws, w2cs, meta = [], [], [], {}
        for i in range(frames):
            a = angle0 + step * i
            cam = np.array([0.45 * np.cos(a), 0.45 * np.sin(a), 0.3 + 0.02 * np.sin(3 * a)])
            w2c = _look_at(cam, np.array([0.0, 0.0, 0.03]) + rng.normal(0, 0.01, 3))
            c2w = np.linalg.inv(w2c)
            depth, label, seen, dirs = _ray_cast(K, w2c, hw, table_half, objects)
            name = f"{i:06d}"
            transparent = label == FIXTURE_TRANSPARENT_ID
            raw = np.where(transparent, seen, depth)
            raw = np.where(transparent & (rng.random(hw) < 1 / 3), 0.0, raw)
            _write_fixture_frame(folder, name, depth, raw, label, dirs, w2c, K, objects)
            visible = [o for o in objects if (label == o).any()]
            poses = np.stack([(w2c @ _translation(objects[o]["centre"]))[:3] for o in visible], axis=2) \
                if visible else np.empty((3, 4, 0))
            centres = np.array([K @ p[:, 3] / p[2, 3] for p in poses.transpose(2, 0, 1)])[:, :2] \
                if visible else np.empty((0, 2))
            boxes = np.array([_bbox(label == o) for o in visible], dtype=np.float64).reshape(-1, 4)
            meta[name] = {"cls_indexes": np.array(visible, dtype=np.uint8).reshape(-1, 1),
                          "center": centres,
                          "factor_depth": np.array([[1000]], dtype=np.uint16),
                          "intrinsic_matrix": K.copy(),
                          "poses": poses,
                          "rotation_translation_matrix": c2w[:3].copy(),
                          "bbox": boxes}
            names.append(name)
            c2ws.append(c2w)
            w2cs.append(w2c)
        from scipy.io import savemat
        buffer = io.BytesIO()
        savemat(buffer, meta)
        write_bytes(folder / METADATA_FILE, buffer.getvalue(), durable=False)
        out.append(FixtureScene(path=folder, frame_names=names, K=K, c2w=np.stack(c2ws), w2c=np.stack(w2cs),
                                objects=objects, table_half=table_half))
    return out


def _translation(t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = t
    return T


def _bbox(mask: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(mask)
    return [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]


def _write_fixture_frame(folder, name, depth, raw, label, dirs, w2c, K, objects):
    H, W = depth.shape
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    point = centre + depth[..., None] * dirs
    normal = np.zeros((H, W, 3))
    normal[label == 0] = [0, 0, 1]
    for obj_id, obj in objects.items():
        hit = label == obj_id
        normal[hit] = (point[hit] - obj["centre"]) / obj["radius"]
    light = np.clip(normal @ np.array([0.3, -0.2, 0.93]), 0.2, 1.0)[..., None]
    checker = ((np.floor(point[..., 0] / 0.04) + np.floor(point[..., 1] / 0.04)) % 2)[..., None]
    table = np.where(checker > 0, [200, 180, 150], [90, 70, 50]) * light
    color = np.where((label == 0)[..., None], table, [40, 40, 48])
    hit = label == FIXTURE_OPAQUE_ID
    color[hit] = (np.array([200, 40, 30]) * light)[hit]
    hit = label == FIXTURE_TRANSPARENT_ID
    color[hit] = 0.55 * np.array([110, 95, 80]) + 0.45 * 255 * light[hit] ** 8   # see-through tint + highlight
    cam_normal = normal @ w2c[:3, :3].T
    normal_png = np.where((label >= 0)[..., None], np.round((cam_normal + 1) * 255 / 2), 0)
    files = {"color": np.round(np.clip(color, 0, 255)).astype(np.uint8),
             "depth": np.round(raw * 1000).astype(np.uint16),
             "depth_true": np.round(depth * 1000).astype(np.uint16),
             "normal_true": np.clip(normal_png, 0, 255).astype(np.uint8),
             "label": np.maximum(label, 0).astype(np.uint8)}
    for kind, array in files.items():
        write_bytes(folder / f"{name}{FRAME_SUFFIXES[kind]}", encode_png(array), durable=False)
