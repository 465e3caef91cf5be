"""Jitter: the small per-sample perturbation of the attributes a partition holds fixed. Every value
moves by U(-1, 1) × its size in ``JitterConfig`` × ``scale`` (the job's ``--jitter``); see
docs/attributes.md."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..spec import CameraSpec, GeometrySpec, LightingSpec, TextureSpec
from ._util import nudge, vec
from .config import JitterConfig
from .geometry import euler_matrix

JITTER = JitterConfig().table()  # the default sizes as {attribute: {quantity: size}}


def jitter_geometry(g: GeometrySpec, rng, scale: float, cfg: JitterConfig = JitterConfig()) -> GeometrySpec:
    """Shape centres and rotations only: meshes are not rebuilt."""
    shapes = []
    for sh in g.shapes:
        dc = rng.uniform(-1, 1, 3) * cfg.geometry_center * scale
        dr = np.radians(rng.uniform(-1, 1, 3) * cfg.geometry_rotation_deg * scale)
        shapes.append(dataclasses.replace(sh, center=nudge(sh.center, dc), rotation=nudge(sh.rotation, dr)))
    return dataclasses.replace(g, shapes=tuple(shapes))


def jitter_texture(t: TextureSpec, rng, scale: float, cfg: JitterConfig = JitterConfig()) -> TextureSpec:
    mats = []
    for m in t.materials:
        u = rng.uniform(-1, 1, 10) * scale
        mats.append(dataclasses.replace(
            m, color_a=nudge(m.color_a, u[0:3] * cfg.texture_color, 0, 1),
            color_b=nudge(m.color_b, u[3:6] * cfg.texture_color, 0, 1),
            roughness=float(np.clip(m.roughness + u[6] * cfg.texture_roughness, 0, 1)),
            metallic=float(np.clip(m.metallic + u[7] * cfg.texture_metallic, 0, 1)) if m.metallic > 0 else 0.0,
            scale=float(m.scale * (1 + u[8] * cfg.texture_scale_rel)),
            bump=float(max(m.bump + u[9] * cfg.texture_bump, 0.0)) if m.bump > 0 else 0.0))
    return dataclasses.replace(t, materials=tuple(mats))


def jitter_lighting(l: LightingSpec, rng, scale: float, cfg: JitterConfig = JitterConfig()) -> LightingSpec:
    lights = []
    for li in l.lights:
        u = rng.uniform(-1, 1, 10) * scale
        d = _rotate_small(np.asarray(li.direction), u[7:10] * math.radians(cfg.lighting_direction_deg))
        lights.append(dataclasses.replace(
            li, power=float(li.power * (1 + u[0] * cfg.lighting_power_rel)),
            color=nudge(li.color, u[1:4] * cfg.lighting_color, 0, 1),
            position=nudge(li.position, u[4:7] * cfg.lighting_position), direction=vec(d)))
    return dataclasses.replace(l, lights=tuple(lights))


def jitter_camera(c: CameraSpec, rng, scale: float, cfg: JitterConfig = JitterConfig()) -> CameraSpec:
    views = []
    for v in c.views:
        u = rng.uniform(-1, 1, 8) * scale
        views.append(dataclasses.replace(
            v, position=nudge(v.position, u[0:3] * cfg.camera_position),
            look_at=nudge(v.look_at, u[3:6] * cfg.camera_look_at),
            fov_deg=float(v.fov_deg + u[6] * cfg.camera_fov_deg),
            roll=float(v.roll + math.radians(u[7] * cfg.camera_roll_deg))))
    return dataclasses.replace(c, views=tuple(views))


JITTER_FN = {"geometry": jitter_geometry, "texture": jitter_texture,
             "lighting": jitter_lighting, "camera": jitter_camera}


def _rotate_small(d: np.ndarray, angles: np.ndarray) -> np.ndarray:
    d = euler_matrix(angles) @ d
    return d / np.linalg.norm(d)
