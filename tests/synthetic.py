"""Small rendered partitions without Blender, for tests: ``write_partitions`` runs the real render job
(``render.jobs.run``: specs, files, contact sheets, manifests in the format of docs/format.md) with a
trimesh ray cast in place of Cycles.

    from synthetic import write_partitions
    job = write_partitions(tmp_path, partitions=3, samples=2, views=3, hw=(42, 56))
    load_partition(job.partition_dir(0), verify=True)

Everything but the pixels is the project's own code: the job, specs and files are ``render.jobs.run``'s,
the meshes come from ``render.geometry`` and the cameras from ``render.camera``.

The pixels follow the Blender backend's geometry (``render/blender_backend.py``): shapes are placed with
their XYZ Euler rotation and centre and carry ``Shape.uid``, room parts are in world coordinates and carry
``ROOM_UIDS``. Depth, normals and instance ids are exact at each pixel centre (no pixel averaging), and
normals are smooth-shaded where the mesh is smooth, like Blender's geometric-normal AOV. Simplifications:

* wireframe shapes (``Shape.wireframe > 0``) are neither solid nor skipped but approximated: a square bar
  of the wire thickness along every polygon edge, where Blender's modifier builds mitred struts;
* glass (glass shapes and the window pane) is opaque: first hit, coloured with the glass tint — which is
  also what Blender writes to depth, normals and mask (the first hit);
* the colour is ``albedo * light_tint * (ambient + (1 - ambient) * max(0, n . L))`` with one fixed light
  direction ``L``: the albedo is the material's ``color_a`` (no pattern, bump, roughness or metallic),
  the tint is the mean colour of the spec's lights, there are no shadows or bounces, and rays that leave
  the room through the window see the sky colour.

Checked against Blender renders of the same job (42 x 56 px, 3 partitions x 2 samples x 3 views): depth
agrees to a median relative 1e-5, and masks on 92-100 % of pixels (the rest: edges of 1-px wire struts).

Deterministic: the ray cast is ``trimesh.ray.ray_triangle.RayMeshIntersector`` (pure numpy + rtree, never
embree), so the same call writes byte-identical files. No ``bpy`` is imported, directly or indirectly.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from trimesh.ray.ray_triangle import RayMeshIntersector

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from render import camera as cam  # noqa: E402
from render.files import ViewPixels  # noqa: E402
from render.generator import GeneratorConfig, euler_matrix  # noqa: E402
from render.geometry import ROOM_UIDS, room_meshes, shape_mesh  # noqa: E402
from render.jobs import RenderJob, run  # noqa: E402
from render.spec import RenderSettings, SceneSpec  # noqa: E402

LIGHT_DIR = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])  # world, towards the light
AMBIENT = 0.3


def write_partitions(out: Path, partitions: int, samples: int, views: int, hw: tuple[int, int],
                     attribute: str = "mixed", seed: int = 0, first_partition: int = 0) -> RenderJob:
    """Write ``partitions`` complete partitions of ``samples`` samples of ``views`` views at ``hw`` =
    (height, width) under ``out/<attribute>/``, as ``attrspace render`` would; returns the job. Like a
    rerun of the real job, samples and partitions that are already complete are kept."""
    height, width = hw
    job = RenderJob(attribute=attribute, partitions=partitions, samples=samples, views=views, out=Path(out),
                    settings=RenderSettings(width=width, height=height, spp=2), seed=seed,
                    generator=GeneratorConfig.light(), first_partition=first_partition)
    run(job, workers=1, renderer=RaycastRenderer)
    return job


class RaycastRenderer:
    """What ``render.jobs.run`` needs of a renderer, with ray-cast pixels instead of Cycles'."""

    def __init__(self, settings: RenderSettings):
        self.settings, self.render_seconds = settings, 0.0

    def render(self, spec: SceneSpec) -> list[ViewPixels]:
        started = time.perf_counter()
        pixels = render_spec(spec, self.settings.width, self.settings.height)
        self.render_seconds += time.perf_counter() - started
        return pixels


# ------------------------------------------------------------------------------------ scene
@dataclass
class _Part:
    """One object as camera rays see it: world triangles, a normal per vertex of each triangle (for
    smooth shading), and its instance id and linear albedo."""
    uid: int
    albedo: np.ndarray  # [3]
    triangles: np.ndarray  # [T,3,3] world
    corner_normals: np.ndarray | None  # [T,3,3] world vertex normals per triangle corner, None = flat
    intersector: RayMeshIntersector
    bounds: np.ndarray  # [2,3]


def scene_parts(spec: SceneSpec) -> list[_Part]:
    """Every surface a camera ray can hit, placed as the Blender backend places it."""
    g, tex = spec.geometry, spec.texture
    glass = np.asarray(tex.glass.tint, float)
    parts = []
    room_albedo = {"floor": tex.floor, "ceiling": tex.ceiling}
    for name, mesh in room_meshes(g).items():  # already in world coordinates
        albedo = glass if name == "window_glass" else \
            np.asarray(tex.materials[room_albedo.get(name, tex.walls)].color_a, float)
        parts.append(_part(ROOM_UIDS[name], albedo, mesh.vertices, mesh.triangles(), mesh.smooth))
    for sh in g.shapes:
        mesh = shape_mesh(sh)
        vertices, faces, smooth = mesh.vertices.astype(np.float64), mesh.triangles(), mesh.smooth
        if sh.wireframe > 0:  # see the module docstring
            vertices, faces, smooth = _wire_struts(mesh, sh.wireframe)
        R = euler_matrix(sh.rotation)
        vertices = vertices @ R.T + np.asarray(sh.center, float)
        albedo = glass if sh.glass else np.asarray(tex.materials[tex.material_index(sh.uid)].color_a, float)
        parts.append(_part(sh.uid, albedo, vertices, faces, smooth))
    return parts


_BOX = trimesh.creation.box()  # unit cube at the origin: 8 vertices, 12 triangles


def _wire_struts(mesh, thickness: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """Stand-in for Blender's wireframe modifier (replace, even offset, offset -1): a square bar of side
    ``thickness`` along every polygon edge, just inside the surface (shapes are convex and centred on
    the local origin, so "inside" is towards the origin), lengthened by the thickness to close the corners.
    Local coordinates; returns vertices, triangles and smooth=False."""
    starts = np.concatenate([[0], np.cumsum(mesh.face_sizes)[:-1]])
    edges = []
    for start, size in zip(starts, mesh.face_sizes):
        loop = mesh.faces[start:start + size]
        edges.append(np.stack([loop, np.roll(loop, -1)], -1))
    edges = np.unique(np.sort(np.concatenate(edges), axis=1), axis=0)
    a, b = mesh.vertices[edges[:, 0]].astype(np.float64), mesh.vertices[edges[:, 1]].astype(np.float64)
    length = np.linalg.norm(b - a, axis=-1, keepdims=True)
    e1 = (b - a) / np.maximum(length, 1e-12)
    mid = (a + b) / 2
    e2 = mid - np.einsum("ij,ij->i", mid, e1)[:, None] * e1  # outward, perpendicular to the edge
    e2 /= np.maximum(np.linalg.norm(e2, axis=-1, keepdims=True), 1e-12)
    e3 = np.cross(e1, e2)
    scale = np.concatenate([length + thickness, np.full_like(length, thickness), np.full_like(length, thickness)], 1)
    local = _BOX.vertices[None] * scale[:, None]  # [E,8,3] in the bar's (e1, e2, e3) frame
    centre = mid - e2 * thickness / 2
    vertices = np.einsum("evk,ekj->evj", local, np.stack([e1, e2, e3], 1)) + centre[:, None]
    faces = _BOX.faces[None] + 8 * np.arange(len(edges))[:, None, None]
    return vertices.reshape(-1, 3), faces.reshape(-1, 3), False


def _part(uid: int, albedo: np.ndarray, vertices: np.ndarray, faces: np.ndarray, smooth: bool) -> _Part:
    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), faces, process=False)
    corner = mesh.vertex_normals[faces] if smooth else None
    return _Part(uid=uid, albedo=albedo, triangles=mesh.triangles, corner_normals=corner,
                 intersector=RayMeshIntersector(mesh), bounds=mesh.bounds)


# ------------------------------------------------------------------------------------ pixels
def render_spec(spec: SceneSpec, width: int, height: int) -> list[ViewPixels]:
    """One ``ViewPixels`` per view of the spec, by ray casting every pixel centre."""
    parts = scene_parts(spec)
    origins, dirs = [], []
    for view in spec.camera.views:
        o, d = _pixel_rays(view, width, height)
        origins.append(np.broadcast_to(o, d.shape))
        dirs.append(d)
    origins, dirs = np.concatenate(origins), np.concatenate(dirs)  # all views at once: one query per part
    n = len(dirs)
    best_t = np.full(n, np.inf)
    best_part = np.full(n, -1)
    best_tri = np.zeros(n, np.int64)
    best_loc = np.zeros((n, 3))
    for k, part in enumerate(parts):
        rays = np.flatnonzero(_hits_box(origins, dirs, part.bounds))
        if not len(rays):
            continue
        tri, ray, loc = part.intersector.intersects_id(origins[rays], dirs[rays], multiple_hits=False,
                                                       return_locations=True)
        if not len(ray):  # (trimesh then returns locations of shape (0,))
            continue
        ray = rays[ray]
        d = dirs[ray]
        t = np.einsum("ij,ij->i", loc - origins[ray], d) / np.einsum("ij,ij->i", d, d)  # = z-depth (camera z of d is 1)
        closer = (t > 1e-6) & (t < best_t[ray])
        ray, t = ray[closer], t[closer]
        best_t[ray], best_part[ray], best_tri[ray], best_loc[ray] = t, k, tri[closer], loc[closer]

    hit = best_part >= 0
    depth = np.where(hit, best_t, 0.0)
    index = np.zeros(n, np.uint16)
    normal = np.zeros((n, 3))
    albedo = np.tile(np.asarray(spec.lighting.sky_color, float), (n, 1))  # seen through the window
    for k, part in enumerate(parts):
        sel = np.flatnonzero(best_part == k)
        if not len(sel):
            continue
        tris = part.triangles[best_tri[sel]]
        face_n = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
        face_n /= np.maximum(np.linalg.norm(face_n, axis=-1, keepdims=True), 1e-12)
        n_k = face_n
        if part.corner_normals is not None:
            bary = trimesh.triangles.points_to_barycentric(tris, best_loc[sel])
            smooth = np.einsum("ij,ijk->ik", bary, part.corner_normals[best_tri[sel]])
            norm = np.linalg.norm(smooth, axis=-1, keepdims=True)
            n_k = np.where(norm > 1e-9, smooth / np.maximum(norm, 1e-9), face_n)
        facing = np.where(np.einsum("ij,ij->i", face_n, dirs[sel]) > 0, -1.0, 1.0)  # flip back faces
        normal[sel] = n_k * facing[:, None]
        index[sel] = part.uid
        albedo[sel] = part.albedo
    lambert = AMBIENT + (1 - AMBIENT) * np.clip(normal @ LIGHT_DIR, 0, None)
    rgb = np.where(hit[:, None], albedo * lambert[:, None] * _light_tint(spec), albedo)

    pixels = []
    for v in range(len(spec.camera.views)):
        sl = slice(v * width * height, (v + 1) * width * height)
        pixels.append(ViewPixels(rgb_linear=rgb[sl].reshape(height, width, 3).astype(np.float32),
                                 depth=depth[sl].reshape(height, width).astype(np.float32),
                                 normal_world=normal[sl].reshape(height, width, 3).astype(np.float32),
                                 index=index[sl].reshape(height, width)))
    return pixels


def _pixel_rays(view, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre [3] and world directions [H*W,3] through the pixel centres (row-major), scaled so
    that their camera-frame z is 1: the ray parameter of a hit is its z-depth."""
    K, E = cam.intrinsics(view, width, height), cam.extrinsics(view)
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1).reshape(-1, 3)
    R, t = E[:, :3], E[:, 3]
    return -R.T @ t, d_cam @ R


def _hits_box(origins: np.ndarray, dirs: np.ndarray, bounds: np.ndarray, pad: float = 1e-4) -> np.ndarray:
    """Which rays pass through the (padded) box: a cheap cull before the exact per-triangle test."""
    lo, hi = bounds[0] - pad, bounds[1] + pad
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    t0, t1 = np.nan_to_num(t0, nan=-np.inf), np.nan_to_num(t1, nan=np.inf)  # 0 * inf: on a slab plane
    near = np.minimum(t0, t1).max(axis=1)
    far = np.maximum(t0, t1).min(axis=1)
    return (far >= np.maximum(near, 0.0))


def _light_tint(spec: SceneSpec) -> np.ndarray:
    lights = spec.lighting.lights
    if not lights:
        return np.ones(3)
    return np.mean([li.color for li in lights], axis=0)
