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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_path, write_json, write_text
from common.images import depth_to_color, inverse_depth_limits
from model import VGGT, VGGTConfig, save_checkpoint
from model.config import CUSTOM_DINO
from render.presets import preset_job
from training import LossWeights, SynthSequences, TrainConfig, find_partitions, make_loader, train, vggt_loss
from training.evaluate import blocks_off_effect, evaluate_on_motorcycle, evaluate_on_sequences, motorcycle_pair
from training.param_groups import pretraining_groups
from training.trace import AggregatorTrace
from training.logs import read_log
from training.rng import seeded


SHIP_DTYPE = torch.float16

@dataclass(frozen=True)
class PretrainConfig:
    data: Path = Path("data/synth")     # renders go to DATA/mixed/pNNN
    partitions: int = 96                # of which the last `held_out` are for evaluation only
    held_out: int = 8
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
    return found[:-cfg.held_out], found[-cfg.held_out:]


def pretrain(cfg: PretrainConfig, root: Path, progress: bool = True) -> dict:
    """Train, evaluate and (if cfg.ship) write the model and its card. Returns the metrics."""
    train_parts, val_parts = split_partitions(root, cfg)
    common = dict(num_frames=cfg.frames, resolution=cfg.resolution)
    train_set = SynthSequences(train_parts, seed=cfg.seed, color_jitter=cfg.color_jitter, **common)
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
    if cfg.ship is not None:
        # The shipped file holds float16 weights (half the size); evaluate exactly what ships.
        model.to(SHIP_DTYPE).float()

    metrics = {
        "held_out_renders": evaluate_on_sequences(model, val_set),
        "middlebury_motorcycle": evaluate_on_motorcycle(model, width=cfg.resolution),
        "aggregator": blocks_off_effect(model, val_set),
        "train": {"steps": result.step, "final_loss": final_loss, "seconds": train_seconds,
                  "val_loss": _last_val_loss(cfg.out),
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
    write_json(cfg.out / "metrics.json", metrics)
    plot_aggregator_trace(cfg.out / "aggregator.csv", cfg.out / "aggregator.png")
    if cfg.ship is not None:
        refuse_bypassed(metrics["aggregator"], cfg.out)
        save_checkpoint(model, cfg.ship, dtype=SHIP_DTYPE, extra={"metrics": json.dumps(metrics)})
        example_figure(model, val_set, cfg.resolution, cfg.ship.with_name(cfg.ship.stem + "_examples.png"))
        write_text(cfg.ship.with_suffix(".md"), model_card(metrics, cfg.ship))
    return metrics


def milestone_steps(cfg: PretrainConfig) -> set[int]:
    return {max(1, round(f * cfg.steps)) for f in cfg.milestones if 0 < f <= 1}


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


# Settings a resumed run may change: where it writes and what it ships, not what it trains.
_FREE_SETTINGS = ("out", "ship")


def check_run_settings(cfg: PretrainConfig) -> None:
    """Write the run's settings to OUT/settings.json, or refuse (ValueError naming the file and the
    settings) when the run folder was started with other ones: a resumed run must be the same run."""
    path = cfg.out / "settings.json"
    mine = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()
            if k not in _FREE_SETTINGS}
    mine = json.loads(json.dumps(mine))
    if path.exists():
        theirs = json.loads(path.read_text())
        changed = [f"{k}: {theirs.get(k)!r} -> {v!r}" for k, v in mine.items() if theirs.get(k) != v]
        if changed:
            raise ValueError(f"{path}: the run was started with other settings ({'; '.join(changed)}); "
                             "use another --out for a new run")
        return
    write_json(path, mine)


# A base model whose aggregator blocks make less than this share of its depth maps' shape
# (training.evaluate.relief_change, median over held-out views) reads the patch embedding alone: its
# blocks, and every adapter on them, act through a dead path.
MIN_BLOCKS_RELIEF_CHANGE = 0.10


def refuse_bypassed(effect: dict, out: Path) -> None:
    if not effect["relief_change"] >= MIN_BLOCKS_RELIEF_CHANGE:
        raise ValueError(f"{out}: not shipped: switching the aggregator blocks off changes the shape of the depth "
                         f"maps by only {100 * effect['relief_change']:.1f} % (median; at least "
                         f"{100 * MIN_BLOCKS_RELIEF_CHANGE:.0f} % needed): the blocks are bypassed")


def plot_aggregator_trace(csv_path: Path, png: Path) -> None:
    """Mean |gamma| and branch ratio of each aggregator block's LayerScales against the step, and the
    gradient norm of the blocks beside the rest of the model's (training.trace)."""
    from matplotlib.figure import Figure

    rows = read_log(csv_path)
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for ax, suffix, title in ((axes[0], ".gamma", "mean |gamma|"), (axes[1], ".ratio", "RMS(gamma·branch) / RMS(input)")):
        for key in [k for k in rows[0] if k.endswith(suffix)]:
            ax.plot(steps, [float(r[key]) for r in rows], lw=1, ls="-" if key.startswith("frame") else "--",
                    label=key.removesuffix(suffix))
        ax.set_yscale("log")
        ax.set(xlabel="step", title=title)
    axes[0].legend(fontsize=6, ncol=2)
    for key, label in (("blocks_grad", "aggregator blocks"), ("rest_grad", "everything else")):
        axes[2].plot(steps, [float(r[key]) for r in rows], lw=1, label=label)
    axes[2].set_yscale("log")
    axes[2].set(xlabel="step", title="gradient norm (after clipping)")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def _last_val_loss(out: Path) -> float | None:
    rows = read_log(out / "val.csv")
    return float(rows[-1]["loss"]) if rows else None


def _training_log_summary(out: Path, last: int = 100) -> tuple[float | None, float | None]:
    """(training seconds, mean loss over the last ``last`` steps) from the run's log.csv; a single step's
    loss is too noisy to report, and a resumed, already finished run has no "last step" of its own."""
    rows = read_log(out / "log.csv")
    if not rows:
        return None, None
    tail = [float(r["loss"]) for r in rows[-last:]]
    return float(rows[-1]["seconds"]), sum(tail) / len(tail)


def model_card(m: dict, path: Path) -> str:
    t, c = m["train"], m["model_config"]
    held, moto = m["held_out_renders"], m["middlebury_motorcycle"]
    fmt = lambda v, d=3: "—" if v is None or v != v else f"{v:.{d}f}"
    hours = f"{t['seconds'] / 3600:.2f} h" if t.get("seconds") else "—"
    lines = [
        f"# {path.stem}: a small VGGT pretrained on AttrSpace renders",
        "",
        "Our own VGGT architecture (`model/`) at CPU scale, trained from scratch on the `mixed` renders of",
        "`python cli.py pretrain`. It is a base for CPU experiments (LoRA mining, fine-tuning), not a",
        "substitute for the official VGGT-1B.",
        "",
        "## Config",
        f"- preset `{m['pretrain_config']['preset']}`: {m['parameters']:,} parameters; patch embed `{c['patch_embed']}`, "
        f"embed dim {c['embed_dim']}, {c['depth']} frame + {c['depth']} global blocks, {c['num_heads']} heads; "
        f"camera trunk {c['camera_trunk_depth']}; DPT features {c['dpt_features']}; no track head" if not c["track_head"]
        else f"- preset `{m['pretrain_config']['preset']}`: {m['parameters']:,} parameters",
        f"- inputs {t['resolution']}x{t['resolution']} px, {t['views_per_sequence']} views per sequence, "
        f"batch {t['batch_size']}",
        f"- weights stored as float16 ({path.stat().st_size / 2**20:.1f} MiB); the metrics below are of these weights"
        if path.exists() else "- weights: not written",
        "- loss: " + " + ".join(f"{w:g} x {term}" for term, w in m["loss_weights"].items() if w) + " (official terms)",
        "",
        "## Data and training",
        f"- {t['train_partitions']} mixed partitions ({t['sequences']} sequences) for training, "
        f"{t['held_out_partitions']} held out ({t['held_out_sequences']} sequences)",
        f"- {t['steps']} AdamW steps, lr {m['pretrain_config']['lr']} (warm-up then cosine), "
        f"training loss (mean of the last 100 steps) {fmt(t['final_loss'])}",
        _recipe_line(m["pretrain_config"]),
        f"- wall time {hours} on {t['threads']} CPU threads ({t['cpu']})",
        "",
        "## Metrics (median-scaled depth; cameras relative to frame 0)",
        "",
        "| data | predictor | depth AbsRel | δ<1.25 | rotation error (°) | translation error (rel.) |",
        "|---|---|---|---|---|---|",
    ]
    for name, block in (("held-out renders", held), ("Middlebury motorcycle (2 views)", moto)):
        for who, label in (("model", "this model"), ("baseline", "constant depth, identity cameras")):
            r = block[who]
            lines.append(f"| {name} | {label} | {fmt(r['abs_rel'])} | {fmt(r['delta1'])} | "
                         f"{fmt(r['rot_deg'], 2)} | {fmt(r['trans_rel'])} |")
    lines += ["", f"Per held-out sequence, the model's depth beats the constant-depth baseline on "
                  f"{held['model']['abs_rel_wins']} of {held['model']['sequences']} sequences in AbsRel and on "
                  f"{held['model']['delta1_wins']} in δ<1.25."]
    lines += aggregator_section(m.get("aggregator"))
    lines += ["", f"![held-out renders and the motorcycle pair]({path.stem}_examples.png)"]
    lines += ["",
              f"Motorcycle: left and right images resized to {moto['size']['width']}x{moto['size']['height']}, depth "
              f"from the ground-truth disparity with the calibration in `skimage.data.stereo_motorcycle`'s "
              f"docstring, {moto['size']['gt_pixels']} pixels with ground truth; the true relative pose is a pure "
              f"193 mm translation along x (direction error of the prediction: "
              f"{fmt(moto['model'].get('trans_angle_deg'), 1)}°).",
              "", "Numbers as measured by `python cli.py pretrain`; all metrics are in "
              f"`{m['pretrain_config']['out']}/metrics.json` and the file's safetensors metadata.", ""]
    return "\n".join(lines)


def _recipe_line(p: dict) -> str:
    decay = ("on every parameter" if p.get("decay_all", True) else
             "on weight matrices only (not on gammas, norms, biases, tokens)")
    return (f"- LayerScale init of the aggregator and camera-trunk blocks {p.get('init_values', 0.01):g}, gamma learning rate x"
            f"{p.get('gamma_lr_scale', 1.0):g}, weight decay {p.get('weight_decay', 0.05):g} {decay}; "
            f"patch embed `{p.get('patch_embed', 'conv')}`")


def aggregator_section(effect: dict | None) -> list[str]:
    """The card's check that the aggregator blocks matter: metrics with every block switched off."""
    if not effect:
        return []
    fmt = lambda v, d=3: "—" if v is None or v != v else f"{v:.{d}f}"
    gammas = list(effect.get("gamma", {}).values())
    ratios = list(effect.get("branch_ratio", {}).values())
    lines = ["", "## What the aggregator blocks do", "",
             f"With every frame and global block switched off (LayerScale gammas set to 0; "
             f"`training.evaluate.blocks_off_effect`, {effect['on']['sequences']} held-out sequences), the predicted "
             f"depth changes by {100 * effect['depth_change']:.1f} % (median, relative), the shape of the depth maps "
             f"by {100 * effect['relief_change']:.1f} % (scale-free, `relief_change`) and the predicted rotations by "
             f"{fmt(effect['pose_change_deg'], 1)}°. A model whose blocks make less than "
             f"{100 * MIN_BLOCKS_RELIEF_CHANGE:.0f} % of its depth maps' shape is not shipped.",
             "", "| blocks | depth AbsRel | δ<1.25 | rotation error (°) | translation error (rel.) |", "|---|---|---|---|---|"]
    for who, label in (("on", "on (this model)"), ("off", "switched off")):
        r = effect[who]
        lines.append(f"| {label} | {fmt(r['abs_rel'])} | {fmt(r['delta1'])} | {fmt(r['rot_deg'], 2)} | {fmt(r['trans_rel'])} |")
    if gammas and ratios:
        lines += ["", f"Mean |gamma| per LayerScale: {min(gammas):.3f} to {max(gammas):.3f}; each branch writes "
                      f"{100 * min(ratios):.1f} to {100 * max(ratios):.1f} % of its block input's RMS into the residual stream."]
    return lines


@torch.no_grad()
def example_figure(model, val_set, width: int, path: Path, sequences: int = 3) -> None:
    """Held-out renders and the motorcycle pair: image, true depth, predicted depth (median-scaled to the
    truth, same colour range), one row each; for people to look at beside the numbers."""
    from matplotlib.figure import Figure

    model.eval()
    rows = []
    for i in np.unique(np.linspace(0, len(val_set) - 1, sequences).round().astype(int)):
        seq = val_set[int(i)]
        rows.append((f"held-out #{i}", seq["images"][0], seq["depths"][0].numpy(), seq["point_masks"][0].numpy(),
                     model(seq["images"])["depth"][0, 0, ..., 0].numpy()))
    images, gt, _ = motorcycle_pair(width, model.config.patch_size)
    rows.append(("Middlebury motorcycle", images[0], gt, gt > 0, model(images)["depth"][0, 0, ..., 0].numpy()))

    fig = Figure(figsize=(7.5, 2.6 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for ax_row, (name, image, truth, valid, pred) in zip(axes, rows):
        scaled = pred * np.median(truth[valid]) / max(np.median(pred[valid]), 1e-12) if valid.any() else pred
        limits = inverse_depth_limits(truth, valid)  # one colour range for truth and prediction
        ax_row[0].imshow(image.permute(1, 2, 0).numpy())
        ax_row[1].imshow(depth_to_color(truth, valid, limits))
        ax_row[2].imshow(depth_to_color(scaled, None, limits))
        ax_row[0].set_ylabel(name, fontsize=8)
        for ax in ax_row:
            ax.set_xticks([]), ax.set_yticks([])
    for ax, title in zip(axes[0], ("image", "true depth", "predicted (median-scaled)")):
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
