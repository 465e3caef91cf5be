"""On-disk layout of rendered partitions, and the writer (no ``bpy``).

    OUT/<attribute>/p003/
        partition.json          job settings, written first (a rerun must match them)
        s0000/                  one sample: V views of one scene state, renamed into place when complete
            scene.json          the SceneSpec (a MeshSceneSpec in mesh partitions: docs/meshes.md)
            opencv_cameras.json MegaSynth-style: frames with w, h, fx, fy, cx, cy, w2c (4x4, OpenCV)
            rgb/00.png          8-bit sRGB
            depth/00.npy        float32 [H,W] z-depth along the optical axis, scene units; 0 = no surface
            normal/00.npy       float16 [H,W,3] unit geometric normals in the OpenCV camera frame
                                (x right, y down, z forward); 0 = no surface
            mask/00.png         uint16 instance ids (spec Shape.uid; room parts 1-7); 0 = no surface
            transparent/00.png  uint8 0/1: the mask's id is a transparent object's (transparent scenes
                                only: TransparentSceneSpec.transparent_ids; docs/transparent.md)
        contact_sheet.png
        manifest.json           written last: settings + sha256 of every file; its presence = complete
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.images import encode_png

from . import camera as cam
from .spec import MeshSceneSpec, SceneSpec, TransparentSceneSpec

PARTITION_FORMAT = "attrspace-partition-1"
MARKER = ".attrspace-render"


def partition_name(p: int) -> str:
    return f"p{p:03d}"


def sample_name(s: int) -> str:
    return f"s{s:04d}"


def view_name(v: int) -> str:
    return f"{v:02d}"


def linear_to_srgb8(rgb: np.ndarray) -> np.ndarray:
    """Linear RGB -> 8-bit sRGB (the piecewise IEC 61966-2-1 curve, as Blender's Standard view)."""
    x = np.clip(rgb, 0.0, 1.0)
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.rint(s * 255.0).astype(np.uint8)


@dataclass
class ViewPixels:
    """One rendered view, as a renderer hands it to :func:`write_sample`."""
    rgb_linear: np.ndarray  # [H,W,3] float32, scene-referred linear RGB
    depth: np.ndarray  # [H,W] float32 z-depth, 0 where no surface
    normal_world: np.ndarray  # [H,W,3] float32 unit geometric normals (world), 0 on background
    index: np.ndarray  # [H,W] uint16 instance ids, 0 on background


def write_sample(final_dir: Path, spec: SceneSpec | MeshSceneSpec | TransparentSceneSpec, pixels: list, width: int,
                 height: int) -> None:
    """Write one sample into a temporary sibling folder, then rename it into place: a sample folder
    either is complete or does not exist (if another writer of the same sample finished first, its
    identical folder stays). ``pixels``: one ``ViewPixels`` per view. A transparent scene's samples also
    get ``transparent/VV.png``: 1 where the instance id is one of ``spec.transparent_ids``."""
    glass = np.asarray(spec.transparent_ids, np.int64) if isinstance(spec, TransparentSceneSpec) else None
    with atomic_path(final_dir, directory=True) as tmp:
        for sub in ("rgb", "depth", "normal", "mask") + (("transparent",) if glass is not None else ()):
            (tmp / sub).mkdir()
        frames = []
        for i, (view, px) in enumerate(zip(spec.camera.views, pixels, strict=True)):
            name = view_name(i)
            K, E = cam.intrinsics(view, width, height), cam.extrinsics(view)
            (tmp / "rgb" / f"{name}.png").write_bytes(encode_png(linear_to_srgb8(px.rgb_linear)))
            np.save(tmp / "depth" / f"{name}.npy", px.depth.astype(np.float32))
            n_cam = px.normal_world @ E[:, :3].T  # rotate world normals into the camera frame
            np.save(tmp / "normal" / f"{name}.npy", n_cam.astype(np.float16))
            (tmp / "mask" / f"{name}.png").write_bytes(encode_png(px.index.astype(np.uint16)))
            if glass is not None:
                (tmp / "transparent" / f"{name}.png").write_bytes(
                    encode_png(np.isin(px.index, glass).astype(np.uint8)))
            w2c = np.vstack([E, [0, 0, 0, 1]])
            frames.append({"file_path": f"rgb/{name}.png", "w": width, "h": height,
                           "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w2c": w2c.tolist()})
        (tmp / "opencv_cameras.json").write_text(json.dumps({"frames": frames}, indent=1))
        (tmp / "scene.json").write_text(spec.to_json())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(partition_dir: Path, samples: int) -> dict[str, str]:
    out = {}
    for s in range(samples):
        sdir = partition_dir / sample_name(s)
        for f in sorted(p for p in sdir.rglob("*") if p.is_file()):
            out[f.relative_to(partition_dir).as_posix()] = sha256(f)
    sheet = partition_dir / "contact_sheet.png"
    if sheet.exists():
        out["contact_sheet.png"] = sha256(sheet)
    return out
