"""Geometry: the room shell (size, window) and the shapes in it — boxes laid out on the floor plan and
filled with displaced primitives, wireframe frames, slabs and sticks (MegaSynth's layout; numbers in
``GeometryConfig``, described in docs/attributes.md)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..spec import GeometrySpec, Heightfield, Shape, Window
from ._util import count, vec
from .config import GeometryConfig


def sample_room(rng: np.random.Generator, cfg: GeometryConfig = GeometryConfig()) -> GeometrySpec:
    """The room shell (size and window): held fixed within geometry partitions, which vary shapes."""
    raw = np.array([rng.uniform(*cfg.room_side), rng.uniform(*cfg.room_side), rng.uniform(*cfg.room_height)])
    s = 2.0 / max(raw[0], raw[1])
    room = tuple(float(v) for v in raw * s)
    window = None
    if rng.random() < cfg.p_window:
        wall = int(rng.integers(4))
        wall_len = room[0] if wall in (0, 2) else room[1]
        w = min(rng.uniform(*cfg.window_width) * s, cfg.window_max_width * wall_len)
        h = min(rng.uniform(*cfg.window_height) * s, cfg.window_max_height * room[2])
        m = cfg.window_side_margin
        u = rng.uniform(-(wall_len - w) / 2 + m, (wall_len - w) / 2 - m)
        z = rng.uniform(-room[2] / 2 + h / 2 + cfg.window_bottom_margin * room[2],
                        room[2] / 2 - h / 2 - cfg.window_top_margin * room[2])
        window = Window(wall=wall, center=(float(u), float(z)), size=(float(w), float(h)),
                        glass=bool(rng.random() < cfg.p_window_glass))
    return GeometrySpec(room=room, unit=float(s), shapes=(), window=window)


def sample_shapes(rng: np.random.Generator, shell: GeometrySpec, cfg: GeometryConfig = GeometryConfig(),
                  keep_clear: list = ()) -> GeometrySpec:
    """Boxes laid out on the floor plan, filled with displaced primitives, plus frames, slabs and
    sticks. Shapes closer than ``cfg.camera_clearance`` to a ``keep_clear`` point are dropped."""
    X, Y, Z = shell.room
    s = shell.unit
    floor, ceil = -Z / 2, Z / 2
    shapes: list[Shape] = []
    uid = iter(range(100, 100000))

    def box_at(size, z0=None, z1=None):
        size = np.minimum(size, [cfg.box_max * X, cfg.box_max * Y, cfg.box_max * Z])
        cx = rng.uniform(-X / 2 + size[0] / 2, X / 2 - size[0] / 2)
        cy = rng.uniform(-Y / 2 + size[1] / 2, Y / 2 - size[1] / 2)
        cz = z0 + size[2] / 2 if z0 is not None else z1 - size[2] / 2
        return np.array([cx, cy, cz]), size

    def up_to(mx):
        return int(rng.integers(mx // 2, mx + 1))

    def base_height(bounds):  # a fraction of the room's height above the floor
        return rng.uniform(floor + bounds[0] * Z, floor + bounds[1] * Z)

    boxes = []  # (center, size, role, n_primitives)
    for _ in range(up_to(cfg.max_large)):
        c, sz = box_at(rng.uniform(*cfg.large_size, 3) * s, z0=floor)
        boxes.append((c, sz, "large", count(rng, cfg.prims_large)))
    large = list(boxes)
    for i in range(up_to(cfg.max_small)):
        sz = rng.uniform(*cfg.small_size, 3) * s
        if i % 2 and large:  # every second small box stands on a large one
            lc, lsz, _, _ = large[int(rng.integers(len(large)))]
            c = lc + np.r_[rng.uniform(-lsz[:2] / 2, lsz[:2] / 2), lsz[2] / 2 + sz[2] / 2]
            boxes.append((c, sz, "stacked", count(rng, cfg.prims_other)))
        else:
            c, sz = box_at(sz, z0=floor)
            boxes.append((c, sz, "small", count(rng, cfg.prims_other)))
    for _ in range(up_to(cfg.max_roof)):
        c, sz = box_at(rng.uniform(*cfg.roof_size, 3) * s, z1=ceil)
        boxes.append((c, sz, "roof", count(rng, cfg.prims_other)))
    for _ in range(up_to(cfg.max_wall)):
        sz = rng.uniform(*cfg.wall_size, 3) * s
        wall = int(rng.integers(4))
        c, sz = box_at(sz, z0=rng.uniform(floor, ceil - sz[2]))
        axis, sign = (1, -1) if wall == 0 else (0, 1) if wall == 1 else (1, 1) if wall == 2 else (0, -1)
        c[axis] = sign * (shell.room[axis] / 2 - sz[axis] / 2)
        boxes.append((c, sz, "wall", count(rng, cfg.prims_other)))

    for center, size, role, n in boxes:
        for _ in range(n):
            axes = np.minimum(rng.uniform(*cfg.prim_axes, 3) * s, size)
            c = center + rng.uniform(-(size - axes) / 2, (size - axes) / 2)
            hf = None
            if rng.random() >= cfg.heightfield_p_skip:
                amp = rng.uniform(0, cfg.heightfield_max_rel) * axes.min() / 2
                hf = Heightfield(seed=int(rng.integers(2**31)), amplitude=float(amp),
                                 resolution=cfg.heightfield_resolution)
            shapes.append(Shape(uid=next(uid), kind=str(rng.choice(cfg.primitive_kinds)),
                                role=role, center=vec(c), size=vec(axes),
                                rotation=vec(rng.uniform(*cfg.rotation, 3)), heightfield=hf))

    if rng.random() < cfg.p_frames:
        for _ in range(count(rng, cfg.frames)):
            c, sz = box_at(rng.uniform(*cfg.frame_size, 3) * s, z0=base_height(cfg.frame_base))
            shapes.append(Shape(uid=next(uid), kind=str(rng.choice(cfg.frame_kinds)),
                                role="frame", center=vec(c), size=vec(sz),
                                rotation=(0.0, 0.0, float(rng.uniform(*cfg.rotation))),
                                wireframe=float(rng.uniform(*cfg.frame_thickness))))
    if rng.random() < cfg.p_slabs:
        for _ in range(count(rng, cfg.slabs)):
            thick = rng.uniform(*cfg.slab_thickness)
            sz = np.r_[rng.uniform(*cfg.slab_size, 2), thick] * s
            c, sz = box_at(sz[[0, 2, 1]], z0=floor)  # standing upright
            shapes.append(Shape(uid=next(uid), kind="cube", role="slab", center=vec(c), size=vec(sz),
                                rotation=(0.0, 0.0, float(rng.uniform(*cfg.rotation))),
                                glass=bool(thick < cfg.slab_glass_below and rng.random() < cfg.p_slab_glass)))
    for _ in range(count(rng, cfg.wall_sticks)):
        shapes.append(_wall_stick(rng, shell.room, s, next(uid), cfg))
    if rng.random() < cfg.p_float_sticks:
        for _ in range(count(rng, cfg.float_sticks)):
            length, cs = rng.uniform(*cfg.float_stick_length) * s, rng.uniform(*cfg.float_stick_width) * s
            c, _ = box_at(np.array([length, length, length]), z0=base_height(cfg.float_stick_base))
            shapes.append(Shape(uid=next(uid), kind="cube", role="float_stick", center=vec(c),
                                size=(float(length), float(cs), float(cs)),
                                rotation=vec(rng.uniform(*cfg.rotation, 3))))

    if len(keep_clear):
        pts = np.asarray(keep_clear, dtype=float)
        shapes = [sh for sh in shapes if shape_distance(sh, pts).min() >= cfg.camera_clearance]
    return dataclasses.replace(shell, shapes=tuple(shapes))


def _wall_stick(rng, room, s, uid, cfg: GeometryConfig) -> Shape:
    X, Y, Z = room
    wall = int(rng.integers(4))
    cs = rng.uniform(*cfg.stick_width) * s
    along_x = wall in (0, 2)
    wall_len = X if along_x else Y
    if rng.random() < cfg.p_stick_horizontal:
        length = min(rng.uniform(*cfg.stick_length) * s, wall_len)
        size = (length, cs, cs) if along_x else (cs, length, cs)
        u = rng.uniform(-(wall_len - length) / 2, (wall_len - length) / 2)
        z = rng.uniform(-Z / 2 + cs, Z / 2 - cs)
    else:  # vertical, floor to ceiling or shorter
        length = min(rng.uniform(*cfg.stick_length) * s, Z)
        size = (cs, cs, length)
        u = rng.uniform(-wall_len / 2 + cs, wall_len / 2 - cs)
        z = -Z / 2 + length / 2
    if along_x:
        center = (u, (Y / 2 - cs / 2) * (1 if wall == 2 else -1), z)
    else:
        center = ((X / 2 - cs / 2) * (1 if wall == 1 else -1), u, z)
    return Shape(uid=uid, kind="cube", role="wall_stick", center=vec(center), size=vec(size))


def shape_distance(shape: Shape, points: np.ndarray) -> np.ndarray:
    """Distance from points [N,3] to the shape's oriented bounding box (inflated by its heightfield)."""
    R = euler_matrix(shape.rotation)
    local = (np.asarray(points, float) - np.asarray(shape.center)) @ R  # world -> local
    half = np.asarray(shape.size) / 2 + (shape.heightfield.amplitude if shape.heightfield else 0.0)
    outside = np.maximum(np.abs(local) - half, 0.0)
    return np.linalg.norm(outside, axis=-1)


def euler_matrix(rotation) -> np.ndarray:
    """Blender's XYZ Euler: R = Rz · Ry · Rx."""
    x, y, z = rotation
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx
