"""The Blender-free partition writer for tests (tests/synthetic.py): its folders load with the public
reader, follow the documented format and conventions, agree across views, are deterministic, and it
never imports bpy."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, reprojection_errors
from synthetic import write_partitions

from render import camera as cam
from render.dataset import load_partition
from render.geometry import ROOM_UIDS

HW = (42, 56)  # non-square: catches axis mix-ups
VIEWS = 3


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return write_partitions(tmp_path_factory.mktemp("synthetic"), partitions=2, samples=2, views=VIEWS, hw=HW)


def _samples(job):
    return [s for p in job.partition_ids() for s in load_partition(job.partition_dir(p)).samples]


def test_partitions_load_and_verify(job):
    H, W = HW
    for p in job.partition_ids():
        part = load_partition(job.partition_dir(p), verify=True)
        assert (part.attribute, part.index, len(part.samples)) == ("mixed", p, 2)
        m = part.manifest
        assert m["views"] == VIEWS and (m["render"]["width"], m["render"]["height"]) == (W, H)
        assert json.loads((job.partition_dir(p) / "partition.json").read_text()) == job.header(p)
        assert {k: v for k, v in m.items() if k != "files"} == job.header(p)
        assert "contact_sheet.png" in m["files"] and "s0001/depth/02.npy" in m["files"]
    assert (job.out / ".attrspace-render").is_file()


def test_arrays_follow_the_format(job):
    H, W = HW
    for s in _samples(job):
        assert s.images.shape == (VIEWS, H, W, 3) and s.images.dtype == np.uint8
        assert s.depths.shape == (VIEWS, H, W) and s.depths.dtype == np.float32
        assert s.normals.shape == (VIEWS, H, W, 3)
        assert s.masks.shape == (VIEWS, H, W) and s.masks.dtype == np.uint16
        assert np.load(s.path / "depth" / "00.npy").dtype == np.float32
        assert np.load(s.path / "normal" / "00.npy").dtype == np.float16
        for v, view in enumerate(s.spec.camera.views):
            assert np.allclose(s.intrinsics[v], cam.intrinsics(view, W, H))
            assert s.intrinsics[v][0, 2] == W / 2 - 0.5 and s.intrinsics[v][1, 2] == H / 2 - 0.5
            assert np.allclose(s.extrinsics[v], cam.extrinsics(view))
        ids = set(ROOM_UIDS.values()) | {sh.uid for sh in s.spec.geometry.shapes} | {0}
        assert set(np.unique(s.masks).tolist()) <= ids
        assert len(np.unique(s.masks)) >= 4  # room parts and some shapes


def test_images_depend_on_content(job):
    ss = _samples(job)
    for s in ss:
        assert s.images.std() > 5
        assert np.abs(s.images[1].astype(int) - s.images[0]).mean() > 1  # views differ
    assert np.abs(ss[1].images.astype(int) - ss[0].images).mean() > 5  # so do scenes


def test_depth_mask_and_normals(job):
    H, W = HW
    for s in _samples(job):
        for v in range(VIEWS):
            d, m, n = s.depths[v], s.masks[v], s.normals[v]
            hit = d > 0
            assert hit.mean() > 0.5
            assert np.all(d >= 0) and np.isfinite(d).all()
            assert np.array_equal(hit, m != 0)  # 0 exactly where the mask is background
            assert np.allclose(np.linalg.norm(n[hit], axis=-1), 1, atol=2e-3)  # float16 on disk
            assert np.all(n[~hit] == 0)
            K = s.intrinsics[v]
            u, w = np.meshgrid(np.arange(W), np.arange(H))
            ray = np.stack([(u - K[0, 2]) / K[0, 0], (w - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1)
            assert ((n * ray).sum(-1)[hit] < 0).mean() > 0.97  # facing the camera (camera frame)
            floor = m == 1
            if floor.sum() > 10:  # camera frame -> world: the floor faces world +z
                world = n[floor] @ s.extrinsics[v][:, :3]
                assert np.median(world[:, 2]) > 0.999


def test_multi_view_consistency(job):
    for s in _samples(job):
        rel = np.concatenate([reprojection_errors(s, i, j) for i in range(VIEWS) for j in range(VIEWS) if i != j])
        assert len(rel) > 500
        assert np.median(rel) < 1e-5, np.median(rel)
        assert (rel < 1e-3).mean() > 0.8, (rel < 1e-3).mean()


def test_deterministic(job, tmp_path):
    again = write_partitions(tmp_path, partitions=2, samples=2, views=VIEWS, hw=HW)
    for p in job.partition_ids():
        a = json.loads((job.partition_dir(p) / "manifest.json").read_text())
        b = json.loads((again.partition_dir(p) / "manifest.json").read_text())
        assert a == b  # every file's sha256, contact sheet included


def test_rerun_keeps_complete_partitions(job):
    before = {p: (job.partition_dir(p) / "manifest.json").stat().st_mtime_ns for p in job.partition_ids()}
    write_partitions(job.out, partitions=2, samples=2, views=VIEWS, hw=HW)
    assert before == {p: (job.partition_dir(p) / "manifest.json").stat().st_mtime_ns for p in job.partition_ids()}


def test_never_imports_bpy(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
            "from synthetic import write_partitions\n"
            f"job = write_partitions({str(tmp_path)!r}, partitions=1, samples=1, views=2, hw=(14, 28))\n"
            "from render.dataset import load_partition\n"
            "load_partition(job.partition_dir(0), verify=True)\n"
            "assert 'bpy' not in sys.modules, 'bpy was imported'\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
