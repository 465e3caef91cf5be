"""Meshes of transparent-object scenes (docs/transparent.md), built with numpy from a
``TransparentSceneSpec`` (no ``bpy``): the room, the table and every object on it, as the Blender backend
and the Blender-free ray caster (tests/synthetic.py) both place them.

    parts = scene_parts(spec)            # [Part]: uid, local mesh, placement, what it is made of
    part.world_vertices()                # [N,3] world metres

Vessels (bottle, glass, bowl, vase, jar) are closed surfaces of revolution with a wall: outer wall from the
foot to the rim, a flat rim, the inner wall down to the inner floor (``TableObject.bottom`` above the foot),
so a ray through a glass meets four surfaces. The outer radius follows the spec's profile points through a
monotone cubic (PCHIP) in z; the inner wall is the outer one moved in by ``wall`` along the profile's normal.
Joints between the foot, the walls, the rim and the floors are sharp creases (own vertices); each wall is
smooth-shaded. Solids are render.geometry's ellipsoid, cylinder and cube meshes. Objects rest
``REST_GAP`` above the table top (no coincident faces for refracted rays to fight over).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .generator.geometry import euler_matrix
from .geometry import ROOM_UIDS, Mesh, cube_mesh, cylinder_mesh, ellipsoid_mesh, revolve_mesh, room_meshes
from .spec import (TABLE_UID, GeometrySpec, Room, Table, TableObject, Transmissive, TransparentSceneSpec,
                   Vec3)

AROUND = 48  # vertices around a vessel
PROFILE_RINGS = 32  # rings along each wall of a vessel
MIN_INNER = 0.2  # the inner radius stays at least this fraction of the outer one (thin necks, steep shoulders)
REST_GAP = 5e-4  # m between an object's foot and the table top


@dataclass
class Part:
    """One Blender object: ``mesh`` in local coordinates placed by ``center`` and XYZ Euler ``rotation``;
    ``key`` is what the mesh depends on; made of ``materials[material]`` or, if set, ``transmissive``."""
    uid: int
    name: str
    mesh: Mesh
    center: Vec3
    rotation: Vec3
    key: tuple
    material: int
    transmissive: Transmissive | None = None

    def world_vertices(self) -> np.ndarray:
        R = euler_matrix(self.rotation)
        return self.mesh.vertices.astype(np.float64) @ R.T + np.asarray(self.center, float)


def scene_parts(spec: TransparentSceneSpec) -> list[Part]:
    """Everything a camera ray can hit: room parts (ids 1-6), the table (8), the objects (their uids)."""
    parts = []
    room = spec.room
    for name, mesh in room_part_meshes(room).items():
        material = room.floor if name == "floor" else room.ceiling_material if name == "ceiling" else room.walls
        parts.append(Part(ROOM_UIDS[name], f"room_{name}", mesh, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                          ("room", name, room.size), material))
    parts.append(Part(TABLE_UID, "table", table_mesh(spec.table), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                      ("table", spec.table), spec.table.material))
    for obj in spec.objects:
        parts.append(Part(obj.uid, f"object_{obj.uid}", object_mesh(obj), obj.center, obj.rotation,
                          ("object",) + obj.mesh_key(), obj.material, obj.transmissive))
    return parts


def room_part_meshes(room: Room) -> dict[str, Mesh]:
    """Floor (z = 0), walls and, if it has one, the ceiling, in world coordinates, facing inward."""
    X, Y, Z = room.size
    out = {}
    for name, mesh in room_meshes(GeometrySpec(room=room.size, unit=1.0)).items():
        if name == "ceiling" and not room.ceiling:
            continue
        mesh.vertices = (mesh.vertices + np.array([0.0, 0.0, Z / 2], np.float32)).astype(np.float32)
        out[name] = mesh
    return out


def table_mesh(table: Table) -> Mesh:
    """The table in world coordinates: a slab on four legs, or one block."""
    cx, cy = table.center
    sx, sy, t = table.size
    h = table.height
    if table.kind == "box":
        return _boxes([((cx, cy, h / 2), (sx, sy, h))])
    if table.kind != "slab":
        raise ValueError(f"unknown table kind {table.kind!r}")
    boxes = [((cx, cy, h - t / 2), (sx, sy, t))]
    leg, leg_h = table.leg, h - t
    for ix in (-1, 1):
        for iy in (-1, 1):
            boxes.append(((cx + ix * (sx / 2 - 1.5 * leg), cy + iy * (sy / 2 - 1.5 * leg), leg_h / 2),
                          (leg, leg, leg_h)))
    return _boxes(boxes)


def _boxes(boxes) -> Mesh:
    verts, faces, sizes, offset = [], [], [], 0
    for centre, size in boxes:
        m = cube_mesh(size, None)
        verts.append(m.vertices + np.asarray(centre, np.float32))
        faces.append(m.faces + offset)
        sizes.append(m.face_sizes)
        offset += len(m.vertices)
    return Mesh(np.concatenate(verts).astype(np.float32), np.concatenate(faces).astype(np.int32),
                np.concatenate(sizes).astype(np.int32), smooth=False)


def object_mesh(obj: TableObject) -> Mesh:
    """The object's mesh around its local bounding-box centre."""
    if obj.kind == "sphere":
        return ellipsoid_mesh(obj.size, obj.heightfield)
    if obj.kind == "cylinder":
        return cylinder_mesh(obj.size, obj.heightfield)
    if obj.kind == "box":
        mesh = cube_mesh(obj.size, obj.heightfield)
        mesh.smooth = obj.heightfield is not None
        return mesh
    if not obj.profile:
        raise ValueError(f"object {obj.uid}: a {obj.kind} needs a profile")
    mesh = revolve_mesh(vessel_segments(obj.profile, obj.wall, obj.bottom), AROUND)
    mesh.vertices = (mesh.vertices - np.array([0.0, 0.0, obj.size[2] / 2], np.float32)).astype(np.float32)
    return mesh


def profile_radius(profile, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outer radius r(z) and its slope dr/dz of a vessel profile (PCHIP through the (r, z) points)."""
    from scipy.interpolate import PchipInterpolator
    pts = np.asarray(profile, float)
    if len(pts) == 2:  # a straight wall
        slope = (pts[1, 0] - pts[0, 0]) / (pts[1, 1] - pts[0, 1])
        return pts[0, 0] + slope * (z - pts[0, 1]), np.full_like(z, slope)
    f = PchipInterpolator(pts[:, 1], pts[:, 0])
    return f(z), f.derivative()(z)


def vessel_segments(profile, wall: float, bottom: float, rings: int = PROFILE_RINGS) -> list:
    """The (r, z) segments of a vessel's closed cross-section, z = 0 at the foot: foot, outer wall, rim,
    inner wall, inner floor (at ``bottom``)."""
    height = float(profile[-1][1])
    z_out = np.linspace(0.0, height, rings + 1)
    r_out, _ = profile_radius(profile, z_out)
    z_in = np.linspace(height, bottom, rings + 1)
    r, slope = profile_radius(profile, z_in)
    r_in = np.maximum(r - wall * np.sqrt(1.0 + slope ** 2), MIN_INNER * r)  # offset along the normal
    return [[(0.0, 0.0), (r_out[0], 0.0)],
            list(zip(r_out, z_out)),
            [(r_out[-1], height), (r_in[0], height)],
            list(zip(r_in, z_in)),
            [(r_in[-1], bottom), (0.0, bottom)]]


def footprint_radius(obj: TableObject) -> float:
    """Radius of the circle around the object's footprint (its local z axis upright)."""
    if obj.kind == "box":
        return 0.5 * math.hypot(obj.size[0], obj.size[1])
    return 0.5 * max(obj.size[0], obj.size[1]) + (obj.heightfield.amplitude if obj.heightfield else 0.0)


def bounding_radius(obj: TableObject) -> float:
    """Radius of a sphere around the object's bounding-box centre that holds all of it."""
    extra = obj.heightfield.amplitude if obj.heightfield else 0.0
    return 0.5 * float(np.linalg.norm(obj.size)) + extra


__all__ = ["Part", "scene_parts", "room_part_meshes", "table_mesh", "object_mesh", "profile_radius",
           "vessel_segments", "footprint_radius", "bounding_radius", "AROUND", "PROFILE_RINGS", "REST_GAP"]
