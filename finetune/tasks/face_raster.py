"""A small, exact, vectorised z-buffer rasteriser for the face task's "photos" and checks.

The spoof sheets need a frontal photo of each live face, and the real scan needs a depth image to check
its orientation; neither justifies a renderer dependency (render/ is Blender, and trimesh's ray caster
is orders of magnitude slower without embree and not bit-stable across backends). Triangles are
rasterised in screen space with pixel centres at integer + 0.5, depth and attributes interpolated
perspective-correctly, and the nearest surface kept per pixel. Everything is numpy, so the same inputs
give the same bytes on every run.

Cameras are OpenCV (x right, y down, z forward; ``x_cam = R x_world + t``), the renderer's convention.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Candidate (triangle, pixel) pairs handled per chunk: bounds memory (~100 bytes per candidate).
_CHUNK_CANDIDATES = 2_000_000
_NEAR = 1e-4


@dataclass
class Fragments:
    """Per pixel: the visible triangle (-1 for none), its perspective-correct barycentrics, the depth."""

    face: np.ndarray  # [H, W] int64
    bary: np.ndarray  # [H, W, 3] float64
    depth: np.ndarray  # [H, W] float64, 0 where face == -1

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0

    def interpolate(self, faces: np.ndarray, values: np.ndarray, fill=0.0) -> np.ndarray:
        """Per-vertex ``values`` [N, C] interpolated at every covered pixel -> [H, W, C]; ``fill`` elsewhere."""
        out = np.full(self.face.shape + (values.shape[1],), fill, dtype=np.float64)
        m = self.mask
        tri = faces[self.face[m]]  # [P, 3]
        out[m] = np.einsum("pk,pkc->pc", self.bary[m], values[tri])
        return out


def look_at_front(distance: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world-to-camera (R, t) of a camera on +Z at ``distance`` looking at the origin, up = +Y.

    The face task's convention is up +Y, face looking along +Z, so this is the frontal view."""
    R = np.diag([1.0, -1.0, -1.0])
    t = np.array([0.0, 0.0, float(distance)])
    return R, t


def intrinsics(focal_px: float, width: int, height: int) -> np.ndarray:
    """Pinhole K with the principal point at the image centre (pixel centres at integer + 0.5)."""
    return np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]])


def rasterize(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
              size: tuple[int, int]) -> Fragments:
    """Rasterise a triangle mesh (world ``vertices`` [N,3], ``faces`` [F,3]) into ``size`` = (H, W).

    Triangles with a vertex behind the near plane are dropped (the face task never clips a surface);
    both windings are drawn, as a printed sheet is seen from either side."""
    H, W = size
    cam = vertices @ R.T + t
    z = cam[:, 2]
    zs = np.where(z > _NEAR, z, np.nan)
    uv = np.stack([K[0, 0] * cam[:, 0] / zs + K[0, 2], K[1, 1] * cam[:, 1] / zs + K[1, 2]], axis=1)
    face_ids = np.flatnonzero(np.all(z[faces] > _NEAR, axis=1))
    tri = faces[face_ids]

    depth = np.full(H * W, np.inf)
    face = np.full(H * W, -1, dtype=np.int64)
    bary = np.zeros((H * W, 3))
    p = uv[tri]  # [T, 3, 2]
    # Barycentrics as affine functions of the pixel position: l_k(x, y) = A_k x + B_k y + C_k.
    (ax, ay), (bx, by), (cx, cy) = p[:, 0].T, p[:, 1].T, p[:, 2].T
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    ok = np.abs(area) > 1e-12
    # Pixel (i, j) has its centre at (j + 0.5, i + 0.5): covered columns are ceil(min - 0.5) .. floor(max - 0.5).
    x0 = np.clip(np.ceil(p[..., 0].min(1) - 0.5), 0, W).astype(np.int64)
    x1 = np.clip(np.floor(p[..., 0].max(1) - 0.5), -1, W - 1).astype(np.int64)
    y0 = np.clip(np.ceil(p[..., 1].min(1) - 0.5), 0, H).astype(np.int64)
    y1 = np.clip(np.floor(p[..., 1].max(1) - 0.5), -1, H - 1).astype(np.int64)
    bw, bh = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    keep = ok & (bw * bh > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = np.stack([np.stack([(by - cy), (cx - bx), (bx * cy - cx * by)], 1),
                         np.stack([(cy - ay), (ax - cx), (cx * ay - ax * cy)], 1)], 1) / area[:, None, None]
    face_ids, tri, coef, x0, y0, bw, bh = face_ids[keep], tri[keep], coef[keep], x0[keep], y0[keep], bw[keep], bh[keep]
    counts = bw * bh
    inv_z = 1.0 / z[tri]  # [T, 3]

    start = 0
    cum = np.cumsum(counts)
    while start < len(tri):
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + _CHUNK_CANDIDATES, side="right")), start + 1)
        sl = slice(start, stop)
        _raster_chunk(coef[sl], inv_z[sl], face_ids[sl], x0[sl], y0[sl], bw[sl], counts[sl], W, depth, face, bary)
        start = stop

    depth = np.where(face >= 0, depth, 0.0)
    return Fragments(face.reshape(H, W), bary.reshape(H, W, 3), depth.reshape(H, W))


def _raster_chunk(coef, inv_z, face_ids, x0, y0, bw, counts, W, depth, face, bary) -> None:
    """Enumerate every (triangle, pixel-in-its-bounding-box) pair of a chunk, keep the inside ones and
    merge the nearest per pixel into the buffers (in place)."""
    owner = np.repeat(np.arange(len(counts)), counts)
    local = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    row, col = np.divmod(local, bw[owner])
    px, py = x0[owner] + col, y0[owner] + row
    cx, cy = px + 0.5, py + 0.5
    c = coef[owner]  # [n, 2, 3]
    l0 = c[:, 0, 0] * cx + c[:, 0, 1] * cy + c[:, 0, 2]
    l1 = c[:, 1, 0] * cx + c[:, 1, 1] * cy + c[:, 1, 2]
    inside = (l0 >= 0) & (l1 >= 0) & (l0 + l1 <= 1)
    if not inside.any():
        return
    owner, px, py, l0, l1 = owner[inside], px[inside], py[inside], l0[inside], l1[inside]
    lam = np.stack([l0, l1, 1.0 - l0 - l1], axis=1) * inv_z[owner]  # perspective-correct
    s = lam.sum(1)
    d = 1.0 / s
    pix = py * W + px
    # Nearest per pixel: one stable sort on (pixel, quantised depth) packed into an int64 (depth to
    # ~1e-9 of its range; exact ties keep the candidates' order, which is the triangles' order).
    lo, span = d.min(), max(d.max() - d.min(), 1e-12)
    key = (pix.astype(np.int64) << 31) | ((d - lo) / span * (2**31 - 1)).astype(np.int64)
    order = np.argsort(key, kind="stable")
    pix, d, owner, lam, s = pix[order], d[order], owner[order], lam[order], s[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    pix, d, owner, lam, s = pix[first], d[first], owner[first], lam[first], s[first]
    better = d < depth[pix]
    pix = pix[better]
    depth[pix] = d[better]
    face[pix] = face_ids[owner[better]]
    bary[pix] = lam[better] / s[better, None]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (computed here, not by trimesh, so the photo depends on numpy only)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.maximum(norm, 1e-20)


def shade_lambert(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, K: np.ndarray, R: np.ndarray,
                  t: np.ndarray, size: tuple[int, int], light_dir: np.ndarray, ambient: float,
                  background: np.ndarray) -> tuple[np.ndarray, Fragments]:
    """An RGB float image [H,W,3] in [0,1] of a vertex-coloured mesh lit by one directional light.

    ``light_dir`` points from the surface towards the light (world); ``ambient`` is the share of light
    that reaches every surface. Normals face the camera where they point away (two-sided shading), so
    an open mesh seen through a hole never renders black."""
    frags = rasterize(vertices, faces, K, R, t, size)
    normals = frags.interpolate(faces, vertex_normals(vertices, faces))
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-20)
    centre = -(R.T @ t)  # the camera centre in world coordinates
    flip = (normals @ (centre / np.linalg.norm(centre))) < 0
    normals[flip] *= -1
    light = np.asarray(light_dir, float) / np.linalg.norm(light_dir)
    lambert = np.clip(normals @ light, 0.0, 1.0)
    albedo = frags.interpolate(faces, colors.astype(np.float64))
    rgb = albedo * (ambient + (1.0 - ambient) * lambert)[..., None]
    rgb[~frags.mask] = background
    return np.clip(rgb, 0.0, 1.0), frags
