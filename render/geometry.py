"""Meshes of the scene's shapes and room, built with numpy from a spec (no ``bpy``).

A mesh is ``Mesh(vertices [N,3], faces [sum of face sizes], face_sizes [F], smooth)``: polygons as a
flat index list, so grids stay quads (the wireframe modifier needs them) while caps and poles are
triangles. Shapes are built in their local frame, centred at the origin and unrotated; the backend
places them with an object transform, so a geometry jitter is a transform update, not a rebuild.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import zoom

from .spec import GeometrySpec, Heightfield, Shape

ROOM_UIDS = {"floor": 1, "ceiling": 2, "wall0": 3, "wall1": 4, "wall2": 5, "wall3": 6, "window_glass": 7}


@dataclass
class Mesh:
    vertices: np.ndarray  # [N,3] float32
    faces: np.ndarray  # [sum(face_sizes)] int32
    face_sizes: np.ndarray  # [F] int32
    smooth: bool = False

    def triangles(self) -> np.ndarray:
        """Fan-triangulate every polygon: [T,3] vertex indices."""
        tris = []
        starts = np.concatenate([[0], np.cumsum(self.face_sizes)[:-1]])
        for n in np.unique(self.face_sizes):
            s = starts[self.face_sizes == n]
            for k in range(1, n - 1):
                tris.append(np.stack([self.faces[s], self.faces[s + k], self.faces[s + k + 1]], -1))
        return np.concatenate(tris).astype(np.int64)


def _grid_quads(rows: int, cols: int, offset: int = 0, wrap_cols: bool = False) -> np.ndarray:
    """Quads of a (rows+1) x (cols+1) vertex grid (or rows+1 x cols when wrapping columns)."""
    width = cols if wrap_cols else cols + 1
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    a = r * width + c
    b = r * width + (c + 1) % width if wrap_cols else a + 1
    return (np.stack([a, b, b + width, a + width], -1) + offset).reshape(-1, 4)


def heightfield_values(hf: Heightfield, n_fields: int) -> np.ndarray:
    """[n_fields, res+1, res+1] heights in [0, 1] tapered to 0 at the borders (smooth sin window)."""
    rng = np.random.default_rng(hf.seed)
    coarse = rng.random((n_fields, hf.grid, hf.grid))
    n = hf.resolution + 1
    fields = np.stack([zoom(c, n / hf.grid, order=3, mode="nearest")[:n, :n] for c in coarse])
    t = np.sin(np.linspace(0, math.pi, n))
    return np.clip(fields, 0, 1) * (t[:, None] * t[None, :])


def cube_mesh(size, hf: Heightfield | None) -> Mesh:
    res = hf.resolution if hf else 1
    fields = heightfield_values(hf, 6) if hf else None
    lin = np.linspace(-0.5, 0.5, res + 1)
    uu, vv = np.meshgrid(lin, lin, indexing="ij")
    verts, quads = [], []
    # each face: (normal axis, sign); (u, v) axes chosen so quads wind counter-clockwise seen from outside
    for f, (axis, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)]):
        u_ax, v_ax = [a for a in range(3) if a != axis]
        # a grid quad runs +v then +u, so its normal is e_v x e_u: order the axes to point outward
        if np.cross(np.eye(3)[v_ax], np.eye(3)[u_ax])[axis] != sign:
            u_ax, v_ax = v_ax, u_ax
        p = np.zeros((res + 1, res + 1, 3))
        p[..., axis] = 0.5 * sign
        p[..., u_ax], p[..., v_ax] = uu, vv
        p = p * np.asarray(size)
        if fields is not None:
            p[..., axis] += sign * hf.amplitude * fields[f]
        quads.append(_grid_quads(res, res, offset=f * (res + 1) ** 2))
        verts.append(p.reshape(-1, 3))
    return _mesh(np.concatenate(verts), np.concatenate(quads), smooth=hf is not None)


def ellipsoid_mesh(size, hf: Heightfield | None, coarse: bool = False) -> Mesh:
    """Latitude-longitude grid; the heightfield displaces along the sphere's radial direction before
    the axis scaling, tapered to 0 at the poles and the seam."""
    n_lat = hf.resolution if hf else (6 if coarse else 16)
    n_lon = hf.resolution if hf else (12 if coarse else 32)
    theta = np.linspace(0, math.pi, n_lat + 1)[1:-1]  # interior rings; poles added separately
    phi = np.linspace(0, 2 * math.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    dirs = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
    radius = np.ones(th.shape)
    if hf:
        f = heightfield_values(Heightfield(hf.seed, hf.amplitude, hf.grid, max(n_lat, n_lon)), 1)[0]
        radius = radius + (hf.amplitude / (min(size) / 2)) * f[1:n_lat, :n_lon]
    ring = (dirs * radius[..., None] * np.asarray(size) / 2).reshape(-1, 3)
    top, bottom = len(ring), len(ring) + 1
    verts = np.concatenate([ring, [[0, 0, size[2] / 2]], [[0, 0, -size[2] / 2]]])
    quads = _grid_quads(n_lat - 2, n_lon, wrap_cols=True)[:, [0, 3, 2, 1]]
    j = np.arange(n_lon)
    cap_top = np.stack([np.full(n_lon, top), j, (j + 1) % n_lon], -1)
    last = (n_lat - 2) * n_lon
    cap_bot = np.stack([np.full(n_lon, bottom), last + (j + 1) % n_lon, last + j], -1)
    return _mesh(verts, quads, np.concatenate([cap_top, cap_bot]), smooth=True)


def cylinder_mesh(size, hf: Heightfield | None, coarse: bool = False) -> Mesh:
    n_around = hf.resolution if hf else (12 if coarse else 32)
    n_up = hf.resolution if hf else 1
    phi = np.linspace(0, 2 * math.pi, n_around, endpoint=False)
    z = np.linspace(-0.5, 0.5, n_up + 1)
    zz, ph = np.meshgrid(z, phi, indexing="ij")
    radius = np.ones(zz.shape)
    if hf:
        f = heightfield_values(Heightfield(hf.seed, hf.amplitude, hf.grid, max(n_around, n_up)), 1)[0]
        radius = radius + (hf.amplitude / (min(size[:2]) / 2)) * f[: n_up + 1, :n_around]
    side = np.stack([radius * np.cos(ph) * size[0] / 2, radius * np.sin(ph) * size[1] / 2, zz * size[2]], -1)
    side = side.reshape(-1, 3)
    quads = _grid_quads(n_up, n_around, wrap_cols=True)
    # caps get their own copies of the rim vertices so smooth shading does not bend their normals
    top = side[n_up * n_around:]
    bottom = side[:n_around]
    verts = np.concatenate([side, top, bottom])
    top_ring = len(side) + np.arange(n_around)
    bot_ring = len(side) + n_around + np.arange(n_around)[::-1]
    return _mesh(verts, quads, ngons=[top_ring, bot_ring], smooth=True)


def shape_mesh(shape: Shape) -> Mesh:
    coarse = shape.wireframe > 0  # few, large polygons make a clean wireframe
    if shape.kind == "cube":
        mesh = cube_mesh(shape.size, shape.heightfield)
        mesh.smooth = shape.heightfield is not None and not coarse
        return mesh
    if shape.kind == "ellipsoid":
        return ellipsoid_mesh(shape.size, shape.heightfield, coarse)
    if shape.kind == "cylinder":
        return cylinder_mesh(shape.size, shape.heightfield, coarse)
    raise ValueError(f"unknown shape kind {shape.kind!r}")


def room_meshes(geometry: GeometrySpec) -> dict[str, Mesh]:
    """Floor, ceiling and four walls (world coordinates), the window's wall with a hole, and the
    window's glass pane when it has one. Faces point into the room."""
    X, Y, Z = geometry.room
    hx, hy, hz = X / 2, Y / 2, Z / 2
    out = {
        "floor": _quad([[-hx, -hy, -hz], [hx, -hy, -hz], [hx, hy, -hz], [-hx, hy, -hz]]),
        "ceiling": _quad([[-hx, -hy, hz], [-hx, hy, hz], [hx, hy, hz], [hx, -hy, hz]]),
    }
    for wall in range(4):
        length = X if wall in (0, 2) else Y
        rects = [(-length / 2, -hz, length / 2, hz)]  # (u0, z0, u1, z1) in the wall's (u, z) frame
        win = geometry.window if geometry.window and geometry.window.wall == wall else None
        if win:
            (u, z), (w, h) = win.center, win.size
            u0, u1, z0, z1 = u - w / 2, u + w / 2, z - h / 2, z + h / 2
            rects = [(-length / 2, -hz, u0, hz), (u1, -hz, length / 2, hz),
                     (u0, -hz, u1, z0), (u0, z1, u1, hz)]
        polys = [_wall_points(geometry, wall, r) for r in rects]
        out[f"wall{wall}"] = _merge_quads(polys)
        if win and win.glass:
            out["window_glass"] = _window_pane(geometry, wall, (u0, z0, u1, z1))
    return out


def _wall_points(geometry, wall, rect):
    """Corners of rect (u0, z0, u1, z1) on wall ``wall``, wound to face into the room."""
    X, Y, _ = geometry.room
    u0, z0, u1, z1 = rect
    uv = [(u0, z0), (u1, z0), (u1, z1), (u0, z1)]
    if wall == 0:
        pts = [(u, -Y / 2, z) for u, z in uv]
    elif wall == 1:
        pts = [(X / 2, u, z) for u, z in uv]
    elif wall == 2:
        pts = [(u, Y / 2, z) for u, z in uv][::-1]
    else:
        pts = [(-X / 2, u, z) for u, z in uv][::-1]
    return np.array(pts, float)


def _window_pane(geometry, wall, rect, thickness=0.006) -> Mesh:
    inner = _wall_points(geometry, wall, rect)
    n = {0: (0, -1, 0), 1: (1, 0, 0), 2: (0, 1, 0), 3: (-1, 0, 0)}[wall]
    centre = inner.mean(0) + np.asarray(n) * thickness  # just outside the wall plane, no z-fighting
    size = np.abs(inner.max(0) - inner.min(0)) + np.abs(n) * thickness
    box = cube_mesh(size, None)
    box.vertices = box.vertices + centre
    return box


def _quad(points) -> Mesh:
    return _mesh(np.asarray(points, float), np.array([[0, 1, 2, 3]]))


def _merge_quads(polys) -> Mesh:
    verts = np.concatenate(polys)
    quads = np.arange(len(verts)).reshape(-1, 4)
    return _mesh(verts, quads)


def _mesh(verts, quads, tris=None, ngons=(), smooth=False) -> Mesh:
    faces = [np.asarray(quads).reshape(-1)]
    sizes = [np.full(len(quads), 4)]
    if tris is not None and len(tris):
        faces.append(np.asarray(tris).reshape(-1))
        sizes.append(np.full(len(tris), 3))
    for ng in ngons:
        faces.append(np.asarray(ng))
        sizes.append(np.array([len(ng)]))
    return Mesh(np.asarray(verts, np.float32), np.concatenate(faces).astype(np.int32),
                np.concatenate(sizes).astype(np.int32), smooth)


# ------------------------------------------------------------------------- surfaces of revolution
def revolve_mesh(segments, n_around: int = 32) -> Mesh:
    """A surface of revolution about the z axis: each segment is a polyline of (r, z) points, revolved
    into rings of ``n_around`` vertices (a point with r = 0 becomes one pole vertex and a fan of
    triangles). Segments are smooth inside and keep their own vertices at their ends, so the joints
    between them stay sharp creases under smooth shading (the rim of a glass, the edge of its foot).
    Faces point to the right of the direction of travel in the (r, z) half-plane: a closed profile
    traversed bottom centre -> outside up -> rim -> inside down -> inner bottom centre points outward."""
    phi = np.linspace(0.0, 2 * math.pi, n_around, endpoint=False)
    c, s = np.cos(phi), np.sin(phi)
    verts, quads, tris = [], [], []
    offset = 0
    for seg in segments:
        seg = np.asarray(seg, float)
        rings = []  # per point: the vertex indices of its ring (one index for a pole)
        for r, z in seg:
            if r <= 0.0:
                verts.append([[0.0, 0.0, z]])
                rings.append(np.array([offset]))
                offset += 1
            else:
                verts.append(np.stack([r * c, r * s, np.full(n_around, z)], -1))
                rings.append(offset + np.arange(n_around))
                offset += n_around
        for a, b in zip(rings[:-1], rings[1:]):
            j = np.arange(n_around)
            if len(a) > 1 and len(b) > 1:  # quad (a_j, a_j+1, b_j+1, b_j): normal ~ d/dphi x d/ds
                quads.append(np.stack([a[j], a[(j + 1) % n_around], b[(j + 1) % n_around], b[j]], -1))
            elif len(a) == 1 and len(b) > 1:
                tris.append(np.stack([np.full(n_around, a[0]), b[(j + 1) % n_around], b[j]], -1))
            elif len(a) > 1 and len(b) == 1:
                tris.append(np.stack([a[j], a[(j + 1) % n_around], np.full(n_around, b[0])], -1))
    quads = np.concatenate(quads) if quads else np.zeros((0, 4), int)
    tris = np.concatenate(tris) if tris else None
    return _mesh(np.concatenate(verts), quads, tris, smooth=True)
