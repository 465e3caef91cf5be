"""What `cli.py pretrain` writes for people to read: the model card, the example figure, the
aggregator trace's plot and the learning curve over the run's milestone weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_path
from common.images import depth_to_color, inverse_depth_limits
from training.evaluate import motorcycle_pair
from training.logs import read_log

# A base model whose aggregator blocks make less than this share of its depth maps' shape
# (training.evaluate.relief_change, median over held-out views) reads the patch embedding alone: its
# blocks, and every adapter on them, act through a dead path.
MIN_BLOCKS_RELIEF_CHANGE = 0.10

# What a base model worth mining should reach on two cores (issue 22): held-out renders of its own
# pretraining domain, and the real motorcycle pair against a constant depth map.
TARGETS = {"abs_rel": 0.15, "delta1": 0.80, "rot_deg": 5.0, "motorcycle_vs_constant": 0.75}


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


def model_card(m: dict, path: Path) -> str:
    t, c = m["train"], m["model_config"]
    held, moto = m["held_out_renders"], m["middlebury_motorcycle"]
    fmt = lambda v, d=3: "—" if v is None or v != v else f"{v:.{d}f}"
    hours = f"{t['seconds'] / 3600:.2f} h" if t.get("seconds") else "—"
    lines = [
        f"# {path.stem}: a small VGGT pretrained on AttrSpace renders",
        "",
        "Our own VGGT architecture (`model/`) at CPU scale, trained from scratch on the `mixed` renders of",
        "`python cli.py pretrain` (every attribute varies at once). It is a base for CPU experiments (LoRA",
        "mining, fine-tuning), not a substitute for the official VGGT-1B.",
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
        f"- the pretraining domain: {_domain(m['pretrain_config'])}",
        f"- the recipe as one command (renders the data first, resumes where it stopped): "
        f"`{reproduce_command(m['pretrain_config'])}`",
        f"- wall time {hours} on {t['threads']} CPU thread{'s' if t['threads'] != 1 else ''} ({t['cpu']})",
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
    lines += targets_section(m)
    lines += downstream_section(m.get("downstream"))
    lines += aggregator_section(m.get("aggregator"))
    lines += curve_section(m.get("curve"), path)
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


def targets_section(m: dict) -> list[str]:
    """The targets against this model, and for a missed held-out target the steps a power law fitted to
    the learning curve's last milestones would need (an extrapolation without a floor: optimistic)."""
    held, moto = m["held_out_renders"], m["middlebury_motorcycle"]
    seconds_per_step = (m["train"].get("seconds") or float("nan")) / max(1, m["train"]["steps"])
    rows = [("held-out renders, AbsRel", "abs_rel", f"≤ {TARGETS['abs_rel']:.2f}", held["model"]["abs_rel"],
             held["baseline"]["abs_rel"], held["model"]["abs_rel"] <= TARGETS["abs_rel"]),
            ("held-out renders, δ<1.25", "delta1", f"≥ {TARGETS['delta1']:.2f}", held["model"]["delta1"],
             held["baseline"]["delta1"], held["model"]["delta1"] >= TARGETS["delta1"]),
            ("held-out renders, rotation error (°)", "rot_deg", f"≤ {TARGETS['rot_deg']:g}", held["model"]["rot_deg"],
             held["baseline"]["rot_deg"], held["model"]["rot_deg"] <= TARGETS["rot_deg"])]
    limit = TARGETS["motorcycle_vs_constant"] * moto["baseline"]["abs_rel"]
    rows.append(("Middlebury motorcycle, AbsRel", None, f"≤ {limit:.3f} (25 % below the constant)",
                 moto["model"]["abs_rel"], moto["baseline"]["abs_rel"], moto["model"]["abs_rel"] <= limit))
    lines = ["", "## Targets", "", "| measure | target | this model | constant / identity | met |", "|---|---|---|---|---|"]
    notes = []
    for label, key, target, value, control, met in rows:
        lines.append(f"| {label} | {target} | {value:.3f} | {control:.3f} | {'yes' if met else '**no**'} |")
        if not met and key is not None:
            notes.append(_extrapolation(label, key, m.get("curve") or [], seconds_per_step))
    return lines + [""] + [n for n in notes if n] if notes else lines


def _extrapolation(label: str, key: str, curve: list[dict], seconds_per_step: float) -> str:
    """``label``'s target from a power law err = a·step^(-b) fitted (log-log least squares) to the last
    three milestones; for δ the error is 1 - δ."""
    pts = [(r["step"], r[key]) for r in curve if r.get(key) is not None and r["step"] > 0][-3:]
    target = TARGETS[key]
    if key == "delta1":
        pts, target = [(s, 1 - v) for s, v in pts], 1 - target
    if len(pts) < 3 or any(v <= 0 for _, v in pts):
        return f"- {label}: too few milestones to extrapolate."
    control = {"abs_rel": "constant_abs_rel", "rot_deg": "identity_rot_deg"}.get(key)
    if control and curve[-1].get(control) is not None and curve[-1][key] >= curve[-1][control]:
        return (f"- {label}: at the last milestone no better than the constant / identity "
                f"({curve[-1][key]:.3f} against {curve[-1][control]:.3f}): there is no learning to extrapolate.")
    slope, intercept = np.polyfit(np.log([s for s, _ in pts]), np.log([v for _, v in pts]), 1)
    if slope >= 0:
        return (f"- {label}: not improving over the last three milestones (steps {pts[0][0]}–{pts[-1][0]}); "
                "more steps of this recipe would not reach it.")
    log_steps = (np.log(target) - intercept) / slope
    if log_steps > np.log(1e9):
        return (f"- {label}: a power law through the last three milestones (exponent {slope:.2f}) needs more than "
                "10⁹ steps: out of reach for this recipe at this scale.")
    steps = float(np.exp(log_steps))
    hours = steps * seconds_per_step / 3600
    return (f"- {label}: a power law through the last three milestones (exponent {slope:.2f}) reaches the target "
            f"at about {steps:,.0f} steps, {steps / pts[-1][0]:.0f}× this run"
            + (f" (≈ {hours:,.0f} h at this run's {seconds_per_step:.2f} s/step)" if np.isfinite(hours) else "")
            + "; an extrapolation without a floor, so a lower bound.")


def downstream_section(down: dict | None) -> list[str]:
    """Each downstream task's test split before fine-tuning: the model against a constant depth map."""
    if not down:
        return []
    lines = ["", "## Downstream test splits before fine-tuning", "",
             "`finetune.harness.no_finetune` on the built-in task data (median-scaled depth per view; points "
             "in mm).", "", "| task | predictor | AbsRel | δ<1.25 | Acc mean (mm) | NC mean | sequences |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda v, d=3: "—" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    for task, r in down.items():
        for who, label in (("model", "this model"), ("constant", "constant depth")):
            x = r[who]
            lines.append(f"| {task} | {label} | {fmt(x.get('abs_rel'))} | {fmt(x.get('delta1'))} | "
                         f"{fmt(x.get('acc_mean'), 2)} | {fmt(x.get('nc_mean'))} | {x.get('sequences', '—')} |")
    return lines


# PretrainConfig fields that `cli.py pretrain` takes as options (the rest are code defaults)
_CLI_OPTIONS = ("generator_config", "data", "partitions", "held_out", "held_out_first", "render_preset", "preset",
                "steps", "batch_size", "frames", "resolution", "lr", "seed", "init_values", "gamma_lr_scale",
                "decay_all", "patch_embed", "crop", "flip", "out", "ship", "downstream")


def reproduce_command(p: dict) -> str:
    """The one command that remakes the run from nothing (rendering its data first): every setting that
    differs from `cli.py pretrain`'s defaults, and a note for any that the CLI does not take."""
    import dataclasses

    from apps.pretrain import PretrainConfig

    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else (None if v is None else str(v))  # noqa: E731
    defaults = {k: norm(v) for k, v in dataclasses.asdict(PretrainConfig()).items()}
    parts = ["python cli.py pretrain"]
    for key in _CLI_OPTIONS:
        value = norm(p.get(key, defaults[key]))
        if value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "decay_all":                   # a flag: present only when on (its default is off)
            parts.append(flag)
        elif key == "downstream":
            parts.append(f"{flag} {','.join(value) or 'none'}")
        else:
            parts.append(f"{flag} {value}")
    others = [f"{k}={p[k]}" for k in defaults if k not in _CLI_OPTIONS and k in p and norm(p[k]) != defaults[k]]
    command = " ".join(parts)
    return command + (f"  (code settings beyond the CLI: {', '.join(others)})" if others else "")


def _domain(p: dict) -> str:
    if not p.get("generator_config"):
        return "MegaSynth's wide ranges (the same generator as the mining partitions)"
    return (f"the ranges in `{p['generator_config']}` (narrower than the mining partitions' wide ranges, "
            "which it has therefore not seen)")


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


def curve_section(curve: list | None, path: Path) -> list[str]:
    """The card's learning curve: held-out metrics of the run's milestone weights."""
    if not curve:
        return []
    lines = ["", "## Learning curve (milestone weights of the run, held-out renders)", "",
             "| step | AbsRel | δ<1.25 | rotation error (°) | shape change, blocks off |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['abs_rel']:.3f} | {r['delta1']:.3f} | {r['rot_deg']:.2f} | "
              f"{100 * r['relief_change']:.1f} % |" for r in curve]
    last = curve[-1]
    lines += ["", f"Controls: constant depth AbsRel {last['constant_abs_rel']:.3f}, identity cameras "
                  f"{last['identity_rot_deg']:.2f}°.", "", f"![learning curve]({path.stem}_curve.png)"]
    return lines


def plot_learning_curve(curve: list[dict], val_rows: list[dict], path: Path) -> None:
    """Held-out AbsRel and rotation error of the milestones against the step (with their constant
    controls), and the validation loss."""
    from matplotlib.figure import Figure

    if not curve:
        return
    steps = [r["step"] for r in curve]
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    for ax, key, control, title in ((axes[0], "abs_rel", "constant_abs_rel", "depth AbsRel (held out)"),
                                    (axes[1], "rot_deg", "identity_rot_deg", "rotation error ° (held out)")):
        ax.plot(steps, [r[key] for r in curve], "o-", label="model")
        ax.plot(steps, [r[control] for r in curve], "--", color="grey", label="constant / identity")
        ax.set(xlabel="step", title=title)
        ax.legend(fontsize=7)
    if val_rows:
        axes[2].plot([int(r["step"]) for r in val_rows], [float(r["loss"]) for r in val_rows], "o-")
    axes[2].set(xlabel="step", title="validation loss")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
