"""Evaluation metrics on inputs whose answers are known by hand."""
import math

import numpy as np
import pytest

from model.evaluate import camera_errors, depth_errors, identity_cameras, motorcycle_pair


def rot_z(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def test_depth_errors_are_scale_invariant_and_count_outliers():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, size=(20, 30))
    valid = np.ones_like(gt, bool)
    valid[0] = False
    exact = depth_errors(7.0 * gt, gt, valid)                       # right up to scale
    assert exact["abs_rel"] == pytest.approx(0, abs=1e-12) and exact["delta1"] == 1.0
    flat = np.full_like(gt, 3.0)                                     # a wall: the median stays 3 ...
    wrong = flat.copy()
    wrong[5:10] *= 2.0                                               # ... when 5 of 19 valid rows are twice too deep
    err = depth_errors(wrong, flat, valid)
    assert err["delta1"] == pytest.approx(14 / 19)
    assert err["abs_rel"] == pytest.approx(5 / 19)                  # median unchanged: |2d - d| / d = 1
    flat = depth_errors(np.ones_like(gt), np.full_like(gt, 3.0), valid)
    assert flat["abs_rel"] == pytest.approx(0) and flat["delta1"] == 1.0
    assert math.isnan(depth_errors(gt, gt, np.zeros_like(valid))["abs_rel"])


def test_camera_errors_measure_rotation_angle_and_scaled_translation():
    gt = identity_cameras(3)
    gt[1, :, :3], gt[1, :, 3] = rot_z(30), [1.0, 0, 0]
    gt[2, :, :3], gt[2, :, 3] = rot_z(-10), [0, 2.0, 0]
    pred = gt.copy()
    pred[:, :, 3] *= 0.5                                              # half the scale: not an error
    ok = camera_errors(pred, gt)
    assert ok["rot_deg"] == pytest.approx(0, abs=1e-6) and ok["trans_rel"] == pytest.approx(0, abs=1e-12)
    pred[1, :, :3] = rot_z(34)
    assert camera_errors(pred, gt)["rot_deg"] == pytest.approx(2.0)  # (4 + 0) / 2 frames
    base = camera_errors(identity_cameras(3), gt)
    assert base["rot_deg"] == pytest.approx(20.0) and base["trans_rel"] == pytest.approx(1.0)


def test_motorcycle_pair_has_metric_depth_and_the_stereo_baseline():
    pytest.importorskip("skimage")
    images, gt, gt_w2c = motorcycle_pair(126)
    assert images.shape == (2, 3, 84, 126) and 0 <= float(images.min()) and float(images.max()) <= 1
    known = gt[gt > 0]
    assert 0.6 < known.size / gt.size < 1.0                        # ~7 % of the pixels lack ground truth
    # disparities 7..60 px at f = 995 px, B = 193 mm, doffs 31 px: depths between ~2.1 m and ~5 m
    assert 2000 < known.min() < known.max() < 5100
    assert gt_w2c[1, 0, 3] == pytest.approx(-193.001) and np.allclose(gt_w2c[1, :, :3], np.eye(3))
