"""Fine-tuning metrics on inputs whose answers are known by hand: point clouds (accuracy, completeness,
normal consistency), normals from depth, depth errors, relief scores and the anti-spoofing rates."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from finetune.metrics import (acer, depth_metrics, depth_normals, point_metrics, project, relief_score, roc_auc,
                              threshold_at_eer, unproject, voxel_downsample, world_normals)
from training.data import depth_to_points
from training.evaluate import depth_errors

K = np.array([[50.0, 0, 20.5], [0, 55.0, 14.0], [0, 0, 1]])  # non-square image 42 x 28, fx != fy


def grid_plane(n: int = 30, spacing: float = 0.1) -> np.ndarray:
    g = np.arange(n) * spacing
    x, y = np.meshgrid(g, g)
    return np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)


def random_w2c(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    R = Rotation.random(random_state=seed).as_matrix()
    return np.concatenate([R, rng.normal(size=(3, 1))], axis=1)


def plane_depth(normal, offset, hw=(28, 42)) -> np.ndarray:
    """z-depth of the camera-frame plane n . x = offset seen through K (0 where the ray misses it)."""
    v, u = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    z = offset / (rays @ np.asarray(normal, np.float64))
    return np.where(z > 0, z, 0.0)


# ----------------------------------------------------------------------------------- point clouds
def test_identical_clouds_score_zero_and_full_normal_consistency():
    pts = np.random.default_rng(0).normal(size=(500, 3))
    normals = np.random.default_rng(1).normal(size=(500, 3))
    m = point_metrics(pts, pts, normals, -normals)           # sign-free: flipped normals agree fully
    for key in ("acc_mean", "acc_median", "comp_mean", "comp_median", "overall"):
        assert m[key] == 0.0, key
    assert m["nc_mean"] == pytest.approx(1.0) and m["nc_median"] == pytest.approx(1.0)
    assert m["n_pred"] == m["n_gt"] == 500


def test_plane_shifted_along_its_normal_by_delta():
    R = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    gt = grid_plane() @ R.T + [0.3, -1.0, 2.0]
    delta = 0.013                                               # < grid spacing: the match is the twin
    pred = gt + delta * R[:, 2]
    m = point_metrics(pred, gt)
    for key in ("acc_mean", "acc_median", "comp_mean", "comp_median", "overall"):
        assert m[key] == pytest.approx(delta, rel=1e-9), key
    assert math.isnan(m["nc_mean"])                             # no normals given


def test_distances_are_capped_not_dropped():
    gt = grid_plane()
    outliers = np.array([[0.5, 0.5, 10.0], [1.0, 1.0, -7.0]])
    pred = np.concatenate([gt, outliers])
    free = point_metrics(pred, gt)
    capped = point_metrics(pred, gt, max_dist=0.5)
    n = len(pred)
    assert free["acc_mean"] == pytest.approx((10.0 + 7.0) / n)
    assert capped["acc_mean"] == pytest.approx(2 * 0.5 / n)     # each outlier counts max_dist
    assert capped["acc_median"] == 0.0 and capped["comp_mean"] == 0.0
    assert capped["n_pred"] == n                                # nothing dropped


def test_voxel_downsampling_keeps_one_real_point_per_cell_whatever_the_order():
    dense = grid_plane(n=40, spacing=0.025)                      # 40 x 40 points over [0, 1)^2
    kept, _ = voxel_downsample(dense, 0.1)
    assert len(kept) == 100                                      # 10 x 10 cells of side 0.1
    assert set(map(tuple, kept)) <= set(map(tuple, dense))      # real points, not centroids
    shuffled, _ = voxel_downsample(dense[np.random.default_rng(0).permutation(len(dense))], 0.1)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, kept))
    cell = np.array([[0.01, 0.01, 0.0], [0.05, 0.05, 0.0], [0.09, 0.09, 0.0]])
    one, normals = voxel_downsample(cell, 0.1, normals=np.eye(3))
    np.testing.assert_array_equal(one, cell[[1]])               # the one nearest the centre, with its normal
    np.testing.assert_array_equal(normals, np.eye(3)[[1]])
    # A prediction 25x denser (and 0.04 off) on one half, 0.01 off on the other: down-sampled, both halves
    # weigh the same, and the dense half keeps the point above each cell centre.
    gt = grid_plane(n=10, spacing=0.1) + [0.05, 0.05, 0]        # one point at each cell centre
    dense = grid_plane(n=50, spacing=0.02) + [0.01, 0.01, 0.04]
    pred = np.concatenate([dense[dense[:, 0] < 0.5], gt[gt[:, 0] > 0.5] + [0, 0, 0.01]])
    assert point_metrics(pred, gt)["acc_mean"] > 0.04          # the dense half dominates
    m = point_metrics(pred, gt, voxel=0.1)
    assert m["n_pred"] == m["n_gt"] == 100
    assert m["acc_mean"] == pytest.approx((0.04 + 0.01) / 2)


def test_normal_consistency_of_parallel_and_perpendicular_normals():
    pts = grid_plane()
    up, side = np.tile([0, 0, 1.0], (len(pts), 1)), np.tile([3.0, 0, 0], (len(pts), 1))  # unnormalised on purpose
    assert point_metrics(pts + [0, 0, 0.01], pts, up, -up)["nc_mean"] == pytest.approx(1.0)
    perpendicular = point_metrics(pts, pts, side, up)
    assert perpendicular["nc_mean"] == pytest.approx(0.0) and perpendicular["nc_median"] == pytest.approx(0.0)
    half = up.copy()
    half[: len(pts) // 2] = np.nan                              # undefined normals are skipped, not zero
    assert point_metrics(pts, pts, half, up)["nc_mean"] == pytest.approx(1.0)


def test_empty_or_non_finite_inputs_give_nans():
    pts = grid_plane()
    for pred, gt in ((np.zeros((0, 3)), pts), (pts, np.zeros((0, 3))), (np.full((4, 3), np.nan), pts)):
        m = point_metrics(pred, gt, max_dist=1.0, voxel=0.1)
        assert all(math.isnan(m[k]) for k in ("acc_mean", "comp_median", "overall", "nc_mean"))
    assert point_metrics(np.zeros((0, 3)), pts)["n_pred"] == 0
    for d in (np.zeros((5, 7)), np.full((5, 7), np.nan)):       # no surface anywhere
        assert unproject(d, K, np.eye(3, 4)).shape == (0, 3)
        assert np.isnan(depth_normals(d, K)).all()
    assert math.isnan(depth_metrics(np.ones((3, 3)), np.zeros((3, 3)))["abs_rel"])
    assert math.isnan(relief_score(np.zeros((0, 3)))) and math.isnan(relief_score(pts[:5], "quadric"))


# ----------------------------------------------------------------------------------- cameras and normals
def test_unproject_project_round_trip_and_agreement_with_training_points():
    rng = np.random.default_rng(3)
    depth = rng.uniform(1, 4, size=(28, 42))
    depth[3:6, 10:20] = 0                                       # no surface there
    w2c = random_w2c(4)
    pts = unproject(depth, K, w2c)
    assert pts.shape == (int((depth > 0).sum()), 3)
    uv, z = project(pts, K, np.concatenate([w2c, [[0, 0, 0, 1]]]))   # 4x4 accepted as well
    v, u = np.nonzero(depth > 0)
    np.testing.assert_allclose(uv, np.stack([u, v], axis=1), atol=1e-9)
    np.testing.assert_allclose(z, depth[depth > 0], rtol=1e-12)
    _, world, masks = depth_to_points(torch.from_numpy(depth), torch.from_numpy(K), torch.from_numpy(w2c))
    np.testing.assert_allclose(pts, world.numpy()[masks.numpy()], atol=1e-12)
    mask = np.zeros_like(depth, bool)
    mask[:, :5] = True
    assert len(unproject(depth, K, w2c, mask=mask)) == 5 * 28


def test_depth_normals_of_a_plane_are_the_plane_normal_everywhere():
    n = np.array([0.3, -0.4, 1.0])
    n /= np.linalg.norm(n)
    depth = plane_depth(n, 2.0)
    depth[10:14, 15:25] = 0                                     # a hole: its rim uses one-sided differences
    normals = depth_normals(depth, K)
    defined = ~np.isnan(normals[..., 0])
    assert np.array_equal(defined, depth > 0)                  # borders and rims included
    np.testing.assert_allclose(normals[defined], np.tile(-n, (defined.sum(), 1)), atol=1e-9)  # faces the camera
    w2c = random_w2c(5)
    np.testing.assert_allclose(world_normals(normals, w2c)[defined], np.tile(-n @ w2c[:, :3], (defined.sum(), 1)),
                               atol=1e-9)


def test_depth_normals_do_not_bridge_depth_edges():
    """Two fronto-parallel planes at depth 2 and 4: every pixel gets (0, 0, -1), the edge ones too."""
    depth = np.full((20, 30), 2.0)
    depth[:, 15:] = 4.0
    normals = depth_normals(depth, K)
    np.testing.assert_allclose(normals.reshape(-1, 3), np.tile([0, 0, -1.0], (600, 1)), atol=1e-12)
    isolated = np.zeros((5, 5))
    isolated[2, 2] = 1.0                                        # no neighbour: undefined
    assert np.isnan(depth_normals(isolated, K)).all()


# ----------------------------------------------------------------------------------- depth
def test_depth_alignments():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, size=(20, 30))
    valid = np.ones_like(gt, bool)
    scaled = depth_metrics(0.37 * gt, gt, valid)
    assert scaled["abs_rel"] == pytest.approx(0, abs=1e-12) and scaled["delta1"] == 1.0
    affine = (gt - 0.8) / 2.5                                   # right up to scale and shift
    assert depth_metrics(affine, gt, valid)["abs_rel"] > 0.01   # median scaling cannot undo a shift
    fixed = depth_metrics(affine, gt, valid, align="lstsq")
    assert fixed["abs_rel"] == pytest.approx(0, abs=1e-10) and fixed["delta1"] == 1.0
    raw = depth_metrics(1.1 * gt, gt, valid, align="none")
    assert raw["abs_rel"] == pytest.approx(0.1) and raw["delta1"] == 1.0
    assert depth_metrics(1.3 * gt, gt, valid, align="none")["delta1"] == 0.0
    with pytest.raises(ValueError, match="align"):
        depth_metrics(gt, gt, valid, align="mean")


def test_median_alignment_is_training_evaluate_depth_errors():
    rng = np.random.default_rng(1)
    for trial in range(5):
        gt = rng.uniform(0.5, 8, size=(24, 32)).astype(np.float32)
        pred = (gt * rng.uniform(0.2, 3) * rng.lognormal(0, 0.3, size=gt.shape)).astype(np.float32)
        valid = rng.random(gt.shape) > 0.3
        assert depth_metrics(pred, gt, valid) == depth_errors(pred, gt, valid)
    gt[0, 0], pred[0, 1] = 0.0, np.nan                          # never counted, even when marked valid
    keep = np.ones_like(valid)
    keep[0, :2] = False
    assert depth_metrics(pred, gt, np.ones_like(valid)) == depth_errors(pred, gt, keep)


# ----------------------------------------------------------------------------------- relief
def _patch(n: int = 41) -> tuple[np.ndarray, np.ndarray]:
    g = np.linspace(-1, 1, n)
    x, y = np.meshgrid(g, g)
    return x.ravel(), y.ravel()


def _posed(points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    R = Rotation.from_euler("xyz", [30, 10, -70], degrees=True).as_matrix()
    return scale * points @ R.T + [0.2, 1.0, 3.0]


def test_relief_of_planes_caps_cylinders_and_bumps():
    x, y = _patch()
    plane = np.stack([x, y, np.zeros_like(x)], 1)
    cap = np.stack([x, y, np.sqrt(4 - x ** 2 - y ** 2) - 2], 1)           # sphere of radius 2
    theta = 0.5 * x                                                     # a print bent on a cylinder of radius 2
    cylinder = np.stack([2 * np.sin(theta), y, 2 * (1 - np.cos(theta))], 1)
    bump = np.stack([x, y, 0.3 * np.exp(-(x ** 2 + y ** 2) / (2 * 0.2 ** 2))], 1)   # a nose on a plane
    assert relief_score(_posed(plane)) < 1e-12 and relief_score(_posed(plane), "quadric") < 1e-12
    assert relief_score(_posed(cap)) > 0.1
    assert relief_score(_posed(cylinder)) > 0.05
    assert relief_score(_posed(cylinder), "quadric") < 0.05 * relief_score(_posed(cylinder))
    assert relief_score(_posed(bump)) > 0.03 and relief_score(_posed(bump), "quadric") > 0.03
    assert relief_score(_posed(bump), "quadric") > 10 * relief_score(_posed(cylinder), "quadric")
    for model in ("plane", "quadric"):                                  # scale-free, pose-free
        assert relief_score(_posed(bump, scale=250.0), model) == pytest.approx(relief_score(bump, model), rel=1e-9)
    with pytest.raises(ValueError):
        relief_score(plane, "cubic")


def test_trimmed_relief_ignores_outliers():
    x, y = _patch()
    plane = np.stack([x, y, np.zeros_like(x)], 1)
    rng = np.random.default_rng(0)
    hit = rng.choice(len(plane), 80, replace=False)                     # 5 % flying pixels
    noisy = plane.copy()
    noisy[hit, 2] += rng.uniform(0.5, 1.0, size=hit.size)
    assert relief_score(_posed(noisy)) > 0.1
    assert relief_score(_posed(noisy), trim=0.1) < 1e-9
    assert relief_score(_posed(noisy), "quadric", trim=0.1) < 1e-9
    bump = np.stack([x, y, 0.3 * np.exp(-(x ** 2 + y ** 2) / (2 * 0.2 ** 2))], 1)
    assert relief_score(_posed(bump), "quadric", trim=0.02) > 0.01   # trimming a little keeps a nose


# ----------------------------------------------------------------------------------- decisions
def test_roc_auc_extremes_and_ties():
    labels = np.array([1, 1, 1, 0, 0])
    assert roc_auc([5, 4, 3, 2, 1], labels) == 1.0
    assert roc_auc([1, 2, 3, 4, 5], labels) == 0.0
    assert roc_auc([7, 7, 7, 7, 7], labels) == 0.5
    assert roc_auc([3, 1, 2, 2, 0], labels) == pytest.approx((2 + 1 + 1.5) / 6)   # 3>2,3>0 | 1>0 | 2=2,2>0
    assert math.isnan(roc_auc([1, 2], [1, 1]))
    with pytest.raises(ValueError):
        roc_auc([1, 2, 3], [1, 0, -1])


def test_roc_auc_matches_a_brute_force_pair_count():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 12, size=90).astype(float)               # many ties
    labels = rng.random(90) < 0.4
    live, spoof = scores[labels], scores[~labels]
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(live, spoof)]
    assert roc_auc(scores, labels.astype(int)) == pytest.approx(np.mean(pairs), abs=1e-12)


def test_acer_and_eer_threshold_on_a_hand_made_split():
    # live: 0.9, 0.8, 0.4; spoof: 0.1, 0.3, 0.85
    scores = np.array([0.9, 0.8, 0.4, 0.1, 0.3, 0.85])
    labels = np.array([1, 1, 1, 0, 0, 0])
    r = acer(scores, labels, 0.5)                   # the 0.85 attack passes, the 0.4 live is rejected
    assert r == pytest.approx({"apcer": 1 / 3, "bpcer": 1 / 3, "acer": 1 / 3})
    assert acer(scores, labels, 0.85) == pytest.approx({"apcer": 1 / 3, "bpcer": 2 / 3, "acer": 0.5})  # >= is live
    assert acer(scores, labels, -1) == {"apcer": 1.0, "bpcer": 0.0, "acer": 0.5}
    # Midpoints 0.2, 0.35, 0.6, 0.825, 0.875: only 0.6 balances the two rates (1/3 each).
    assert threshold_at_eer(scores, labels) == pytest.approx(0.6)
    separable = threshold_at_eer([3.0, 4.0, 1.0, 2.0], [1, 1, 0, 0])
    assert separable == pytest.approx(2.5) and acer([3.0, 4.0, 1.0, 2.0], [1, 1, 0, 0], separable)["acer"] == 0
    assert math.isnan(acer([1.0], [1], 0.5)["apcer"]) and math.isnan(threshold_at_eer([1.0, 2.0], [0, 0]))
