"""VGGT training losses: the official recipe's terms and weights (docs/model.md, "Training"), written
independently from its description.

    total, parts = vggt_loss(predictions, batch)          # 5 camera + 1 depth (+ point, off by default)

``predictions``: the model's dict (pose_enc_list: list of [B,S,9], depth [B,S,H,W,1], depth_conf [B,S,H,W],
world_points [B,S,H,W,3], world_points_conf [B,S,H,W]). ``batch``: training.data's normalised batch.
Each loss returns ``(loss, parts)``: a differentiable scalar and a dict of detached scalars for logging.
Empty masks give a zero loss that is still connected to the graph (so ``backward`` works), never 0/0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.pose import extrinsics_intrinsics_to_pose_encoding


@dataclass(frozen=True)
class LossWeights:
    """Official weights. The point loss (weight 1.0 when enabled) is off in the official fine-tuning recipe."""
    camera: float = 5.0
    depth: float = 1.0
    point: float = 0.0


def vggt_loss(predictions: dict, batch: dict, weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the camera, depth and (if its weight is non-zero) point losses."""
    terms = {"camera": camera_loss, "depth": depth_loss, "point": point_loss}
    total, parts = 0.0, {}
    for name, loss_fn in terms.items():
        weight = getattr(weights, name)
        if weight == 0:
            continue
        loss, sub_parts = loss_fn(predictions, batch)
        total = total + weight * loss
        parts[name] = loss.detach()
        parts.update(sub_parts)
    if not parts:
        raise ValueError("all loss weights are zero")
    return total, parts


def camera_loss(predictions: dict, batch: dict, stage_decay: float = 0.6, translation_clamp: float = 100.0,
                min_valid_points: int = 100) -> tuple[torch.Tensor, dict]:
    """L1 between every refinement stage's pose encoding and the ground truth's: translation (per element
    clamped at ``translation_clamp``) + rotation quaternion + 0.5 * field of view. Stage i of n weighs
    ``stage_decay ** (n - 1 - i)`` (the last stage most) and the weighted stages are averaged. Sequences
    whose frame 0 sees at most ``min_valid_points`` surface points are skipped: their normalisation scale,
    and so their ground-truth translation, is unreliable."""
    stages = predictions["pose_enc_list"]
    image_hw = batch["images"].shape[-2:]
    # a batch may carry its targets as pose encodings already (mining.plant's teacher targets)
    target = batch["pose_enc"].float() if "pose_enc" in batch else \
        extrinsics_intrinsics_to_pose_encoding(batch["extrinsics"].float(), batch["intrinsics"].float(), image_hw)
    usable = batch["point_masks"][:, 0].flatten(1).sum(-1) > min_valid_points
    if not usable.any():
        zero = _zero_like_graph(stages[-1])
        return zero, {"camera_T": zero.detach(), "camera_R": zero.detach(), "camera_FL": zero.detach()}
    target = target[usable]
    sums = {"camera_T": 0.0, "camera_R": 0.0, "camera_FL": 0.0}
    n = len(stages)
    for i, stage in enumerate(stages):
        weight = stage_decay ** (n - 1 - i)
        diff = (stage.float()[usable] - target).abs()
        sums["camera_T"] = sums["camera_T"] + weight * diff[..., :3].clamp(max=translation_clamp).mean()
        sums["camera_R"] = sums["camera_R"] + weight * diff[..., 3:7].mean()
        sums["camera_FL"] = sums["camera_FL"] + weight * diff[..., 7:].mean()
    parts = {k: v / n for k, v in sums.items()}
    loss = parts["camera_T"] + parts["camera_R"] + 0.5 * parts["camera_FL"]
    return loss, {k: v.detach() for k, v in parts.items()}


def depth_loss(predictions: dict, batch: dict, gamma: float = 1.0, alpha: float = 0.2,
               grad_scales: int = 4) -> tuple[torch.Tensor, dict]:
    """Confidence-weighted depth regression + plain regression + multi-scale gradient matching."""
    pred = predictions["depth"].float()
    target = batch["depths"].float()[..., None]
    mask = batch["point_masks"]
    conf_term, reg_term = _regression_terms(pred, target, predictions["depth_conf"].float(), mask, gamma, alpha)
    grad_term = _gradient_term(pred, target, mask, grad_scales)
    parts = {"depth_conf": conf_term, "depth_reg": reg_term, "depth_grad": grad_term}
    return conf_term + reg_term + grad_term, {k: v.detach() for k, v in parts.items()}


def point_loss(predictions: dict, batch: dict, gamma: float = 1.0, alpha: float = 0.2,
               normal_scales: int = 3) -> tuple[torch.Tensor, dict]:
    """Confidence-weighted world-point regression + plain regression + multi-scale normal agreement."""
    pred = predictions["world_points"].float()
    target = batch["world_points"].float()
    mask = batch["point_masks"]
    conf_term, reg_term = _regression_terms(pred, target, predictions["world_points_conf"].float(), mask, gamma, alpha)
    normal_term = _normal_term(pred, target, mask, normal_scales)
    parts = {"point_conf": conf_term, "point_reg": reg_term, "point_normal": normal_term}
    return conf_term + reg_term + normal_term, {k: v.detach() for k, v in parts.items()}


def _regression_terms(pred, target, conf, mask, gamma, alpha) -> tuple[torch.Tensor, torch.Tensor]:
    """Per valid pixel err = ||target - pred||; returns the robust means of the confidence term
    ``gamma * err * conf - alpha * log(conf)`` (conf >= 1 from the heads) and of err itself."""
    if not mask.any():
        zero = _zero_like_graph(pred) + _zero_like_graph(conf)
        return zero, zero
    err = (target - pred).norm(dim=-1)[mask]
    conf = conf[mask]
    return _robust_mean(gamma * err * conf - alpha * torch.log(conf)), _robust_mean(err)


def _robust_mean(values: torch.Tensor, keep_quantile: float = 0.98, hard_max: float = 100.0,
                 min_count: int = 1000) -> torch.Tensor:
    """Mean after clamping at ``hard_max`` and, for more than ``min_count`` values, dropping those above
    the ``keep_quantile`` quantile: a few wild pixels (depth edges, grazing angles) must not dominate."""
    values = values.clamp(max=hard_max)
    if values.numel() > min_count:
        # kthvalue, unlike torch.quantile, has no input size limit (a 518 px batch has millions of pixels)
        k = math.ceil(keep_quantile * values.numel())
        threshold = values.detach().kthvalue(k).values
        values = values[values <= threshold]
    return values.mean()


def _gradient_term(pred, target, mask, scales: int) -> torch.Tensor:
    """Mean over ``scales`` strides (1, 2, 4, ...) of the L1 of the spatial gradients of the masked
    residual (pred - target), summed over valid neighbour pairs and divided by the valid pixel count.
    Penalises wrong local shape while ignoring a constant offset."""
    pred, target, mask = pred.flatten(0, 1), target.flatten(0, 1), mask.flatten(0, 1)  # [N,H,W,C], [N,H,W]
    total = _zero_like_graph(pred)
    for s in range(scales):
        step = 2 ** s
        m = mask[:, ::step, ::step]
        residual = torch.where(m[..., None], pred[:, ::step, ::step] - target[:, ::step, ::step], 0.0)
        pair_x = (m[:, :, 1:] & m[:, :, :-1])[..., None]
        pair_y = (m[:, 1:, :] & m[:, :-1, :])[..., None]
        grad_x = ((residual[:, :, 1:] - residual[:, :, :-1]).abs() * pair_x).sum()
        grad_y = ((residual[:, 1:, :] - residual[:, :-1, :]).abs() * pair_y).sum()
        total = total + (grad_x + grad_y) / m.sum().clamp(min=1)
    return total / scales


def _normal_term(pred, target, mask, scales: int) -> torch.Tensor:
    """Mean over ``scales`` strides of ``1 - cos`` between predicted and target surface normals, each
    pixel's four normals coming from cross products of the vectors to its four neighbours."""
    pred, target, mask = pred.flatten(0, 1), target.flatten(0, 1), mask.flatten(0, 1)
    total = _zero_like_graph(pred)
    for s in range(scales):
        step = 2 ** s
        m = mask[:, ::step, ::step]
        pred_normals, _ = _point_map_normals(pred[:, ::step, ::step])
        target_normals, target_ok = _point_map_normals(target[:, ::step, ::step])
        # a normal counts where the pixel and its four neighbours are surface and the target is not degenerate
        neighbourhood = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
        valid = target_ok & neighbourhood[:, None]
        cos = (pred_normals * target_normals).sum(-1)
        total = total + torch.where(valid, 1.0 - cos, 0.0).sum() / valid.sum().clamp(min=1)
    return total / scales


def _point_map_normals(points: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """``points`` [N,H,W,3] -> unit normals [N,4,H-2,W-2,3] of the interior pixels from the four cross
    products of consecutive neighbour vectors (up, left, down, right: one consistent orientation), and
    whether each is well defined (its cross product is not ~0)."""
    centre = points[:, 1:-1, 1:-1]
    up, down = points[:, :-2, 1:-1] - centre, points[:, 2:, 1:-1] - centre
    left, right = points[:, 1:-1, :-2] - centre, points[:, 1:-1, 2:] - centre
    crosses = torch.stack([torch.cross(up, left, dim=-1), torch.cross(left, down, dim=-1),
                           torch.cross(down, right, dim=-1), torch.cross(right, up, dim=-1)], dim=1)
    return F.normalize(crosses, dim=-1, eps=eps), crosses.norm(dim=-1) > eps


def _zero_like_graph(anchor: torch.Tensor) -> torch.Tensor:
    """A zero scalar connected to ``anchor``'s graph: ``backward`` works even when a loss has nothing to compare."""
    return anchor.sum() * 0.0
