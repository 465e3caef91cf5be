"""Evaluation of a VGGT on held-out renders and on a real stereo pair, beside trivial baselines.

Depth: AbsRel = mean |s d̂ - d| / d and δ<1.25 = share of pixels with max(s d̂ / d, d / s d̂) < 1.25, with
s = median(d) / median(d̂) per image ("median scaling": the model's scale is arbitrary). The constant-
depth baseline predicts the same depth everywhere, so after median scaling it predicts each image's
median depth.
Cameras (frame 0 is the reference in both prediction and ground truth): rotation error = angle of
R̂_i R_iᵀ in degrees; translation error = ‖s t̂_i − t_i‖ / ‖t_i‖ with the least-squares s per sequence;
both over frames i ≥ 1. The baseline puts every camera at frame 0's pose (error = the true rotation
angle, translation error 1).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from model.pose import pose_encoding_to_extrinsics_intrinsics

# Middlebury 2014 "Motorcycle" as shipped (4x down-sampled) by scikit-image; calibration from the
# docstring of skimage.data.stereo_motorcycle.
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_DOFFS_PX = 31.086        # difference of the two principal points' x
MOTORCYCLE_BASELINE_MM = 193.001


def depth_errors(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """AbsRel and δ<1.25 of one depth map after median scaling."""
    p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    if p.size == 0:
        return {"abs_rel": math.nan, "delta1": math.nan}
    p = p * np.median(g) / max(np.median(p), 1e-12)
    ratio = np.maximum(p / g, g / np.maximum(p, 1e-12))
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "delta1": float(np.mean(ratio < 1.25))}


def camera_errors(pred_w2c: np.ndarray, gt_w2c: np.ndarray) -> dict[str, float]:
    """Mean rotation error (degrees) and scale-aligned relative translation error over frames 1..S-1 of
    one sequence; both sets of cameras must have frame 0 at the identity."""
    if len(gt_w2c) < 2:
        return {"rot_deg": math.nan, "trans_rel": math.nan}
    R_err = pred_w2c[1:, :, :3] @ np.transpose(gt_w2c[1:, :, :3], (0, 2, 1))
    cos = np.clip((np.trace(R_err, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    t_pred, t_gt = pred_w2c[1:, :, 3].reshape(-1), gt_w2c[1:, :, 3].reshape(-1)
    scale = float(t_pred @ t_gt) / max(float(t_pred @ t_pred), 1e-12)
    trans = np.linalg.norm((scale * t_pred - t_gt).reshape(-1, 3), axis=1) / np.maximum(
        np.linalg.norm(t_gt.reshape(-1, 3), axis=1), 1e-12)
    return {"rot_deg": float(np.degrees(np.arccos(cos)).mean()), "trans_rel": float(trans.mean())}


def identity_cameras(n: int) -> np.ndarray:
    return np.tile(np.eye(3, 4), (n, 1, 1))


def _predict(model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One sequence's predicted depth [S,H,W] and world-to-camera cameras [S,3,4] (frame 0 = reference)."""
    out = model(images)
    pred_w2c, _ = pose_encoding_to_extrinsics_intrinsics(out["pose_enc"][0].cpu().double(), images.shape[-2:])
    return out["depth"][0, ..., 0].cpu().numpy(), pred_w2c.numpy()


def _sequence_row(depth: np.ndarray, cams: np.ndarray, seq: dict) -> dict[str, float]:
    """Depth metrics (mean over views) and camera metrics of one sequence's prediction."""
    gt, valid = seq["depths"].numpy(), seq["point_masks"].numpy()
    per_view = [depth_errors(depth[v], gt[v], valid[v]) for v in range(len(gt))]
    return {"abs_rel": np.nanmean([r["abs_rel"] for r in per_view]),
            "delta1": np.nanmean([r["delta1"] for r in per_view]),
            **camera_errors(cams, seq["extrinsics"].double().numpy())}


def _means(rows: list[dict]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} | {"sequences": len(rows)}


def _indices(dataset, max_sequences: int | None) -> list[int]:
    """Up to ``max_sequences`` sequence indices spread evenly over the dataset (all by default)."""
    n = len(dataset)
    if max_sequences is None or max_sequences >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, max_sequences).round()})


@torch.no_grad()
def evaluate_on_sequences(model, dataset, device="cpu", max_sequences: int | None = None) -> dict[str, dict]:
    """Mean metrics of the model and of the baselines over a training.data.SynthSequences dataset."""
    model.eval().to(device)
    rows = {"model": [], "baseline": []}
    for i in _indices(dataset, max_sequences):
        seq = dataset[i]
        depth, cams = _predict(model, seq["images"].to(device))
        rows["model"].append(_sequence_row(depth, cams, seq))
        rows["baseline"].append(_sequence_row(np.ones_like(depth), identity_cameras(len(depth)), seq))
    result = {who: _means(rs) for who, rs in rows.items()}
    # Paired view of the same numbers: on how many sequences the model's depth beats the baseline's, so a
    # mean difference carried by a few sequences is told apart from a consistent one.
    pairs = list(zip(rows["model"], rows["baseline"]))
    result["model"]["abs_rel_wins"] = int(sum(m["abs_rel"] < b["abs_rel"] for m, b in pairs))
    result["model"]["delta1_wins"] = int(sum(m["delta1"] > b["delta1"] for m, b in pairs))
    return result


def relief_change(on: np.ndarray, off: np.ndarray, valid: np.ndarray) -> float:
    """How much of a predicted depth map's shape changes between two predictions, scale-free:
    RMS(l_off - l_on) / RMS(l_on) over ``valid`` pixels, with l = log depth minus its mean (a global scale
    change counts for nothing). 0: the same shape; ~1: a different one, or none left."""
    a, b = np.log(np.maximum(on[valid], 1e-12)), np.log(np.maximum(off[valid], 1e-12))
    a, b = a - a.mean(), b - b.mean()
    spread = float(np.sqrt(np.mean(a ** 2)))
    return float(np.sqrt(np.mean((b - a) ** 2))) / spread if spread > 0 else math.nan


@torch.no_grad()
def blocks_off_effect(model, dataset, device="cpu", max_sequences: int | None = 16) -> dict:
    """What the aggregator blocks contribute: each sequence predicted with the blocks on and with every
    frame/global block switched off (model.probes.aggregator_blocks_off).

    ``depth_change``: median over sequences of the median over valid pixels of |d_off - d_on| / d_on
    (raw depths, before any scaling); ``relief_change``: median over views of :func:`relief_change`, the
    share of the predicted depth map's shape that the blocks make; ``pose_change_deg``: mean angle
    between the on and off predicted
    rotations (frames >= 1); ``on`` / ``off``: the usual metrics of both, ``constant``: those of constant
    depth and identity cameras on the same sequences (the control); ``branch_ratio``: per block,
    RMS(gamma * branch) / RMS(block input) in the first sequence's forward (model.probes.BranchRMS);
    ``gamma``: mean |gamma| per block and LayerScale."""
    from model.probes import BranchRMS, aggregator_blocks_off, layerscale_stats

    model.eval().to(device)
    rows, changes, relief, pose_changes, ratios = {"on": [], "off": [], "constant": []}, [], [], [], None
    for i in _indices(dataset, max_sequences):
        seq = dataset[i]
        images = seq["images"].to(device)
        if ratios is None:
            with BranchRMS(model) as rms:
                depth_on, cams_on = _predict(model, images)
            ratios = rms.ratios()
        else:
            depth_on, cams_on = _predict(model, images)
        with aggregator_blocks_off(model):
            depth_off, cams_off = _predict(model, images)
        rows["on"].append(_sequence_row(depth_on, cams_on, seq))
        rows["off"].append(_sequence_row(depth_off, cams_off, seq))
        rows["constant"].append(_sequence_row(np.ones_like(depth_on), identity_cameras(len(depth_on)), seq))
        valid = seq["point_masks"].numpy()
        if valid.any():
            changes.append(float(np.median(np.abs(depth_off - depth_on)[valid] / np.maximum(depth_on[valid], 1e-12))))
        relief.extend(relief_change(depth_on[v], depth_off[v], valid[v]) for v in range(len(valid)) if valid[v].any())
        if len(cams_on) > 1:
            pose_changes.append(camera_errors(cams_off, cams_on)["rot_deg"])
    return {"depth_change": float(np.median(changes)) if changes else math.nan,
            "relief_change": float(np.nanmedian(relief)) if relief else math.nan,
            "pose_change_deg": float(np.mean(pose_changes)) if pose_changes else math.nan,
            **{who: _means(rs) for who, rs in rows.items()},
            "branch_ratio": ratios or {}, "gamma": layerscale_stats(model)}


def motorcycle_pair(width: int, patch: int = 14):
    """The Middlebury motorcycle pair resized to ``width`` (height rounded to the patch size), with
    ground-truth depth (mm) of the left view at that size (0 where unknown), and the true relative pose
    of the right camera (rectified: same rotation, 193 mm to the right)."""
    from skimage.data import stereo_motorcycle

    left, right, disparity = stereo_motorcycle()
    h0, w0 = disparity.shape
    height = max(patch, round(h0 * width / w0 / patch) * patch)
    depth = np.where(np.isfinite(disparity),
                     MOTORCYCLE_BASELINE_MM * MOTORCYCLE_FOCAL_PX / (disparity + MOTORCYCLE_DOFFS_PX), 0.0)
    images = torch.from_numpy(np.stack([left, right])).permute(0, 3, 1, 2).float() / 255.0
    images = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    # Nearest sampling of the depth keeps unknown pixels unknown instead of blending them in.
    rows = ((np.arange(height) + 0.5) * h0 / height).astype(int)
    cols = ((np.arange(width) + 0.5) * w0 / width).astype(int)
    gt = depth[rows][:, cols].astype(np.float32)
    gt_w2c = identity_cameras(2)
    gt_w2c[1, 0, 3] = -MOTORCYCLE_BASELINE_MM  # t = -R C with the right camera centre at (+B, 0, 0)
    return images.clamp(0, 1), gt, gt_w2c


def motorcycle_sequence(width: int, patch: int = 14) -> dict:
    """The motorcycle pair as one sequence of the evaluation's dataset format (images, depths,
    point_masks, extrinsics), for the functions that take a dataset (e.g. blocks_off_effect)."""
    images, gt, gt_w2c = motorcycle_pair(width, patch)
    depths = np.zeros((2, *gt.shape), np.float32)
    depths[0] = gt  # only the left view has ground truth
    return {"images": images, "depths": torch.from_numpy(depths), "point_masks": torch.from_numpy(depths > 0),
            "extrinsics": torch.from_numpy(gt_w2c)}


@torch.no_grad()
def evaluate_on_motorcycle(model, width: int, device="cpu") -> dict[str, dict]:
    images, gt, gt_w2c = motorcycle_pair(width, model.config.patch_size)
    model.eval().to(device)
    out = model(images.to(device))
    pred_w2c, _ = pose_encoding_to_extrinsics_intrinsics(out["pose_enc"][0].cpu().double(), images.shape[-2:])
    depth = out["depth"][0, 0, ..., 0].cpu().numpy()
    valid = gt > 0
    pred_t, gt_t = pred_w2c.numpy()[1, :, 3], gt_w2c[1, :, 3]
    angle = math.degrees(math.acos(np.clip(pred_t @ gt_t / max(np.linalg.norm(pred_t) * np.linalg.norm(gt_t), 1e-12),
                                           -1, 1)))
    model_row = depth_errors(depth, gt, valid) | camera_errors(pred_w2c.numpy(), gt_w2c) | {"trans_angle_deg": angle}
    base_row = depth_errors(np.ones_like(gt), gt, valid) | camera_errors(identity_cameras(2), gt_w2c)
    return {"model": model_row, "baseline": base_row,
            "size": {"height": int(images.shape[-2]), "width": int(images.shape[-1]), "gt_pixels": int(valid.sum())}}
