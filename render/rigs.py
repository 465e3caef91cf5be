"""Camera rigs around a user mesh (pure numpy, no ``bpy``): where the V cameras of one mesh-mode
sample stand. Every rig aims every camera at the mesh's bounding-box centre and keeps the image upright
(image up = world +z = the file's +up); the views become the ``View``/``CameraSpec`` of procedural scenes,
so cameras are written in the same OpenCV conventions (docs/format.md).

World frame (render/meshes.py puts the mesh in it): metres, Z up, the mesh's front facing -y.

* ``micro-baseline`` — face anti-spoofing: V cameras ~0.5 m in front of the object, their centres
  spread over a few millimetres (a line or a disc perpendicular to the viewing direction), narrow field
  of view, small random yaw/pitch of the viewing direction and roll of the image.
* ``turntable`` — V cameras evenly spaced in azimuth around the up axis (random start) at the centre's
  height, up to a small elevation.
* ``hemisphere`` — V cameras at random directions on the upper hemisphere.

Turntable and hemisphere cameras stand at the distance where the mesh's bounding sphere spans ``fill``
of the narrower field of view, so the whole mesh is in every frame and fills most of it. Every number is
a field of the rig's config below (the defaults are the documented ones, docs/meshes.md); a sample draws
its rig placement from its own random stream, so the same seed gives the same cameras.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .generator._util import log_uniform, vec
from .generator.config import _Checked
from .spec import CameraSpec, View, describe, from_plain

Range = tuple[float, float]
UP = np.array([0.0, 0.0, 1.0])  # world up: the file's +up
FRONT = np.array([0.0, -1.0, 0.0])  # world front: the file's +front (Blender's front view looks at it)


@dataclass(frozen=True)
class MicroBaselineRig(_Checked):
    """V cameras in front of the object, a few millimetres apart."""
    distance: Range = (0.45, 0.55)  # m from the bounding-box centre to the rig's centre, U
    baseline: Range = (0.002, 0.01)  # m, the largest distance between two camera centres, log-U
    layout: str = "disc"  # disc | line: how the centres spread, perpendicular to the viewing direction
    fov_deg: Range = (25.0, 30.0)  # horizontal field of view, U: a ~0.2 m face at 0.5 m fills the frame
    yaw_deg: float = 15.0  # viewing direction turned U(-yaw, yaw) about the up axis from straight ahead
    pitch_deg: float = 15.0  # and tilted U(-pitch, pitch) up or down
    roll_deg: float = 3.0  # image roll U(-roll, roll) about the optical axis, one per sample
    name: ClassVar[str] = "micro-baseline"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive("distance", "baseline", "fov_deg")
        if self.layout not in ("disc", "line"):
            raise ValueError(f"layout: {self.layout!r} is not one of disc, line")
        _check_fov(self.fov_deg)
        for name in ("yaw_deg", "pitch_deg", "roll_deg"):
            if not 0.0 <= getattr(self, name) < 90.0:
                raise ValueError(f"{name}: {getattr(self, name)!r} must be in [0, 90)")


@dataclass(frozen=True)
class TurntableRig(_Checked):
    """V cameras evenly spaced in azimuth around the up axis, all at one elevation."""
    fov_deg: Range = (35.0, 45.0)  # horizontal field of view, U
    fill: Range = (0.85, 1.0)  # share of the narrower field of view the bounding sphere spans, U
    elevation_deg: Range = (-5.0, 5.0)  # above the centre's height, U, one per sample
    name: ClassVar[str] = "turntable"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fov(self.fov_deg)
        _check_fill(self.fill)
        _check_elevation(self.elevation_deg, -89.0, 89.0)


@dataclass(frozen=True)
class HemisphereRig(_Checked):
    """V cameras at independent random directions on the upper hemisphere (uniform by area within the
    elevation band)."""
    fov_deg: Range = (35.0, 45.0)  # horizontal field of view, U, one per sample
    fill: Range = (0.85, 1.0)  # as for the turntable
    elevation_deg: Range = (10.0, 80.0)  # above the centre's horizontal plane
    name: ClassVar[str] = "hemisphere"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fov(self.fov_deg)
        _check_fill(self.fill)
        _check_elevation(self.elevation_deg, 0.0, 89.0)


RigConfig = MicroBaselineRig | TurntableRig | HemisphereRig
RIGS: dict[str, type] = {cls.name: cls for cls in (MicroBaselineRig, TurntableRig, HemisphereRig)}


def _check_fov(fov: Range) -> None:
    if not 0.0 < fov[0] <= fov[1] < 180.0:
        raise ValueError(f"fov_deg: {list(fov)} must lie in (0, 180)")


def _check_fill(fill: Range) -> None:
    if not 0.0 < fill[0] <= fill[1] <= 1.0:
        raise ValueError(f"fill: {list(fill)} must lie in (0, 1] (above 1 the mesh may leave the frame)")


def _check_elevation(elevation: Range, lo: float, hi: float) -> None:
    # the camera's up vector degenerates looking straight down (render/camera.py), hence the margin
    if not lo <= elevation[0] <= elevation[1] <= hi:
        raise ValueError(f"elevation_deg: {list(elevation)} must lie in [{lo:g}, {hi:g}]")


def rig_config(name: str, overrides: dict | None = None) -> RigConfig:
    """The config of rig ``name`` with the fields of ``overrides`` changed (as a JSON object gives them).
    Raises ValueError naming the unknown rig, the unknown key or the bad value."""
    if name not in RIGS:
        raise ValueError(f"{name!r}: unknown rig; choose one of {', '.join(RIGS)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"expected an object of {name} settings, got {describe(overrides)}")
    return from_plain(RIGS[name], overrides or {})


def rig_record(rig: RigConfig) -> dict:
    """The rig as a partition header stores it: its name and every setting."""
    return {"name": rig.name, **dataclasses.asdict(rig)}


# -------------------------------------------------------------------------------------- placement
def place_cameras(rig: RigConfig, rng: np.random.Generator, center, radius: float, views: int,
                  aspect: float = 1.0) -> CameraSpec:
    """The ``views`` cameras of one sample of ``rig`` around a mesh with bounding-box ``center`` and
    bounding ``radius`` (world metres); ``aspect`` = image height / width (the horizontal field of view
    is drawn, so the vertical one follows from it)."""
    center = np.asarray(center, float)
    if isinstance(rig, MicroBaselineRig):
        positions, fov, roll = _micro_baseline(rig, rng, center, views)
    elif isinstance(rig, TurntableRig):
        positions, fov, roll = _turntable(rig, rng, center, radius, views, aspect)
    elif isinstance(rig, HemisphereRig):
        positions, fov, roll = _hemisphere(rig, rng, center, radius, views, aspect)
    else:
        raise TypeError(f"not a rig config: {rig!r}")
    vs = tuple(View(position=vec(p), look_at=vec(center), fov_deg=float(fov), roll=float(roll)) for p in positions)
    return CameraSpec(views=vs, rig=rig.name, baseline=float(spread(positions)))


def spread(positions: np.ndarray) -> float:
    """The largest distance between two of the points [N,3] (0 for one point): a rig's baseline."""
    positions = np.asarray(positions, float)
    if len(positions) < 2:
        return 0.0
    return float(np.linalg.norm(positions[:, None] - positions[None], axis=-1).max())


def _micro_baseline(rig: MicroBaselineRig, rng, center, views: int):
    distance = rng.uniform(*rig.distance)
    fov = rng.uniform(*rig.fov_deg)
    baseline = log_uniform(rng, rig.baseline)
    yaw = math.radians(rng.uniform(-rig.yaw_deg, rig.yaw_deg))
    pitch = math.radians(rng.uniform(-rig.pitch_deg, rig.pitch_deg))
    roll = math.radians(rng.uniform(-rig.roll_deg, rig.roll_deg))
    azimuth = math.atan2(FRONT[1], FRONT[0]) + yaw
    toward_rig = _direction(azimuth, pitch)  # from the centre to the cameras
    e1 = np.cross(UP, toward_rig)  # horizontal, perpendicular to the viewing direction
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(toward_rig, e1)
    offsets = _spread_points(rng, rig.layout, views, baseline)  # [V,2] in the (e1, e2) plane
    positions = center + distance * toward_rig + offsets[:, :1] * e1 + offsets[:, 1:] * e2
    return positions, fov, roll


def _spread_points(rng, layout: str, n: int, baseline: float) -> np.ndarray:
    """n points in a plane whose largest pairwise distance is exactly ``baseline`` (the drawn baseline
    is the recorded one): evenly spaced on a segment of random direction, or uniform in a disc and
    rescaled. Centred on the rig's centre."""
    if n == 1:
        return np.zeros((1, 2))
    if layout == "line" or n == 2:
        angle = rng.uniform(0.0, math.pi)
        t = np.linspace(-0.5, 0.5, n)[:, None]
        points = t * np.array([math.cos(angle), math.sin(angle)])
    else:
        r, angle = np.sqrt(rng.random(n)), rng.uniform(0.0, 2 * math.pi, n)
        points = np.stack([r * np.cos(angle), r * np.sin(angle)], -1)
        points -= (points.max(0) + points.min(0)) / 2
    return points * (baseline / spread(np.pad(points, ((0, 0), (0, 1)))))


def _fit_distance(rig, rng, radius: float, aspect: float) -> tuple[float, float]:
    """(fov, distance): the bounding sphere spans ``fill`` of the narrower field of view."""
    fov = rng.uniform(*rig.fov_deg)
    half = math.radians(fov) / 2
    narrow = min(half, math.atan(math.tan(half) * aspect))
    fill = rng.uniform(*rig.fill)
    return fov, radius / math.sin(fill * narrow)


def _turntable(rig: TurntableRig, rng, center, radius: float, views: int, aspect: float):
    fov, distance = _fit_distance(rig, rng, radius, aspect)
    start = rng.uniform(0.0, 2 * math.pi)
    elevation = math.radians(rng.uniform(*rig.elevation_deg))
    azimuths = start + 2 * math.pi * np.arange(views) / views
    positions = np.stack([center + distance * _direction(a, elevation) for a in azimuths])
    return positions, fov, 0.0


def _hemisphere(rig: HemisphereRig, rng, center, radius: float, views: int, aspect: float):
    fov, distance = _fit_distance(rig, rng, radius, aspect)
    lo, hi = (math.sin(math.radians(e)) for e in rig.elevation_deg)
    heights = rng.uniform(lo, hi, views)  # uniform in sin(elevation): uniform by area on the sphere
    azimuths = rng.uniform(0.0, 2 * math.pi, views)
    positions = np.stack([center + distance * _direction(a, math.asin(z)) for a, z in zip(azimuths, heights)])
    return positions, fov, 0.0


def _direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector at ``azimuth`` (about +z, from +x) and ``elevation`` (above the xy plane)."""
    return np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                     math.sin(elevation)])
