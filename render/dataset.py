"""Public reader of rendered partitions (no ``bpy``).

    from render.dataset import load_partition
    p = load_partition("data/synth/lighting/p000")
    p.attribute, len(p.samples)
    s = p.samples[0]
    s.images [V,H,W,3] uint8, s.depths [V,H,W] float32, s.normals [V,H,W,3] float32,
    s.masks [V,H,W] uint16, s.intrinsics [V,3,3], s.extrinsics [V,3,4] (OpenCV world-to-camera)
    s.transparent_masks [V,H,W] bool: the first surface is transparent (docs/transparent.md)
    s.spec: the SceneSpec, or a MeshSceneSpec in a mesh partition (attribute "mesh", docs/meshes.md), or a
            TransparentSceneSpec in a transparent-object partition (attribute "transparent")

Arrays are read on first access and cached. Conventions are documented in ``render/files.py``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from .files import PARTITION_FORMAT, sample_name, sha256
from .spec import MeshSceneSpec, SceneSpec, TransparentSceneSpec, load_scene, transparent_ids


class PartitionError(ValueError):
    """A partition folder that is missing, incomplete or corrupt (the message names the file)."""


@dataclass
class Sample:
    path: Path

    @cached_property
    def cameras(self) -> list[dict]:
        return _read_json(self.path / "opencv_cameras.json")["frames"]

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    @cached_property
    def images(self) -> np.ndarray:
        return np.stack([_imread(self.path / f["file_path"], cv2.IMREAD_COLOR)[..., ::-1] for f in self.cameras])

    @cached_property
    def depths(self) -> np.ndarray:
        return np.stack([_load_npy(self._view_file("depth", i, ".npy")) for i in range(self.num_views)]).astype(np.float32)

    @cached_property
    def normals(self) -> np.ndarray:
        return np.stack([_load_npy(self._view_file("normal", i, ".npy")) for i in range(self.num_views)]).astype(np.float32)

    @cached_property
    def masks(self) -> np.ndarray:
        return np.stack([_imread(self._view_file("mask", i, ".png"), cv2.IMREAD_UNCHANGED) for i in range(self.num_views)])

    @cached_property
    def transparent_masks(self) -> np.ndarray:
        """[V,H,W] bool: the pixel's first surface is a transparent object. Read from ``transparent/VV.png``
        where the sample has them (transparent scenes); elsewhere derived from the instance masks and the
        spec (``render.spec.transparent_ids``: a procedural scene's glass shapes and window pane; nothing
        in a mesh scene)."""
        if (self.path / "transparent").is_dir():
            return np.stack([_imread(self._view_file("transparent", i, ".png"), cv2.IMREAD_UNCHANGED)
                             for i in range(self.num_views)]) > 0
        return np.isin(self.masks, np.asarray(transparent_ids(self.spec), np.int64))

    @cached_property
    def intrinsics(self) -> np.ndarray:
        return np.array([[[f["fx"], 0, f["cx"]], [0, f["fy"], f["cy"]], [0, 0, 1]] for f in self.cameras])

    @cached_property
    def extrinsics(self) -> np.ndarray:
        return np.array([np.asarray(f["w2c"])[:3] for f in self.cameras])

    @cached_property
    def spec(self) -> SceneSpec | MeshSceneSpec | TransparentSceneSpec:
        try:
            return load_scene(self.path / "scene.json")
        except (ValueError, KeyError, TypeError) as e:
            raise PartitionError(f"{self.path / 'scene.json'}: not a scene spec ({e})") from None

    def _view_file(self, kind: str, i: int, suffix: str) -> Path:
        stem = Path(self.cameras[i]["file_path"]).stem
        return self.path / kind / f"{stem}{suffix}"


@dataclass
class Partition:
    path: Path
    manifest: dict
    samples: list[Sample] = field(default_factory=list)

    @property
    def attribute(self) -> str:
        return self.manifest["attribute"]

    @property
    def index(self) -> int:
        return self.manifest["partition"]


def load_partition(path: str | Path, verify: bool = False) -> Partition:
    """Open a complete partition folder. ``verify`` re-hashes every file against the manifest."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise PartitionError(f"{path}: not a folder")
    if not manifest_path.exists():
        raise PartitionError(f"{manifest_path}: missing (partition not rendered or not finished)")
    manifest = read_manifest(manifest_path)
    if verify:
        for rel, digest in manifest["files"].items():
            f = path / rel
            if not f.exists():
                raise PartitionError(f"{f}: listed in the manifest but missing")
            if sha256(f) != digest:
                raise PartitionError(f"{f}: sha256 differs from the manifest")
    samples = [Sample(path / sample_name(s)) for s in range(manifest["samples"])]
    for s in samples:
        if not s.path.is_dir():
            raise PartitionError(f"{s.path}: sample folder missing")
    return Partition(path=path, manifest=manifest, samples=samples)


REQUIRED = ("format", "attribute", "partition", "seed", "generator", "samples", "views", "render", "files")


def read_manifest(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PartitionError(f"{path}: corrupt manifest ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise PartitionError(f"{path}: corrupt manifest (not a JSON object)")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise PartitionError(f"{path}: corrupt manifest (missing {', '.join(missing)})")
    if data["format"] != PARTITION_FORMAT:
        raise PartitionError(f"{path}: unknown manifest format {data['format']!r}")
    return data


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PartitionError(f"{path}: unreadable ({e})") from None


def _imread(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise PartitionError(f"{path}: missing or not an image")
    return img


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise PartitionError(f"{path}: unreadable array ({e})") from None
