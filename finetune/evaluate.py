"""Evaluation of a model on a task split: depth, points and (where sequences are labelled live/spoof)
anti-spoofing from the predicted geometry. Definitions of every metric: finetune.metrics.

Per sequence, prediction by the depth head (as in the paper), its cameras ignored (the small model's are
not learned): each view's depth is median-scaled to the ground truth (depth is known only up to scale),
then

- depth: AbsRel and δ<1.25 per view, averaged over the views;
- points: every view's scaled depth, on every ``STRIDE``-th pixel in each direction (a micro-baseline
  sequence's views see the same surface, so thinning loses little and makes the nearest-neighbour
  queries 4× cheaper), unprojected with the ground-truth cameras and fused, against the
  ground-truth depth unprojected the same way; Accuracy / Completeness (mean and median, in mm, distances
  capped at ``max_dist_mm``) and Normal Consistency, with normals from each depth map (the same operator
  on prediction and ground truth);
- relief: the anti-spoofing score of the reference view's predicted surface inside the object mask and
  the central part of the image (where a face detector would crop), quadric model, 10 % trimmed — and
  the same score of the ground truth (an oracle: what perfect geometry would give).

A split's result: the mean of every per-sequence number and, with labels, the AUC of the relief score and
APCER / BPCER / ACER at a threshold chosen on another split (validation) at its equal error rate.

The transparent-object task (``transparent_sequence_metrics``) scales each view's depth by its median over
all valid pixels, as above, then reports AbsRel and δ<1.25 on all pixels and on the transparent pixels
alone (``*_tr``: where the first surface is glass or clear plastic), and Accuracy / Completeness / Normal
Consistency of the transparent objects' points (the transparent pixels of every view, fused).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .metrics import (acer, depth_metrics, depth_normals, point_metrics, relief_score, roc_auc, threshold_at_eer,
                      unproject, world_normals)

CENTRAL = 0.6            # the face box: the central 60 % of the image's width and height
STRIDE = 2               # points and relief from every 2nd pixel in each direction (DTU-style thinning)
RELIEF_MODEL, RELIEF_TRIM = "quadric", 0.1
SEQUENCE_KEYS = ("abs_rel", "delta1", "acc_mean", "acc_median", "comp_mean", "comp_median", "nc_mean",
                 "relief", "relief_gt")


def _scaled(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    p, g = pred[valid], gt[valid]
    if p.size == 0:
        return pred
    return pred * (np.median(g) / max(float(np.median(p)), 1e-12))


def _central(shape) -> np.ndarray:
    h, w = shape
    box = np.zeros(shape, bool)
    dh, dw = int(round(h * (1 - CENTRAL) / 2)), int(round(w * (1 - CENTRAL) / 2))
    box[dh:h - dh, dw:w - dw] = True
    return box


POINT_KEYS = ("acc_mean", "acc_median", "comp_mean", "comp_median", "nc_mean")


def _thin(shape) -> np.ndarray:
    thin = np.zeros(shape, bool)
    thin[::STRIDE, ::STRIDE] = True
    return thin


def fused_clouds(scaled, gt, K, E, valid, keep, units_to_mm: float) -> tuple[np.ndarray, ...]:
    """Predicted and true points (mm) and world normals of the ``keep`` pixels of every view, unprojected with
    the ground-truth cameras and fused (view by view, row-major); normals from the full-resolution (``valid``)
    depth maps, then picked like the points."""
    pred_pts, gt_pts, pred_n, gt_n = [], [], [], []
    for v in range(len(gt)):
        pred_pts.append(unproject(scaled[v], K[v], E[v], keep[v]) * units_to_mm)
        gt_pts.append(unproject(gt[v], K[v], E[v], keep[v]) * units_to_mm)
        pred_n.append(world_normals(depth_normals(np.where(valid[v], scaled[v], 0), K[v]), E[v])[keep[v]])
        gt_n.append(world_normals(depth_normals(np.where(valid[v], gt[v], 0), K[v]), E[v])[keep[v]])
    return tuple(np.concatenate(x) for x in (pred_pts, gt_pts, pred_n, gt_n))


def _fused_point_metrics(scaled, gt, K, E, valid, keep, units_to_mm: float, max_dist_mm: float) -> dict:
    """Accuracy / Completeness / NC of the fused ``keep`` pixels (:func:`fused_clouds`)."""
    pred, true, pred_n, true_n = fused_clouds(scaled, gt, K, E, valid, keep, units_to_mm)
    return point_metrics(pred, true, pred_n, true_n, max_dist=max_dist_mm)


def sequence_metrics(pred_depth: np.ndarray, seq: dict, units_to_mm: float, max_dist_mm: float) -> dict:
    """Every per-sequence number (see the module doc) from the predicted depth [S,H,W] and an
    un-normalised sequence (training.data format: depths, intrinsics, extrinsics, point_masks)."""
    gt = seq["depths"].numpy().astype(np.float64)
    valid = seq["point_masks"].numpy()
    K, E = seq["intrinsics"].numpy().astype(np.float64), seq["extrinsics"].numpy().astype(np.float64)
    views = [depth_metrics(pred_depth[v], gt[v], valid[v]) for v in range(len(gt))]
    scaled = [_scaled(pred_depth[v].astype(np.float64), gt[v], valid[v]) for v in range(len(gt))]
    thin = _thin(valid.shape[1:])
    points = _fused_point_metrics(scaled, gt, K, E, valid, valid & thin, units_to_mm, max_dist_mm)
    face = valid[0] & _central(valid[0].shape) & thin
    relief = relief_score(unproject(scaled[0], K[0], E[0], face), RELIEF_MODEL, trim=RELIEF_TRIM)
    relief_gt = relief_score(unproject(gt[0], K[0], E[0], face), RELIEF_MODEL, trim=RELIEF_TRIM)
    return {"abs_rel": float(np.nanmean([r["abs_rel"] for r in views])),
            "delta1": float(np.nanmean([r["delta1"] for r in views])),
            **{k: points[k] for k in POINT_KEYS},
            "relief": relief, "relief_gt": relief_gt}


TRANSPARENT_KEYS = ("abs_rel", "delta1", "abs_rel_tr", "delta1_tr", *POINT_KEYS, "transparent_share")


def transparent_sequence_metrics(pred_depth: np.ndarray, seq: dict, units_to_mm: float, max_dist_mm: float) -> dict:
    """The transparent task's per-sequence numbers (module doc) from the predicted depth [S,H,W] and an
    un-normalised sequence with ``transparent_masks`` [S,H,W]."""
    gt = seq["depths"].numpy().astype(np.float64)
    valid = seq["point_masks"].numpy()
    glass = seq["transparent_masks"].numpy().astype(bool) & valid
    K, E = seq["intrinsics"].numpy().astype(np.float64), seq["extrinsics"].numpy().astype(np.float64)
    scaled = [_scaled(pred_depth[v].astype(np.float64), gt[v], valid[v]) for v in range(len(gt))]
    every = [depth_metrics(scaled[v], gt[v], valid[v], align="none") for v in range(len(gt))]
    tr = [depth_metrics(scaled[v], gt[v], glass[v], align="none") for v in range(len(gt)) if glass[v].any()]
    keep = glass & _thin(valid.shape[1:])
    if keep.any():
        points = _fused_point_metrics(scaled, gt, K, E, valid, keep, units_to_mm, max_dist_mm)
    else:  # no transparent object in view
        points = dict.fromkeys(POINT_KEYS, math.nan)
    mean = lambda rows, k: float(np.nanmean([r[k] for r in rows])) if rows else math.nan  # noqa: E731
    return {"abs_rel": mean(every, "abs_rel"), "delta1": mean(every, "delta1"),
            "abs_rel_tr": mean(tr, "abs_rel"), "delta1_tr": mean(tr, "delta1"),
            **{k: points[k] for k in POINT_KEYS},
            "transparent_share": float(glass.sum() / max(valid.sum(), 1))}


HUMAN_KEYS = ("abs_rel", "delta1", *POINT_KEYS)


def human_sequence_metrics(pred_depth: np.ndarray, seq: dict, units_to_mm: float, max_dist_mm: float) -> dict:
    """The human task's per-sequence numbers: AbsRel and δ<1.25 of each view's median-scaled depth on the
    body, and Accuracy / Completeness / NC of the fused body points (every view, every 2nd pixel)."""
    gt = seq["depths"].numpy().astype(np.float64)
    valid = seq["point_masks"].numpy()
    K, E = seq["intrinsics"].numpy().astype(np.float64), seq["extrinsics"].numpy().astype(np.float64)
    scaled = [_scaled(pred_depth[v].astype(np.float64), gt[v], valid[v]) for v in range(len(gt))]
    views = [depth_metrics(scaled[v], gt[v], valid[v], align="none") for v in range(len(gt))]
    points = _fused_point_metrics(scaled, gt, K, E, valid, valid & _thin(valid.shape[1:]), units_to_mm, max_dist_mm)
    return {"abs_rel": float(np.nanmean([r["abs_rel"] for r in views])),
            "delta1": float(np.nanmean([r["delta1"] for r in views])), **{k: points[k] for k in POINT_KEYS}}


# evaluation name (TaskData.evaluation) -> (per-sequence metrics, the keys a split summary averages)
EVALUATIONS = {"face": (sequence_metrics, SEQUENCE_KEYS), "transparent": (transparent_sequence_metrics, TRANSPARENT_KEYS),
               "human": (human_sequence_metrics, HUMAN_KEYS)}


@torch.no_grad()
def predict_split(model, dataset, device, units_to_mm: float, max_dist_mm: float, autocast: dict | None = None,
                  progress=None, evaluation: str = "face") -> list[dict]:
    """Per-sequence metrics of ``model`` over ``dataset`` (un-normalised ground truth)."""
    metrics, _ = EVALUATIONS[evaluation]
    model.eval().to(device)
    rows = []
    autocast = autocast or {"device_type": torch.device(device).type, "enabled": False}
    for i in range(len(dataset)):
        seq = dataset[i]
        with torch.autocast(**autocast):
            out = model(seq["images"][None].to(device))
        depth = out["depth"][0, ..., 0].float().cpu().numpy()
        rows.append(metrics(depth, seq, units_to_mm, max_dist_mm) | {"sequence": seq["seq_name"]})
        if progress:
            progress(1)
    return rows


def constant_depth_rows(dataset, units_to_mm: float, max_dist_mm: float, evaluation: str = "face") -> list[dict]:
    """The same metrics for a constant depth map (after median scaling: each view's median depth): the
    floor any model must beat."""
    metrics, _ = EVALUATIONS[evaluation]
    rows = []
    for i in range(len(dataset)):
        seq = dataset[i]
        rows.append(metrics(np.ones(seq["depths"].shape), seq, units_to_mm, max_dist_mm)
                    | {"sequence": seq["seq_name"]})
    return rows


def summarize(rows: list[dict], labels: list[int], threshold: float | None = None, evaluation: str = "face") -> dict:
    """Means over sequences and, for labelled sequences, AUC and ACER of the relief score (ACER at
    ``threshold``, chosen elsewhere; without one, at this split's own EER threshold, marked as such)."""
    _, keys = EVALUATIONS[evaluation]
    out = {k: float(np.nanmean([r[k] for r in rows])) if rows else math.nan for k in keys}
    out["sequences"] = len(rows)
    if "relief" not in keys:
        return out
    known = [(r["relief"], r["relief_gt"], lab) for r, lab in zip(rows, labels) if lab in (0, 1)]
    known = [k for k in known if math.isfinite(k[0])]
    if known and len({k[2] for k in known}) == 2:
        scores, oracle, labs = (np.array(x) for x in zip(*known))
        out["auc"] = roc_auc(scores, labs)
        out["auc_gt"] = roc_auc(oracle[np.isfinite(oracle)], labs[np.isfinite(oracle)])
        own = threshold is None
        t = threshold_at_eer(scores, labs) if own else threshold
        out |= {k: v for k, v in acer(scores, labs, t).items()}
        out["threshold"], out["threshold_from"] = float(t), "this split (EER)" if own else "validation (EER)"
    return out


def eer_threshold(rows: list[dict], labels: list[int]) -> float | None:
    known = [(r["relief"], lab) for r, lab in zip(rows, labels)
             if lab in (0, 1) and math.isfinite(r.get("relief", math.nan))]
    if not known or len({k[1] for k in known}) < 2:
        return None
    scores, labs = (np.array(x) for x in zip(*known))
    return threshold_at_eer(scores, labs)


__all__ = ["sequence_metrics", "transparent_sequence_metrics", "human_sequence_metrics", "predict_split", "constant_depth_rows", "summarize",
           "eer_threshold", "EVALUATIONS"]
