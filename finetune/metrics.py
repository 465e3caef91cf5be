"""Evaluation metrics of the fine-tuning harness: geometry (points, normals, depth) and face anti-spoofing.

Everything here is numpy (+ ``scipy.spatial.cKDTree``) on one scene or one image at a time; averaging
over a split is the caller's. Definitions, so that numbers from different runs mean the same thing:

Cameras and depth (the project's conventions, docs/format.md)
    OpenCV pinhole: x right, y down, z forward; ``w2c`` maps world to camera, ``x_cam = R x_world + t``
    (3x4 or 4x4). Pixel centres sit at integer coordinates, so pixel (u, v) = (column, row) looks along
    ``K^-1 [u, v, 1]``. Depth is z along the optical axis (not ray length); 0 (or non-finite) means no
    surface. :func:`unproject` / :func:`project` convert between the two.

Normals from depth (:func:`depth_normals`)
    The cross product of the horizontal and vertical differences of the back-projected camera points.
    Each difference is one-sided: of the two neighbours (left/right, up/down) with a surface, the one
    whose depth changes least, so silhouettes and depth edges use the surface they belong to instead of
    bridging to the background or another object. Exact on planes. Unit length, in the camera frame,
    oriented towards the camera (``n . x_cam < 0``); NaN where a pixel has no surface or no neighbour
    with one along an axis. :func:`world_normals` rotates them into the world frame (``R^T n``).

Point clouds (:func:`point_metrics`, DTU-style)
    Non-finite points are dropped. With ``voxel``, each cloud is first thinned to one point per occupied
    cube of side ``voxel`` (grid anchored at the origin): the point nearest the cube's centre (ties to
    the lexicographically smallest), with its own normal, so the result does not depend on the input
    order and density differences stop weighting the means.
    Accuracy: distance from each predicted point to its nearest ground-truth point.
    Completeness: distance from each ground-truth point to its nearest predicted point.
    With ``max_dist``, every distance is capped at ``max_dist``: an outlier counts as ``max_dist`` (it is
    not dropped, so deleting bad points cannot improve a score). Mean and median of both, and
    ``overall`` = (accuracy mean + completeness mean) / 2 (DTU's "overall", the Chamfer distance).
    Normal consistency: |n_p . n_gt| (unit normals, sign-free because depth-derived normals have no
    reliable orientation) over the same nearest-neighbour matches, all of them (outliers included),
    skipping matches where either normal is non-finite; ``nc_mean`` is the mean of the two directions'
    means, ``nc_median`` the mean of their medians.
    Empty clouds give NaN metrics (never an exception).

Depth maps (:func:`depth_metrics`)
    Over pixels that are ``valid`` with a finite, positive ground truth and a finite prediction:
    AbsRel = mean |d' - d| / d and delta1 = share of pixels with max(d'/d, d/d') < 1.25, where d' is the
    prediction after alignment. ``align="median"`` (default): d' = d_hat * median(d) / median(d_hat),
    one scale per image — exactly :func:`training.evaluate.depth_errors`, which it calls.
    ``"lstsq"``: d' = s d_hat + b with (s, b) minimising sum (s d_hat + b - d)^2 (scale and shift, for
    predictions known only up to an affine map, e.g. inverse-depth or relative-depth models).
    ``"none"``: d' = d_hat (metric predictions).

Anti-spoofing from geometry (:func:`relief_score`)
    A printed or replayed face is (close to) a plane or a gently bent sheet; a live face has a nose,
    eye sockets and cheeks. The score fits a surface to the face's 3D points in their PCA frame
    (origin = centroid, x, y = the two largest principal axes, z = the smallest, the plane normal) and
    returns RMS residual / in-plane RMS extent, where the extent is sqrt(mean(x^2 + y^2)).
    ``"plane"``: residual = z (distance to the best plane in the least-squares sense).
    ``"quadric"``: residual = z - (a x^2 + b y^2 + c x y + d x + e y + f), least squares in the PCA frame;
    it absorbs a print bent on a cylinder (and any other quadratic sheet, a sphere cap included), so only
    relief beyond second order (a nose) scores.
    The ratio is free of scale, rotation and translation: predicted depth is known only up to scale.
    ``trim`` = share of points to ignore as outliers (background pixels in the face box, flying pixels):
    a least-trimmed-squares fit that alternates fitting and keeping the (1 - trim) best-fitting points.

Anti-spoofing decisions (:func:`roc_auc`, :func:`threshold_at_eer`, :func:`acer`), ISO/IEC 30107-3
    Labels: 1 = live (bona fide, the positive class), 0 = spoof (attack presentation). Higher score =
    more live. A presentation is classified live when ``score >= threshold``. Unknown labels (-1, as
    finetune.rgbd gives for unlabelled sequences) and non-finite scores are refused (ValueError):
    drop them first.
    APCER = share of attacks (label 0) classified live; BPCER = share of live presentations (label 1)
    classified as attacks; ACER = (APCER + BPCER) / 2. (30107-3 defines APCER per attack instrument
    species and reports the worst; with one attack class, as here, the two agree.)
    AUC = P(score_live > score_spoof) + 1/2 P(equal), the Mann-Whitney U statistic over all
    live/spoof pairs; NaN unless both classes are present.
    The EER threshold is picked on a validation split and then applied, unchanged, to the test split:
    candidates are the midpoints between consecutive distinct validation scores (plus one below and one
    above all of them); the one with the smallest |APCER - BPCER| wins, ties going to the smaller ACER
    and then to the smaller threshold.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import rankdata

from training.evaluate import depth_errors

__all__ = ["unproject", "project", "depth_normals", "world_normals", "voxel_downsample", "point_metrics",
           "depth_metrics", "relief_score", "roc_auc", "threshold_at_eer", "acer"]


# ----------------------------------------------------------------------------------- cameras and depth
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return u, v


def _camera_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Every pixel back-projected into the camera frame, [H,W,3] (meaningless where depth is not valid)."""
    depth = np.asarray(depth, np.float64)
    K = np.asarray(K, np.float64)
    u, v = _pixel_grid(*depth.shape)
    return np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], axis=-1)


def _surface(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0)


def _rt(w2c) -> tuple[np.ndarray, np.ndarray]:
    w2c = np.asarray(w2c, np.float64)
    if w2c.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"w2c must be 3x4 or 4x4, got shape {w2c.shape}")
    return w2c[:3, :3], w2c[:3, 3]


def unproject(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """World points [N,3] (float64) of the pixels with a surface (depth > 0, finite) and ``mask``, in
    row-major pixel order: the same order as ``normals[mask & surface]`` for per-pixel arrays."""
    keep = _surface(depth) if mask is None else _surface(depth) & np.asarray(mask, bool)
    R, t = _rt(w2c)
    cam = _camera_points(depth, K)[keep]
    return (cam - t) @ R  # x_world = R^T (x_cam - t), row-vector form


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [N,3] -> pixel coordinates [N,2] (u, v; pixel centres at integers) and z-depth [N]."""
    R, t = _rt(w2c)
    cam = np.asarray(points, np.float64) @ R.T + t
    K = np.asarray(K, np.float64)
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]], axis=-1)
    return uv, z


def _one_sided_difference(points: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Difference of ``points`` [H,W,3] along ``axis`` (1 = columns, 0 = rows), per pixel the forward or
    backward one, whichever neighbour has a surface and, if both do, the smaller depth change. NaN where
    neither neighbour has a surface."""
    p = np.where(valid[..., None], points, np.nan)
    pad = [(0, 0)] * 3
    pad[axis] = (1, 1)
    padded = np.pad(p, pad, constant_values=np.nan)
    n = p.shape[axis]
    forward = np.take(padded, range(2, n + 2), axis=axis) - p
    backward = p - np.take(padded, range(0, n), axis=axis)
    # NaN depth changes (a missing neighbour) compare as "worse" than any real one
    jump_f = np.nan_to_num(np.abs(forward[..., 2]), nan=np.inf)
    jump_b = np.nan_to_num(np.abs(backward[..., 2]), nan=np.inf)
    return np.where((jump_f <= jump_b)[..., None], forward, backward)


def depth_normals(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit normals [H,W,3] in the camera frame from a z-depth map, facing the camera; NaN where
    undefined (no surface, or no neighbour with one along a row or a column). See the module docstring."""
    valid = _surface(depth)
    points = _camera_points(np.where(valid, depth, 0.0), K)
    du = _one_sided_difference(points, valid, axis=1)
    dv = _one_sided_difference(points, valid, axis=0)
    n = np.cross(du, dv)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(length > 1e-12, n / length, np.nan)
        facing = np.sum(n * points, axis=-1, keepdims=True) > 0  # pointing away from the camera: flip
    n = np.where(facing, -n, n)
    return np.where(valid[..., None], n, np.nan)


def world_normals(normals: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """Camera-frame normals [..., 3] -> world frame (``R^T n``); NaN stays NaN."""
    R, _ = _rt(w2c)
    return np.asarray(normals, np.float64) @ R


# ----------------------------------------------------------------------------------- point clouds
def voxel_downsample(points: np.ndarray, voxel: float, normals: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """One point per occupied cube of side ``voxel`` (grid anchored at the origin): the point nearest
    the cube's centre, and its normal. Every kept point is a real one, and the choice does not depend on
    the input order: the distance to a fixed centre is computed per point (a centroid would be a sum
    whose rounding depends on the order), and ties go to the lexicographically smallest point."""
    if voxel <= 0:
        raise ValueError(f"voxel must be > 0, got {voxel}")
    if len(points) == 0:
        return points, normals
    keys = np.floor(points / voxel)
    _, cell = np.unique(keys.astype(np.int64), axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    distance = np.linalg.norm(points - (keys + 0.5) * voxel, axis=-1)
    # np.lexsort's last key is the primary one: by cell, then distance, then x, y, z
    order = np.lexsort((points[:, 2], points[:, 1], points[:, 0], distance, cell))
    first = order[np.r_[True, cell[order][1:] != cell[order][:-1]]]
    return points[first], (None if normals is None else normals[first])


def _clean(points, normals) -> tuple[np.ndarray, np.ndarray | None]:
    points = np.asarray(points, np.float64).reshape(-1, 3)
    keep = np.isfinite(points).all(axis=1)
    if normals is not None:
        normals = np.asarray(normals, np.float64).reshape(-1, 3)
        if len(normals) != len(points):
            raise ValueError(f"{len(normals)} normals for {len(points)} points")
        normals = normals[keep]
        with np.errstate(invalid="ignore", divide="ignore"):
            normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    return points[keep], normals


def _normal_agreement(normals_a, normals_b, match) -> np.ndarray:
    """|n_a . n_b| for each point of a and its match in b, where both are finite."""
    dots = np.abs(np.sum(normals_a * normals_b[match], axis=1))
    return dots[np.isfinite(dots)]


def point_metrics(pred: np.ndarray, gt: np.ndarray, pred_normals: np.ndarray | None = None,
                  gt_normals: np.ndarray | None = None, max_dist: float | None = None,
                  voxel: float | None = None) -> dict[str, float]:
    """Accuracy, completeness, their ``overall`` mean and normal consistency of a predicted point cloud
    [N,3] against the ground truth [M,3] (definitions in the module docstring). Returns ``acc_mean``,
    ``acc_median``, ``comp_mean``, ``comp_median``, ``overall``, ``nc_mean``, ``nc_median`` (NaN without
    both normals) and ``n_pred``, ``n_gt``: the points used, after cleaning and down-sampling."""
    pred, pred_normals = _clean(pred, pred_normals)
    gt, gt_normals = _clean(gt, gt_normals)
    if voxel is not None:
        pred, pred_normals = voxel_downsample(pred, voxel, pred_normals)
        gt, gt_normals = voxel_downsample(gt, voxel, gt_normals)
    out = {k: math.nan for k in ("acc_mean", "acc_median", "comp_mean", "comp_median", "overall",
                                 "nc_mean", "nc_median")}
    out |= {"n_pred": int(len(pred)), "n_gt": int(len(gt))}
    if len(pred) == 0 or len(gt) == 0:
        return out
    acc, to_gt = cKDTree(gt).query(pred)
    comp, to_pred = cKDTree(pred).query(gt)
    if max_dist is not None:
        acc, comp = np.minimum(acc, max_dist), np.minimum(comp, max_dist)
    out |= {"acc_mean": float(acc.mean()), "acc_median": float(np.median(acc)),
            "comp_mean": float(comp.mean()), "comp_median": float(np.median(comp))}
    out["overall"] = (out["acc_mean"] + out["comp_mean"]) / 2
    if pred_normals is not None and gt_normals is not None:
        forward = _normal_agreement(pred_normals, gt_normals, to_gt)
        backward = _normal_agreement(gt_normals, pred_normals, to_pred)
        if forward.size and backward.size:
            out["nc_mean"] = float((forward.mean() + backward.mean()) / 2)
            out["nc_median"] = float((np.median(forward) + np.median(backward)) / 2)
    return out


# ----------------------------------------------------------------------------------- depth maps
ALIGNMENTS = ("median", "lstsq", "none")


def _abs_rel_delta1(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """The formulas of training.evaluate.depth_errors, without its median scaling."""
    ratio = np.maximum(p / g, g / np.maximum(p, 1e-12))
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "delta1": float(np.mean(ratio < 1.25))}


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None,
                  align: str = "median") -> dict[str, float]:
    """AbsRel and delta1 (δ<1.25) of one depth map after ``align`` = "median" (per-image median
    scaling, the default, identical to training.evaluate.depth_errors), "lstsq" (least-squares scale
    and shift) or "none". ``valid`` defaults to every pixel; pixels without a finite, positive ground
    truth or a finite prediction never count. NaN when no pixel counts."""
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    keep = _surface(gt) & np.isfinite(pred)
    if valid is not None:
        keep &= np.asarray(valid, bool)
    if align == "median":
        return depth_errors(pred, gt, keep)
    p, g = pred[keep].astype(np.float64), gt[keep].astype(np.float64)
    if p.size == 0:
        return {"abs_rel": math.nan, "delta1": math.nan}
    if align == "lstsq":
        (s, b), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], axis=1), g, rcond=None)
        p = s * p + b
    return _abs_rel_delta1(p, g)


# ----------------------------------------------------------------------------------- anti-spoofing
RELIEF_MODELS = ("plane", "quadric")


def _pca_frame(points: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Every point in the PCA frame of ``subset``: its centroid at 0, axes by decreasing variance
    (z = the normal of the best plane)."""
    centre = points[subset].mean(axis=0)
    _, _, axes = np.linalg.svd(points[subset] - centre, full_matrices=False)
    return (points - centre) @ axes.T


def _residuals(local: np.ndarray, model: str, fit_on: np.ndarray) -> np.ndarray:
    """Residuals of every point (in a PCA frame) to ``model`` fitted on the ``fit_on`` subset."""
    x, y, z = local.T
    if model == "plane":
        return z - z[fit_on].mean()  # mean 0 on the fitting set already: this is its offset
    design = np.stack([x * x, y * y, x * y, x, y, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design[fit_on], z[fit_on], rcond=None)
    return z - design @ coef


FLAT = 1e-9   # relief below this is round-off: the points lie on the model exactly


def relief_score(points: np.ndarray, model: str = "plane", trim: float = 0.0, iterations: int = 5) -> float:
    """Scale-free relief of a face's 3D points [N,3]: RMS residual to the best ``model`` ("plane" or
    "quadric") over the in-plane RMS extent; ~0 for a flat (plane) or bent (quadric) print, larger for
    a live face. ``trim`` in [0, 1) ignores that share of worst-fitting points (least trimmed squares,
    ``iterations`` refits). NaN with too few finite points for the model (3 / 6) or a degenerate cloud."""
    if model not in RELIEF_MODELS:
        raise ValueError(f"model must be one of {RELIEF_MODELS}, got {model!r}")
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    points = np.asarray(points, np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    keep_count = int(math.ceil((1.0 - trim) * len(points)))
    if keep_count < (3 if model == "plane" else 6):
        return math.nan
    kept = np.arange(len(points))
    for step in range(iterations + 1 if trim > 0 else 1):
        # The frame is refitted on the kept points too: for the plane model that is the plane fit itself.
        local = _pca_frame(points, kept)
        residual = _residuals(local, model, kept)
        best = np.sort(np.argsort(np.abs(residual), kind="stable")[:keep_count])
        if trim == 0 or step == iterations or np.array_equal(best, kept):
            break
        kept = best
    local_kept, r = local[kept], residual[kept]
    extent = math.sqrt(float(np.mean(local_kept[:, 0] ** 2 + local_kept[:, 1] ** 2)))
    if extent <= 0:
        return math.nan
    score = math.sqrt(float(np.mean(r * r))) / extent
    # a surface that IS the model (a constant depth map, an exact plane) leaves round-off residuals whose
    # size depends on the point set, not the shape; ranking those would rank noise
    return 0.0 if score < FLAT else score


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 1 (live) or 0 (spoof); drop unknown (-1) ones first")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, labels.astype(bool)


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve, live (1) = positive, higher score = more live, ties count 1/2
    (Mann-Whitney U / (n_live n_spoof) from average ranks). NaN unless both classes are present."""
    scores, live = _scores_labels(scores, labels)
    n_live, n_spoof = int(live.sum()), int((~live).sum())
    if n_live == 0 or n_spoof == 0:
        return math.nan
    ranks = rankdata(scores)  # average ranks: a tied live/spoof pair contributes 1/2
    u = ranks[live].sum() - n_live * (n_live + 1) / 2
    return float(u / (n_live * n_spoof))


def acer(scores, labels, threshold: float) -> dict[str, float]:
    """APCER, BPCER and ACER (ISO/IEC 30107-3) when ``score >= threshold`` is classified live; a rate
    whose class is absent is NaN (and so is ACER)."""
    scores, live = _scores_labels(scores, labels)
    said_live = scores >= threshold
    apcer = float(said_live[~live].mean()) if (~live).any() else math.nan
    bpcer = float((~said_live[live]).mean()) if live.any() else math.nan
    return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}


def threshold_at_eer(scores, labels) -> float:
    """The threshold where APCER is closest to BPCER (the equal error rate), to pick on a validation
    split; candidates and tie-breaks in the module docstring. NaN unless both classes are present."""
    scores, live = _scores_labels(scores, labels)
    if live.all() or not live.any():
        return math.nan
    distinct = np.unique(scores)
    margin = 1.0 + float(np.abs(distinct).max())
    candidates = np.concatenate([[distinct[0] - margin], (distinct[1:] + distinct[:-1]) / 2,
                                 [distinct[-1] + margin]])
    said_live = scores[None, :] >= candidates[:, None]
    apcer = said_live[:, ~live].mean(axis=1)
    bpcer = (~said_live[:, live]).mean(axis=1)
    best = np.lexsort((candidates, apcer + bpcer, np.abs(apcer - bpcer)))[0]
    return float(candidates[best])
