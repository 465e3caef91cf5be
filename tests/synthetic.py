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

Mesh mode (docs/meshes.md): ``write_mesh_partitions`` runs the real mesh job (``render.jobs.MeshJob``) the
same way, and ``write_test_meshes`` writes small meshes of every supported format to feed it. The mesh is
loaded and placed by ``render.meshes`` exactly as the Blender backend places it; depth and mask are exact at
pixel centres, normals are ``render.meshes.corner_normals`` (an approximation of Blender's smooth shading
with sharp edges). Simplifications of the colour: the albedo is the texture (nearest texel, no filtering)
or the interpolated corner colours times the material factor; each light adds ``irradiance x max(0, n . l)
x colour / pi`` with its irradiance at the hit point from its power in Blender's watts (a point light
P / (4 pi d²), an area light as a point emitter P cos / (pi d²), measured to match Cycles within the
specular lobe's share), without shadows, glossy reflection or bounces; the world background adds itself as
ambient light and fills the pixels that miss the mesh.

Transparent-object scenes (docs/transparent.md): ``write_transparent_partitions`` runs the real
``render.jobs.TransparentJob`` the same way. Every surface is ``render.transparent.scene_parts``' (room,
table, clutter, the vessels with their walls), placed as the backend places them; glass and clear plastic
are opaque as above (first hit, coloured with their tint, which is what Blender writes to depth, normals
and mask), so the instance and transparent masks are exact at pixel centres; the rest is coloured as
procedural scenes are (material ``color_a``, one fixed light direction), rays that leave a room without a
ceiling see the world colour.

Deterministic: the ray cast is ``trimesh.ray.ray_triangle.RayMeshIntersector`` (pure numpy + rtree, never
embree), so the same call writes byte-identical files. No ``bpy`` is imported, directly or indirectly.
"""
from __future__ import annotations

import dataclasses
import functools
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
from render import meshes  # noqa: E402
from render.files import ViewPixels  # noqa: E402
from render.generator import GeneratorConfig, euler_matrix  # noqa: E402
from render.geometry import ROOM_UIDS, room_meshes, shape_mesh  # noqa: E402
from render import transparent  # noqa: E402
from render.jobs import MeshJob, RenderJob, TransparentJob, run  # noqa: E402
from render.presets import mesh_job, transparent_job  # noqa: E402
from render.spec import MeshAsset, MeshSceneSpec, RenderSettings, SceneSpec, TransparentSceneSpec  # noqa: E402

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

    def render(self, spec: SceneSpec | MeshSceneSpec) -> list[ViewPixels]:
        started = time.perf_counter()
        draw = (render_mesh_spec if isinstance(spec, MeshSceneSpec) else
                render_transparent_spec if isinstance(spec, TransparentSceneSpec) else render_spec)
        pixels = draw(spec, self.settings.width, self.settings.height)
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
    return _cast(scene_parts(spec), spec, width, height)


def _cast(parts: list[_Part], spec, width: int, height: int) -> list[ViewPixels]:
    """Pixels of ``spec``'s views of ``parts`` (first hits), lit as the module docstring says."""
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


def transparent_scene_parts(spec: TransparentSceneSpec) -> list[_Part]:
    """Every surface of a transparent scene, as ``render.transparent.scene_parts`` gives it to Blender."""
    parts = []
    for part in transparent.scene_parts(spec):
        albedo = (np.asarray(part.transmissive.tint, float) if part.transmissive is not None
                  else np.asarray(spec.materials[part.material].color_a, float))
        parts.append(_part(part.uid, albedo, part.world_vertices(), part.mesh.triangles(), part.mesh.smooth))
    return parts


def render_transparent_spec(spec: TransparentSceneSpec, width: int, height: int) -> list[ViewPixels]:
    """One ``ViewPixels`` per view of a transparent scene (glass opaque: its first surface)."""
    return _cast(transparent_scene_parts(spec), spec, width, height)


def write_transparent_partitions(out: Path, partitions: int = 1, samples: int = 2, views: int = 3,
                                 hw: tuple[int, int] = (42, 56), seed: int = 0, first_partition: int = 0,
                                 **options) -> TransparentJob:
    """Transparent-object partitions under ``out/transparent/`` (``out/<name>``), as ``attrspace render
    --scene transparent --preset preview`` writes them (``TransparentConfig.light()``), at ``hw`` =
    (height, width); returns the job. ``options`` are ``render.presets.transparent_job``'s (scene_config,
    name, textures, ...)."""
    height, width = hw
    job = transparent_job(Path(out), partitions, "preview", samples=samples, views=views, seed=seed,
                          first_partition=first_partition, **options)
    job = dataclasses.replace(job, settings=dataclasses.replace(job.settings, width=width, height=height, spp=2))
    run(job, workers=1, renderer=RaycastRenderer)
    return job


def _light_tint(spec: SceneSpec) -> np.ndarray:
    lights = spec.lighting.lights
    if not lights:
        return np.ones(3)
    return np.mean([li.color for li in lights], axis=0)


# ------------------------------------------------------------------------------------ mesh mode
def write_mesh_partitions(out: Path, source: Path, rig: str = "turntable", samples: int = 2, views: int = 3,
                          hw: tuple[int, int] = (42, 56), seed: int = 0, **options) -> MeshJob:
    """Mesh partitions of every mesh of ``source`` (a folder, a mesh file or a .txt list) under
    ``out/<name>/``, as ``attrspace render --meshes`` writes them; returns the job. ``options`` are
    ``render.presets.mesh_job``'s (units, up, front, name, rig_config, lighting_config, partitions, ...)."""
    height, width = hw
    job = mesh_job(Path(source), rig, Path(out), "preview", samples=samples, views=views, seed=seed, **options)
    job = dataclasses.replace(job, settings=RenderSettings(width=width, height=height, spp=2))
    run(job, workers=1, renderer=RaycastRenderer)
    return job


@dataclass
class _Scan:
    """A mesh as camera rays see it, in world metres: triangles, corner normals, and what colours them."""
    triangles: np.ndarray  # [T,3,3]
    normals: np.ndarray  # [T,3,3] per corner
    part: np.ndarray  # [T] part index
    uv: np.ndarray  # [T,3,2] (zeros without a texture)
    colors: np.ndarray  # [T,3,3] linear (ones without corner colours)
    images: list  # per part: uint8 [H,W,3] or None
    factors: np.ndarray  # [parts,3]
    intersector: RayMeshIntersector
    bounds: np.ndarray


@functools.lru_cache(maxsize=4)
def _scan(asset: MeshAsset) -> _Scan:
    loaded = meshes.load_for_render(asset)
    vertices, faces = loaded.geometry()
    merged, tris = meshes.merge_coincident(meshes.to_world(asset, vertices), faces)
    parts = loaded.parts
    uv = np.concatenate([(p.uv if p.uv is not None else np.zeros((len(p.vertices), 2)))[p.faces] for p in parts])
    colors = np.concatenate([p.colors if p.colors is not None else np.ones((len(p.faces), 3, 3)) for p in parts])
    mesh = trimesh.Trimesh(merged, tris, process=False)
    return _Scan(triangles=mesh.triangles, normals=meshes.corner_normals(merged, tris),
                 part=np.repeat(np.arange(len(parts)), [len(p.faces) for p in parts]), uv=uv, colors=colors,
                 images=[p.image for p in parts], factors=np.array([p.factor for p in parts]),
                 intersector=RayMeshIntersector(mesh), bounds=mesh.bounds)


def render_mesh_spec(spec: MeshSceneSpec, width: int, height: int) -> list[ViewPixels]:
    """One ``ViewPixels`` per view of a mesh spec, by ray casting every pixel centre."""
    scan = _scan(spec.mesh)
    rays = [_pixel_rays(view, width, height) for view in spec.camera.views]
    dirs = np.concatenate([d for _, d in rays])
    origins = np.concatenate([np.broadcast_to(o, d.shape) for o, d in rays])
    n = len(dirs)
    depth, normal = np.zeros(n), np.zeros((n, 3))
    background = np.asarray(spec.lighting.sky_color, float) * spec.lighting.sky_strength
    rgb = np.tile(background, (n, 1))
    candidates = np.flatnonzero(_hits_box(origins, dirs, scan.bounds))
    tri, ray, loc = (scan.intersector.intersects_id(origins[candidates], dirs[candidates], multiple_hits=False,
                                                    return_locations=True) if len(candidates) else ([], [], []))
    if len(ray):
        ray = candidates[ray]
        d = dirs[ray]
        depth[ray] = np.einsum("ij,ij->i", loc - origins[ray], d) / np.einsum("ij,ij->i", d, d)
        bary = trimesh.triangles.points_to_barycentric(scan.triangles[tri], loc)
        n_hit = np.einsum("ij,ijk->ik", bary, scan.normals[tri])
        n_hit /= np.maximum(np.linalg.norm(n_hit, axis=-1, keepdims=True), 1e-12)
        n_hit *= np.where(np.einsum("ij,ij->i", n_hit, d) > 0, -1.0, 1.0)[:, None]  # face the camera
        normal[ray] = n_hit
        rgb[ray] = _albedo(scan, tri, bary) * _irradiance(spec, loc, n_hit, background) / np.pi
    index = np.where(depth > 0, spec.mesh.uid, 0).astype(np.uint16)
    pixels = []
    for v in range(len(spec.camera.views)):
        sl = slice(v * width * height, (v + 1) * width * height)
        pixels.append(ViewPixels(rgb_linear=rgb[sl].reshape(height, width, 3).astype(np.float32),
                                 depth=depth[sl].reshape(height, width).astype(np.float32),
                                 normal_world=normal[sl].reshape(height, width, 3).astype(np.float32),
                                 index=index[sl].reshape(height, width)))
    return pixels


def _albedo(scan: _Scan, tri: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Linear albedo at the hits: nearest texel (repeat wrap) or interpolated colours, times the factor."""
    albedo = np.einsum("ij,ijk->ik", bary, scan.colors[tri])
    part = scan.part[tri]
    for k, image in enumerate(scan.images):
        sel = np.flatnonzero(part == k)
        if image is None or not len(sel):
            continue
        uv = np.einsum("ij,ijk->ik", bary[sel], scan.uv[tri[sel]]) % 1.0
        h, w = image.shape[:2]
        col = np.minimum((uv[:, 0] * w).astype(int), w - 1)
        row = np.minimum(((1.0 - uv[:, 1]) * h).astype(int), h - 1)  # v points up, image rows down
        albedo[sel] *= meshes.srgb_to_linear(image[row, col] / 255.0)
    return albedo * scan.factors[part]


def _irradiance(spec: MeshSceneSpec, points: np.ndarray, normals: np.ndarray, ambient: np.ndarray) -> np.ndarray:
    """[N,3] irradiance at the hits: every light's, unshadowed, plus the background as ambient (pi x L)."""
    total = np.tile(np.pi * ambient, (len(points), 1))
    for light in spec.lighting.lights:
        to_light = np.asarray(light.position) - points
        dist2 = np.einsum("ij,ij->i", to_light, to_light)
        cos = np.clip(np.einsum("ij,ij->i", normals, to_light) / np.sqrt(dist2), 0, None)
        if light.kind == "area":  # one-sided Lambertian emitter: P cos(emission angle) / (pi d²)
            emit = np.clip(-(to_light @ np.asarray(light.direction)) / np.sqrt(dist2), 0, None)
            strength = light.power * emit / (np.pi * dist2)
        else:  # point: P / (4 pi d²)
            strength = light.power / (4 * np.pi * dist2)
        total += (strength * cos)[:, None] * np.asarray(light.color)
    return total


# ---------------------------------------------------------------------------------- test meshes
def ellipsoid(semi_axes, rings: int = 16, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A closed latitude-longitude ellipsoid around the origin (y is the polar axis): vertices, faces
    wound outward."""
    a, b, c = semi_axes
    lat = np.linspace(0, np.pi, rings + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([a * np.sin(la) * np.cos(lo), b * np.cos(la), -c * np.sin(la) * np.sin(lo)], -1).reshape(-1, 3)
    vertices = np.concatenate([[[0, b, 0]], ring, [[0, -b, 0]]])
    faces = []
    idx = lambda r, k: 1 + r * segments + k % segments  # noqa: E731
    for k in range(segments):
        faces.append([0, idx(0, k), idx(0, k + 1)])
        faces.append([len(vertices) - 1, idx(rings - 2, k + 1), idx(rings - 2, k)])
        for r in range(rings - 2):
            faces += [[idx(r, k), idx(r + 1, k), idx(r + 1, k + 1)], [idx(r, k), idx(r + 1, k + 1), idx(r, k + 1)]]
    faces = np.array(faces)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if mesh.volume < 0:  # wind outward whatever the parametrisation's handedness
        faces = faces[:, ::-1]
    return vertices.astype(np.float64), faces


HEAD_MM = (75.0, 110.0, 90.0)  # semi-axes of the textured test head, millimetres (x, y = up, z = front)
RED, BLUE = (230, 20, 20), (20, 20, 230)


def write_test_meshes(folder: Path) -> dict[str, Path]:
    """Small meshes of every supported format, each red where its x < 0 and blue where x > 0 (the
    OFF has no colour), in the default axes (+y up, +z front):

    * ``obj``: ``head/head.obj`` + ``.mtl`` + ``.png``, an ellipsoid head in millimetres, coloured by a
      texture (left half red, right half blue) through planar UVs;
    * ``ply``: ``colored.ply``, a 0.5 m ellipsoid with sRGB vertex colours;
    * ``ply-texture``: ``textured/scan.ply`` + ``scan.png``, a 0.4 m ellipsoid textured like the head, UVs per
      face corner and the image named by ``comment TextureFile`` (MeshLab's form, as 2K2K scans have);
    * ``off``: ``plain.off``, a 0.4 x 0.6 x 0.3 m box without colour;
    * ``glb``: ``parts.glb``, two boxes (x < 0 red, x > 0 blue base colour factors) in a glTF scene.
    Returns {format: path}."""
    import cv2
    folder = Path(folder)
    head = folder / "head"
    head.mkdir(parents=True, exist_ok=True)
    v, f = ellipsoid(HEAD_MM)
    uv = np.stack([(v[:, 0] / HEAD_MM[0] + 1) / 2, (v[:, 1] / HEAD_MM[1] + 1) / 2], -1)
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:, :32], texture[:, 32:] = RED, BLUE
    cv2.imwrite(str(head / "head.png"), texture[..., ::-1])
    (head / "head.mtl").write_text("newmtl skin\nKd 0.8 0.8 0.8\nmap_Kd head.png\n")
    lines = ["mtllib head.mtl", "usemtl skin"] + [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"vt {a:.6f} {b:.6f}" for a, b in uv] + [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in f + 1]
    (head / "head.obj").write_text("\n".join(lines) + "\n")

    v, f = ellipsoid((0.25, 0.3, 0.2))
    colors = np.where(v[:, :1] < 0, RED, BLUE).astype(np.uint8)
    trimesh.Trimesh(v, f, vertex_colors=colors, process=False).export(folder / "colored.ply")
    trimesh.creation.box((0.4, 0.6, 0.3)).export(folder / "plain.off")
    semi = (0.15, 0.2, 0.12)
    v, f = ellipsoid(semi)
    uv = np.stack([(v[:, 0] / semi[0] + 1) / 2, (v[:, 1] / semi[1] + 1) / 2], -1)
    (folder / "textured").mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "textured" / "scan.png"), texture[..., ::-1])
    write_textured_ply(folder / "textured" / "scan.ply", v, f, uv, "scan.png", per_face=True)

    scene = trimesh.Scene()
    for name, x, colour in (("left", -0.15, RED), ("right", 0.15, BLUE)):
        box = trimesh.creation.box((0.28, 0.4, 0.3))
        box.apply_translation((x, 0, 0))
        box.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
            baseColorFactor=[*(meshes.srgb_to_linear(np.array(colour) / 255) * 255).round().astype(int), 255]))
        scene.add_geometry(box, geom_name=name)
    scene.export(folder / "parts.glb")
    return {"obj": head / "head.obj", "ply": folder / "colored.ply", "ply-texture": folder / "textured" / "scan.ply",
            "off": folder / "plain.off", "glb": folder / "parts.glb"}


def write_textured_ply(path: Path, vertices, faces, uv, texture_file: str, per_face: bool = False) -> None:
    """An ASCII PLY with UVs and ``comment TextureFile``: per vertex (``s t``) or, as MeshLab writes it,
    per face corner (``property list uchar float texcoord``)."""
    head = ["ply", "format ascii 1.0", f"comment TextureFile {texture_file}", f"element vertex {len(vertices)}",
            "property float x", "property float y", "property float z"]
    head += [] if per_face else ["property float s", "property float t"]
    head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head += ["property list uchar float texcoord"] if per_face else []
    rows = [" ".join(f"{x:.6f}" for x in (*p, *([] if per_face else t))) for p, t in zip(vertices, uv)]
    for face in faces:
        row = "3 " + " ".join(str(int(i)) for i in face)
        if per_face:
            row += " 6 " + " ".join(f"{x:.6f}" for i in face for x in uv[i])
        rows.append(row)
    Path(path).write_text("\n".join(head + ["end_header"] + rows) + "\n")
