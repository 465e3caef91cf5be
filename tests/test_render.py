"""Rendered pixels: geometry against an independent ray cast, multi-view consistency, the attribute
invariants on pixels, determinism, and the public reader. Small renders (48x40 px, 4 spp)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import reprojection_errors
from render.dataset import PartitionError, load_partition

pytestmark = pytest.mark.blender


def _samples(job, p=0):
    return load_partition(job.partition_dir(p)).samples


def _rays(K, E, width, height):
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1).reshape(-1, 3)
    R, t = E[:, :3], E[:, 3]
    return -R.T @ t, d_cam @ R  # origin, world directions (z component 1 in the camera frame)


@pytest.mark.parametrize("attribute", ["lighting", "geometry", "camera"])
def test_depth_matches_independent_ray_cast(rendered, renderer, attribute):
    import trimesh
    s = _samples(rendered[attribute])[1]
    renderer.set_scene(s.spec)
    vertices, faces, ids = renderer.export_geometry()
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    H, W = s.depths.shape[1:]
    for v in range(s.num_views):
        origin, dirs = _rays(s.intrinsics[v], s.extrinsics[v], W, H)
        loc, ray, tri = mesh.ray.intersects_location(np.repeat(origin[None], len(dirs), 0), dirs, multiple_hits=False)
        z = np.zeros(H * W)
        z[ray] = ((loc - origin) @ s.extrinsics[v][:, :3].T)[:, 2]
        z = z.reshape(H, W)
        inst = np.zeros(H * W, np.int64)
        inst[ray] = ids[tri]
        both = (z > 0) & (s.depths[v] > 0)
        assert both.mean() > 0.5  # windows show sky
        assert ((z > 0) == (s.depths[v] > 0)).mean() > 0.99
        rel = np.abs(s.depths[v][both] - z[both]) / z[both]
        assert np.median(rel) < 1e-3, np.median(rel)
        assert (inst.reshape(H, W)[both] == s.masks[v][both]).mean() > 0.95


@pytest.mark.parametrize("attribute", ["lighting", "camera"])
def test_multi_view_consistency(rendered, attribute):
    for s in _samples(rendered[attribute]):
        rel = np.concatenate([reprojection_errors(s, i, j) for i in range(s.num_views) for j in range(s.num_views) if i != j])
        assert len(rel) > 500
        assert np.median(rel) < 1e-3, np.median(rel)


def test_normals_are_unit_camera_frame_and_face_the_camera(rendered):
    s = _samples(rendered["lighting"])[0]
    H, W = s.depths.shape[1:]
    for v in range(s.num_views):
        n, hit = s.normals[v], s.depths[v] > 0
        assert np.allclose(np.linalg.norm(n[hit], axis=-1), 1, atol=5e-3)
        assert np.all(n[~hit] == 0)
        origin, dirs = _rays(s.intrinsics[v], s.extrinsics[v], W, H)
        d_cam = dirs.reshape(H, W, 3) @ s.extrinsics[v][:, :3].T
        assert ((n * d_cam).sum(-1)[hit] < 0).mean() > 0.97
        floor = s.masks[v] == 1  # the floor's normal is world +z; normals are pixel-averaged, so
        floor[1:-1, 1:-1] &= floor[:-2, 1:-1] & floor[2:, 1:-1] & floor[1:-1, :-2] & floor[1:-1, 2:]  # skip edges
        floor[[0, -1]] = False
        floor[:, [0, -1]] = False
        if floor.sum() > 20:
            world = n[floor] @ s.extrinsics[v][:, :3]
            assert np.median(world[:, 2]) > 0.999


def test_lighting_partition_changes_rgb_not_geometry(rendered):
    ss = _samples(rendered["lighting"])
    for a in ss[1:]:
        assert np.array_equal(a.extrinsics, ss[0].extrinsics)
        assert np.array_equal(a.depths, ss[0].depths)
        assert np.array_equal(a.masks, ss[0].masks)
        assert np.abs(a.images.astype(int) - ss[0].images).mean() > 2


def test_texture_partition_changes_rgb_not_depth_or_normals(rendered):
    ss = _samples(rendered["texture"])
    for a in ss[1:]:
        assert np.array_equal(a.depths, ss[0].depths)
        assert np.array_equal(a.normals, ss[0].normals)
        assert np.abs(a.images.astype(int) - ss[0].images).mean() > 2


def test_camera_partition_moves_cameras(rendered):
    ss = _samples(rendered["camera"])
    for a in ss[1:]:
        assert not np.allclose(a.extrinsics, ss[0].extrinsics)
        assert not np.array_equal(a.depths, ss[0].depths)
        assert a.spec.geometry == ss[0].spec.geometry


def test_geometry_partition_keeps_cameras(rendered):
    ss = _samples(rendered["geometry"])
    for a in ss[1:]:
        assert np.array_equal(a.extrinsics, ss[0].extrinsics) and np.array_equal(a.intrinsics, ss[0].intrinsics)
        assert not np.array_equal(a.depths, ss[0].depths)
        assert a.spec.lighting == ss[0].spec.lighting and a.spec.texture == ss[0].spec.texture


def test_same_seed_same_files_other_partition_differs(rendered, tmp_path):
    from render.jobs import run
    from conftest import small_job
    job = rendered["lighting"]
    again = small_job("lighting", tmp_path, partitions=1)
    run(again, workers=1)
    first = load_partition(job.partition_dir(0)).manifest["files"]
    assert load_partition(again.partition_dir(0)).manifest["files"] == first  # pixel-identical
    other = load_partition(job.partition_dir(1)).manifest["files"]
    assert all(other[k] != first[k] for k in first if k.endswith(".png") and "/rgb/" in k)


def test_reader_shapes_and_cameras(rendered):
    job = rendered["lighting"]
    p = load_partition(job.partition_dir(0), verify=True)
    assert p.attribute == "lighting" and p.index == 0 and len(p.samples) == job.samples
    s = p.samples[0]
    V, W, H = job.views, job.settings.width, job.settings.height
    assert s.images.shape == (V, H, W, 3) and s.images.dtype == np.uint8
    assert s.depths.shape == (V, H, W) and s.depths.dtype == np.float32
    assert s.normals.shape == (V, H, W, 3) and s.masks.shape == (V, H, W)
    assert s.intrinsics.shape == (V, 3, 3) and s.extrinsics.shape == (V, 3, 4)
    R = s.extrinsics[:, :, :3]
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(s.intrinsics[:, 0, 2], W / 2 - 0.5) and np.allclose(s.intrinsics[:, 1, 2], H / 2 - 0.5)
    frames = json.loads((s.path / "opencv_cameras.json").read_text())["frames"]
    assert set(frames[0]) == {"file_path", "w", "h", "fx", "fy", "cx", "cy", "w2c"}
    assert np.allclose(np.asarray(frames[0]["w2c"])[3], [0, 0, 0, 1])
    sheet = p.path / "contact_sheet.png"
    assert sheet.exists() and "contact_sheet.png" in p.manifest["files"]


def test_reader_rejects_tampering_and_corruption(rendered, tmp_path):
    import shutil
    src = rendered["texture"].partition_dir(0)
    dst = tmp_path / "p000"
    shutil.copytree(src, dst)
    np.save(dst / "s0001" / "depth" / "00.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(PartitionError, match="s0001/depth/00.npy"):
        load_partition(dst, verify=True)
    (dst / "manifest.json").write_text("{not json")
    with pytest.raises(PartitionError, match="corrupt manifest"):
        load_partition(dst)
    (dst / "manifest.json").unlink()
    with pytest.raises(PartitionError, match="missing"):
        load_partition(dst)
