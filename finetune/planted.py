"""Fine-tuning power on a planted task: can a basis express an attribute change that it should contain?

The positive control of the mining pipeline (docs/mining.md, "Power"). A planted mining run
(mining.plant) knows the truth: each attribute X's update ΔW_X. The task here takes the unseen
partitions of two attributes X and Y of that run, with targets from the teacher of both
(base + ΔW_X + ΔW_Y), whatever dose the run's members were trained at, so every dose's basis is judged
on the same task. Every method trains on the first ``k − 2`` unseen partitions of each attribute,
picks its learning rate on the next one and is scored on the last one, per test sequence, by the
**planted gap** it leaves:

    gap = Σ‖f(x) − T(x)‖² / Σ‖B(x) − T(x)‖²    over the surface pixels' depth and world points

(1: the base model, 0: the teacher reached). Methods: ``oracle`` (the subspace adapter on the planted
subspaces themselves: the best a mined basis can be), ``ours`` (the run's mined basis), ``random`` and
``psv`` bases of ours' mean dimension, and LoRA at ``lora_ranks``.

    result = planted_power(PowerTask(run=Path("runs/power/dose_1")))
    result["methods"]["ours"]["test_gap"], result["paired"]["ours-random"]

Runs are resumable: ``RUN/power/<method>/lr<lr>/seed<k>/record.json`` is written last and a finished run
is skipped; the trainer resumes a killed one from its checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.atomic import write_json

from .methods import MethodContext, prepare

FOLDER = "power"
LR_GRIDS = {"oracle": (1e-3, 3e-3, 1e-2), "ours": (1e-3, 3e-3, 1e-2), "random": (1e-3, 3e-3, 1e-2),
            "psv": (1e-3, 3e-3, 1e-2), "lora": (3e-4, 1e-3, 3e-3)}


@dataclass(frozen=True)
class PowerTask:
    run: Path                                   # a planted mining run (OUT/config.json, planted.safetensors)
    attributes: tuple[str, str] = ("lighting", "texture")
    methods: tuple[str, ...] = ("oracle", "ours", "random", "psv", "lora")
    lora_ranks: tuple[int, ...] = (4, 16)
    seeds: int = 3
    steps: int = 100
    batch_size: int = 2
    lrs: tuple[tuple[str, float], ...] | None = None   # fixed (method tag, lr) pairs; None: grid on validation
    device: str | None = None


def _mine_cfg(task: PowerTask):
    from mining.pipeline import stored_config

    cfg = stored_config(task.run)
    if not cfg.plant_rank:
        raise ValueError(f"{task.run}: not a planted mining run (mine with --plant-rank K)")
    if cfg.transfer_partitions < 3:
        raise ValueError(f"{task.run}: the power task needs >= 3 unseen partitions per attribute "
                         f"(train, validation, test); the run has --transfer-partitions {cfg.transfer_partitions}")
    missing = [a for a in task.attributes if a not in cfg.attributes]
    if missing:
        raise ValueError(f"{task.run}: attribute {missing[0]!r} was not mined there")
    return cfg


def splits(task: PowerTask, cfg=None) -> dict[str, list[dict]]:
    """train / val / test sequences of the two attributes' unseen partitions, with the teacher's targets
    (``cfg``: the mining run's config, read from the run when not given)."""
    from mining.members import partition_dir, plant_of
    from mining.transfer import unseen_partitions
    from training import SynthSequences

    cfg = cfg or _mine_cfg(task)
    plant = plant_of(cfg)
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for attribute in task.attributes:
        parts = [p for p in unseen_partitions(cfg) if p.attribute == attribute]
        roles = ["train"] * (len(parts) - 2) + ["val", "test"]
        for part, role in zip(parts, roles):
            folder = partition_dir(cfg, part)
            sequences = SynthSequences([folder], num_frames=cfg.frames, resolution=cfg.resolution, seed=cfg.seed)
            out[role] += plant.targets(sequences, tuple(task.attributes), mode="teacher")
    return out


@torch.no_grad()
def planted_gaps(model: torch.nn.Module, base_out: list[dict], sequences: list[dict], device) -> list[float]:
    """The planted gap of each sequence (module doc); ``base_out`` are the base model's outputs on them
    (mining.plant.outputs)."""
    model.eval()
    gaps = []
    for seq, base in zip(sequences, base_out):
        pred = model(seq["images"][None].to(device))
        mask = seq["point_masks"]
        f = _surface(pred["depth"][0, ..., 0].cpu(), pred["world_points"][0].cpu(), mask)
        t = _surface(seq["depths"], seq["world_points"], mask)
        b = _surface(base["depths"], base["world_points"], mask)
        gaps.append(float(((f - t) ** 2).sum() / ((b - t) ** 2).sum().clamp_min(1e-30)))
    return gaps


def planted_loss(predictions: dict, batch: dict) -> tuple[torch.Tensor, dict]:
    """Mean squared error of depth and world points against the teacher's over the surface pixels: the
    planted gap's numerator, so training and score agree. (The pretraining loss would also reward the
    confidence heads, which the gap does not see: a 64-dimensional mined basis lowered that loss while
    its planted gap rose above the base model's.)"""
    mask = batch["point_masks"]
    depth = ((predictions["depth"][..., 0].float() - batch["depths"].float()) ** 2)[mask].mean()
    points = ((predictions["world_points"].float() - batch["world_points"].float()) ** 2).sum(-1)[mask].mean()
    return depth + points, {"depth": depth.detach(), "point": points.detach()}


def _surface(depth, points, mask) -> torch.Tensor:
    return torch.cat([depth[mask][:, None], points[mask]], dim=1).double()


def method_tags(task: PowerTask) -> list[str]:
    return [m for m in task.methods if m != "lora"] + ([f"lora{r}" for r in task.lora_ranks]
                                                        if "lora" in task.methods else [])


def _context(task: PowerTask, cfg, sha: str, tag: str, model, seed: int, device) -> tuple[str, MethodContext]:
    from mining.members import plant_of, target_modules

    from .harness import mean_basis_dim

    folder = task.run / FOLDER
    mined = task.run / "basis.safetensors"
    if tag in ("ours", "random", "psv") and not mined.is_file():
        raise ValueError(f"{mined}: missing; run `python cli.py mine --out {task.run} basis` first")
    oracle = folder / "oracle_basis.safetensors"
    if tag == "oracle" and not oracle.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        plant_of(cfg).write_basis(oracle, checkpoint_sha256=sha)
    method = "ours" if tag == "oracle" else ("lora" if tag.startswith("lora") else tag)
    rank = int(tag[4:]) if tag.startswith("lora") else (mean_basis_dim(mined) if tag in ("random", "psv") else 1)
    ctx = MethodContext(method=method, targets=target_modules(model, cfg.targets), rank=rank, steps=task.steps,
                        seed=seed, basis=oracle if tag == "oracle" else mined, device=device,
                        checkpoint_sha256=sha, workdir=folder / "cache")
    return method, ctx


def run_one(task: PowerTask, cfg, sha: str, data: dict, base_out: dict, tag: str, lr: float, seed: int) -> dict:
    """Train one (method, lr, seed) on the planted task; its record with per-sequence val and test gaps.
    ``cfg`` is the mining run's config, ``sha`` its base model's sha256."""
    from mining.members import load_base
    from training import TrainConfig, make_loader, train

    folder = task.run / FOLDER / tag / f"lr{lr:g}" / f"seed{seed}"
    done = folder / "record.json"
    if done.is_file():
        return json.loads(done.read_text())
    device = torch.device(task.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_base(cfg)
    method, ctx = _context(task, cfg, sha, tag, model, seed, device)
    adapted = prepare(method, model, ctx)
    tcfg = TrainConfig(steps=task.steps, lr=lr, warmup=0.05, weight_decay=0.0, seed=seed,
                       checkpoint_every=max(1, min(100, task.steps // 4)), device=str(device), progress=False)
    result = train(adapted.model, adapted.params, make_loader(data["train"], batch_size=task.batch_size), tcfg,
                   loss_fn=planted_loss, out_dir=folder / "run", after_step=adapted.after_step)
    if result.status == "interrupted":
        raise KeyboardInterrupt(result.message)
    record = {"method": tag, "lr": lr, "seed": seed, "trainable": adapted.trainable, "status": result.status}
    if result.status == "finished":
        adapted.model.to(device)
        record |= {split: planted_gaps(adapted.model, base_out[split], data[split], device) for split in ("val", "test")}
    else:                                   # a diverged run counts against its method
        record |= {"message": result.message, "val": None, "test": None}
    write_json(done, record)
    return record


def planted_power(task: PowerTask, say=print) -> dict:
    """Every method (its rate from its grid on validation with seed 0, unless ``task.lrs`` fixes it), every
    seed; per method the mean test gap with a 95 % bootstrap CI over test sequences (seeds averaged per
    sequence), and each method's paired difference against ``ours``. Written to ``RUN/power/power.json``."""
    from mining.basis import file_sha256
    from mining.members import checkpoint_path, load_base
    from mining.plant import outputs

    cfg = _mine_cfg(task)
    sha = file_sha256(checkpoint_path(cfg))
    data = splits(task, cfg)
    device = torch.device(task.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base = load_base(cfg).to(device)
    base_out = {split: [outputs(base, seq, device) for seq in data[split]] for split in ("val", "test")}
    del base
    fixed = dict(task.lrs or ())
    methods: dict[str, dict] = {}
    for tag in method_tags(task):
        family = "lora" if tag.startswith("lora") else tag
        grid = [fixed[tag]] if tag in fixed else list(LR_GRIDS[family])
        tried = {}
        for lr in grid:
            say(f"{task.run.name}: {tag} lr {lr:g} seed 0")
            rec = run_one(task, cfg, sha, data, base_out, tag, lr, 0)
            tried[lr] = float(np.mean(rec["val"])) if rec.get("val") else math.inf
        best = min(tried, key=tried.get)
        runs = [run_one(task, cfg, sha, data, base_out, tag, best, 0)]
        for seed in range(1, task.seeds):
            say(f"{task.run.name}: {tag} lr {best:g} seed {seed}")
            runs.append(run_one(task, cfg, sha, data, base_out, tag, best, seed))
        diverged = sum(r["status"] != "finished" for r in runs)
        per_sequence = np.mean([r["test"] for r in runs if r.get("test")], axis=0) if diverged < len(runs) else None
        methods[tag] = {"lr": best, "grid": tried, "diverged": f"{diverged}/{len(runs)}",
                        "trainable": runs[0]["trainable"],
                        "test_gap": None if per_sequence is None else float(per_sequence.mean()),
                        "test_gap_ci95": None if per_sequence is None else _ci(per_sequence),
                        "per_sequence": None if per_sequence is None else per_sequence.tolist()}
    paired = {}
    ours = methods.get("ours", {}).get("per_sequence")
    for tag, m in methods.items():
        if tag != "ours" and ours is not None and m["per_sequence"] is not None:
            diff = np.asarray(m["per_sequence"]) - np.asarray(ours)
            paired[f"{tag}-ours"] = {"mean": float(diff.mean()), "ci95": _ci(diff)}
    summary = {"task": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(task).items()},
               "sequences": {s: len(v) for s, v in data.items()}, "methods": methods, "paired": paired}
    write_json(task.run / FOLDER / "power.json", summary)
    return summary


def _ci(values: np.ndarray, seed: int = 0) -> list[float]:
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.allclose(values, values[0]):
        return [float(values.mean())] * 2
    res = bootstrap((values,), np.mean, n_resamples=5000, confidence_level=0.95, random_state=seed)
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


__all__ = ["PowerTask", "planted_gaps", "planted_loss", "planted_power", "splits"]
