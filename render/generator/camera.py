"""Cameras: the V views of one trajectory (a rig) around a shared target, so that the views overlap
(numbers in ``CameraConfig``, described in docs/attributes.md)."""
from __future__ import annotations

import math

import numpy as np

from ..spec import CameraSpec, GeometrySpec, View
from ._util import log_uniform, vec
from .config import CameraConfig, GeometryConfig
from .geometry import shape_distance

_CLEARANCE = GeometryConfig().camera_clearance


def sample_camera(rng: np.random.Generator, geometry: GeometrySpec, views: int,
                  cfg: CameraConfig = CameraConfig(), clearance: float = _CLEARANCE) -> CameraSpec:
    """V views of one trajectory around a shared target: an orbit arc, a sideways line (stereo-like), a
    forward move, a scatter, or MegaSynth's cameras near the room's faces aimed inward. The baseline is
    log-uniform from micro (face anti-spoofing) to wide. Every camera stays ``clearance`` away from the
    shapes; a trajectory that does not is drawn again (shorter after every ``cfg.relax_every``)."""
    room = np.asarray(geometry.room)
    for attempt in range(cfg.attempts):
        relax = cfg.relax ** (attempt // cfg.relax_every)  # shrink distances if the room is crowded
        rig = str(rng.choice(cfg.rigs, p=cfg.rig_p))
        target = _sample_target(rng, geometry, cfg)
        fov = rng.uniform(*cfg.fov_deg)
        baseline = log_uniform(rng, cfg.baseline) * relax
        dist = rng.uniform(*cfg.distance) * relax
        az, el = rng.uniform(*cfg.azimuth), math.radians(rng.uniform(*cfg.elevation_deg))
        u = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        positions, targets = _rig_positions(rng, rig, target, u, dist, baseline, views, room, cfg)
        fovs = np.full(views, fov)
        if rng.random() < cfg.p_zoom:  # some trajectories zoom
            fovs = np.clip(fov + rng.uniform(*cfg.zoom_deg, views), *cfg.fov_deg)
        rolls = np.radians(rng.uniform(*cfg.roll_deg) + rng.uniform(*cfg.view_roll_deg, views))
        if not _cameras_ok(positions, targets, geometry, clearance, cfg):
            continue
        vs = tuple(View(position=vec(p), look_at=vec(t), fov_deg=float(f), roll=float(r))
                   for p, t, f, r in zip(positions, targets, fovs, rolls))
        spread = max(np.linalg.norm(a - b) for a in positions for b in positions)
        return CameraSpec(views=vs, rig=rig, baseline=float(spread))
    raise RuntimeError(f"could not place cameras clear of geometry after {cfg.attempts} attempts")


def _sample_target(rng, geometry: GeometrySpec, cfg: CameraConfig) -> np.ndarray:
    half = np.asarray(geometry.room) / 2
    solid = [sh for sh in geometry.shapes if sh.role not in ("wall_stick", "frame")]
    if solid and rng.random() < cfg.p_target_shape:
        return np.asarray(solid[int(rng.integers(len(solid)))].center)
    return rng.uniform(-cfg.target_box * half, cfg.target_box * half)


def _rig_positions(rng, rig, target, u, dist, baseline, n, room, cfg: CameraConfig):
    """Camera centres [n,3] and look-at points [n,3] of one rig, ``dist`` from ``target`` along ``u``."""
    up = np.array([0.0, 0.0, 1.0])
    right = np.cross(up, u)
    right /= np.linalg.norm(right) + 1e-12
    steps = np.linspace(-0.5, 0.5, n) if n > 1 else np.zeros(1)
    centre = target + dist * u
    if rig == "orbit":  # arc of length `baseline` at radius `dist` around the vertical through target
        angles = steps * baseline / dist
        pos = np.array([target + dist * (math.cos(a) * u + math.sin(a) * right) for a in angles])
        return pos, np.repeat(target[None], n, 0)
    if rig == "line":  # parallel optical axes, like a stereo or slider rig
        offs = steps[:, None] * baseline * right
        return centre + offs, target + offs
    if rig == "forward":  # dolly towards the target
        pos = np.array([target + (dist - (s + 0.5) * min(baseline, cfg.forward_max * dist)) * u for s in steps])
        return pos, np.repeat(target[None], n, 0)
    if rig == "scatter":  # uniform in a ball of diameter `baseline`
        d = rng.normal(size=(n, 3))
        d *= (rng.random(n) ** (1 / 3) / np.linalg.norm(d, axis=1))[:, None]
        return centre + d * baseline / 2, target + rng.normal(scale=cfg.scatter_target_sd, size=(n, 3))
    # "room": MegaSynth's layout: each view near a face of the room (or in the middle), aimed inward
    half = room / 2
    pos = []
    for _ in range(n):
        if rng.random() < cfg.p_room_centre:
            pos.append(rng.uniform(-cfg.room_centre * half, cfg.room_centre * half))
            continue
        p = rng.uniform(-cfg.room_face * half, cfg.room_face * half)
        axis, sign = int(rng.integers(3)), rng.choice([-1, 1])
        p[axis] = sign * (half[axis] - rng.uniform(*cfg.room_inset))
        pos.append(p)
    pos = np.array(pos)
    return pos, target + rng.normal(scale=cfg.room_target_sd, size=(n, 3))


def _cameras_ok(positions, targets, geometry: GeometrySpec, clearance: float, cfg: CameraConfig) -> bool:
    half = np.asarray(geometry.room) / 2
    if np.any(np.abs(positions) > half - cfg.wall_margin):
        return False
    if np.any(np.linalg.norm(targets - positions, axis=1) < cfg.min_look):
        return False
    return all(shape_distance(sh, positions).min() >= clearance for sh in geometry.shapes)
