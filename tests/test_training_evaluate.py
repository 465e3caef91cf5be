"""Evaluation metrics on inputs whose answers are known by hand."""
import math

import numpy as np
import pytest
import torch

from training.evaluate import camera_errors, depth_errors, evaluate_on_sequences, identity_cameras, motorcycle_pair
from model.pose import extrinsics_intrinsics_to_pose_encoding


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


class _Oracle(torch.nn.Module):
    """Returns a fixed answer (the ground truth of the sequence it is shown, or a flat guess)."""

    def __init__(self, answers):
        super().__init__()
        self.answers = iter(answers)

    def forward(self, images):
        return next(self.answers)


def _sequences(n, rng):
    out = []
    for _ in range(n):
        depths = torch.from_numpy(rng.uniform(1, 4, size=(3, 14, 14))).float()
        R = torch.stack([torch.from_numpy(rot_z(a)).float() for a in (0, 10, 25)])
        t = torch.tensor([[0, 0, 0], [0.3, 0, 0], [0.5, 0.1, 0]], dtype=torch.float32)[..., None]
        K = torch.tensor([[20.0, 0, 6.5], [0, 20.0, 6.5], [0, 0, 1]]).expand(3, 3, 3)
        out.append({"images": torch.rand(3, 3, 14, 14), "depths": depths, "point_masks": depths > 0,
                    "extrinsics": torch.cat([R, t], dim=2), "intrinsics": K})
    return out


def test_evaluation_on_sequences_scores_a_perfect_and_a_flat_predictor():
    seqs = _sequences(4, np.random.default_rng(1))
    perfect = [{"depth": s["depths"][None, ..., None],
                "pose_enc": extrinsics_intrinsics_to_pose_encoding(s["extrinsics"][None], s["intrinsics"][None], (14, 14))}
               for s in seqs]
    res = evaluate_on_sequences(_Oracle(perfect), seqs)
    assert res["model"]["abs_rel"] == pytest.approx(0, abs=1e-6) and res["model"]["delta1"] == 1.0
    assert res["model"]["rot_deg"] == pytest.approx(0, abs=1e-2) and res["model"]["trans_rel"] == pytest.approx(0, abs=1e-4)
    assert res["baseline"]["rot_deg"] == pytest.approx((10 + 25) / 2)
    assert res["model"]["abs_rel_wins"] == 4 and res["model"]["delta1_wins"] == 4 and res["model"]["sequences"] == 4

    flat = [{"depth": torch.full((1, 3, 14, 14, 1), 2.0), "pose_enc": p["pose_enc"]} for p in perfect]
    res = evaluate_on_sequences(_Oracle(flat), seqs)
    assert res["model"]["abs_rel"] == pytest.approx(res["baseline"]["abs_rel"])
    assert res["model"]["abs_rel_wins"] == 0 and res["model"]["delta1_wins"] == 0   # a tie is not a win


def test_relief_change_ignores_scale_and_sees_shape():
    from training.evaluate import relief_change

    rng = np.random.default_rng(0)
    depth = np.exp(rng.normal(0, 0.3, (20, 30)))
    valid = rng.random((20, 30)) > 0.2
    assert relief_change(depth, 2.5 * depth, valid) == pytest.approx(0.0, abs=1e-12)   # a scale is no change
    assert relief_change(depth, np.full_like(depth, 3.0), valid) == pytest.approx(1.0)  # a flat map has no shape left
    flipped = np.exp(-np.log(depth))                                                  # the relief inverted
    assert relief_change(depth, flipped, valid) == pytest.approx(2.0)
    assert np.isnan(relief_change(np.ones((4, 4)), depth[:4, :4], np.ones((4, 4), bool)))  # no relief to compare with
