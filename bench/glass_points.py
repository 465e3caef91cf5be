"""How informative are the transparent task's glass point metrics? A diagnostic, not a speed benchmark.

The transparent table caps Acc / Comp at 20 mm and takes NC over every nearest-neighbour match. This script
re-predicts the built-in test split with the base model, the constant-depth control and finished runs of
``finetune transparent --compare``, and prints for the glass points of each: how many matches lie within
20 / 100 mm, Acc and Comp at 20 mm, at 100 mm and uncapped, and NC over all matches beside NC over the
matches within 20 / 100 mm only (|cos| of unrelated directions averages 0.5), and how squarely the predicted
and true glass normals face the camera (mean |n · ray|).

    python bench/glass_points.py --runs runs/transparent_compare/transparent/ours-mined-quick/lr0.01/seed0 \
        --runs runs/transparent_compare/transparent/lora-r16/lr0.001/seed0
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import typer
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.evaluate import _scaled, _thin, fused_clouds  # noqa: E402
from finetune.harness import FinetuneConfig, load_base, task_data  # noqa: E402
from finetune.metrics import _camera_points, world_normals  # noqa: E402

CAPS = (20.0, 100.0)


def restore(run: Path) -> torch.nn.Module:
    """The base model with the run's saved adapter (a basis method's M's, or a peft LoRA)."""
    if not (run / "record.json").is_file():
        raise typer.BadParameter(f"{run}: no record.json (not a finished run of finetune transparent)")
    record = json.loads((run / "record.json").read_text())
    model = load_base(FinetuneConfig(task="transparent"))
    adapter = run / "adapter"
    if (adapter / "middle.safetensors").is_file():
        from finetune.adapters.subspace import apply_basis, load_middle
        apply_basis(model, record["info"]["basis"])
        load_middle(model, adapter / "middle.safetensors")
        return model
    if (adapter / "adapter_model.safetensors").is_file():
        import peft
        return peft.PeftModel.from_pretrained(model, str(adapter))
    raise typer.BadParameter(f"{run}: no middle.safetensors or peft adapter under adapter/")


def glass_clouds(depth: np.ndarray, seq: dict, units_to_mm: float) -> dict:
    """Predicted and true glass points (mm) and world normals, fused over the views as the table does, with
    each point's pixel ray in the world frame (the same for both: the points share their pixel)."""
    gt = seq["depths"].numpy().astype(np.float64)
    valid = seq["point_masks"].numpy()
    keep = seq["transparent_masks"].numpy().astype(bool) & valid & _thin(valid.shape[1:])
    K, E = seq["intrinsics"].numpy().astype(np.float64), seq["extrinsics"].numpy().astype(np.float64)
    scaled = [_scaled(depth[v].astype(np.float64), gt[v], valid[v]) for v in range(len(gt))]
    pred, true, n_pred, n_gt = fused_clouds(scaled, gt, K, E, valid, keep, units_to_mm)
    rays = [world_normals(_camera_points(np.ones(valid.shape[1:]), K[v]), E[v])[keep[v]] for v in range(len(gt))]
    rays = np.concatenate(rays)                       # R^T of each view's unit-depth pixel ray
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    return {"pred": pred, "gt": true, "n_pred": n_pred, "n_gt": n_gt,
            "facing_pred": np.abs(np.sum(n_pred * rays, axis=1)), "facing_gt": np.abs(np.sum(n_gt * rays, axis=1))}


def row(c: dict) -> dict:
    acc, to_gt = cKDTree(c["gt"]).query(c["pred"])
    comp, to_pred = cKDTree(c["pred"]).query(c["gt"])
    fwd = np.abs(np.sum(c["n_pred"] * c["n_gt"][to_gt], axis=1))
    bwd = np.abs(np.sum(c["n_gt"] * c["n_pred"][to_pred], axis=1))

    def nc(near_f, near_b):
        f, b = fwd[near_f & np.isfinite(fwd)], bwd[near_b & np.isfinite(bwd)]
        return (f.mean() + b.mean()) / 2 if f.size and b.size else np.nan

    facing = {k: float(np.nanmean(c[k])) for k in ("facing_pred", "facing_gt")}
    out = facing | {"acc_uncapped": acc.mean(), "comp_uncapped": comp.mean(), "nc_all": nc(acc >= 0, comp >= 0)}
    for cap in CAPS:
        out |= {f"within_{cap:g}": (acc <= cap).mean(), f"acc_{cap:g}": np.minimum(acc, cap).mean(),
                f"comp_{cap:g}": np.minimum(comp, cap).mean(), f"nc_within_{cap:g}": nc(acc <= cap, comp <= cap)}
    return out


def main(runs: list[Path] = typer.Option([], "--runs", help="finished run folders (record.json + adapter/)"),
         split: str = typer.Option("test", help="val or test")):
    cfg = FinetuneConfig(task="transparent", progress=False)
    data = task_data(cfg, say=lambda *_: None)
    ds = data.dataset(split, cfg.frames, cfg.resolution, normalize=False)
    models = {"no fine-tuning": load_base(cfg), "constant depth": None}
    models |= {f"{r.parent.parent.name} {r.parent.name} {r.name}": restore(r) for r in runs}
    keys = ["within_20", "within_100", "acc_20", "acc_100", "acc_uncapped", "comp_20", "comp_100",
            "comp_uncapped", "nc_all", "nc_within_20", "nc_within_100",
            "facing_pred", "facing_gt"]
    print(f"glass points of the {split} split ({len(ds)} sequences); mean over sequences; distances in mm\n")
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, model in models.items():
        if model is not None:
            model.eval()
        rows = []
        for i in range(len(ds)):
            seq = ds[i]
            if model is None:
                depth = np.ones(seq["depths"].shape)
            else:
                with torch.no_grad():
                    depth = model(seq["images"][None])["depth"][0, ..., 0].float().numpy()
            clouds = glass_clouds(depth, seq, data.units_to_mm)
            if len(clouds["pred"]) and len(clouds["gt"]):
                rows.append(row(clouds))
        mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
        print(f"| {name} | " + " | ".join(f"{mean[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    typer.run(main)
