"""Mesh mode (docs/meshes.md): loading every format, units and axes, the three rigs, specs and their
determinism, partitions the readers accept, resume and bad input; with Blender, depth against an
independent ray cast, colours where they belong, micro-baselines, and the CLI killed and resumed.
Renders are tiny (48x40 px, 4 spp, 2-3 views)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import import_bpy
import trimesh

from conftest import ROOT, SMALL, cli, reprojection_errors
from render import meshes, rigs
from render.dataset import load_partition
from render.jobs import JobError, MeshJob, run
from render.presets import mesh_job
from render.spec import MeshSceneSpec, load_scene
from synthetic import HEAD_MM, RaycastRenderer, write_mesh_partitions

DEFAULT_AXES = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # +y up, +z front: (x, y, z) -> (x, -z, y)


def _job(source, rig="turntable", out="unused", samples=2, views=3, **options) -> MeshJob:
    job = mesh_job(Path(source), rig, Path(out), "preview", samples=samples, views=views, **options)
    return dataclasses.replace(job, settings=SMALL)


def _rays(K, E, width, height):
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1).reshape(-1, 3)
    R, t = E[:, :3], E[:, 3]
    return -R.T @ t, d_cam @ R  # origin, world directions (z component 1 in the camera frame)


def _world_points(sample, v):
    """World position of every pixel of view v with depth (None elsewhere), from the written cameras."""
    K, E = sample.intrinsics[v], sample.extrinsics[v]
    H, W = sample.depths.shape[1:]
    origin, dirs = _rays(K, E, W, H)
    d = sample.depths[v].reshape(-1)
    return (origin + dirs * d[:, None]).reshape(H, W, 3)


def _independent_mesh(path: Path, scale: float) -> trimesh.Trimesh:
    """The file through trimesh alone, scaled and turned to the world by hand (default axes)."""
    scene = trimesh.load(str(path), force="scene", process=False)
    mesh = scene.to_mesh() if hasattr(scene, "to_mesh") else scene.dump(concatenate=True)
    return trimesh.Trimesh(scale * np.asarray(mesh.vertices) @ DEFAULT_AXES.T, mesh.faces, process=False)


# ------------------------------------------------------------------------------------- loading
def test_formats_load_with_their_colours(test_meshes):
    obj = meshes.load_mesh(test_meshes["obj"])
    assert obj.appearance == "texture" and obj.parts[0].uv is not None
    assert obj.parts[0].factor == (1.0, 1.0, 1.0)  # map_Kd replaces the MTL's Kd 0.8
    assert tuple(obj.parts[0].image[0, 0]) == (230, 20, 20) and tuple(obj.parts[0].image[0, -1]) == (20, 20, 230)
    ply = meshes.load_mesh(test_meshes["ply"])
    assert ply.appearance == "vertex-colors"
    red = meshes.srgb_to_linear(np.array([230, 20, 20]) / 255)
    x = ply.parts[0].vertices[ply.parts[0].faces][..., 0]
    assert np.allclose(ply.parts[0].colors[x < 0], red, atol=1e-6)  # sRGB bytes -> linear
    assert meshes.load_mesh(test_meshes["ply-texture"]).appearance == "texture"
    off = meshes.load_mesh(test_meshes["off"])
    assert off.appearance == "neutral" and off.parts[0].factor == meshes.NEUTRAL
    glb = meshes.load_mesh(test_meshes["glb"])
    assert glb.appearance == "color" and len(glb.parts) == 2  # a scene of two nodes, flattened
    by_side = {bool(p.vertices[:, 0].mean() < 0): np.asarray(p.factor) for p in glb.parts}
    assert by_side[True][0] > 0.7 > 0.1 > by_side[True][2] and by_side[False][2] > 0.7 > 0.1 > by_side[False][0]


def test_textured_ply_with_per_vertex_uvs(tmp_path, test_meshes):
    from synthetic import ellipsoid, write_textured_ply
    shutil.copy(test_meshes["ply-texture"].parent / "scan.png", tmp_path / "scan.png")
    v, f = ellipsoid((1, 1, 1))
    write_textured_ply(tmp_path / "v.ply", v, f, v[:, :2] * 0.5 + 0.5, "scan.png")
    part = meshes.load_mesh(tmp_path / "v.ply").parts[0]
    assert part.image is not None and np.allclose(part.uv, v[:, :2] * 0.5 + 0.5, atol=1e-5)


def test_units_and_axes(test_meshes):
    head = meshes.mesh_asset(test_meshes["obj"])  # 220 mm tall, written in mm: auto -> mm
    assert head.units == "mm" and head.scale == 0.001
    assert np.allclose(head.extent, 2e-3 * np.array(HEAD_MM)[[0, 2, 1]], rtol=1e-3)  # file y is world z
    assert np.allclose(head.rotation, DEFAULT_AXES)
    assert meshes.mesh_asset(test_meshes["ply"]).units == "m"
    cm = meshes.mesh_asset(test_meshes["ply"], units="cm")
    assert cm.scale == 0.01 and np.isclose(cm.radius, 0.01 * meshes.mesh_asset(test_meshes["ply"]).radius)
    z_up = meshes.mesh_asset(test_meshes["off"], up="+z", front="-y")  # already the world's axes
    assert np.allclose(z_up.rotation, np.eye(3)) and np.allclose(z_up.extent, (0.4, 0.6, 0.3))
    for up, front in (("+x", "-y"), ("-y", "+x"), ("+z", "+x")):
        R = meshes.axis_rotation(up, front)
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
        assert np.allclose(R @ meshes.AXES[up], [0, 0, 1]) and np.allclose(R @ meshes.AXES[front], [0, -1, 0])
    with pytest.raises(meshes.MeshError, match="perpendicular"):
        meshes.axis_rotation("+y", "-y")
    with pytest.raises(meshes.MeshError, match="--up 'y'"):
        meshes.axis_rotation("y", "+z")


def test_find_meshes_folder_file_and_list(tmp_path, test_meshes):
    root, files = meshes.find_meshes(test_meshes["off"].parent)
    names = [meshes.relative_name(f, root) for f in files]
    assert names == ["colored.ply", "head/head.obj", "parts.glb", "plain.off", "textured/scan.ply"]
    assert meshes.find_meshes(test_meshes["off"])[1] == [test_meshes["off"].absolute()]
    listing = tmp_path / "scans.txt"
    listing.write_text(f"# chosen\n{test_meshes['glb']}\n\n{test_meshes['off']}  # the box\n")
    assert meshes.find_meshes(listing)[1] == [test_meshes["glb"], test_meshes["off"]]
    listing.write_text("nope.obj\n")
    with pytest.raises(meshes.MeshError, match=r"scans.txt:1: nope.obj: no such file"):
        meshes.find_meshes(listing)


# ----------------------------------------------------------------------------------------- rigs
def _project(view, points, width=48, height=40):
    from render import camera as cam
    K, E = cam.intrinsics(view, width, height), cam.extrinsics(view)
    q = points @ E[:, :3].T + E[:, 3]
    return q[:, :2] / q[:, 2:] * K[0, 0] + K[:2, 2], q[:, 2]


def test_micro_baseline_rig(test_meshes):
    asset = meshes.mesh_asset(test_meshes["obj"])
    rig = rigs.MicroBaselineRig()
    for s in range(40):
        views = 2 + s % 4
        cams = rigs.place_cameras(rig, meshes.mesh_rng(0, 0, s, "camera"), asset.center, asset.radius, views)
        P = np.array([v.position for v in cams.views])
        assert len(cams.views) == views and cams.rig == "micro-baseline"
        assert 0.002 - 1e-12 <= cams.baseline <= 0.01 + 1e-12 and np.isclose(cams.baseline, rigs.spread(P))
        toward = P.mean(0) - asset.center
        assert 0.45 <= np.linalg.norm(toward) <= 0.55 + 0.01
        azimuth = np.degrees(np.arctan2(toward[1], toward[0]))  # straight ahead is -90 (world -y)
        pitch = np.degrees(np.arcsin(toward[2] / np.linalg.norm(toward)))
        assert abs(azimuth + 90) <= 16 and abs(pitch) <= 16  # (the mean of a disc is off its centre)
        if views >= 3:  # the centres lie in one plane, the one facing the object
            normal = np.linalg.svd(P - P.mean(0))[2][-1]
            assert np.abs((P - P.mean(0)) @ normal).max() < 1e-12
            assert abs(normal @ toward) / np.linalg.norm(toward) > 0.999
        for v in cams.views:
            assert 25 <= v.fov_deg <= 30 and abs(np.degrees(v.roll)) <= 3
            assert np.allclose(v.look_at, asset.center)
    line = rigs.rig_config("micro-baseline", {"layout": "line", "baseline": [0.004, 0.004]})
    cams = rigs.place_cameras(line, meshes.mesh_rng(1, 0, 0, "camera"), asset.center, asset.radius, 5)
    P = np.array([v.position for v in cams.views])
    assert np.isclose(cams.baseline, 0.004) and np.linalg.matrix_rank(P - P[0], tol=1e-9) == 1


@pytest.mark.parametrize("name", ["turntable", "hemisphere"])
def test_surrounding_rigs_frame_the_whole_mesh_upright(test_meshes, name):
    asset = meshes.mesh_asset(test_meshes["obj"])
    world = meshes.to_world(asset, meshes.load_mesh(test_meshes["obj"]).geometry()[0])
    rig = rigs.rig_config(name)
    for s in range(10):
        cams = rigs.place_cameras(rig, meshes.mesh_rng(0, 0, s, "camera"), asset.center, asset.radius, 5, 40 / 48)
        offsets = np.array([v.position for v in cams.views]) - asset.center
        elevation = np.degrees(np.arcsin(offsets[:, 2] / np.linalg.norm(offsets, axis=1)))
        lo, hi = rig.elevation_deg
        assert np.all((elevation >= lo - 1e-9) & (elevation <= hi + 1e-9))
        if name == "turntable":
            azimuth = np.sort(np.arctan2(offsets[:, 1], offsets[:, 0]) % (2 * np.pi))
            assert np.allclose(np.diff(np.r_[azimuth, azimuth[0] + 2 * np.pi]), 2 * np.pi / 5)
            assert np.ptp(elevation) < 1e-9
        for v in cams.views:
            uv, z = _project(v, world)
            assert np.all(z > 0) and np.all((uv >= -0.5) & (uv <= [47.5, 39.5]))  # all of the mesh in frame
            assert uv[:, 1].min() < 0.2 * 40 or uv[:, 0].min() < 0.2 * 48  # and filling most of it
            from render import camera as cam
            assert cam.cam_to_world_rotation(v)[:, 1] @ rigs.UP < 0  # image down points world-down


def test_rig_config_errors():
    assert rigs.rig_config("turntable", {"fov_deg": [30, 40]}).fov_deg == (30, 40)
    for name, data, needle in (("orbit", {}, "unknown rig"), ("turntable", {"zoom": 1}, "zoom: unknown key"),
                               ("hemisphere", {"elevation_deg": [-10, 50]}, "elevation_deg"),
                               ("micro-baseline", {"layout": "ring"}, "layout"),
                               ("turntable", {"fill": [0.5, 1.5]}, "fill")):
        with pytest.raises(ValueError, match=needle):
            rigs.rig_config(name, data)


# ----------------------------------------------------------------------------------------- specs
def test_specs_are_seeded_and_round_trip(test_meshes):
    job = _job(test_meshes["off"].parent)
    a = job.spec(1, 0)
    assert a == job.spec(1, 0) == _job(test_meshes["off"].parent).spec(1, 0)
    assert MeshSceneSpec.from_json(a.to_json()) == a and MeshSceneSpec.from_json(a.to_json()).to_json() == a.to_json()
    b = job.spec(1, 1)
    assert b.mesh == a.mesh and b.camera != a.camera and b.lighting != a.lighting  # the mesh never changes
    assert dataclasses.replace(job, seed=1).spec(1, 0).camera != a.camera
    assert job.spec(2, 0).mesh != a.mesh
    other_rig = dataclasses.replace(job, rig=rigs.rig_config("turntable", {"fov_deg": [20, 20]})).spec(1, 0)
    assert other_rig.lighting == a.lighting  # separate random streams
    for light in a.lighting.lights:
        assert light.kind in ("area", "point") and max(light.color) == pytest.approx(1.0)
        d = np.linalg.norm(np.subtract(light.position, a.mesh.center)) / a.mesh.radius
        assert 3.0 - 1e-9 <= d <= 6.0 + 1e-9
    assert a.lighting.sky_strength == 1.0


def test_kelvin_to_rgb():
    warm, white, cool = (meshes.kelvin_to_rgb(t) for t in (2700, 6500, 10000))
    assert warm[0] == 1 and warm[2] < 0.5 and cool[2] == 1 and cool[0] < 0.9
    assert np.allclose(white, 1, atol=0.07)  # 6500 K lies near, not on, D65


def test_corner_normals_smooth_spheres_keep_box_edges():
    box = trimesh.creation.box()
    n = meshes.corner_normals(*meshes.merge_coincident(box.vertices, box.faces))
    assert np.allclose(n, box.face_normals[:, None], atol=1e-9)  # 90 degree edges stay sharp
    sphere = trimesh.creation.icosphere(3)
    n = meshes.corner_normals(sphere.vertices, sphere.faces)
    assert np.allclose(n, sphere.vertices[sphere.faces], atol=1e-2)  # radial on a sphere


# ------------------------------------------------------------------------ partitions (no Blender)
@pytest.fixture(scope="module")
def synthetic_job(tmp_path_factory, test_meshes):
    return write_mesh_partitions(tmp_path_factory.mktemp("msynth"), test_meshes["off"].parent, rig="turntable",
                                 samples=2, views=3, hw=(42, 56))


def test_partitions_load_and_record_their_mesh(synthetic_job, test_meshes):
    job = synthetic_job
    assert job.root == job.out / test_meshes["off"].parent.name and len(job.partition_ids()) == 5
    for p in job.partition_ids():
        part = load_partition(job.partition_dir(p), verify=True)
        m = part.manifest
        assert part.attribute == "mesh" and part.index == p and m["rig"]["name"] == "turntable"
        assert m["mesh"]["path"] == job.meshes[p] and m["mesh"]["sha256"] == meshes.sha256(Path(job.meshes[p]))
        assert m["mesh"]["file"] == meshes.relative_name(Path(job.meshes[p]), Path(job.source))
        assert json.loads((job.partition_dir(p) / "partition.json").read_text()) == job.header(p)
        for s in part.samples:
            assert isinstance(s.spec, MeshSceneSpec) and s.spec == load_scene(s.path / "scene.json")
            assert set(np.unique(s.masks).tolist()) == {0, 100}
            assert np.array_equal(s.depths > 0, s.masks == 100)


def test_training_reads_mesh_partitions(synthetic_job):
    from training import SynthSequences
    parts = [synthetic_job.partition_dir(p) for p in synthetic_job.partition_ids()]
    data = SynthSequences(parts, num_frames=2, resolution=(42, 56), extras=True)
    item = data[3]
    assert item["images"].shape == (2, 3, 42, 56) and item["seq_name"].startswith("mesh/p001/")
    assert item["point_masks"].any() and set(np.unique(item["instance_masks"].numpy())) <= {0, 100}


def test_synthetic_micro_baseline_views_agree(tmp_path, test_meshes):
    # (turntable views 120 degrees apart mostly see different sides: one instance id cannot tell occlusion)
    job = write_mesh_partitions(tmp_path, test_meshes["obj"], rig="micro-baseline", samples=2, views=3)
    for s in load_partition(job.partition_dir(0)).samples:
        rel = np.concatenate([reprojection_errors(s, i, j) for i in range(3) for j in range(3) if i != j])
        assert len(rel) > 1000 and np.median(rel) < 1e-5


def test_synthetic_colours_follow_texture_and_vertex_colours(synthetic_job):
    for p in synthetic_job.partition_ids():
        if Path(synthetic_job.meshes[p]).suffix == ".off":
            continue
        _assert_red_left_blue_right(load_partition(synthetic_job.partition_dir(p)))


def _assert_red_left_blue_right(part, share=0.9):
    """Pixels whose surface point is at world x < 0 are redder than blue and the others bluer (the test
    meshes' colouring); ``share`` of them at least, away from the boundary."""
    margin = 0.3 * part.samples[0].spec.mesh.radius  # wider than the vertex-colour gradient at x = 0
    left, right = [], []
    for s in part.samples:
        for v in range(s.num_views):
            x = _world_points(s, v)[..., 0]
            hit = s.depths[v] > 0
            rgb = s.images[v].astype(int)
            redder = rgb[..., 0] > rgb[..., 2]
            left.append(redder[hit & (x < -margin)])
            right.append(~redder[hit & (x > margin)])
    left, right = np.concatenate(left), np.concatenate(right)
    assert len(left) > 100 and len(right) > 100
    assert left.mean() > share and right.mean() > share, (part.path, left.mean(), right.mean())


def test_resume_after_a_kill_equals_a_clean_run(tmp_path, test_meshes):
    """A renderer that dies mid-partition (like SIGKILL: a half-written sample folder stays behind), then
    a rerun: only the missing samples are rendered and every file equals an uninterrupted run's."""
    source = test_meshes["ply"]
    clean = _job(source, out=tmp_path / "clean", samples=4, views=2)
    run(clean, renderer=RaycastRenderer)

    class Dies(RaycastRenderer):
        calls = 0

        def render(self, spec):
            Dies.calls += 1
            if Dies.calls == 3:
                stale = clean.sample_dir(0, 2).name
                (killed.partition_dir(0) / f".{stale}.tmp-1-1").mkdir()  # what a killed writer leaves
                raise KeyboardInterrupt
            return super().render(spec)

    killed = dataclasses.replace(clean, out=tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        run(killed, renderer=Dies)
    assert not (killed.partition_dir(0) / "manifest.json").exists()
    stats = run(killed, renderer=RaycastRenderer)
    assert (stats.rendered, stats.skipped) == (2, 2) and not list(killed.root.rglob(".*.tmp*"))
    a = load_partition(clean.partition_dir(0), verify=True).manifest
    b = load_partition(killed.partition_dir(0), verify=True).manifest
    assert a == b


def test_changed_mesh_is_refused_on_resume(tmp_path, test_meshes):
    source = tmp_path / "scans"
    source.mkdir()
    shutil.copy(test_meshes["off"], source / "box.off")
    out = tmp_path / "out"
    job = write_mesh_partitions(out, source, samples=2, views=2, hw=(32, 32))
    before = sorted(p for p in out.rglob("*"))
    trimesh.creation.box((0.5, 0.5, 0.5)).export(source / "box.off")
    with pytest.raises(JobError, match=r"manifest.json: rendered with other settings \(mesh.sha256"):
        run(job, renderer=RaycastRenderer)
    r = cli("render", "--meshes", str(source), "--rig", "turntable", "--out", str(out), "--preset", "preview",
            "--samples", "2", "--views", "2", "--resolution", "32", "--spp", "2")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "mesh.sha256" in lines[0] and "p000" in lines[0], r.stderr
    assert sorted(p for p in out.rglob("*")) == before


# ------------------------------------------------------------------------------------ bad input
def _bad_sources(tmp_path: Path, test_meshes) -> list:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "a.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    (garbage / "b.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\x00\x01 garbage")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "notes.txt").write_text("no meshes here")
    return [
        ([str(tmp_path / "missing"), "turntable"], "--meshes", "no such file or folder"),
        ([str(garbage), "turntable"], str(garbage / "b.ply"), "cannot read it as a mesh"),
        ([str(empty), "turntable"], str(empty / "points.obj"), "no triangles"),
        ([str(nothing), "turntable"], str(nothing), "no mesh files"),
        ([str(test_meshes["off"]), "orbit"], "--rig 'orbit'", "unknown"),
    ]


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, test_meshes):
    for (source, rig), name, needle in _bad_sources(tmp_path, test_meshes):
        out = tmp_path / "out"
        r = cli("render", "--meshes", source, "--rig", rig, "--out", str(out), "--preset", "preview")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert name in lines[0] and needle in lines[0], lines[0]
        assert "Traceback" not in r.stderr + r.stdout and not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--up", "+y", "--front", "-y"], "perpendicular"),
    (["--units", "inch"], "--units 'inch'"),
    (["--rig-config", '{"distance": [1, 0.5]}'], "--rig-config: distance"),
    (["--rig-config", "missing.json"], "--rig-config missing.json: cannot read"),
    (["--lighting-config", '{"lights": [0, 0]}'], "--lighting-config: lights"),
    (["--jitter", "0"], "--jitter: not used with --meshes"),
    (["--partitions", "3"], "the source has 1 mesh file"),
    (["--first-partition", "1"], "--first-partition 1: the source has 1 mesh file"),
    (["--name", "../up"], "--name"),
])
def test_bad_mesh_options(tmp_path, test_meshes, args, needle):
    out = tmp_path / "out"
    r = cli("render", "--meshes", str(test_meshes["off"]), "--rig", "turntable", *args, "--out", str(out),
            "--preset", "preview")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert not out.exists()


def test_mesh_and_procedural_options_do_not_mix(tmp_path, test_meshes):
    out = tmp_path / "out"
    r = cli("render", "--attribute", "lighting", "--rig", "turntable", "--out", str(out))
    assert r.returncode == 2 and "--rig: only with --meshes" in r.stderr and not out.exists()
    r = cli("render", "--meshes", str(test_meshes["off"]), "--out", str(out))
    assert r.returncode == 2 and "--rig: required" in r.stderr and not out.exists()


def test_a_broken_mesh_stops_the_job_before_anything_is_written(tmp_path, test_meshes):
    source = tmp_path / "scans"
    source.mkdir()
    shutil.copy(test_meshes["off"], source / "a.off")
    (source / "b.obj").write_text("v 0 0 0\n")  # the second partition cannot be rendered
    with pytest.raises(JobError, match="b.obj: no triangles"):
        write_mesh_partitions(tmp_path / "out", source)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------- Blender
@pytest.fixture(scope="module")
def blender_jobs(tmp_path_factory, test_meshes):
    """rig -> the job it rendered with Blender, in this process: every test mesh on a turntable, the
    head (mm) on the micro-baseline rig."""
    import_bpy()
    out = tmp_path_factory.mktemp("mblender")
    turntable = _job(test_meshes["off"].parent, "turntable", out, samples=2, views=3)
    micro = _job(test_meshes["obj"], "micro-baseline", out, samples=2, views=3)
    for job in (turntable, micro):
        run(job, workers=1)
    return {"turntable": turntable, "micro-baseline": micro}


@pytest.mark.blender
@pytest.mark.parametrize("rig", ["turntable", "micro-baseline"])
def test_blender_depth_matches_independent_ray_cast(blender_jobs, rig):
    job = blender_jobs[rig]
    for p in job.partition_ids():
        part = load_partition(job.partition_dir(p), verify=True)
        asset = part.samples[0].spec.mesh
        mesh = _independent_mesh(Path(job.meshes[p]), {"mm": 1e-3, "m": 1.0}[asset.units])
        for s in part.samples:
            H, W = s.depths.shape[1:]
            for v in range(s.num_views):
                origin, dirs = _rays(s.intrinsics[v], s.extrinsics[v], W, H)
                loc, ray, _ = mesh.ray.intersects_location(np.repeat(origin[None], len(dirs), 0), dirs,
                                                           multiple_hits=False)
                z = np.zeros(H * W)
                z[ray] = ((loc - origin) @ s.extrinsics[v][:, :3].T)[:, 2]
                z = z.reshape(H, W)
                both = (z > 0) & (s.depths[v] > 0)
                assert both.mean() > 0.15 and ((z > 0) == (s.depths[v] > 0)).mean() > 0.99
                rel = np.abs(s.depths[v][both] - z[both]) / z[both]
                assert np.median(rel) < 1e-3, np.median(rel)
                assert np.all(s.masks[v][both] == 100) and np.all(s.masks[v][s.depths[v] == 0] == 0)


@pytest.mark.blender
def test_blender_texture_vertex_and_material_colours_show(blender_jobs):
    job = blender_jobs["turntable"]
    shown = 0
    for p in job.partition_ids():
        if Path(job.meshes[p]).suffix != ".off":
            _assert_red_left_blue_right(load_partition(job.partition_dir(p)), share=0.85)
            shown += 1
    assert shown == 4  # obj texture, ply vertex colours, ply texture, glb material factors


@pytest.mark.blender
def test_blender_background_is_the_specs(blender_jobs):
    from render.files import linear_to_srgb8
    job = blender_jobs["turntable"]
    for p in job.partition_ids():
        for s in load_partition(job.partition_dir(p)).samples:
            sky = linear_to_srgb8(np.asarray(s.spec.lighting.sky_color) * s.spec.lighting.sky_strength)
            background = s.images[s.masks == 0].astype(float)
            assert np.abs(np.median(background, axis=0) - sky).max() <= 2, (sky, np.median(background, axis=0))


@pytest.mark.blender
def test_blender_micro_baseline_views(blender_jobs):
    job = blender_jobs["micro-baseline"]
    part = load_partition(job.partition_dir(0))
    for s in part.samples:
        centres = np.array([-E[:, :3].T @ E[:, 3] for E in s.extrinsics])
        baseline = s.spec.camera.baseline
        assert 0.002 <= baseline <= 0.01 and np.isclose(rigs.spread(centres), baseline, rtol=1e-6)
        H, W = s.depths.shape[1:]
        for v in range(s.num_views):
            assert s.masks[v][H // 2, W // 2] == 100 and (s.masks[v] == 100).mean() > 0.3  # a face fills it
        rel = np.concatenate([reprojection_errors(s, i, j) for i in range(3) for j in range(3) if i != j])
        assert np.median(rel) < 1e-3


@pytest.mark.blender
def test_synthetic_writer_agrees_with_blender(blender_jobs, tmp_path):
    job = blender_jobs["turntable"]
    raycast = dataclasses.replace(job, out=tmp_path)
    run(raycast, renderer=RaycastRenderer)
    for p in job.partition_ids():
        for a, b in zip(load_partition(job.partition_dir(p)).samples, load_partition(raycast.partition_dir(p)).samples):
            assert a.spec == b.spec and np.array_equal(a.extrinsics, b.extrinsics)
            both = (a.depths > 0) & (b.depths > 0)
            assert ((a.depths > 0) == (b.depths > 0)).mean() > 0.99
            assert np.median(np.abs(a.depths[both] / b.depths[both] - 1)) < 1e-4
            n = (a.normals * b.normals).sum(-1)[both]
            assert np.median(n) > 0.99


@pytest.mark.blender
def test_cli_sigkill_then_resume_equals_uninterrupted_run(tmp_path, test_meshes):
    args = ["render", "--meshes", str(test_meshes["ply"]), "--rig", "hemisphere", "--samples", "10", "--views", "2",
            "--resolution", "40", "--spp", "4", "--preset", "preview"]
    clean = tmp_path / "clean"
    r = cli(*args, "--out", str(clean))
    assert r.returncode == 0, r.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args, "--out", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    part = killed / "colored" / "p000"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(part.glob("s0*"))) < 2:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(part.glob("s0*")))
    assert 2 <= done < 10 and not (part / "manifest.json").exists()
    r = cli(*args, "--out", str(killed))
    assert r.returncode == 0, r.stderr
    assert f"rendered {10 - done} samples" in r.stdout
    assert load_partition(part, verify=True).manifest == load_partition(clean / "colored" / "p000").manifest
