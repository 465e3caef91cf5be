"""Rendered partitions as training sequences: keys, shapes and dtypes, frame choice, resizing with
consistent intrinsics, the official normalisation, and the loader. Tiny partitions (56x42 px) written
without Blender (tests/synthetic.py)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from synthetic import write_partitions

from training.batches import make_loader
from training.data import (SynthSequences, _resize_views, depth_to_points, find_partitions,
                        normalize_sequence)
from render.dataset import load_partition

torch.set_num_threads(1)

NATIVE_HW = (42, 56)  # multiples of 14, non-square


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Two partitions of 2 samples x 3 views, rendered at 56x42."""
    return write_partitions(tmp_path_factory.mktemp("synth"), partitions=2, samples=2, views=3, hw=NATIVE_HW)


@pytest.fixture(scope="module")
def partitions(synth):
    return find_partitions(synth.root)


def test_find_partitions_lists_complete_ones_only(synth, tmp_path):
    shutil.copytree(synth.root, tmp_path / "mixed")
    (tmp_path / "mixed" / "p001" / "manifest.json").unlink()  # as if still rendering
    assert find_partitions(synth.root) == [synth.partition_dir(0), synth.partition_dir(1)]
    assert find_partitions(tmp_path) == [tmp_path / "mixed" / "p000"]
    with pytest.raises(FileNotFoundError):
        find_partitions(tmp_path / "missing")


def test_sequence_keys_shapes_and_dtypes(partitions):
    H, W, S = 28, 42, 2
    ds = SynthSequences(partitions, num_frames=S, resolution=(H, W), extras=True)
    assert len(ds) == 4
    seq = ds[3]
    expected = {"images": ((S, 3, H, W), torch.float32), "depths": ((S, H, W), torch.float32),
                "extrinsics": ((S, 3, 4), torch.float32), "intrinsics": ((S, 3, 3), torch.float32),
                "cam_points": ((S, H, W, 3), torch.float32), "world_points": ((S, H, W, 3), torch.float32),
                "point_masks": ((S, H, W), torch.bool), "normals": ((S, H, W, 3), torch.float32),
                "instance_masks": ((S, H, W), torch.int32), "ids": ((S,), torch.int64)}
    assert set(seq) == set(expected) | {"seq_name"}
    for key, (shape, dtype) in expected.items():
        assert tuple(seq[key].shape) == shape and seq[key].dtype == dtype, key
    assert seq["seq_name"] == "mixed/p001/s0001"
    plain = SynthSequences(partitions, num_frames=S, resolution=(H, W))[3]   # no extras: the rest is identical
    assert set(plain) == set(seq) - {"normals", "instance_masks"}
    assert all(torch.equal(plain[k], seq[k]) for k in plain if k != "seq_name")
    assert 0.0 <= seq["images"].min() and seq["images"].max() <= 1.0
    assert torch.equal(seq["point_masks"], seq["depths"] > 1e-8)
    assert seq["point_masks"].float().mean() > 0.5
    assert (seq["cam_points"][~seq["point_masks"]] == 0).all() and (seq["world_points"][~seq["point_masks"]] == 0).all()


def test_native_resolution_keeps_the_rendered_pixels(partitions):
    seq = SynthSequences(partitions, num_frames=3, normalize=False)[0]
    sample = load_partition(partitions[0]).samples[0]
    ids = seq["ids"].numpy()
    assert sorted(ids) == [0, 1, 2]
    assert torch.equal(seq["images"], torch.from_numpy(sample.images[ids].transpose(0, 3, 1, 2) / 255.0).float())
    assert torch.equal(seq["depths"], torch.from_numpy(sample.depths[ids]))
    assert torch.allclose(seq["extrinsics"].double(), torch.from_numpy(sample.extrinsics[ids]))


def test_frame_choice_is_deterministic_and_depends_on_the_seed(partitions):
    ids = lambda seed: [SynthSequences(partitions, 2, seed=seed)[i]["ids"].tolist() for i in range(4)]  # noqa: E731
    assert ids(0) == ids(0)
    assert any(ids(0) != ids(s) for s in (1, 2, 3))
    a, b = SynthSequences(partitions, 2, seed=5)[2], SynthSequences(partitions, 2, seed=5)[2]
    assert all(torch.equal(a[k], b[k]) for k in a if k != "seq_name")


def test_invalid_settings_fail_clearly(partitions, tmp_path):
    with pytest.raises(ValueError, match="3 views, cannot pick num_frames=4"):
        SynthSequences(partitions, num_frames=4)
    with pytest.raises(ValueError, match="multiples of the patch size 14"):
        SynthSequences(partitions, num_frames=2, resolution=(30, 42))
    job = write_partitions(tmp_path, partitions=1, samples=1, views=2, hw=(40, 48), attribute="lighting")
    with pytest.raises(ValueError, match=r"rendered size \(H, W\) \(40, 48\).*pass a resolution"):
        SynthSequences([job.partition_dir(0)], num_frames=2)
    assert SynthSequences([job.partition_dir(0)], num_frames=2, resolution=28)[0]["images"].shape == (2, 3, 28, 28)
    with pytest.raises(ValueError, match="no partitions"):
        SynthSequences([], num_frames=2)


def test_normalisation_puts_camera_0_at_the_origin_with_unit_mean_point_distance(partitions):
    for seq in SynthSequences(partitions, num_frames=3):
        E, mask = seq["extrinsics"].double(), seq["point_masks"]
        assert torch.allclose(E[0], torch.eye(3, 4, dtype=torch.float64), atol=1e-6)
        R = E[:, :, :3]
        assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-5)
        assert seq["world_points"][mask].norm(dim=-1).mean().item() == pytest.approx(1.0, abs=1e-5)
        # camera 0's frame is the world frame now
        assert torch.allclose(seq["world_points"][0], seq["cam_points"][0], atol=1e-5)


def _project(points, K, E):
    """World points [..., 3] -> pixel coordinates (u, v) and z-depth in the camera (K, E)."""
    cam = points @ E[:3, :3].T + E[:3, 3]
    return cam[..., 0] / cam[..., 2] * K[0, 0] + K[0, 2], cam[..., 1] / cam[..., 2] * K[1, 1] + K[1, 2], cam[..., 2]


def test_world_points_reproject_onto_their_pixels_in_every_view(partitions):
    ds = SynthSequences(partitions, num_frames=3, resolution=(28, 42))
    for seq in ds:
        H, W = seq["depths"].shape[1:]
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
        for i in range(3):
            mask = seq["point_masks"][i]
            pu, pv, z = _project(seq["world_points"][i].double(), seq["intrinsics"][i].double(),
                                 seq["extrinsics"][i].double())
            assert torch.allclose(pu[mask], u[mask], atol=1e-3) and torch.allclose(pv[mask], v[mask], atol=1e-3)
            assert torch.allclose(z[mask], seq["depths"][i][mask].double(), rtol=1e-4)


def test_resized_intrinsics_agree_with_the_original_camera(partitions):
    """A resized pixel (u, v) covers the original image around ((u + 0.5) / s - 0.5, ...). Its back-projected
    point must project there in the original view (whatever its depth), and its depth must be copied from
    an original pixel within half a pixel of it. Shifting the principal point wrongly (cx * s instead of
    (cx + 0.5) s - 0.5) would miss by 0.25 px at this scale."""
    H, W = 28, 42  # scales 2/3 and 3/4 from 42x56
    resized = SynthSequences(partitions, num_frames=3, resolution=(H, W), normalize=False)
    native = SynthSequences(partitions, num_frames=3, normalize=False)
    sy, sx = H / NATIVE_HW[0], W / NATIVE_HW[1]
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    centre_u, centre_v = (u + 0.5) / sx - 0.5, (v + 0.5) / sy - 0.5
    for small, full in zip(resized, native):
        assert torch.equal(small["ids"], full["ids"])
        for i in range(3):
            mask = small["point_masks"][i]
            pu, pv, _ = _project(small["world_points"][i].double(), full["intrinsics"][i].double(),
                                 full["extrinsics"][i].double())
            assert (pu - centre_u)[mask].abs().max() < 1e-4 and (pv - centre_v)[mask].abs().max() < 1e-4
            # nearest original pixel; at an exact tie either neighbour is as near
            copied = torch.zeros(H, W, dtype=torch.bool)
            for src_v in ((centre_v - 0.5).ceil(), (centre_v + 0.5).floor()):
                for src_u in ((centre_u - 0.5).ceil(), (centre_u + 0.5).floor()):
                    copied |= small["depths"][i] == full["depths"][i][src_v.long(), src_u.long()]
            assert copied.all()


def test_area_resized_image_and_intrinsics_stay_aligned():
    """A small bright blob at a 3D point's projection: after resizing, the blob's centroid is where the
    resized intrinsics project the point (to a few hundredths of a pixel)."""
    H, W, new_hw = 84, 112, (56, 70)
    K = np.array([[[90.0, 0, W / 2 - 0.5], [0, 90.0, H / 2 - 0.5], [0, 0, 1]]])
    point = np.array([0.21, -0.13, 2.0])
    u0, v0 = K[0, 0, 0] * point[0] / point[2] + K[0, 0, 2], K[0, 1, 1] * point[1] / point[2] + K[0, 1, 2]
    v, u = np.mgrid[0:H, 0:W]
    blob = np.exp(-((u - u0) ** 2 + (v - v0) ** 2) / (2 * 3.0 ** 2))
    image = np.repeat((255 * blob).astype(np.float32)[None, ..., None], 3, axis=-1)
    zeros = np.zeros((1, H, W), np.float32)
    images, _, K_new, _ = _resize_views(image, zeros, K, new_hw)
    weights = images[0, ..., 0].astype(np.float64)
    vv, uu = np.mgrid[0:new_hw[0], 0:new_hw[1]]
    centroid = (weights * uu).sum() / weights.sum(), (weights * vv).sum() / weights.sum()
    expected = K_new[0, 0, 0] * point[0] / point[2] + K_new[0, 0, 2], K_new[0, 1, 1] * point[1] / point[2] + K_new[0, 1, 2]
    assert np.allclose(centroid, expected, atol=0.03), (centroid, expected)


def test_normalize_sequence_works_on_batches_and_is_idempotent(partitions):
    raw = [SynthSequences(partitions, num_frames=3, normalize=False)[i] for i in range(2)]
    keys = ("depths", "extrinsics", "cam_points", "world_points", "point_masks")
    batch = {k: torch.stack([r[k] for r in raw]).double() if k != "point_masks" else torch.stack([r[k] for r in raw])
             for k in keys}
    batched = normalize_sequence(batch)
    for b, seq in enumerate(raw):
        single = normalize_sequence({k: seq[k].double() if k != "point_masks" else seq[k] for k in keys})
        for k in keys:
            assert torch.allclose(batched[k][b], single[k], atol=1e-9), k
    again = normalize_sequence(batched)
    for k in keys:
        assert torch.allclose(again[k], batched[k], atol=1e-6), k


def test_normalize_sequence_keeps_an_empty_sequence_finite():
    depths = torch.zeros(2, 14, 14, dtype=torch.float64)
    E = torch.eye(3, 4, dtype=torch.float64).expand(2, 3, 4).clone()
    E[1, :, 3] = torch.tensor([1.0, 2.0, 3.0])
    K = torch.tensor([[10.0, 0, 6.5], [0, 10.0, 6.5], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    cam, world, mask = depth_to_points(depths, K, E)
    out = normalize_sequence({"depths": depths, "extrinsics": E, "cam_points": cam, "world_points": world,
                              "point_masks": mask})
    assert all(torch.isfinite(v).all() for v in out.values())
    assert torch.equal(out["extrinsics"], E)  # scale 1 when there is nothing to measure


def test_color_jitter_is_off_by_default_deterministic_and_leaves_geometry_alone(partitions):
    plain = SynthSequences(partitions, num_frames=2)[1]
    jittered = SynthSequences(partitions, num_frames=2, color_jitter=0.4)[1]
    again = SynthSequences(partitions, num_frames=2, color_jitter=0.4)[1]
    assert not torch.equal(plain["images"], jittered["images"])
    assert torch.equal(jittered["images"], again["images"])
    assert 0.0 <= jittered["images"].min() and jittered["images"].max() <= 1.0
    for k in ("ids", "depths", "extrinsics", "world_points"):
        assert torch.equal(plain[k], jittered[k])


def test_loader_stacks_sequences_into_batches(partitions):
    loader = make_loader(SynthSequences(partitions, num_frames=2, resolution=28), batch_size=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch["images"].shape == (2, 2, 3, 28, 28) and batch["world_points"].shape == (2, 2, 28, 28, 3)
    assert batch["extrinsics"].shape == (2, 2, 3, 4) and batch["point_masks"].dtype == torch.bool
    assert batch["seq_name"] == ["mixed/p000/s0000", "mixed/p000/s0001"]


def _cross_view_error(seq) -> float:
    """Median relative depth disagreement when view 0's points are projected into views 1 and 2 and
    compared with those views' own depth at the nearest pixel (occluded points are the tail, not the
    median). Small only when the cameras and the depth maps describe one scene."""
    errors = []
    for j in (1, 2):
        H, W = seq["depths"].shape[1:]
        pts = seq["world_points"][0][seq["point_masks"][0]].double()
        pu, pv, z = _project(pts, seq["intrinsics"][j].double(), seq["extrinsics"][j].double())
        iu, iv = pu.round().long(), pv.round().long()
        inside = (iu >= 0) & (iu < W) & (iv >= 0) & (iv < H) & (z > 0)
        seen = seq["depths"][j].double()[iv[inside], iu[inside]]
        ok = seen > 0
        errors.append(((z[inside][ok] - seen[ok]).abs() / seen[ok]))
    return float(torch.cat(errors).median())


def test_flipped_sequence_is_the_mirrored_scene(partitions):
    """flip=1: every view mirrored left-right, world points the reflection of the unflipped ones (camera-0
    frame, S = diag(-1, 1, 1)) pixel for pixel, cameras [S R S | S t] and still proper rotations, and the
    views still agree with each other."""
    plain = SynthSequences(partitions, num_frames=3, extras=True)
    flipped = SynthSequences(partitions, num_frames=3, extras=True, flip=1.0)
    S = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    for a, b in zip(plain, flipped):
        assert torch.equal(a["ids"], b["ids"])
        assert torch.equal(b["images"], a["images"].flip(-1)) and torch.equal(b["depths"], a["depths"].flip(-1))
        assert torch.allclose(b["world_points"], a["world_points"].flip(-2) @ S, atol=1e-5)
        assert torch.allclose(b["extrinsics"][:, :, :3], S @ a["extrinsics"][:, :, :3] @ S, atol=1e-6)
        assert torch.allclose(torch.linalg.det(b["extrinsics"][:, :, :3]), torch.ones(3), atol=1e-5)
        assert torch.allclose(b["normals"], a["normals"].flip(-2) @ S)
        assert _cross_view_error(b) == pytest.approx(_cross_view_error(a), abs=1e-4)
    # the flipped views with the unflipped cameras do not describe one scene
    good = np.mean([_cross_view_error(b) for b in flipped])
    wrong = np.mean([_cross_view_error(dict(b, extrinsics=a["extrinsics"])) for a, b in zip(plain, flipped)])
    assert wrong > 3 * good
    with pytest.raises(ValueError, match="flip must be a probability"):
        SynthSequences(partitions, num_frames=3, flip=1.5)


def test_cropped_sequence_keeps_every_view_consistent(partitions):
    """crop: one window per sequence, rescaled to the output size; the intrinsics follow, so each view's
    points project onto their pixels and the views agree with each other as well as uncropped ones do.
    Without the principal-point shift they would not."""
    ds = SynthSequences(partitions, num_frames=3, resolution=(28, 42), crop=0.5, seed=3)
    plain = SynthSequences(partitions, num_frames=3, resolution=(28, 42), seed=3)
    errors, refs, broken = [], [], []
    for seq, ref in zip(ds, plain):
        assert seq["depths"].shape == ref["depths"].shape
        assert not torch.equal(seq["images"], ref["images"])               # a real window, not the whole view
        errors.append(_cross_view_error(seq))
        refs.append(_cross_view_error(ref))
        shifted = dict(seq, intrinsics=seq["intrinsics"].clone())
        shifted["intrinsics"][1:, 0, 2] += 3.0                             # a principal point 3 px off
        broken.append(_cross_view_error(shifted))
    assert np.mean(errors) <= 1.5 * np.mean(refs) and np.mean(broken) > 3 * np.mean(errors)
    again = SynthSequences(partitions, num_frames=3, resolution=(28, 42), crop=0.5, seed=3)
    assert torch.equal(again[1]["images"], ds[1]["images"])               # deterministic per (seed, index)
