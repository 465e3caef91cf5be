"""VGGT training losses on a synthetic, self-consistent batch (no rendering): zero for perfect predictions,
positive otherwise, differentiable, safe on empty masks; the camera loss against the batch's own poses."""
from __future__ import annotations

import math

import pytest
import torch

from training.data import depth_to_points, normalize_sequence
from model.pose import extrinsics_intrinsics_to_pose_encoding
from training.losses import (LossWeights, _robust_mean, camera_loss, depth_loss, point_loss,
                          vggt_loss)

torch.set_num_threads(1)

ALL_ON = LossWeights(camera=5.0, depth=1.0, point=1.0)


def _random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    skew = torch.zeros(n, 3, 3, dtype=torch.float64)
    w = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    return torch.linalg.matrix_exp(skew - skew.transpose(1, 2))


def make_batch(B=2, S=3, H=28, W=42, seed=0) -> dict:
    """Smooth random depth with a hole (no surface) per view, random cameras, points derived from them."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(B * S, 1, 4, 6, generator=g, dtype=torch.float64)
    depths = 1.0 + torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=True)
    depths = depths.reshape(B, S, H, W)
    depths[..., :5, :7] = 0.0  # sky
    K = torch.tensor([[40.0, 0, (W - 1) / 2], [0, 40.0, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    intrinsics = K.expand(B, S, 3, 3).clone()
    extrinsics = torch.cat([_random_rotations(B * S, g), torch.randn(B * S, 3, 1, generator=g, dtype=torch.float64)],
                           dim=-1).reshape(B, S, 3, 4)
    cam_points, world_points, point_masks = depth_to_points(depths, intrinsics, extrinsics)
    seq = normalize_sequence({"depths": depths, "extrinsics": extrinsics, "cam_points": cam_points,
                              "world_points": world_points, "point_masks": point_masks})
    batch = {k: v.float() if v.is_floating_point() else v for k, v in seq.items()}
    batch["intrinsics"] = intrinsics.float()
    batch["images"] = torch.rand(B, S, 3, H, W, generator=g)
    return batch


def perfect_predictions(batch: dict, stages: int = 4) -> dict:
    B, S, _, H, W = batch["images"].shape
    pose = extrinsics_intrinsics_to_pose_encoding(batch["extrinsics"], batch["intrinsics"], (H, W))
    return {"pose_enc_list": [pose.clone().requires_grad_() for _ in range(stages)],
            "depth": batch["depths"][..., None].clone().requires_grad_(),
            "depth_conf": torch.ones(B, S, H, W, requires_grad=True),
            "world_points": batch["world_points"].clone().requires_grad_(),
            "world_points_conf": torch.ones(B, S, H, W, requires_grad=True)}


def perturbed(predictions: dict, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    noisy = lambda t: (t.detach() + 0.1 * torch.randn(t.shape, generator=g)).requires_grad_()  # noqa: E731
    out = {k: noisy(v) for k, v in predictions.items() if k != "pose_enc_list"}
    out["pose_enc_list"] = [noisy(p) for p in predictions["pose_enc_list"]]
    out["depth_conf"] = (1.0 + out["depth_conf"].detach().abs()).requires_grad_()
    out["world_points_conf"] = (1.0 + out["world_points_conf"].detach().abs()).requires_grad_()
    return out


def _leaves(predictions):
    return [*predictions["pose_enc_list"], predictions["depth"], predictions["depth_conf"],
            predictions["world_points"], predictions["world_points_conf"]]


def test_perfect_predictions_cost_nothing():
    batch = make_batch()
    total, parts = vggt_loss(perfect_predictions(batch), batch, ALL_ON)
    assert abs(total.item()) < 1e-5
    assert set(parts) == {"camera", "camera_T", "camera_R", "camera_FL", "depth", "depth_conf", "depth_reg",
                          "depth_grad", "point", "point_conf", "point_reg", "point_normal"}
    assert all(abs(v.item()) < 1e-5 for v in parts.values()), parts


def test_wrong_predictions_cost_something_and_gradients_reach_every_output():
    batch = make_batch()
    predictions = perturbed(perfect_predictions(batch))
    total, parts = vggt_loss(predictions, batch, ALL_ON)
    assert total.item() > 0.1
    assert all(v.item() > 0 for v in parts.values()), parts
    total.backward()
    for leaf in _leaves(predictions):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_gradients_are_finite_at_zero_error():
    batch = make_batch()
    predictions = perfect_predictions(batch)
    total, _ = vggt_loss(predictions, batch, ALL_ON)
    total.backward()
    assert all(torch.isfinite(leaf.grad).all() for leaf in _leaves(predictions))


def test_default_weights_are_five_camera_one_depth():
    batch = make_batch()
    predictions = perturbed(perfect_predictions(batch))
    total, parts = vggt_loss(predictions, batch)
    assert "point" not in parts
    assert total.item() == pytest.approx(5 * parts["camera"].item() + parts["depth"].item(), rel=1e-6)


def test_empty_masks_give_a_finite_zero_that_still_backpropagates():
    batch = make_batch()
    batch["point_masks"] = torch.zeros_like(batch["point_masks"])
    predictions = perturbed(perfect_predictions(batch))
    total, parts = vggt_loss(predictions, batch, ALL_ON)
    assert total.item() == 0.0 and all(v.item() == 0.0 for v in parts.values())
    total.backward()
    assert all(leaf.grad is None or (leaf.grad == 0).all() for leaf in _leaves(predictions))


def test_camera_loss_weights_later_stages_more():
    batch = make_batch()
    exact = perfect_predictions(batch)["pose_enc_list"]
    error = torch.zeros(9)
    error[3] = 0.2  # one quaternion component: camera_R = mean over 4 components -> 0.05 per stage at weight 1
    for wrong_stage, weight in ((3, 1.0), (0, 0.6 ** 3)):
        stages = [p.detach().clone() for p in exact]
        stages[wrong_stage] = stages[wrong_stage] + error
        loss, parts = camera_loss({"pose_enc_list": stages}, batch)
        assert loss.item() == pytest.approx(0.05 * weight / 4, rel=1e-4)
        assert parts["camera_T"].item() < 1e-6 and parts["camera_FL"].item() < 1e-6


def test_camera_translation_error_is_clamped():
    batch = make_batch()
    stages = [p.detach().clone() for p in perfect_predictions(batch, stages=1)["pose_enc_list"]]
    stages[0][..., :3] += 1e6
    _, parts = camera_loss({"pose_enc_list": stages}, batch)
    assert parts["camera_T"].item() == pytest.approx(100.0)


def test_camera_loss_skips_sequences_with_few_points_in_frame_0():
    batch = make_batch()
    stages = [p.detach().clone() for p in perfect_predictions(batch)["pose_enc_list"]]
    for p in stages:
        p[1] += 1.0  # sequence 1 is badly wrong ...
    assert camera_loss({"pose_enc_list": stages}, batch)[0].item() > 0.1
    batch["point_masks"][1, 0] = False
    batch["point_masks"][1, 0, 0, :100] = True  # ... but its first frame sees only 100 points
    assert camera_loss({"pose_enc_list": stages}, batch)[0].item() < 1e-6


def test_depth_gradient_term_ignores_a_constant_offset_and_normals_ignore_scale():
    batch = make_batch()
    predictions = perfect_predictions(batch)
    predictions["depth"] = predictions["depth"].detach() + 0.3
    predictions["world_points"] = predictions["world_points"].detach() * 2.0
    _, depth_parts = depth_loss(predictions, batch)
    _, point_parts = point_loss(predictions, batch)
    assert depth_parts["depth_reg"].item() == pytest.approx(0.3, rel=1e-4)
    assert depth_parts["depth_grad"].item() < 1e-5
    assert point_parts["point_reg"].item() > 0.5
    assert point_parts["point_normal"].item() < 1e-5


def test_confidence_trades_error_against_log_confidence():
    batch = make_batch()
    predictions = perfect_predictions(batch)
    predictions["depth"] = predictions["depth"].detach() + 0.5
    predictions["depth_conf"] = torch.full_like(predictions["depth_conf"], 2.0)
    _, parts = depth_loss(predictions, batch)
    assert parts["depth_conf"].item() == pytest.approx(0.5 * 2.0 - 0.2 * math.log(2.0), rel=1e-4)


def test_robust_mean_drops_the_top_two_percent_and_clamps():
    values = torch.ones(2000)
    values[:40] = 1e6  # 2% wild values
    assert _robust_mean(values).item() == pytest.approx(1.0)
    few = torch.tensor([1.0, 1.0, 1e6, 1.0])  # too few to trim: clamped at 100 instead
    assert _robust_mean(few).item() == pytest.approx(103.0 / 4)
