"""MegaSynth-style procedural scene generator with one-attribute-at-a-time control.

The distributions follow MegaSynth (Jiang et al., CVPR 2025; numbers in ../shared/reference/facts.md),
re-implemented from their published parameters. Raw lengths are in MegaSynth's room units (a room is
17–30 wide) and every geometry is then scaled so the room's longest horizontal side spans [-1, 1].

Attribute control (see docs/attributes.md): partition ``p`` of attribute ``X`` draws a base scene from
(seed, X, p). Sample ``k`` redraws X over its full range from (seed, X, p, k) and keeps the other three
at the base, each perturbed by a small, documented jitter (``JITTER``, scaled by ``jitter``).
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .spec import (ATTRIBUTES, PATTERNS, RENDER_ATTRIBUTES, CameraSpec, GeometrySpec, Glass,
                   Heightfield, Light, LightingSpec, Material, SceneSpec, Shape, TextureSpec, View,
                   Window)

# Size of the per-sample perturbation of the attributes a partition holds fixed, at jitter = 1.
JITTER = {
    "geometry": {"center": 0.005, "rotation_deg": 1.0},
    "texture": {"color": 0.02, "roughness": 0.02, "metallic": 0.02, "scale_rel": 0.02, "bump": 0.02},
    "lighting": {"power_rel": 0.05, "color": 0.02, "position": 0.02, "direction_deg": 2.0},
    "camera": {"position": 0.01, "look_at": 0.01, "fov_deg": 0.5, "roll_deg": 0.5},
}
_ATTR_CODE = {"texture": 1, "geometry": 2, "camera": 3, "lighting": 4, "mixed": 5}
_PURPOSE = {"base": 0, "redraw": 1, "jitter": 2}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp")


@dataclass(frozen=True)
class GeneratorConfig:
    """MegaSynth's generator parameters. Counts are drawn as randint(max // 2, max)."""
    max_large: int = 5
    max_small: int = 8
    max_roof: int = 4
    max_wall: int = 6
    prims_large: tuple[int, int] = (4, 9)
    prims_other: tuple[int, int] = (2, 5)
    prim_axes: tuple[float, float] = (0.25, 2.0)
    heightfield_p_skip: float = 0.1
    heightfield_max_rel: float = 0.6
    heightfield_resolution: int = 36
    frames: tuple[int, int] = (1, 3)
    p_frames: float = 0.8
    slabs: tuple[int, int] = (1, 2)
    p_slabs: float = 0.7
    wall_sticks: tuple[int, int] = (5, 16)
    float_sticks: tuple[int, int] = (2, 6)
    p_float_sticks: float = 0.5
    p_window: float = 0.8
    p_window_glass: float = 0.5
    camera_clearance: float = 0.15
    fov_deg: tuple[float, float] = (45.0, 70.0)
    baseline: tuple[float, float] = (0.005, 1.2)  # micro to wide, log-uniform
    # `mixed` (pretraining) keeps to MegaSynth-like wide layouts: with micro baselines half the time, a
    # model learns neither cameras nor multi-view depth from it (measured: median 2.4° between views).
    mixed_baseline: tuple[float, float] = (0.2, 1.2)
    materials: tuple[int, int] = (4, 10)
    texture_dir: str | None = None

    @classmethod
    def light(cls) -> "GeneratorConfig":
        """Few, coarse shapes: for tests and quick previews."""
        return cls(max_large=2, max_small=2, max_roof=1, max_wall=1, prims_large=(2, 3),
                   prims_other=(1, 2), heightfield_resolution=10, wall_sticks=(2, 3),
                   float_sticks=(1, 2))


def rng_for(seed: int, attribute: str, partition: int, sample: int, purpose: str) -> np.random.Generator:
    """Independent stream per (seed, attribute, partition, sample, purpose); sample -1 is the base."""
    ss = np.random.SeedSequence([seed, _ATTR_CODE[attribute], partition, sample + 1, _PURPOSE[purpose]])
    return np.random.default_rng(ss)


# ------------------------------------------------------------------------------------ public API
def partition_base(attribute: str, partition: int, seed: int, views: int,
                   cfg: GeneratorConfig = GeneratorConfig()) -> SceneSpec:
    _check_attribute(attribute)
    return sample_scene(rng_for(seed, attribute, partition, -1, "base"), views, cfg)


def sample_spec(attribute: str, partition: int, sample: int, seed: int, views: int,
                cfg: GeneratorConfig = GeneratorConfig(), jitter: float = 1.0) -> SceneSpec:
    """The scene of sample ``sample`` of partition ``partition`` of ``attribute``."""
    _check_attribute(attribute)
    if attribute == "mixed":  # MegaSynth-style: every sample a fresh scene
        wide = dataclasses.replace(cfg, baseline=cfg.mixed_baseline)
        return sample_scene(rng_for(seed, attribute, partition, sample, "redraw"), views, wide)
    base = partition_base(attribute, partition, seed, views, cfg)
    redraw = rng_for(seed, attribute, partition, sample, "redraw")
    jit = rng_for(seed, attribute, partition, sample, "jitter")
    parts = {}
    for name in ATTRIBUTES:  # fixed order: the jitter stream is consumed identically everywhere
        if name == attribute:
            continue
        parts[name] = _JITTER_FN[name](base.part(name), jit, jitter) if jitter else base.part(name)
    if attribute == "geometry":
        keep_clear = [v.position for v in base.camera.views]
        keep_clear += [l.position for l in base.lighting.lights if l.kind in ("point", "bulb")]
        parts["geometry"] = sample_shapes(redraw, base.geometry, cfg, keep_clear)
    elif attribute == "texture":
        parts["texture"] = sample_texture(redraw, cfg)
    elif attribute == "lighting":
        parts["lighting"] = sample_lighting(redraw, base.geometry)
    elif attribute == "camera":
        parts["camera"] = sample_camera(redraw, base.geometry, views, cfg)
    return base.replace(**parts)


def sample_scene(rng: np.random.Generator, views: int, cfg: GeneratorConfig = GeneratorConfig()) -> SceneSpec:
    room = sample_room(rng, cfg)
    geometry = sample_shapes(rng, room, cfg, keep_clear=[])
    camera = sample_camera(rng, geometry, views, cfg)
    lighting = sample_lighting(rng, geometry)
    texture = sample_texture(rng, cfg)
    return SceneSpec(geometry=geometry, texture=texture, lighting=lighting, camera=camera)


def _check_attribute(attribute: str) -> None:
    if attribute not in RENDER_ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {', '.join(RENDER_ATTRIBUTES)}")


# -------------------------------------------------------------------------------------- geometry
def sample_room(rng: np.random.Generator, cfg: GeneratorConfig) -> GeometrySpec:
    """The room shell (size and window): held fixed within geometry partitions, which vary shapes."""
    raw = np.array([rng.uniform(17, 30), rng.uniform(17, 30), rng.uniform(10, 15)])
    s = 2.0 / max(raw[0], raw[1])
    room = tuple(float(v) for v in raw * s)
    window = None
    if rng.random() < cfg.p_window:
        wall = int(rng.integers(4))
        wall_len = room[0] if wall in (0, 2) else room[1]
        w = min(rng.uniform(3, 8) * s, 0.7 * wall_len)
        h = min(rng.uniform(3, 6) * s, 0.6 * room[2])
        u = rng.uniform(-(wall_len - w) / 2 + 0.05, (wall_len - w) / 2 - 0.05)
        z = rng.uniform(-room[2] / 2 + h / 2 + 0.1 * room[2], room[2] / 2 - h / 2 - 0.05 * room[2])
        window = Window(wall=wall, center=(float(u), float(z)), size=(float(w), float(h)),
                        glass=bool(rng.random() < cfg.p_window_glass))
    return GeometrySpec(room=room, unit=float(s), shapes=(), window=window)


def sample_shapes(rng: np.random.Generator, shell: GeometrySpec, cfg: GeneratorConfig,
                  keep_clear: list) -> GeometrySpec:
    """Boxes laid out on the floor plan, filled with displaced primitives, plus frames, slabs and
    sticks. Shapes closer than ``cfg.camera_clearance`` to a ``keep_clear`` point are dropped."""
    X, Y, Z = shell.room
    s = shell.unit
    floor, ceil = -Z / 2, Z / 2
    shapes: list[Shape] = []
    uid = iter(range(100, 100000))

    def box_at(size, z0=None, z1=None):
        size = np.minimum(size, [0.9 * X, 0.9 * Y, 0.9 * Z])
        cx = rng.uniform(-X / 2 + size[0] / 2, X / 2 - size[0] / 2)
        cy = rng.uniform(-Y / 2 + size[1] / 2, Y / 2 - size[1] / 2)
        cz = z0 + size[2] / 2 if z0 is not None else z1 - size[2] / 2
        return np.array([cx, cy, cz]), size

    def count(mx):
        return int(rng.integers(mx // 2, mx + 1))

    boxes = []  # (center, size, role, n_primitives)
    for _ in range(count(cfg.max_large)):
        c, sz = box_at(rng.uniform(4, 8, 3) * s, z0=floor)
        boxes.append((c, sz, "large", rng.integers(cfg.prims_large[0], cfg.prims_large[1] + 1)))
    large = list(boxes)
    for i in range(count(cfg.max_small)):
        sz = rng.uniform(1.5, 3.5, 3) * s
        if i % 2 and large:  # half of the small boxes stand on a large one
            lc, lsz, _, _ = large[int(rng.integers(len(large)))]
            c = lc + np.r_[rng.uniform(-lsz[:2] / 2, lsz[:2] / 2), lsz[2] / 2 + sz[2] / 2]
            boxes.append((c, sz, "stacked", _n_other(rng, cfg)))
        else:
            c, sz = box_at(sz, z0=floor)
            boxes.append((c, sz, "small", _n_other(rng, cfg)))
    for _ in range(count(cfg.max_roof)):
        c, sz = box_at(rng.uniform(2, 5, 3) * s, z1=ceil)
        boxes.append((c, sz, "roof", _n_other(rng, cfg)))
    for _ in range(count(cfg.max_wall)):
        sz = rng.uniform(1.5, 4, 3) * s
        wall = int(rng.integers(4))
        c, sz = box_at(sz, z0=rng.uniform(floor, ceil - sz[2]))
        axis, sign = (1, -1) if wall == 0 else (0, 1) if wall == 1 else (1, 1) if wall == 2 else (0, -1)
        c[axis] = sign * (shell.room[axis] / 2 - sz[axis] / 2)
        boxes.append((c, sz, "wall", _n_other(rng, cfg)))

    for center, size, role, n in boxes:
        for _ in range(int(n)):
            axes = np.minimum(rng.uniform(*cfg.prim_axes, 3) * s, size)
            c = center + rng.uniform(-(size - axes) / 2, (size - axes) / 2)
            hf = None
            if rng.random() >= cfg.heightfield_p_skip:
                amp = rng.uniform(0, cfg.heightfield_max_rel) * axes.min() / 2
                hf = Heightfield(seed=int(rng.integers(2**31)), amplitude=float(amp),
                                 resolution=cfg.heightfield_resolution)
            shapes.append(Shape(uid=next(uid), kind=str(rng.choice(["ellipsoid", "cube", "cylinder"])),
                                role=role, center=_v(c), size=_v(axes),
                                rotation=_v(rng.uniform(0, math.pi, 3)), heightfield=hf))

    if rng.random() < cfg.p_frames:
        for _ in range(int(rng.integers(cfg.frames[0], cfg.frames[1] + 1))):
            c, sz = box_at(rng.uniform(2, 6, 3) * s, z0=rng.uniform(floor, 0))
            shapes.append(Shape(uid=next(uid), kind=str(rng.choice(["cube", "cylinder", "ellipsoid"])),
                                role="frame", center=_v(c), size=_v(sz),
                                rotation=(0.0, 0.0, float(rng.uniform(0, math.pi))),
                                wireframe=float(rng.uniform(0.01, 0.03))))
    if rng.random() < cfg.p_slabs:
        for _ in range(int(rng.integers(cfg.slabs[0], cfg.slabs[1] + 1))):
            thick = rng.uniform(0.05, 0.5)
            sz = np.r_[rng.uniform(2, 8, 2), thick] * s
            c, sz = box_at(sz[[0, 2, 1]], z0=floor)  # standing upright
            shapes.append(Shape(uid=next(uid), kind="cube", role="slab", center=_v(c), size=_v(sz),
                                rotation=(0.0, 0.0, float(rng.uniform(0, math.pi))),
                                glass=bool(thick < 0.25 and rng.random() < 0.8)))
    for _ in range(int(rng.integers(cfg.wall_sticks[0], cfg.wall_sticks[1] + 1))):
        shapes.append(_wall_stick(rng, shell.room, s, next(uid)))
    if rng.random() < cfg.p_float_sticks:
        for _ in range(int(rng.integers(cfg.float_sticks[0], cfg.float_sticks[1] + 1))):
            length, cs = rng.uniform(2, 8) * s, rng.uniform(0.1, 0.3) * s
            c, _ = box_at(np.array([length, length, length]), z0=rng.uniform(floor, 0))
            shapes.append(Shape(uid=next(uid), kind="cube", role="float_stick", center=_v(c),
                                size=(float(length), float(cs), float(cs)),
                                rotation=_v(rng.uniform(0, math.pi, 3))))

    if keep_clear:
        pts = np.asarray(keep_clear, dtype=float)
        shapes = [sh for sh in shapes if shape_distance(sh, pts).min() >= cfg.camera_clearance]
    return dataclasses.replace(shell, shapes=tuple(shapes))


def _n_other(rng, cfg):
    return rng.integers(cfg.prims_other[0], cfg.prims_other[1] + 1)


def _wall_stick(rng, room, s, uid) -> Shape:
    X, Y, Z = room
    wall = int(rng.integers(4))
    cs = rng.uniform(0.1, 0.4) * s
    along_x = wall in (0, 2)
    wall_len = X if along_x else Y
    if rng.random() < 0.5:  # horizontal
        length = min(rng.uniform(3, 15) * s, wall_len)
        size = (length, cs, cs) if along_x else (cs, length, cs)
        u = rng.uniform(-(wall_len - length) / 2, (wall_len - length) / 2)
        z = rng.uniform(-Z / 2 + cs, Z / 2 - cs)
    else:  # vertical, floor to ceiling or shorter
        length = min(rng.uniform(3, 15) * s, Z)
        size = (cs, cs, length)
        u = rng.uniform(-wall_len / 2 + cs, wall_len / 2 - cs)
        z = -Z / 2 + length / 2
    if along_x:
        center = (u, (Y / 2 - cs / 2) * (1 if wall == 2 else -1), z)
    else:
        center = ((X / 2 - cs / 2) * (1 if wall == 1 else -1), u, z)
    return Shape(uid=uid, kind="cube", role="wall_stick", center=_v(center), size=_v(size))


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


# -------------------------------------------------------------------------------------- cameras
def sample_camera(rng: np.random.Generator, geometry: GeometrySpec, views: int,
                  cfg: GeneratorConfig = GeneratorConfig()) -> CameraSpec:
    """V views of one trajectory around a shared target, so that the views overlap: an orbit arc, a
    sideways line (stereo-like), a forward move, a scatter, or MegaSynth's cameras near the room's
    faces aimed inward. The baseline is log-uniform from micro (face anti-spoofing) to wide."""
    room = np.asarray(geometry.room)
    for attempt in range(200):
        relax = 0.5 ** (attempt // 50)  # shrink distances if the room is crowded
        rig = str(rng.choice(["orbit", "line", "forward", "scatter", "room"], p=[0.3, 0.2, 0.15, 0.15, 0.2]))
        target = _sample_target(rng, geometry)
        fov = rng.uniform(*cfg.fov_deg)
        baseline = math.exp(rng.uniform(math.log(cfg.baseline[0]), math.log(cfg.baseline[1]))) * relax
        dist = rng.uniform(0.35, 1.2) * relax
        az, el = rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(-10, 40))
        u = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        positions, targets = _rig_positions(rng, rig, target, u, dist, baseline, views, room)
        fovs = np.full(views, fov)
        if rng.random() < 0.3:  # some trajectories zoom
            fovs = np.clip(fov + rng.uniform(-5, 5, views), *cfg.fov_deg)
        rolls = np.radians(rng.uniform(-10, 10) + rng.uniform(-2, 2, views))
        if not _cameras_ok(positions, targets, geometry, cfg.camera_clearance):
            continue
        vs = tuple(View(position=_v(p), look_at=_v(t), fov_deg=float(f), roll=float(r))
                   for p, t, f, r in zip(positions, targets, fovs, rolls))
        spread = max(np.linalg.norm(a - b) for a in positions for b in positions)
        return CameraSpec(views=vs, rig=rig, baseline=float(spread))
    raise RuntimeError("could not place cameras clear of geometry after 200 attempts")


def _sample_target(rng, geometry: GeometrySpec) -> np.ndarray:
    half = np.asarray(geometry.room) / 2
    solid = [sh for sh in geometry.shapes if sh.role not in ("wall_stick", "frame")]
    if solid and rng.random() < 0.6:
        return np.asarray(solid[int(rng.integers(len(solid)))].center)
    return rng.uniform(-0.6 * half, 0.6 * half)


def _rig_positions(rng, rig, target, u, dist, baseline, n, room):
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
        pos = np.array([target + (dist - (s + 0.5) * min(baseline, 0.8 * dist)) * u for s in steps])
        return pos, np.repeat(target[None], n, 0)
    if rig == "scatter":
        d = rng.normal(size=(n, 3))
        d *= (rng.random(n) ** (1 / 3) / np.linalg.norm(d, axis=1))[:, None]
        return centre + d * baseline / 2, target + rng.normal(scale=0.02, size=(n, 3))
    # MegaSynth's layout: each view near a face of the room (or in the middle), aimed inward
    half = room / 2
    pos = []
    for _ in range(n):
        if rng.random() < 0.25:
            pos.append(rng.uniform(-0.25 * half, 0.25 * half))
            continue
        p = rng.uniform(-0.85 * half, 0.85 * half)
        axis, sign = int(rng.integers(3)), rng.choice([-1, 1])
        p[axis] = sign * (half[axis] - rng.uniform(0.1, 0.3))
        pos.append(p)
    pos = np.array(pos)
    return pos, target + rng.normal(scale=0.05, size=(n, 3))


def _cameras_ok(positions, targets, geometry: GeometrySpec, clearance: float) -> bool:
    half = np.asarray(geometry.room) / 2
    if np.any(np.abs(positions) > half - 0.05):
        return False
    if np.any(np.linalg.norm(targets - positions, axis=1) < 0.05):
        return False
    return all(shape_distance(sh, positions).min() >= clearance for sh in geometry.shapes)


# ------------------------------------------------------------------------------------- lighting
def sample_lighting(rng: np.random.Generator, geometry: GeometrySpec) -> LightingSpec:
    """Light count, type, placement, colour and power. MegaSynth's two white area lights (one under
    the ceiling pointing down, one near the floor pointing up) are one option among others."""
    X, Y, Z = geometry.room
    half = np.array([X, Y, Z]) / 2
    lights: list[Light] = []
    area_scale = X * Y  # keep irradiance comparable across room sizes

    def colour(p_white):
        if rng.random() < p_white:
            return (1.0, 1.0, 1.0)
        return _v(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.15, 0.8), 1.0))

    if rng.random() < 0.4:
        for sign in (1, -1):
            lights.append(Light(kind="area", position=(0.0, 0.0, float(sign * (half[2] - 0.02))),
                                direction=(0.0, 0.0, float(-sign)), color=(1.0, 1.0, 1.0),
                                power=float(rng.uniform(2.5, 12) * area_scale * (1 if sign > 0 else 0.3)),
                                size=float(rng.uniform(0.5, 1.0))))
    else:
        for _ in range(int(rng.integers(1, 4))):
            p = rng.uniform(-0.9 * half, 0.9 * half)
            aim = rng.uniform(-0.5 * half, 0.5 * half) - p
            lights.append(Light(kind="area", position=_v(p), direction=_v(aim / np.linalg.norm(aim)),
                                color=colour(0.6), power=float(math.exp(rng.uniform(math.log(0.8), math.log(12))) * area_scale),
                                size=float(rng.uniform(0.1, 0.8))))
    if geometry.window is not None and rng.random() < 0.6:
        wc = window_center(geometry)
        inward = -wall_normal(geometry.window.wall)
        for _ in range(int(rng.integers(1, 3))):
            aim = rng.uniform(-0.7 * half, 0.7 * half)
            aim[2] = rng.uniform(-half[2], wc[2])
            d = aim - wc
            d = d / np.linalg.norm(d) if np.dot(d, inward) > 0.2 else inward
            lights.append(Light(kind="sun", position=_v(wc - 2 * d), direction=_v(d), color=colour(0.4),
                                power=float(rng.uniform(0.2, 2.0) * 0.5), size=float(rng.uniform(0.5, 5))))
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 4))):
            lights.append(Light(kind="point", position=_v(rng.uniform(-0.85 * half, 0.85 * half)),
                                direction=(0.0, 0.0, -1.0), color=colour(0.5),
                                power=float(math.exp(rng.uniform(math.log(0.25), math.log(4)))),
                                size=float(rng.uniform(0.01, 0.1))))
    if rng.random() < 0.2:
        for _ in range(int(rng.integers(1, 4))):
            lights.append(Light(kind="bulb", position=_v(rng.uniform(-0.85 * half, 0.85 * half)),
                                direction=(0.0, 0.0, -1.0), color=colour(0.5),
                                power=float(rng.uniform(20, 200)), size=float(rng.uniform(0.01, 0.04))))
    sky = colorsys.hsv_to_rgb(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.5), 1.0)
    return LightingSpec(lights=tuple(lights), sky_color=_v(sky), sky_strength=float(rng.uniform(0.05, 1.0)))


def wall_normal(wall: int) -> np.ndarray:
    """Outward normal of wall 0..3 (-y, +x, +y, -x)."""
    return np.array([[0, -1, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0]][wall], dtype=float)


def window_center(geometry: GeometrySpec) -> np.ndarray:
    w = geometry.window
    X, Y, _ = geometry.room
    u, z = w.center
    return np.array([(u, -Y / 2, z), (X / 2, u, z), (u, Y / 2, z), (-X / 2, u, z)][w.wall], dtype=float)


# -------------------------------------------------------------------------------------- texture
def sample_texture(rng: np.random.Generator, cfg: GeneratorConfig = GeneratorConfig()) -> TextureSpec:
    images = _texture_images(cfg.texture_dir)
    n = int(rng.integers(cfg.materials[0], cfg.materials[1] + 1))
    override = rng.random() < 0.5
    specular = rng.random() < 0.2
    mats = []
    for _ in range(n):
        ha, hb = rng.random(), rng.random()
        ca = colorsys.hsv_to_rgb(ha, rng.uniform(0, 0.9), rng.uniform(0.1, 0.95))
        cb = colorsys.hsv_to_rgb(hb if rng.random() < 0.5 else ha, rng.uniform(0, 0.9), rng.uniform(0.05, 0.95))
        rough, metal = rng.uniform(0.05, 0.95), (rng.uniform(0.3, 1.0) if rng.random() < 0.2 else 0.0)
        if override:
            rough, metal = rng.uniform(0.001, 0.2), rng.uniform(0.001, 1.0)
        if specular:
            rough, metal = rng.uniform(0.0, 0.05), rng.uniform(0.6, 1.0)
        image = str(images[int(rng.integers(len(images)))]) if images and rng.random() < 0.5 else None
        mats.append(Material(pattern=str(rng.choice(PATTERNS, p=[.18, .16, .14, .14, .12, .1, .08, .08])),
                             color_a=_v(ca), color_b=_v(cb),
                             scale=float(math.exp(rng.uniform(math.log(2), math.log(40)))),
                             detail=float(rng.uniform(0, 4)), roughness=float(rough), metallic=float(metal),
                             bump=float(rng.uniform(0.05, 0.6) if rng.random() < 0.6 else 0.0), image=image))
    glass = Glass(ior=float(rng.uniform(1.4, 1.6)), tint=_v(1 - rng.uniform(0, 0.15, 3)),
                  roughness=float(rng.uniform(0, 0.05)))
    pick = lambda: int(rng.integers(n))  # noqa: E731
    return TextureSpec(materials=tuple(mats), floor=pick(), walls=pick(), ceiling=pick(),
                       assign_seed=int(rng.integers(2**31)), glass=glass)


def _texture_images(folder: str | None) -> list[Path]:
    if not folder:
        return []
    return sorted(p.resolve() for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------------------- jitter
def jitter_geometry(g: GeometrySpec, rng, scale: float) -> GeometrySpec:
    j = JITTER["geometry"]
    shapes = []
    for sh in g.shapes:
        dc = rng.uniform(-1, 1, 3) * j["center"] * scale
        dr = np.radians(rng.uniform(-1, 1, 3) * j["rotation_deg"] * scale)
        shapes.append(dataclasses.replace(sh, center=_nudge(sh.center, dc), rotation=_nudge(sh.rotation, dr)))
    return dataclasses.replace(g, shapes=tuple(shapes))


def jitter_texture(t: TextureSpec, rng, scale: float) -> TextureSpec:
    j = JITTER["texture"]
    mats = []
    for m in t.materials:
        u = rng.uniform(-1, 1, 10) * scale
        mats.append(dataclasses.replace(
            m, color_a=_nudge(m.color_a, u[0:3] * j["color"], 0, 1),
            color_b=_nudge(m.color_b, u[3:6] * j["color"], 0, 1),
            roughness=float(np.clip(m.roughness + u[6] * j["roughness"], 0, 1)),
            metallic=float(np.clip(m.metallic + u[7] * j["metallic"], 0, 1)) if m.metallic > 0 else 0.0,
            scale=float(m.scale * (1 + u[8] * j["scale_rel"])),
            bump=float(max(m.bump + u[9] * j["bump"], 0.0)) if m.bump > 0 else 0.0))
    return dataclasses.replace(t, materials=tuple(mats))


def jitter_lighting(l: LightingSpec, rng, scale: float) -> LightingSpec:
    j = JITTER["lighting"]
    lights = []
    for li in l.lights:
        u = rng.uniform(-1, 1, 10) * scale
        d = _rotate_small(np.asarray(li.direction), u[7:10] * math.radians(j["direction_deg"]))
        lights.append(dataclasses.replace(
            li, power=float(li.power * (1 + u[0] * j["power_rel"])),
            color=_nudge(li.color, u[1:4] * j["color"], 0, 1),
            position=_nudge(li.position, u[4:7] * j["position"]), direction=_v(d)))
    return dataclasses.replace(l, lights=tuple(lights))


def jitter_camera(c: CameraSpec, rng, scale: float) -> CameraSpec:
    j = JITTER["camera"]
    views = []
    for v in c.views:
        u = rng.uniform(-1, 1, 8) * scale
        views.append(dataclasses.replace(
            v, position=_nudge(v.position, u[0:3] * j["position"]),
            look_at=_nudge(v.look_at, u[3:6] * j["look_at"]),
            fov_deg=float(v.fov_deg + u[6] * j["fov_deg"]), roll=float(v.roll + math.radians(u[7] * j["roll_deg"]))))
    return dataclasses.replace(c, views=tuple(views))


_JITTER_FN = {"geometry": jitter_geometry, "texture": jitter_texture,
              "lighting": jitter_lighting, "camera": jitter_camera}


def _nudge(x, delta, lo=-np.inf, hi=np.inf) -> tuple:
    return _v(np.clip(np.add(x, delta), lo, hi))


def _rotate_small(d: np.ndarray, angles: np.ndarray) -> np.ndarray:
    d = euler_matrix(angles) @ d
    return d / np.linalg.norm(d)


def _v(x) -> tuple:
    return tuple(float(a) for a in np.asarray(x, dtype=float).ravel())
