"""Meshes built from specs: closed, outward-facing, displaced within their heightfield amplitude."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from render import generator as G
from render.geometry import heightfield_values, room_meshes, shape_mesh
from render.spec import Heightfield, Shape


def _trimesh(mesh):
    tm = trimesh.Trimesh(mesh.vertices, mesh.triangles(), process=True)
    tm.merge_vertices()
    return tm


@pytest.mark.parametrize("kind", ["cube", "ellipsoid", "cylinder"])
@pytest.mark.parametrize("amplitude", [0.0, 0.05])
def test_shapes_are_closed_and_outward(kind, amplitude):
    hf = Heightfield(seed=3, amplitude=amplitude, resolution=12) if amplitude else None
    size = (0.4, 0.3, 0.2)
    tm = _trimesh(shape_mesh(Shape(uid=100, kind=kind, role="large", center=(0, 0, 0), size=size, heightfield=hf)))
    assert tm.is_watertight
    assert tm.volume > 0  # outward normals
    lo, hi = tm.bounds
    half = np.asarray(size) / 2
    assert np.all(hi <= half + amplitude + 1e-6) and np.all(lo >= -half - amplitude - 1e-6)
    plain = _trimesh(shape_mesh(Shape(uid=100, kind=kind, role="large", center=(0, 0, 0), size=size)))
    if amplitude:
        assert tm.volume > plain.volume  # displacement pushes outwards


def test_heightfield_is_tapered_and_bounded():
    f = heightfield_values(Heightfield(seed=1, amplitude=1.0, resolution=20), 6)
    assert f.shape == (6, 21, 21)
    assert f.min() >= 0 and f.max() <= 1 and f.max() > 0.2
    assert np.allclose(f[:, 0], 0) and np.allclose(f[:, -1], 0) and np.allclose(f[:, :, 0], 0)


def test_every_generated_shape_is_closed():
    spec = G.sample_spec("mixed", 0, 0, seed=5, views=2)
    for sh in spec.geometry.shapes:
        tm = _trimesh(shape_mesh(sh))
        assert tm.is_watertight and tm.volume > 0, sh


def test_window_cuts_a_hole():
    spec = next(s for k in range(20) if (s := G.sample_spec("mixed", 0, k, 0, 2)).geometry.window)
    g = spec.geometry
    meshes = room_meshes(g)
    wall = meshes[f"wall{g.window.wall}"]
    area = _trimesh(wall).area
    X, Y, Z = g.room
    full = (X if g.window.wall in (0, 2) else Y) * Z
    assert area == pytest.approx(full - g.window.size[0] * g.window.size[1], rel=1e-5)
    assert ("window_glass" in meshes) == g.window.glass
