"""Built-in transparent-object scenes (render --scene transparent, docs/transparent.md).

Blender-free: the generator (deterministic, objects on the table, masks that name the transparent ids),
the vessels' meshes (closed walls), the job's files through the partition reader. Blender: depth, normals
and instance ids are those of the first surface a camera ray meets — the glass itself, not what is seen
through it — checked against a numpy ray cast of the same parts with and without the glass.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import import_bpy
import trimesh

from render import transparent
from render.dataset import load_partition
from render.generator.transparent import TransparentConfig, sample_transparent_spec
from render.jobs import JobError
from render.presets import transparent_job
from render.spec import TABLE_UID, TransparentSceneSpec, load_scene, transparent_ids
from synthetic import render_transparent_spec, write_transparent_partitions

LIGHT = TransparentConfig.light()


def test_specs_are_deterministic_and_round_trip(tmp_path):
    a = sample_transparent_spec(2, 1, 0, 3, LIGHT)
    assert a == sample_transparent_spec(2, 1, 0, 3, LIGHT)
    assert a != sample_transparent_spec(2, 2, 0, 3, LIGHT) and a != sample_transparent_spec(2, 1, 1, 3, LIGHT)
    (tmp_path / "scene.json").write_text(a.to_json())
    back = load_scene(tmp_path / "scene.json")
    assert isinstance(back, TransparentSceneSpec) and back == a
    assert transparent_ids(a) == tuple(sorted(o.uid for o in a.objects if o.transparent)) and transparent_ids(a)


def test_partition_holds_the_set_up_and_redraws_the_arrangement():
    s0, s1 = (sample_transparent_spec(4, s, 0, 3, LIGHT) for s in (0, 1))
    assert s0.room == s1.room and s0.table == s1.table and s0.materials == s1.materials
    assert [o.center for o in s0.objects] != [o.center for o in s1.objects]
    assert s0.camera != s1.camera


def test_transparent_ids_must_be_the_transparent_objects():
    spec = sample_transparent_spec(0, 0, 0, 2, LIGHT)
    with pytest.raises(ValueError, match="transparent_ids"):
        dataclasses.replace(spec, transparent_ids=spec.transparent_ids[1:])


@pytest.mark.parametrize("partition", range(6))
def test_objects_rest_on_the_table_inside_it_and_apart(partition):
    spec = sample_transparent_spec(partition, 0, 0, 2, TransparentConfig())
    parts = {p.uid: p for p in transparent.scene_parts(spec)}
    table = spec.table
    half = np.array(table.size[:2]) / 2
    footprints = []
    for obj in spec.objects:
        v = parts[obj.uid].world_vertices()
        lift = 2 * obj.heightfield.amplitude if obj.heightfield else 0.0  # displaced: never into the top
        assert table.top + transparent.REST_GAP - 1e-6 <= v[:, 2].min() <= table.top + transparent.REST_GAP \
            + lift + 1e-4, obj.kind
        inside = np.abs(v[:, :2] - np.asarray(table.center)) <= half + 1e-6
        assert inside.all(), f"{obj.kind} {obj.uid} overhangs the table"
        footprints.append((np.asarray(obj.center[:2]), transparent.footprint_radius(obj)))
    for i, (ci, ri) in enumerate(footprints):
        for cj, rj in footprints[i + 1:]:
            assert np.linalg.norm(ci - cj) >= ri + rj - 1e-9


def test_vessels_are_closed_walls():
    """A vessel is outer wall, rim, inner wall and floor: watertight, outward-facing, a positive volume
    smaller than its outer hull's (it is hollow)."""
    seen = set()
    for p in range(12):
        for obj in sample_transparent_spec(p, 0, 0, 2, TransparentConfig()).objects:
            if obj.kind not in ("bottle", "glass", "bowl", "vase", "jar") or obj.kind in seen:
                continue
            seen.add(obj.kind)
            m = transparent.object_mesh(obj)
            tm = trimesh.Trimesh(m.vertices, m.triangles(), process=True)
            tm.merge_vertices()
            assert tm.is_watertight, obj.kind
            assert tm.volume > 0, f"{obj.kind} faces point inward"
            assert tm.volume < 0.95 * tm.convex_hull.volume, f"{obj.kind} is not hollow"
    assert len(seen) >= 3


def test_job_files_read_back_with_transparent_masks(tmp_path):
    job = write_transparent_partitions(tmp_path, partitions=2, samples=2, views=3)
    assert [d.name for d in sorted((tmp_path / "transparent").iterdir()) if d.is_dir()] == ["p000", "p001"]
    seen_glass = 0
    for p in job.partition_ids():
        part = load_partition(job.partition_dir(p), verify=True)
        manifest = json.loads((job.partition_dir(p) / "manifest.json").read_text())
        assert manifest["attribute"] == "transparent" and manifest["render"]["max_bounces"] >= 8
        for s in part.samples:
            assert isinstance(s.spec, TransparentSceneSpec) and (s.path / "transparent").is_dir()
            expected = np.isin(s.masks, np.asarray(s.spec.transparent_ids))
            assert np.array_equal(s.transparent_masks, expected)
            assert (s.masks == TABLE_UID).any()  # the table is in view
            seen_glass += int(s.transparent_masks.any())
            assert np.all(s.depths[s.transparent_masks] > 0)
    assert seen_glass >= 3


def test_same_seed_same_files(tmp_path):
    a = write_transparent_partitions(tmp_path / "a", partitions=1, samples=1, views=2)
    b = write_transparent_partitions(tmp_path / "b", partitions=1, samples=1, views=2)
    fa = sorted(f for f in a.partition_dir(0).rglob("*") if f.is_file())
    fb = sorted(f for f in b.partition_dir(0).rglob("*") if f.is_file())
    assert [f.relative_to(a.partition_dir(0)) for f in fa] == [f.relative_to(b.partition_dir(0)) for f in fb]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb))


def test_bad_options_are_one_line(tmp_path):
    with pytest.raises(JobError, match="--generator-config"):
        transparent_job(tmp_path, 1, "preview", scene_config='{"objects": {"nope": 1}}')
    with pytest.raises(JobError, match="--preset"):
        transparent_job(tmp_path, 1, "nope")


# ------------------------------------------------------------------------------------------- Blender
@pytest.fixture(scope="module")
def blender_partition(tmp_path_factory):
    import_bpy()
    from render.jobs import run
    out = tmp_path_factory.mktemp("transparent")
    job = transparent_job(out, 1, "preview", samples=2, views=2, resolution=56, spp=4, first_partition=1)
    run(job, workers=1)
    return load_partition(job.partition_dir(1), verify=True)


def _without_glass(spec: TransparentSceneSpec) -> TransparentSceneSpec:
    return dataclasses.replace(spec, objects=tuple(o for o in spec.objects if not o.transparent),
                               transparent_ids=())


@pytest.mark.blender
def test_blender_depth_is_the_glass_surface(blender_partition):
    glass_pixels = behind = 0
    for s in blender_partition.samples:
        H, W = s.depths.shape[1:]
        ref = render_transparent_spec(s.spec, W, H)
        through = render_transparent_spec(_without_glass(s.spec), W, H)
        for v in range(s.num_views):
            z, z_ref = s.depths[v], ref[v].depth
            both = (z > 0) & (z_ref > 0)
            assert both.mean() > 0.95
            # ids agree except at silhouettes (Blender's index pass is one sample, not the pixel centre)
            assert (s.masks[v] == ref[v].index).mean() > 0.95
            glass = s.transparent_masks[v] & np.isin(ref[v].index, s.spec.transparent_ids)
            glass_pixels += int(glass.sum())
            rel = np.abs(z - z_ref)[both] / z_ref[both]
            assert np.median(rel) < 1e-3
            if glass.any():
                assert np.median(np.abs(z - z_ref)[glass] / z_ref[glass]) < 1e-3
                # what is seen through the glass lies measurably farther: the depth is not it
                gap = (through[v].depth - z_ref)[glass]
                behind += int((gap > 0.01).sum())
    assert glass_pixels > 50 and behind > 0.5 * glass_pixels


@pytest.mark.blender
def test_blender_normals_face_the_camera_and_glass_is_seen(blender_partition):
    for s in blender_partition.samples:
        for v in range(s.num_views):
            n, hit = s.normals[v].astype(np.float32), s.depths[v] > 0
            assert np.allclose(np.linalg.norm(n[hit], axis=-1), 1.0, atol=1e-2)
            assert (n[hit][:, 2] < 0.05).mean() > 0.97  # OpenCV camera: z forward, surfaces face back
        glass = s.transparent_masks
        if glass.any():  # glass is not rendered black: it shows what is behind it, refracted
            assert s.images[glass].mean() > 20
