"""Transparent-object tabletop scenes (docs/transparent.md): a table in a room, opaque clutter and glass or
clear-plastic objects on it (bottles, drinking glasses, bowls, vases, jars with a wall, and solid spheres,
cylinders and boxes), lit by a few lights and seen by one hand-held trajectory of views — built-in data
for transparent-object reconstruction (ClearPose-like).

    from render.generator.transparent import TransparentConfig, sample_transparent_spec
    spec = sample_transparent_spec(partition=0, sample=3, seed=0, views=4)         # a TransparentSceneSpec
    cfg = TransparentConfig().override({"camera": {"baseline": [0.05, 0.1]}})

A partition is one set-up: the room (size, materials), the table and the set of objects (kinds, shapes,
sizes, materials, glass) are drawn from (seed, partition). Each sample redraws, each from its own stream
of (seed, partition, sample), the arrangement of those objects on the table (positions and turns), the
camera trajectory and the lighting. Every range, probability and count is a field of the configs below
(metres, degrees where a name says ``_deg``); the same seed and config always give the same specs.
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..spec import (TRANSMISSIVE_KINDS, CameraSpec, Heightfield, Light, LightingSpec, Room, Table, TableObject,
                    Transmissive, TransparentSceneSpec, View)
from ._util import count, log_uniform, vec
from .config import Count, Range, Sectioned, TextureConfig, _Checked, load_overrides
from .geometry import euler_matrix
from .texture import sample_texture

VESSELS = ("bottle", "glass", "bowl", "vase", "jar")
SOLIDS = ("sphere", "cylinder", "box")
_STREAM = 7  # keeps these random streams apart from the generator's (1-5) and the mesh mode's (6)
_PURPOSE = {"scene": 0, "placement": 1, "camera": 2, "lighting": 3}


# ------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class RoomConfig(_Checked):
    """The room around the table."""
    side: Range = (3.0, 6.0)                # m; U, each horizontal side
    height: Range = (2.5, 3.2)              # m; U
    p_ceiling: float = 0.8                  # the room has a ceiling; else the world background shows above


@dataclass(frozen=True)
class TableConfig(_Checked):
    kinds: tuple[str, ...] = ("slab", "box")  # a top on four legs, or a solid block; drawn with ...
    kind_p: tuple[float, ...] = (0.7, 0.3)    # ... these probabilities
    width: Range = (0.8, 1.6)               # m; U, along x
    depth: Range = (0.6, 1.0)               # m; U, along y
    height: Range = (0.65, 0.8)             # m; U, floor to top surface
    thickness: Range = (0.03, 0.06)         # m; U, of a slab's top
    leg: Range = (0.04, 0.07)               # m; U, side of a slab's square legs
    offset: float = 0.3                     # m; the table's centre U within ± this of the room's (x, y) ...
    wall_gap: float = 1.0                   # m; ... and at least this far from every wall (room for cameras)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("kinds", "kind_p")
        if set(self.kinds) - {"slab", "box"}:
            raise ValueError(f"kinds: {list(self.kinds)}: choose from slab, box")


@dataclass(frozen=True)
class VesselSize(_Checked):
    radius: Range                           # m; U, the largest outer radius
    height: Range                           # m; U


@dataclass(frozen=True)
class ObjectsConfig(_Checked):
    """What stands on the table: how many, which kinds, their shapes and sizes, where."""
    transparent: Count = (3, 6)             # transparent objects per partition
    clutter: Count = (2, 5)                 # opaque objects per partition
    kinds: tuple[str, ...] = VESSELS + SOLIDS  # transparent objects' kinds, drawn with ...
    kind_p: tuple[float, ...] = (0.2, 0.2, 0.12, 0.14, 0.1, 0.08, 0.08, 0.08)  # ... these probabilities
    clutter_kinds: tuple[str, ...] = SOLIDS  # opaque objects' kinds (any of kinds), drawn with ...
    clutter_kind_p: tuple[float, ...] = (0.2, 0.4, 0.4)  # ... these probabilities
    # vessels: outer size, then the shape of the profile as fractions of the radius R and the height H
    bottle: VesselSize = VesselSize((0.03, 0.045), (0.18, 0.30))
    bottle_shoulder: Range = (0.5, 0.7)     # × H; U, where the body ends
    bottle_neck: Range = (0.3, 0.45)        # × R; U, neck radius
    bottle_neck_start: Range = (0.15, 0.25)  # × H; U, from the shoulder to the neck
    glass: VesselSize = VesselSize((0.03, 0.045), (0.08, 0.15))
    glass_foot: Range = (0.7, 1.0)          # × R; U, radius at the foot (the rim has R)
    bowl: VesselSize = VesselSize((0.06, 0.10), (0.04, 0.08))
    bowl_foot: Range = (0.4, 0.6)           # × R; U
    vase: VesselSize = VesselSize((0.04, 0.07), (0.15, 0.28))
    vase_foot: Range = (0.55, 0.8)          # × R; U
    vase_belly: Range = (0.3, 0.5)          # × H; U, height of the widest part (R)
    vase_neck: Range = (0.45, 0.7)          # × R; U, narrowest radius, at ...
    vase_neck_at: Range = (0.75, 0.88)      # × H; U
    vase_lip: Range = (0.6, 0.9)            # × R; U, radius at the rim
    jar: VesselSize = VesselSize((0.035, 0.06), (0.08, 0.16))
    jar_mouth: Range = (0.75, 0.9)          # × R; U, radius at the rim (a rounded shoulder leads to it)
    wall: Range = (0.0015, 0.005)           # m; U, wall thickness of every vessel (measured along the normal)
    bottom: Range = (0.004, 0.015)          # m; U, thickness of a vessel's floor
    # solids (transparent or opaque)
    sphere_radius: Range = (0.025, 0.06)    # m; U
    cylinder_radius: Range = (0.02, 0.05)   # m; U
    cylinder_height: Range = (0.05, 0.18)   # m; U
    box_side: Range = (0.04, 0.14)          # m; U per axis
    p_heightfield: float = 0.3              # an opaque solid is displaced by a heightfield of amplitude ...
    heightfield_max_rel: float = 0.15       # ... U(0, this) × its smallest semi-axis
    heightfield_resolution: int = 16        # samples per face side
    # arrangement on the table top, redrawn every sample
    area: Range = (0.4, 0.9)                # U, per axis: the share of the table top the arrangement spans
    fill_max: float = 0.45                  # footprints cover at most this share of the area (it grows, then
                                            # objects are left out of the partition: clutter first)
    margin: float = 0.02                    # m kept between a footprint and the table's edge
    gap: float = 0.01                       # m kept between two footprints
    attempts: int = 300                     # positions tried per object before it sits this sample out

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("kinds", "kind_p")
        self._check_choice("clutter_kinds", "clutter_kind_p")
        for name in ("kinds", "clutter_kinds"):
            unknown = sorted(set(getattr(self, name)) - set(VESSELS + SOLIDS))
            if unknown:
                raise ValueError(f"{name}: unknown {unknown}; choose from {', '.join(VESSELS + SOLIDS)}")
        if self.wall[0] <= 0 or self.bottom[0] <= 0:
            raise ValueError(f"wall, bottom: {list(self.wall)}, {list(self.bottom)} must be > 0")
        if not 0.0 < self.area[0] <= self.area[1] <= 1.0 or not 0.0 < self.fill_max <= 1.0:
            raise ValueError(f"area, fill_max: {list(self.area)}, {self.fill_max} must lie in (0, 1]")
        if self.attempts < 1:
            raise ValueError(f"attempts: {self.attempts} must be >= 1")


@dataclass(frozen=True)
class GlassConfig(_Checked):
    """The transparent objects' materials (one per object, kept across the samples of a partition)."""
    p_plastic: float = 0.25                 # clear plastic (Principled BSDF with transmission), else glass
    plastic_transmission: Range = (0.85, 1.0)  # U; a plastic's transmission weight
    ior: Range = (1.3, 1.7)                 # U; index of refraction
    p_clear: float = 0.6                    # polished: roughness U(clear_roughness), else U(roughness)
    clear_roughness: Range = (0.0, 0.02)
    roughness: Range = (0.02, 0.3)
    p_tinted: float = 0.35                  # coloured: HSV hue U(0, 1), saturation U(tint_saturation), value 1;
    tint_saturation: Range = (0.1, 0.6)
    clear_tint_loss: Range = (0.0, 0.05)    # else nearly white: 1 - U(this) per channel
    p_absorption: float = 0.3               # tinted inside too (Beer-Lambert, deeper where thicker): ...
    absorption: Range = (2.0, 30.0)         # ... density, 1/m, log-U

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive("absorption")
        if self.ior[0] < 1.0:
            raise ValueError(f"ior: {list(self.ior)} must be >= 1")


@dataclass(frozen=True)
class HandheldConfig(_Checked):
    """One hand-held trajectory per sample around the table: V views along a short arc on a sphere around
    a target among the transparent objects, from any side (azimuth) and above (elevation)."""
    distance: Range = (0.3, 0.75)           # m; U, from the target to the trajectory's centre
    azimuth_deg: Range = (-180.0, 180.0)    # U, direction from the target to the cameras ...
    elevation_deg: Range = (20.0, 70.0)     # ... and its elevation above the horizontal, U
    baseline: Range = (0.03, 0.4)           # m; log-U: the length of the path through the camera centres
    distance_change: float = 0.15           # the distance changes linearly along the path by U(± this) × itself
    wobble: float = 0.1                     # hand shake: per view, normal sd of this × baseline / views,
                                            # perpendicular to the path
    fov_deg: Range = (45.0, 65.0)           # horizontal field of view, U, one per trajectory
    roll_deg: Range = (-8.0, 8.0)           # U, of the whole trajectory, plus ...
    view_roll_deg: Range = (-2.0, 2.0)      # ... U(this) per view
    target_sd: float = 0.03                 # m; normal sd of the target about the transparent objects' centre
    look_sd: float = 0.01                   # m; normal sd of each view's look-at about the target
    clearance: float = 0.05                 # m; least distance from a camera to the table or an object
    wall_margin: float = 0.1                # m; cameras stay this far inside the room
    above_table: float = 0.1                # m; cameras stay this far above the table top
    attempts: int = 100                     # trajectories drawn before giving up

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive("distance", "baseline", "fov_deg")
        if not 0.0 <= self.elevation_deg[0] <= self.elevation_deg[1] < 89.0:
            raise ValueError(f"elevation_deg: {list(self.elevation_deg)} must lie in [0, 89)")
        if not 0.0 < self.fov_deg[1] < 180.0:
            raise ValueError(f"fov_deg: {list(self.fov_deg)} must lie in (0, 180)")
        if self.attempts < 1:
            raise ValueError(f"attempts: {self.attempts} must be >= 1")


@dataclass(frozen=True)
class TableLightingConfig(_Checked):
    """Lights redrawn every sample; each light's power is set from the irradiance it gives at the target,
    so the exposure does not depend on its distance or colour."""
    lights: Count = (1, 3)                  # how many
    p_panel: float = 0.6                    # the first light is a ceiling panel (a square area light at the
                                            # ceiling's height, pointing down at the table), of side ...
    panel_size: Range = (0.4, 1.2)          # ... m, U, within ...
    panel_offset: float = 0.8               # ... m of the target horizontally, U per axis
    p_area: float = 0.6                     # every other light is a softbox (square area light facing the
                                            # target), else a point light
    elevation_deg: Range = (15.0, 75.0)     # above the target, U; azimuth U(0, 360)
    distance: Range = (0.8, 2.0)            # m from the target, U (then kept inside the room)
    area_size: Range = (0.2, 0.8)           # m; U, softbox side
    point_radius: Range = (0.01, 0.08)      # m; U, shadow softness
    irradiance: Range = (1.0, 4.0)          # W/m² at the target, per light, log-U
    temperature_k: Range = (2700.0, 7500.0)  # colour temperature, U
    sky_value: Range = (0.05, 0.6)          # world background (seen without a ceiling; lights as ambient):
    sky_saturation: Range = (0.0, 0.3)      # HSV value and saturation, U; hue U(0, 1); strength 1
    wall_margin: float = 0.05               # m; lights stay this far inside the room

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive("irradiance", "distance")
        if self.lights[1] < 1:
            raise ValueError(f"lights: {list(self.lights)} must allow at least one light")
        if not 1667.0 <= self.temperature_k[0] <= self.temperature_k[1] <= 25000.0:
            raise ValueError(f"temperature_k: {list(self.temperature_k)} must lie in [1667, 25000]")


def _texture_default() -> TextureConfig:
    # the procedural materials of room, table and clutter: MegaSynth's, without scene-wide mirror metals
    return TextureConfig(materials=(4, 8), p_override=0.2, p_specular=0.0)


@dataclass(frozen=True)
class TransparentConfig(Sectioned):
    """Every setting of the transparent-scene generator, by section."""
    room: RoomConfig = field(default_factory=RoomConfig)
    table: TableConfig = field(default_factory=TableConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    glass: GlassConfig = field(default_factory=GlassConfig)
    camera: HandheldConfig = field(default_factory=HandheldConfig)
    lighting: TableLightingConfig = field(default_factory=TableLightingConfig)
    texture: TextureConfig = field(default_factory=_texture_default)  # room, table and clutter materials
                                                                      # (its glass_* fields are not used)

    @classmethod
    def light(cls) -> "TransparentConfig":
        """Fewer objects (tests and quick previews)."""
        base = cls()
        return dataclasses.replace(base, objects=dataclasses.replace(base.objects, transparent=(2, 3), clutter=(1, 2)))


def load_transparent_config(text: str | Path, base: TransparentConfig = TransparentConfig()) -> TransparentConfig:
    """``base`` overridden by a JSON file (a path) or a JSON object given as text (it starts with ``{``)."""
    return load_overrides(text, base, inline=True)


# --------------------------------------------------------------------------------------- sampling
def transparent_rng(seed: int, partition: int, sample: int, purpose: str) -> np.random.Generator:
    """Independent stream per (seed, partition, sample, purpose); sample -1 is the partition's set-up."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM, partition, sample + 1, _PURPOSE[purpose]]))


@dataclass(frozen=True)
class SetUp:
    """What a partition holds fixed: room, table, materials and the objects (not yet placed)."""
    room: Room
    table: Table
    objects: tuple[TableObject, ...]
    materials: tuple


def sample_setup(rng: np.random.Generator, cfg: TransparentConfig = TransparentConfig()) -> SetUp:
    """Room, materials, table, then the objects (transparent first, then clutter), in that order."""
    rc, tc, oc = cfg.room, cfg.table, cfg.objects
    texture = sample_texture(rng, cfg.texture)
    n = len(texture.materials)
    size = (float(rng.uniform(*rc.side)), float(rng.uniform(*rc.side)), float(rng.uniform(*rc.height)))
    room = Room(size=size, ceiling=bool(rng.random() < rc.p_ceiling), floor=texture.floor, walls=texture.walls,
                ceiling_material=texture.ceiling)
    kind = str(rng.choice(tc.kinds, p=tc.kind_p))
    width, depth = rng.uniform(*tc.width), rng.uniform(*tc.depth)
    width = min(width, size[0] - 2 * tc.wall_gap)  # a small room gets a smaller table
    depth = min(depth, size[1] - 2 * tc.wall_gap)
    centre = []
    for axis, extent in ((0, width), (1, depth)):
        room_half = size[axis] / 2 - tc.wall_gap - extent / 2
        reach = max(0.0, min(tc.offset, room_half))
        centre.append(float(rng.uniform(-reach, reach)))
    table = Table(kind=kind, center=(centre[0], centre[1]), size=(float(width), float(depth),
                  float(rng.uniform(*tc.thickness))), height=float(rng.uniform(*tc.height)),
                  leg=float(rng.uniform(*tc.leg)), material=int(rng.integers(n)))

    objects = []
    uid = iter(range(100, 100000))
    for _ in range(count(rng, oc.transparent)):
        kind = str(rng.choice(oc.kinds, p=oc.kind_p))
        objects.append(_object(rng, next(uid), kind, oc, transmissive=_transmissive(rng, cfg.glass)))
    for _ in range(count(rng, oc.clutter)):
        kind = str(rng.choice(oc.clutter_kinds, p=oc.clutter_kind_p))
        objects.append(_object(rng, next(uid), kind, oc, material=int(rng.integers(n))))
    # the arrangement area at its largest must hold every footprint at fill_max: else leave objects out
    from ..transparent import footprint_radius
    top = (width - 2 * oc.margin) * (depth - 2 * oc.margin) * oc.area[1] ** 2
    while objects and sum(math.pi * (footprint_radius(o) + oc.gap / 2) ** 2 for o in objects) > oc.fill_max * top:
        clutter = [i for i, o in enumerate(objects) if not o.transparent]
        objects.pop(clutter[-1] if clutter else len(objects) - 1)
    return SetUp(room=room, table=table, objects=tuple(objects), materials=texture.materials)


def _transmissive(rng, gc: GlassConfig) -> Transmissive:
    plastic = rng.random() < gc.p_plastic
    ior = rng.uniform(*gc.ior)
    roughness = rng.uniform(*(gc.clear_roughness if rng.random() < gc.p_clear else gc.roughness))
    if rng.random() < gc.p_tinted:
        tint = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*gc.tint_saturation), 1.0)
    else:
        tint = 1.0 - rng.uniform(*gc.clear_tint_loss, 3)
    absorption = log_uniform(rng, gc.absorption) if rng.random() < gc.p_absorption else 0.0
    transmission = rng.uniform(*gc.plastic_transmission) if plastic else 1.0
    return Transmissive(kind=TRANSMISSIVE_KINDS[1 if plastic else 0], ior=float(ior), roughness=float(roughness),
                        tint=vec(tint), transmission=float(transmission), absorption=float(absorption))


def _object(rng, uid: int, kind: str, oc: ObjectsConfig, transmissive: Transmissive | None = None,
            material: int = 0) -> TableObject:
    """An object of ``kind``, not yet placed (centre at the origin)."""
    if kind in VESSELS:
        dims = getattr(oc, kind)
        R, H = rng.uniform(*dims.radius), rng.uniform(*dims.height)
        profile = _profile(rng, kind, R, H, oc)
        wall, bottom = rng.uniform(*oc.wall), rng.uniform(*oc.bottom)
        bottom = min(bottom, 0.25 * H)
        r_max = max(r for r, _ in profile)
        return TableObject(uid=uid, kind=kind, center=(0.0, 0.0, 0.0), size=(2 * r_max, 2 * r_max, float(H)),
                           profile=tuple((float(r), float(z)) for r, z in profile), wall=float(wall),
                           bottom=float(bottom), material=material, transmissive=transmissive)
    if kind == "sphere":
        size = (2 * rng.uniform(*oc.sphere_radius),) * 3
    elif kind == "cylinder":
        d = 2 * rng.uniform(*oc.cylinder_radius)
        size = (d, d, rng.uniform(*oc.cylinder_height))
    else:
        size = tuple(rng.uniform(*oc.box_side, 3))
    hf = None
    if transmissive is None and rng.random() < oc.p_heightfield:
        amp = rng.uniform(0, oc.heightfield_max_rel) * min(size) / 2
        hf = Heightfield(seed=int(rng.integers(2**31)), amplitude=float(amp), resolution=oc.heightfield_resolution)
    return TableObject(uid=uid, kind=kind, center=(0.0, 0.0, 0.0), size=vec(size), material=material,
                       transmissive=transmissive, heightfield=hf)


def _profile(rng, kind: str, R: float, H: float, oc: ObjectsConfig) -> list[tuple[float, float]]:
    """Outer (radius, height) points of a vessel, foot (z = 0) to rim (z = H), z increasing."""
    u = lambda bounds: rng.uniform(*bounds)  # noqa: E731
    if kind == "bottle":
        shoulder, neck = u(oc.bottle_shoulder), u(oc.bottle_neck)
        neck_at = min(shoulder + u(oc.bottle_neck_start), 0.92)
        pts = [(0.96 * R, 0.0), (R, 0.04 * H), (R, shoulder * H), ((1 + neck) / 2 * R, (shoulder + neck_at) / 2 * H),
               (neck * R, neck_at * H), (neck * R, H)]
    elif kind == "glass":
        pts = [(u(oc.glass_foot) * R, 0.0), (R, H)]
    elif kind == "bowl":
        foot = u(oc.bowl_foot)
        pts = [(foot * R, 0.0), ((foot + 0.75 * (1 - foot)) * R, 0.45 * H), (R, H)]
    elif kind == "vase":
        belly, neck_at = u(oc.vase_belly), u(oc.vase_neck_at)
        foot, neck, lip = u(oc.vase_foot), u(oc.vase_neck), u(oc.vase_lip)
        pts = [(foot * R, 0.0), (R, belly * H), (neck * R, neck_at * H), (max(lip, neck) * R, H)]
    else:  # jar
        mouth = u(oc.jar_mouth)
        pts = [(0.95 * R, 0.0), (R, 0.1 * H), (R, 0.75 * H), ((1 + mouth) / 2 * R, 0.9 * H), (mouth * R, H)]
    return pts


def sample_placement(rng: np.random.Generator, setup: SetUp, cfg: ObjectsConfig = ObjectsConfig()
                     ) -> tuple[TableObject, ...]:
    """The objects stood on the table top at random positions and turns, footprints ``gap`` apart and
    ``margin`` inside the edge, within an arrangement area of random size and position; an object that
    finds no place after ``attempts`` tries sits this sample out."""
    from ..transparent import REST_GAP, footprint_radius
    t = setup.table
    half = np.array([t.size[0] / 2 - cfg.margin, t.size[1] / 2 - cfg.margin])
    span = half * rng.uniform(*cfg.area, 2)  # the arrangement area's half sides ...
    centre = np.asarray(t.center) + rng.uniform(-(half - span), half - span)  # ... and centre
    order = sorted(range(len(setup.objects)), key=lambda i: -footprint_radius(setup.objects[i]))  # largest first
    placed: dict[int, TableObject] = {}
    circles: list[tuple[np.ndarray, float]] = []
    for i in order:
        obj = setup.objects[i]
        r = footprint_radius(obj)
        yaw = float(rng.uniform(0.0, 2 * math.pi))
        lo = np.maximum(centre - span + r, np.asarray(t.center) - half + r)
        hi = np.minimum(centre + span - r, np.asarray(t.center) + half - r)
        if np.any(lo > hi):  # larger than the area: anywhere on the top
            lo, hi = np.asarray(t.center) - half + r, np.asarray(t.center) + half - r
        for _ in range(cfg.attempts):
            xy = rng.uniform(lo, hi) if np.all(lo <= hi) else np.asarray(t.center, float)
            if all(np.linalg.norm(xy - c) >= r + rc + cfg.gap for c, rc in circles):
                break
        else:
            continue
        circles.append((xy, r))
        # a displaced solid's surface moves up to its amplitude off the box: lift it by that, never into the top
        z = t.height + REST_GAP + obj.size[2] / 2 + (obj.heightfield.amplitude if obj.heightfield else 0.0)
        placed[i] = dataclasses.replace(obj, center=vec([xy[0], xy[1], z]), rotation=(0.0, 0.0, yaw))
    return tuple(placed[i] for i in sorted(placed))


def sample_handheld_camera(rng: np.random.Generator, setup: SetUp, objects, views: int,
                           cfg: HandheldConfig = HandheldConfig()) -> CameraSpec:
    """V views along a short hand-held path around a target among the transparent objects (or all
    objects, or the table's centre): positions on a sphere about the target, moving along a random
    direction of its tangent plane with a small shake, all aimed near the target."""
    from ..rigs import spread
    t = setup.table
    glass = [o for o in objects if o.transparent] or list(objects)
    base = (np.mean([o.center for o in glass], axis=0) if glass else np.array([*t.center, t.height]))
    for _ in range(cfg.attempts):
        target = base + rng.normal(scale=cfg.target_sd, size=3)
        dist = rng.uniform(*cfg.distance)
        az = math.radians(rng.uniform(*cfg.azimuth_deg))
        el = math.radians(rng.uniform(*cfg.elevation_deg))
        u = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        e_az = np.array([-math.sin(az), math.cos(az), 0.0])
        e_el = np.cross(u, e_az)
        psi = rng.uniform(0.0, 2 * math.pi)
        along, across = math.cos(psi) * e_az + math.sin(psi) * e_el, -math.sin(psi) * e_az + math.cos(psi) * e_el
        baseline = log_uniform(rng, cfg.baseline)
        steps = np.linspace(-0.5, 0.5, views) if views > 1 else np.zeros(1)
        shake = rng.normal(scale=cfg.wobble * baseline / max(views, 1), size=views)
        change = rng.uniform(-cfg.distance_change, cfg.distance_change)
        positions = []
        for s, w in zip(steps, shake):
            offset = dist * u + s * baseline * along + w * across  # a chord of the sphere, then onto it
            positions.append(target + offset / np.linalg.norm(offset) * dist * (1 + change * s))
        positions = np.array(positions)
        looks = target + rng.normal(scale=cfg.look_sd, size=(views, 3))
        fov = rng.uniform(*cfg.fov_deg)
        rolls = np.radians(rng.uniform(*cfg.roll_deg) + rng.uniform(*cfg.view_roll_deg, views))
        if not _cameras_ok(positions, setup, objects, cfg):
            continue
        vs = tuple(View(position=vec(p), look_at=vec(q), fov_deg=float(fov), roll=float(r))
                   for p, q, r in zip(positions, looks, rolls))
        return CameraSpec(views=vs, rig="handheld", baseline=float(spread(positions)))
    raise RuntimeError(f"could not place a hand-held trajectory clear of the table after {cfg.attempts} attempts")


def _cameras_ok(positions: np.ndarray, setup: SetUp, objects, cfg: HandheldConfig) -> bool:
    X, Y, Z = setup.room.size
    half = np.array([X / 2, Y / 2]) - cfg.wall_margin
    if np.any(np.abs(positions[:, :2]) > half) or np.any(positions[:, 2] > Z - cfg.wall_margin):
        return False
    t = setup.table
    if np.any(positions[:, 2] < t.height + cfg.above_table):
        return False
    if np.min(box_distance(positions, (*t.center, t.height / 2), (t.size[0], t.size[1], t.height))) < cfg.clearance:
        return False
    for o in objects:
        local = (positions - np.asarray(o.center)) @ euler_matrix(o.rotation)
        extra = o.heightfield.amplitude if o.heightfield else 0.0
        if np.min(box_distance(local, (0.0, 0.0, 0.0), np.asarray(o.size) + 2 * extra)) < cfg.clearance:
            return False
    return True


def box_distance(points: np.ndarray, centre, size) -> np.ndarray:
    """Distance from points [N,3] to an axis-aligned box (0 inside)."""
    outside = np.maximum(np.abs(np.asarray(points, float) - np.asarray(centre, float)) - np.asarray(size) / 2, 0.0)
    return np.linalg.norm(outside, axis=-1)


def sample_table_lighting(rng: np.random.Generator, setup: SetUp, target, cfg: TableLightingConfig
                          = TableLightingConfig()) -> LightingSpec:
    """Lights around ``target`` (a ceiling panel first with p_panel, then softboxes and point lights),
    each giving U(irradiance) W/m² at the target from where it ends up; and the world background."""
    from ..meshes import kelvin_to_rgb, luminance
    target = np.asarray(target, float)
    X, Y, Z = setup.room.size
    lo = np.array([-X / 2, -Y / 2, 0.0]) + cfg.wall_margin
    hi = np.array([X / 2, Y / 2, Z]) - cfg.wall_margin
    lights = []
    for i in range(count(rng, cfg.lights)):
        colour = kelvin_to_rgb(rng.uniform(*cfg.temperature_k))
        irradiance = log_uniform(rng, cfg.irradiance) / luminance(colour)
        if i == 0 and rng.random() < cfg.p_panel:
            area, size = True, rng.uniform(*cfg.panel_size)
            position = np.r_[target[:2] + rng.uniform(-cfg.panel_offset, cfg.panel_offset, 2), Z - cfg.wall_margin]
            position = np.clip(position, lo, hi)
            direction = np.array([0.0, 0.0, -1.0])
        else:
            area = rng.random() < cfg.p_area
            az, el = rng.uniform(0.0, 2 * math.pi), math.radians(rng.uniform(*cfg.elevation_deg))
            toward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
            position = np.clip(target + rng.uniform(*cfg.distance) * toward, lo, hi)
            direction = (target - position) / np.linalg.norm(target - position)
            size = rng.uniform(*(cfg.area_size if area else cfg.point_radius))
        d2 = float(np.sum((position - target) ** 2))
        cos = max(float(-direction @ ((position - target) / math.sqrt(d2))), 0.1) if area else 1.0
        # Blender's watts: a point light gives P / (4 pi d²) W/m² at d, a one-sided area light about
        # P cos / (pi d²) in the direction at angle acos(cos) from its axis (far field)
        power = irradiance * d2 * (math.pi / cos if area else 4 * math.pi)
        lights.append(Light(kind="area" if area else "point", position=vec(position), direction=vec(direction),
                            color=vec(colour), power=float(power), size=float(size)))
    sky = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*cfg.sky_saturation), rng.uniform(*cfg.sky_value))
    return LightingSpec(lights=tuple(lights), sky_color=vec(sky), sky_strength=1.0)


def partition_setup(partition: int, seed: int, cfg: TransparentConfig = TransparentConfig()) -> SetUp:
    """What partition ``partition`` holds fixed."""
    return sample_setup(transparent_rng(seed, partition, -1, "scene"), cfg)


def sample_transparent_spec(partition: int, sample: int, seed: int, views: int,
                            cfg: TransparentConfig = TransparentConfig(), setup: SetUp | None = None
                            ) -> TransparentSceneSpec:
    """Sample ``sample`` of partition ``partition``: the partition's set-up with a fresh arrangement,
    trajectory and lighting, each from its own stream (changing a camera setting keeps the lights)."""
    setup = setup or partition_setup(partition, seed, cfg)
    objects = sample_placement(transparent_rng(seed, partition, sample, "placement"), setup, cfg.objects)
    camera = sample_handheld_camera(transparent_rng(seed, partition, sample, "camera"), setup, objects, views,
                                    cfg.camera)
    target = np.mean([v.look_at for v in camera.views], axis=0)
    lighting = sample_table_lighting(transparent_rng(seed, partition, sample, "lighting"), setup, target, cfg.lighting)
    return TransparentSceneSpec(room=setup.room, table=setup.table, objects=objects, materials=setup.materials,
                                lighting=lighting, camera=camera,
                                transparent_ids=tuple(sorted(o.uid for o in objects if o.transparent)))


__all__ = ["TransparentConfig", "RoomConfig", "TableConfig", "VesselSize", "ObjectsConfig", "GlassConfig",
           "HandheldConfig", "TableLightingConfig", "SetUp", "load_transparent_config", "transparent_rng",
           "partition_setup", "sample_setup", "sample_placement", "sample_handheld_camera", "sample_table_lighting",
           "sample_transparent_spec", "box_distance", "VESSELS", "SOLIDS"]
