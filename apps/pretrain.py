"""Pretraining a small VGGT from scratch on our own `mixed` renders, on the CPU.

    python cli.py pretrain                      # render (or reuse) data, train, evaluate, ship

Steps, each resumable: render the mixed partitions (skips complete samples), train with the one
trainer (resumes from run/checkpoints), evaluate on held-out partitions and on the Middlebury
motorcycle pair beside constant baselines, and write the weights (safetensors, with their config) and
a model card next to them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.atomic import atomic_path, write_json, write_text
from model import VGGT, VGGTConfig, load_model, save_checkpoint
from model.config import CUSTOM_DINO
from render.presets import preset_job
from training import LossWeights, SynthSequences, TrainConfig, find_partitions, make_loader, train, vggt_loss
from training.evaluate import blocks_off_effect, evaluate_on_motorcycle, evaluate_on_sequences
from training.param_groups import pretraining_groups
from training.trace import AggregatorTrace
from training.logs import read_log
from training.rng import seeded

from .pretrain_report import (MIN_BLOCKS_RELIEF_CHANGE, example_figure, model_card, plot_aggregator_trace,
                              plot_learning_curve)

__all__ = ["PretrainConfig", "model_card", "pretrain", "render_data", "split_partitions"]


SHIP_DTYPE = torch.float16

@dataclass(frozen=True)
class PretrainConfig:
    data: Path = Path("data/synth")     # renders go to DATA/mixed/pNNN
    partitions: int = 96                # of which the last `held_out` are for evaluation only
    held_out: int = 8
    # First held-out partition (None: the last `held_out`). Fixing it keeps the evaluation set when more
    # training data is rendered after it (the data-scaling runs of docs/model.md).
    held_out_first: int | None = None
    render_preset: str = "default"      # assets/render_presets.json
    generator_config: Path | None = None  # JSON of generator ranges (the pretraining domain); None = MegaSynth's
    preset: str = "small"               # model preset
    frames: int = 4                     # views per training sequence
    resolution: int = 126
    batch_size: int = 2
    steps: int = 5000
    lr: float = 3e-4                    # from scratch: higher than the official fine-tuning 5e-5
    warmup: float = 0.05
    weight_decay: float = 0.05
    camera_weight: float = 5.0          # the official loss weights (training.losses)
    depth_weight: float = 1.0
    point_weight: float = 1.0           # the point head is trained too (predict fuses depth, but users read both)
    color_jitter: float = 0.1
    crop: float = 1.0                   # smallest side fraction of a random crop (1 = none; training.data)
    flip: float = 0.0                   # probability of a mirrored sequence, cameras mirrored with it
    # The aggregator's blocks must open (docs/model.md, "Pretraining"): LayerScale init of its blocks, a
    # learning-rate multiplier for every LayerScale gamma, and weight decay on matrices only.
    init_values: float = 1.0            # aggregator and camera-trunk blocks; official VGGT: 0.01, which from
                                        # scratch leaves the blocks shut (docs/model.md)
    gamma_lr_scale: float = 1.0
    decay_all: bool = False             # True: decay gammas, norms, biases and tokens too (the first base model)
    patch_embed: str = "conv"           # "conv", or "dino": a DINOv2-style ViT of `dino_depth` blocks
    dino_depth: int = 2
    # Weights kept at these fractions of the run (OUT/milestones/step_N.safetensors): the base models of
    # the mining-vs-pretraining curve (docs/mining.md).
    milestones: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)
    seed: int = 0
    out: Path = Path("runs/pretrain")
    ship: Path | None = None            # where to write the final weights and model card
    # Downstream tasks (finetune/) whose test split the shipped model is evaluated on before any
    # fine-tuning, against a constant depth map (built-in task data is built where missing).
    downstream: tuple[str, ...] = ("face", "human", "transparent")


def render_data(cfg: PretrainConfig, progress=None) -> Path:
    """Render (or finish rendering) the mixed partitions; returns their root."""
    from render.jobs import run

    job = preset_job("mixed", cfg.partitions, cfg.data, cfg.render_preset, seed=cfg.seed,
                     generator_file=cfg.generator_config)
    done = len(find_partitions(job.root)) if job.root.is_dir() else 0
    if done < cfg.partitions:
        run(job, progress=progress)
    return job.root


def split_partitions(root: Path, cfg: PretrainConfig) -> tuple[list[Path], list[Path]]:
    found = [p for p in find_partitions(root) if int(p.name[1:]) < cfg.partitions]
    if len(found) < cfg.partitions:
        raise ValueError(f"{root}: {len(found)} of {cfg.partitions} partitions complete; render the rest first")
    if not 0 < cfg.held_out < len(found):
        raise ValueError(f"held_out must be between 1 and {len(found) - 1}")
    first = cfg.partitions - cfg.held_out if cfg.held_out_first is None else cfg.held_out_first
    if not 0 <= first <= cfg.partitions - cfg.held_out:
        raise ValueError(f"held_out_first {first}: the {cfg.held_out} held-out partitions must lie within "
                         f"p000-p{cfg.partitions - 1:03d}")
    held = set(range(first, first + cfg.held_out))
    return ([p for p in found if int(p.name[1:]) not in held], [p for p in found if int(p.name[1:]) in held])


def pretrain(cfg: PretrainConfig, root: Path, progress: bool = True) -> dict:
    """Train, evaluate and (if cfg.ship) write the model and its card. Returns the metrics."""
    train_parts, val_parts = split_partitions(root, cfg)
    common = dict(num_frames=cfg.frames, resolution=cfg.resolution)
    train_set = SynthSequences(train_parts, seed=cfg.seed, color_jitter=cfg.color_jitter, crop=cfg.crop, flip=cfg.flip,
                               **common)
    val_set = SynthSequences(val_parts, seed=cfg.seed + 1, **common)

    model_cfg = model_config(cfg)
    with seeded(cfg.seed):
        model = VGGT(model_cfg)
    check_run_settings(cfg)
    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                       seed=cfg.seed, checkpoint_every=max(1, min(250, cfg.steps)), val_every=max(1, cfg.steps // 6),
                       progress=progress)
    weights = LossWeights(camera=cfg.camera_weight, depth=cfg.depth_weight, point=cfg.point_weight)
    loss_fn = functools.partial(vggt_loss, weights=weights)
    started = time.time()
    groups = pretraining_groups(model, cfg.weight_decay, cfg.lr, cfg.gamma_lr_scale, cfg.decay_all)
    trace = AggregatorTrace(model, cfg.out / "aggregator.csv", every=max(1, min(25, cfg.steps // 20)))
    keep = milestone_steps(cfg)

    def after_step(step: int) -> None:
        trace(step)
        if step + 1 in keep:  # the weights after this step; a resumed run that repeats the step rewrites them
            save_checkpoint(model, cfg.out / "milestones" / f"step_{step + 1:08d}.safetensors",
                            extra={"step": str(step + 1)})

    try:
        result = train(model, groups, make_loader(train_set, batch_size=cfg.batch_size), tcfg, loss_fn=loss_fn,
                       val_loader=make_loader(val_set, batch_size=cfg.batch_size, shuffle=False), out_dir=cfg.out,
                       after_step=after_step)
    finally:
        trace.close()
    if result.status == "interrupted":
        raise KeyboardInterrupt(result.message)     # the checkpoint is written; rerunning resumes
    if result.exit_code:
        raise RuntimeError(result.message)
    train_seconds, final_loss = _training_log_summary(cfg.out)
    val_rows = read_log(cfg.out / "val.csv")
    if cfg.ship is not None:
        # The shipped file holds float16 weights (half the size); evaluate exactly what ships.
        model.to(SHIP_DTYPE).float()

    metrics = {
        "held_out_renders": evaluate_on_sequences(model, val_set),
        "middlebury_motorcycle": evaluate_on_motorcycle(model, width=cfg.resolution),
        "aggregator": blocks_off_effect(model, val_set),
        "train": {"steps": result.step, "final_loss": final_loss, "seconds": train_seconds,
                  "val_loss": float(val_rows[-1]["loss"]) if val_rows else None,
                  "sequences": len(train_set), "held_out_sequences": len(val_set),
                  "train_partitions": len(train_parts), "held_out_partitions": len(val_parts),
                  "views_per_sequence": cfg.frames, "resolution": cfg.resolution, "batch_size": cfg.batch_size,
                  "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                  "wall_seconds_this_call": round(time.time() - started, 1)},
        "pretrain_config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
        "loss_weights": dataclasses.asdict(weights),
        "model_config": model_cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    metrics["curve"] = learning_curve(cfg, val_set)
    write_json(cfg.out / "metrics.json", metrics)
    plot_aggregator_trace(cfg.out / "aggregator.csv", cfg.out / "aggregator.png")
    plot_learning_curve(metrics["curve"], val_rows, cfg.out / "curve.png")
    if cfg.ship is not None:
        refuse_bypassed(metrics["aggregator"], cfg.out)
        if cfg.downstream:
            # the same float16 weights as the shipped file, in a file of their own: the task records are tied
            # to a checkpoint's sha256, and the shipped file's metadata is only complete after this
            final = cfg.out / "final.safetensors"
            save_checkpoint(model, final, dtype=SHIP_DTYPE, extra={"step": str(result.step)})
            metrics["downstream"] = evaluate_downstream(final, cfg.downstream, cfg.out / "downstream",
                                                        cfg.resolution, cfg.frames)
            write_json(cfg.out / "metrics.json", metrics)
        save_checkpoint(model, cfg.ship, dtype=SHIP_DTYPE, extra={"metrics": json.dumps(metrics)})
        example_figure(model, val_set, cfg.resolution, cfg.ship.with_name(cfg.ship.stem + "_examples.png"))
        with atomic_path(cfg.ship.with_name(cfg.ship.stem + "_curve.png")) as tmp:
            shutil.copyfile(cfg.out / "curve.png", tmp)
        write_text(cfg.ship.with_suffix(".md"), model_card(metrics, cfg.ship))
    return metrics


def evaluate_downstream(checkpoint: Path, tasks, out: Path, resolution: int, frames: int, data_for=None,
                        say=print) -> dict:
    """Each task's test split (and validation) with the base model and with a constant depth map
    (finetune.harness.no_finetune, records in OUT/<task>/none/); ``data_for(task, cfg)`` gives the task's
    data (default: the built-in data, built where missing)."""
    from finetune.harness import FinetuneConfig, no_finetune, task_data

    results = {}
    for task in tasks:
        fcfg = FinetuneConfig(task=task, checkpoint=str(checkpoint), out=str(out),
                              resolution=resolution, frames=frames, progress=False)
        data = data_for(task, fcfg) if data_for else task_data(fcfg, say=say)
        record = no_finetune(fcfg, data)
        results[task] = {"model": record["test"], "constant": record["constant_depth"]["test"],
                         "checkpoint_sha256": record.get("checkpoint_sha256")}
    return results


def milestone_steps(cfg: PretrainConfig) -> set[int]:
    return {max(1, round(f * cfg.steps)) for f in cfg.milestones if 0 < f <= 1}


def learning_curve(cfg: PretrainConfig, val_set, sequences: int = 16) -> list[dict]:
    """Held-out metrics of every milestone's weights (``sequences`` spread over the held-out set), with
    the blocks-off shape change and the constant controls: is the run still improving, and since when
    do the blocks matter."""
    rows = []
    for path in sorted((cfg.out / "milestones").glob("step_*.safetensors")):
        effect = blocks_off_effect(load_model(path).float(), val_set, max_sequences=sequences)
        on, constant = effect["on"], effect["constant"]
        rows.append({"step": int(path.stem.split("_")[1]), "abs_rel": on["abs_rel"], "delta1": on["delta1"],
                     "rot_deg": on["rot_deg"], "trans_rel": on["trans_rel"], "relief_change": effect["relief_change"],
                     "constant_abs_rel": constant["abs_rel"], "identity_rot_deg": constant["rot_deg"]})
    return rows


def model_config(cfg: PretrainConfig) -> VGGTConfig:
    """The model preset with the run's aggregator settings (LayerScale init, patch embedder)."""
    base = VGGTConfig.preset(cfg.preset)
    # the camera head's trunk is a LayerScale block too: left at 0.01 it shut like the aggregator's
    # (the first model's trunk gammas ended at 0.001-0.002)
    changes: dict = {"init_values": cfg.init_values, "camera_init_values": cfg.init_values}
    if cfg.patch_embed == "dino":
        changes |= {"patch_embed": CUSTOM_DINO, "dino_depth": cfg.dino_depth, "dino_heads": base.num_heads}
    elif cfg.patch_embed != "conv":
        raise ValueError(f"patch_embed must be conv or dino, got {cfg.patch_embed!r}")
    return dataclasses.replace(base, **changes)


# Settings a resumed run may change: where it writes, what it ships and where it is evaluated, not what it trains.
_FREE_SETTINGS = ("out", "ship", "downstream")


def check_run_settings(cfg: PretrainConfig) -> None:
    """Write the run's settings to OUT/settings.json, or refuse (ValueError naming the file and the
    settings) when the run folder was started with other ones: a resumed run must be the same run."""
    path = cfg.out / "settings.json"
    # through JSON (paths as text, tuples as lists), as the file holds them
    mine = json.loads(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k not in _FREE_SETTINGS},
                                 default=str))
    if path.exists():
        # a setting added after the run started counts as its default there
        defaults = json.loads(json.dumps(dataclasses.asdict(PretrainConfig()), default=str))
        theirs = defaults | json.loads(path.read_text())
        changed = [f"{k}: {theirs.get(k)!r} -> {v!r}" for k, v in mine.items() if theirs.get(k) != v]
        if changed:
            raise ValueError(f"{path}: the run was started with other settings ({'; '.join(changed)}); "
                             "use another --out for a new run")
        return
    write_json(path, mine)


def refuse_bypassed(effect: dict, out: Path) -> None:
    if not effect["relief_change"] >= MIN_BLOCKS_RELIEF_CHANGE:
        raise ValueError(f"{out}: not shipped: switching the aggregator blocks off changes the shape of the depth "
                         f"maps by only {100 * effect['relief_change']:.1f} % (median; at least "
                         f"{100 * MIN_BLOCKS_RELIEF_CHANGE:.0f} % needed): the blocks are bypassed")


def _training_log_summary(out: Path, last: int = 100) -> tuple[float | None, float | None]:
    """(training seconds, mean loss over the last ``last`` steps) from the run's log.csv; a single step's
    loss is too noisy to report, and a resumed, already finished run has no "last step" of its own."""
    rows = read_log(out / "log.csv")
    if not rows:
        return None, None
    tail = [float(r["loss"]) for r in rows[-last:]]
    return float(rows[-1]["seconds"]), sum(tail) / len(tail)
