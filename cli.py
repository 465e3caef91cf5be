"""AttrSpace command line: a thin layer over the packages (see README.md)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="AttrSpace: attribute subspaces for cheap fine-tuning of VGGT.")
ASSETS = Path(__file__).resolve().parent / "assets"


@app.callback()
def main() -> None:
    """AttrSpace: attribute subspaces for cheap fine-tuning of VGGT."""


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def render(
    attribute: Optional[str] = typer.Option(None, help="texture | geometry | camera | lighting | mixed "
                                                       "(or --meshes, or --scene)"),
    partitions: Optional[int] = typer.Option(None, help="number of partitions (default 10; with --meshes: every "
                                                        "mesh from --first-partition on)"),
    samples: Optional[int] = typer.Option(None, help="samples per partition"),
    views: Optional[int] = typer.Option(None, help="views per sample"),
    resolution: Optional[int] = typer.Option(None, help="image width = height in pixels"),
    spp: Optional[int] = typer.Option(None, help="Cycles samples per pixel"),
    denoise: Optional[bool] = typer.Option(None, "--denoise/--no-denoise", help="OpenImageDenoise"),
    preset: str = typer.Option("default", help="default | clean | paper | preview (assets/render_presets.json)"),
    seed: int = typer.Option(0, help="master seed"),
    jitter: Optional[float] = typer.Option(None, help="scale of the jitter of the attributes a partition holds "
                                                      "fixed (default 1.0)"),
    out: Path = typer.Option(Path("data/synth"), help="output root; partitions go to OUT/ATTRIBUTE/pNNN "
                                                      "(with --meshes: OUT/NAME/pNNN)"),
    workers: int = typer.Option(1, help="render processes; CPUs are split among them as Cycles threads"),
    shard: Optional[str] = typer.Option(None, help="I/N: render the I-th of N slices (default: SLURM array vars)"),
    first_partition: int = typer.Option(0, help="index of the first partition (with --meshes: of the first mesh)"),
    textures: Optional[Path] = typer.Option(None, help="folder of texture images to mix into the materials"),
    generator_config: Optional[Path] = typer.Option(None, help="JSON file of generator ranges overriding the "
                                                              "preset's (docs/attributes.md; with --scene: "
                                                              "docs/transparent.md)"),
    scene: Optional[str] = typer.Option(None, help="built-in scene kind: transparent (tabletop glass and clear "
                                                   "plastic objects, docs/transparent.md); partitions go to "
                                                   "OUT/transparent/pNNN"),
    meshes: Optional[Path] = typer.Option(None, help="mesh mode: a folder of meshes (searched recursively), a mesh "
                                                     "file or a .txt list; one partition per mesh (docs/meshes.md)"),
    rig: Optional[str] = typer.Option(None, help="with --meshes: micro-baseline | turntable | hemisphere"),
    units: str = typer.Option("auto", help="with --meshes: auto | m | mm | cm (auto: mm above 10 units)"),
    up: str = typer.Option("+y", help="with --meshes: the file axis pointing up (+x -x +y -y +z -z)"),
    front: str = typer.Option("+z", help="with --meshes: the file axis the object faces (micro-baseline looks at it)"),
    name: Optional[str] = typer.Option(None, help="with --meshes or --scene: output folder name (default: the "
                                                  "source's name; the scene kind's)"),
    rig_config: Optional[str] = typer.Option(None, help="with --meshes: JSON file or object of rig settings"),
    lighting_config: Optional[str] = typer.Option(None, help="with --meshes: JSON file or object of studio "
                                                             "lighting settings"),
) -> None:
    """Render attribute-controlled partitions, user meshes (--meshes) or built-in scenes (--scene) with Blender
    (resumable; farm-shardable)."""
    from render.jobs import JobError, parse_shard, run
    from render.dataset import PartitionError
    from render.meshes import MeshError
    from render.presets import mesh_job, preset_job, transparent_job

    try:
        if scene is not None:
            if scene != "transparent":
                raise JobError(f"--scene {scene!r}: unknown; choose transparent")
            given = [o for o, v in (("--attribute", attribute), ("--meshes", meshes), ("--jitter", jitter),
                                    ("--rig", rig), ("--rig-config", rig_config),
                                    ("--lighting-config", lighting_config)) if v is not None]
            given += [o for o, v, d in (("--units", units, "auto"), ("--up", up, "+y"), ("--front", front, "+z"))
                      if v != d]
            if given:
                raise JobError(f"{given[0]}: not used with --scene")
            job = transparent_job(out, 10 if partitions is None else partitions, preset, samples=samples, views=views,
                                  resolution=resolution, spp=spp, denoise=denoise, seed=seed,
                                  first_partition=first_partition, scene_config=generator_config,
                                  textures=textures, name=name)
        elif meshes is not None:
            given = [o for o, v in (("--attribute", attribute), ("--jitter", jitter), ("--textures", textures),
                                    ("--generator-config", generator_config)) if v is not None]
            if given:
                raise JobError(f"{given[0]}: not used with --meshes (the mesh mode varies cameras and lighting)")
            if rig is None:
                raise JobError("--rig: required with --meshes; choose micro-baseline, turntable or hemisphere")
            job = mesh_job(meshes, rig, out, preset, samples=samples, views=views, resolution=resolution, spp=spp,
                           denoise=denoise, seed=seed, first_partition=first_partition, partitions=partitions,
                           units=units, up=up, front=front, name=name, rig_config=rig_config,
                           lighting_config=lighting_config)
        else:
            if attribute is None:
                raise JobError("--attribute: required (or --meshes DIR to render meshes, or --scene transparent)")
            mesh_only = [o for o, v in (("--rig", rig), ("--name", name), ("--rig-config", rig_config),
                                        ("--lighting-config", lighting_config)) if v is not None]
            mesh_only += [o for o, v, d in (("--units", units, "auto"), ("--up", up, "+y"), ("--front", front, "+z"))
                          if v != d]
            if mesh_only:
                raise JobError(f"{mesh_only[0]}: only with --meshes")
            job = preset_job(attribute, 10 if partitions is None else partitions, out, preset, samples=samples,
                             views=views, resolution=resolution, spp=spp, denoise=denoise, seed=seed,
                             jitter=1.0 if jitter is None else jitter, first_partition=first_partition,
                             textures=textures, generator_file=generator_config)
        shard_ix = parse_shard(shard)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
        from render.jobs import shard_items
        total = len(shard_items(job.items(), shard_ix))
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(f"{job.root.name} shard {shard_ix[0]}/{shard_ix[1]}", total=total)
            stats = run(job, shard_ix, workers=workers, progress=lambda n: bar.advance(task, n))
    except (JobError, PartitionError, MeshError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to resume", 130)
    typer.echo(f"rendered {stats.rendered} samples ({stats.views} views, {stats.skipped} already done) "
               f"in {stats.wall_seconds:.1f} s; complete partitions written: {len(stats.finalized)}; "
               f"output: {job.root}")


@app.command()
def pretrain(
    data: Path = typer.Option(Path("data/synth"), help="render root; mixed partitions are read from DATA/mixed"),
    partitions: int = typer.Option(96, help="mixed partitions to render (or reuse); the last --held-out are held out"),
    held_out: int = typer.Option(8, help="partitions kept for evaluation"),
    held_out_first: Optional[int] = typer.Option(None, help="index of the first held-out partition (default: the "
                                                 "last --held-out); fix it to keep the evaluation set when adding data"),
    preset: str = typer.Option("small", help="model preset (model.VGGTConfig.preset)"),
    steps: int = typer.Option(5000, help="optimizer steps"),
    batch_size: int = typer.Option(2, help="sequences per step"),
    frames: int = typer.Option(4, help="views per sequence"),
    resolution: int = typer.Option(126, help="training width = height (a multiple of the patch size)"),
    lr: float = typer.Option(3e-4, help="peak learning rate"),
    seed: int = typer.Option(0, help="seed of the model init, data order and augmentation"),
    out: Path = typer.Option(Path("runs/pretrain"), help="run folder: checkpoints, log.csv, loss curve, metrics"),
    ship: Optional[Path] = typer.Option(None, help="also write the weights (safetensors) and a model card here"),
    render: bool = typer.Option(True, "--render/--no-render", help="render missing partitions first"),
    generator_config: Optional[Path] = typer.Option(None, help="JSON file of generator ranges for the pretraining "
                                                    "domain (e.g. assets/generator_narrow.json); use its own --data"),
    render_preset: str = typer.Option("default", help="render preset of the pretraining data"),
    init_values: Optional[float] = typer.Option(None, help="LayerScale init of the aggregator blocks "
                                                "(default: the recipe's, docs/model.md)"),
    gamma_lr_scale: Optional[float] = typer.Option(None, help="learning-rate multiplier of the LayerScale gammas "
                                                   "(default: the recipe's)"),
    decay_all: bool = typer.Option(False, "--decay-all", help="weight decay on gammas, norms, biases and tokens too "
                                   "(the first base model's recipe; for comparisons)"),
    patch_embed: Optional[str] = typer.Option(None, help="conv | dino (a small DINOv2-style ViT) (default: the recipe's)"),
    crop: float = typer.Option(1.0, help="random crop: smallest side fraction (1 = none), intrinsics follow"),
    flip: float = typer.Option(0.0, help="probability of mirroring a sequence, cameras mirrored with it"),
    downstream: str = typer.Option("face,human,transparent", help="with --ship: the downstream tasks whose test "
                                   "split the model is evaluated on before fine-tuning, against a constant depth map "
                                   "(their data is built where missing; 'none' for no task)"),
) -> None:
    """Pretrain a small VGGT from scratch on mixed renders (CPU-scale), evaluate it and write a model card."""
    from render.dataset import PartitionError
    from apps.pretrain import PretrainConfig, pretrain as run_pretrain, render_data
    from finetune.harness import TASKS

    unknown = [t for t in downstream.split(",") if t and t not in (*TASKS, "none")]
    if unknown:
        fail(f"--downstream {unknown[0]!r}: unknown task; choose from {', '.join(TASKS)} or none")
    cfg = PretrainConfig(data=data, partitions=partitions, held_out=held_out, held_out_first=held_out_first,
                         preset=preset, steps=steps,
                         batch_size=batch_size, frames=frames, resolution=resolution, lr=lr, seed=seed, out=out,
                         ship=ship, generator_config=generator_config, render_preset=render_preset,
                         decay_all=decay_all, crop=crop, flip=flip,
                         downstream=tuple(t for t in downstream.split(",") if t and t != "none"), **{k: v for k, v in dict(init_values=init_values, patch_embed=patch_embed,
                                                                       gamma_lr_scale=gamma_lr_scale).items()
                                                 if v is not None})
    try:
        if render:
            root = render_data(cfg)
        else:
            root = data / "mixed"
        metrics = run_pretrain(cfg, root)
    except (OSError, ValueError, PartitionError, RuntimeError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to resume from the last checkpoint", 130)
    held = metrics["held_out_renders"]
    for who in ("model", "baseline"):
        r = held[who]
        typer.echo(f"held-out {who:8s}: AbsRel {r['abs_rel']:.3f}  d<1.25 {r['delta1']:.3f}  "
                   f"rot {r['rot_deg']:.2f} deg  trans {r['trans_rel']:.3f}")
    typer.echo(f"metrics: {out / 'metrics.json'}" + (f"; model: {ship}" if ship else ""))


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="images and/or folders of images (one scene, in order)"),
    out: Path = typer.Option(..., help="output folder: depth/, cameras.json, points.ply"),
    checkpoint: Path = typer.Option(ASSETS / "vggt_small.safetensors", help=".safetensors/.pt/.pth weights"),
    preset: Optional[str] = typer.Option(None, help="model preset when the checkpoint stores no config "
                                                    "(official weights: vggt-1b)"),
    width: Optional[int] = typer.Option(None, help="model input width (default: the model's img_size)"),
    keep: float = typer.Option(0.5, help="share of pixels, most confident first, fused into points.ply"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Depth, cameras and a fused point cloud from images with a VGGT."""
    import torch
    from model import VGGTConfig, load_model
    from model.checkpoint import CheckpointError
    from apps.predict import PredictError, find_images, load_images, predict as run_predict, write_outputs

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        if not checkpoint.is_file():
            raise PredictError(f"{checkpoint}: no such checkpoint (the shipped one is assets/vggt_small.safetensors)")
        config = VGGTConfig.preset(preset) if preset else None
        model = load_model(checkpoint, config=config)
        paths = find_images(inputs)
        images = load_images(paths, width or model.config.img_size, model.config.patch_size)
        summary = write_outputs(run_predict(model, images, dev), paths, out, keep)
    except (PredictError, CheckpointError, ValueError, OSError) as e:
        fail(str(e))
    typer.echo(f"{summary['views']} views at {summary['width']}x{summary['height']}: depth in {out / 'depth'}, "
               f"cameras in {out / 'cameras.json'}, {summary['points']} points in {out / 'points.ply'}")


def _int_list(option: str, text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        fail(f"{option} {text!r}: expected whole numbers separated by commas, e.g. 4,16,64")


@app.command()
def finetune(
    task: str = typer.Argument("face", help="face (micro-baseline 3D face anti-spoofing) | transparent "
                                            "(transparent objects: built-in glass scenes or ClearPose via --data) | "
                                            "human (clothed humans: built-in dressed bodies in two domains, or "
                                            "THuman 2.1 / 2K2K via --data)"),
    method: str = typer.Option("ours", help="ours | psv | random | lora | pissa | adalora | eva | corda | full"),
    compare: bool = typer.Option(False, "--compare", help="every method at the same budget, the paper-style table"),
    methods: Optional[str] = typer.Option(None, help="--compare: only these methods (comma-separated; default: all)"),
    basis: Path = typer.Option(Path("mined/basis.safetensors"), help="the mined basis (python cli.py mine)"),
    rank: int = typer.Option(16, help="LoRA-family rank r"),
    ranks: Optional[str] = typer.Option(None, help="--compare: LoRA at each of these ranks, e.g. 4,16,64,192"),
    bases: Optional[str] = typer.Option(None, help="--compare: ours with each of these basis files (comma-separated), "
                                                   "e.g. bases mined at several d′ (mine basis --rank D --out-file F)"),
    dim: Optional[int] = typer.Option(None, help="psv / random basis dimension (default: the mined basis's)"),
    steps: int = typer.Option(200, help="optimizer steps of every run"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate (default: the method's grid, picked on val)"),
    seeds: int = typer.Option(1, help="seeds per method (mean ± std)"),
    heads: str = typer.Option("frozen", help="frozen | train: the depth head, the same for every method"),
    data: Optional[Path] = typer.Option(None, help="your data: DIR/{train,val,test}/ of partitions or RGB-D "
                                                   "sequences (docs/rgbd.md), for transparent the ClearPose "
                                                   "dataset folder (docs/clearpose.md), for human a THuman 2.1 "
                                                   "and/or 2K2K folder (docs/human.md); default: built-in"),
    checkpoint: Path = typer.Option(Path("assets/vggt_small.safetensors"), help="base model weights"),
    preset: Optional[str] = typer.Option(None, help="model preset for checkpoints without a stored config "
                                                    "(official weights: vggt-1b)"),
    resolution: int = typer.Option(126, help="image width = height (a multiple of 14)"),
    frames: int = typer.Option(4, help="views per sequence"),
    batch_size: int = typer.Option(2, help="sequences per step"),
    targets: Optional[str] = typer.Option(None, help="regex of the layers every method adapts (default: the "
                                                     "basis's layers)"),
    out: Path = typer.Option(Path("runs/finetune"), help="runs, tables and plots go to OUT/TASK/"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)"),
) -> None:
    """Fine-tune the base model on a downstream task; evaluate before and after (resumable)."""
    from finetune.harness import (FinetuneConfig, check_basis, compare as compare_all, no_finetune, run_method,
                                  task_data)
    from finetune.methods import METHODS

    with _finetune_step():
        rank_list = _int_list("--ranks", ranks)
        base_list = tuple(b.strip() for b in bases.split(",") if b.strip()) if bases is not None else None
        for b in base_list or ():
            if not Path(b).is_file():
                fail(f"--bases: {b}: no such basis file")
        cfg = FinetuneConfig(task=task, method=method, rank=rank, dim=dim, steps=steps, lr=lr, seeds=seeds,
                             heads=heads, data=_str(data), checkpoint=str(checkpoint), model_preset=preset,
                             resolution=resolution, frames=frames, batch_size=batch_size,
                             basis=base_list[0] if base_list else str(basis), targets=targets, out=str(out),
                             device=device, ranks=rank_list, bases=base_list)
        from finetune.harness import resolve
        chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(METHODS)
        unknown = [m for m in chosen if m not in METHODS]
        if unknown or not chosen:
            fail(f"--methods {methods!r}: unknown {', '.join(unknown) or 'nothing'}; choose from {', '.join(METHODS)}")
        if not compare and method == "ours" and not resolve(cfg.basis).is_file():
            fail(f"{basis}: no basis; make it with `python cli.py mine` (or pick --method psv / random / lora ...)")
        if not resolve(cfg.checkpoint).is_file():
            fail(f"{checkpoint}: no such checkpoint")
        if method == "ours" or (compare and "ours" in chosen):   # before any data is built
            import dataclasses
            for b in cfg.bases or (cfg.basis,):
                if resolve(b).is_file():
                    check_basis(dataclasses.replace(cfg, basis=b))
        data_ = task_data(cfg, say=typer.echo)
        if compare:
            methods = [m for m in chosen if m != "ours" or resolve(cfg.basis).is_file()]
            if "ours" in chosen and "ours" not in methods:
                typer.echo(f"note: {basis} is missing, so the table has no `ours` row (make it with `python cli.py mine`)")
            result = compare_all(cfg, data_, methods, say=typer.echo)
            typer.echo(result["markdown"])
            typer.echo(f"table: {cfg.task_dir / 'compare.md'} (and .csv, metrics_vs_params.png, losses.png)")
            return
        base = no_finetune(cfg, data_)
        res = run_method(cfg, data_, method, say=typer.echo)
        from finetune.report import markdown, table_rows
        typer.echo(markdown(table_rows(base, [res], task), [f"{method}: lr {res['lr']:g} (grid on validation: "
                                                            f"{[t['lr'] for t in res['grid']]}), {steps} steps"],
                            task))


@contextmanager
def _one_line(errors: tuple):
    """``errors`` (bad input, a failed step) become one line and exit code 2, Ctrl-C exit code 130; never a
    traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except errors as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to resume", 130)


def _finetune_step():
    """Bad input (no basis, a basis for another model, unreadable data) is one line and exit code 2."""
    from finetune.data import TaskDataError
    from finetune.harness import FinetuneError
    from finetune.methods import MethodError
    from finetune.rgbd import RGBDError
    from mining.basis import BasisError
    from model.checkpoint import CheckpointError
    from render.dataset import PartitionError
    from render.jobs import JobError
    return _one_line((FinetuneError, MethodError, BasisError, TaskDataError, RGBDError, CheckpointError,
                      PartitionError, JobError))


mine_app = typer.Typer(add_completion=False, help="Mine attribute subspaces: LoRA clusters, shared subspaces, "
                                                 "the basis and the report (docs/mining.md).")
app.add_typer(mine_app, name="mine")


def _mine_step():
    """Bad input, a failed step or Ctrl-C become one line and an exit code, never a traceback."""
    from mining.basis import BasisError
    from mining.config import MineConfigError
    from model.checkpoint import CheckpointError
    from render.dataset import PartitionError
    from render.jobs import JobError
    return _one_line((MineConfigError, BasisError, CheckpointError, JobError, PartitionError, OSError, ValueError,
                      RuntimeError))


@mine_app.callback(invoke_without_command=True)
def mine(
    ctx: typer.Context,
    out: Path = typer.Option(Path("mined"), help="run folder: members/, subspaces, basis, report"),
    preset: Optional[str] = typer.Option(None, help="default (about 1 h 40 min on 2 cores) | quick (12 min); "
                                                    "default: the run's stored settings, else 'default'"),
    checkpoint: Optional[Path] = typer.Option(None, help="base model weights (default: assets/vggt_small.safetensors)"),
    model_preset: Optional[str] = typer.Option(None, help="model preset for checkpoints without a stored config "
                                                          "(official weights: vggt-1b)"),
    data: Optional[Path] = typer.Option(None, help="render root: DATA/ATTRIBUTE/pNNN (rendered where missing)"),
    render_preset: Optional[str] = typer.Option(None, help="render preset of the partitions (default | clean | paper | preview)"),
    samples: Optional[int] = typer.Option(None, help="samples per partition (default: the render preset's)"),
    held_out: Optional[int] = typer.Option(None, help="samples per partition kept for the member's evaluation"),
    jitter: Optional[float] = typer.Option(None, help="render jitter of the attributes a partition holds fixed"),
    members: Optional[int] = typer.Option(None, help="members (partitions) per attribute"),
    mixed_members: Optional[int] = typer.Option(None, help="members of the generic cluster on mixed partitions"),
    transfer_partitions: Optional[int] = typer.Option(None, help="per cluster, partitions after the members' that "
                                                                 "only the transfer matrix evaluates (default 4)"),
    steps: Optional[int] = typer.Option(None, help="optimizer steps per member"),
    rank: Optional[int] = typer.Option(None, help="LoRA rank r of every member"),
    lora_alpha: Optional[float] = typer.Option(None, help="LoRA alpha (scaling alpha / r)"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate of every member"),
    batch_size: Optional[int] = typer.Option(None, help="sequences per step"),
    frames: Optional[int] = typer.Option(None, help="views per training sequence"),
    resolution: Optional[int] = typer.Option(None, help="training width = height (a multiple of 14; vggt-1b: 518)"),
    camera_weight: Optional[float] = typer.Option(None, help="camera loss weight"),
    depth_weight: Optional[float] = typer.Option(None, help="depth loss weight"),
    point_weight: Optional[float] = typer.Option(None, help="point loss weight"),
    targets: Optional[str] = typer.Option(None, help="regex of the module names that get a LoRA"),
    subspace_rank: Optional[str] = typer.Option(None, help="d' per attribute and layer: an integer or 'auto'"),
    rank_bounds: Optional[str] = typer.Option(None, help="LOW,HIGH: where --subspace-rank auto looks for the gap"),
    alpha: Optional[float] = typer.Option(None, help="IRLS exponent (1 = median-like, 2 = plain mean)"),
    eps: Optional[float] = typer.Option(None, help="IRLS epsilon, relative to the RMS member update norm"),
    max_iter: Optional[int] = typer.Option(None, help="IRLS iterations at most"),
    plant_rank: Optional[int] = typer.Option(None, help="power control: plant a random rank-K update per attribute "
                                             "on every mined layer and train members on its teacher (0 = off)"),
    plant_gap: Optional[float] = typer.Option(None, help="the teacher's depth change, in units of the base model's "
                                              "depth error (calibrated per attribute)"),
    plant_mode: Optional[str] = typer.Option(None, help="mixed: targets = truth + dose x (teacher - base); "
                                             "teacher: the teacher's outputs alone"),
    plant_dose: Optional[float] = typer.Option(None, help="the dose (lambda) of the mixed targets"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda (default: cuda if available)"),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                          help="recompute activations in the backward pass (GPUs)"),
    render: bool = typer.Option(True, "--render/--no-render", help="render missing partitions first"),
) -> None:
    """Without a command: train every member, extract, write the basis and the report (resumable)."""
    from mining.config import MineConfig, MineConfigError
    from mining.members import checkpoint_path
    from mining.pipeline import CONFIG_FILE, open_run, stored_config

    sub_rank = subspace_rank if subspace_rank in (None, "auto") else _int_option(subspace_rank, "--subspace-rank")
    bounds = None if rank_bounds is None else tuple(_int_option(x, "--rank-bounds") for x in rank_bounds.split(","))
    overrides = dict(checkpoint=_str(checkpoint), model_preset=model_preset, data=_str(data), render_preset=render_preset,
                     samples=samples, held_out=held_out, jitter=jitter, members=members, mixed_members=mixed_members,
                     transfer_partitions=transfer_partitions, steps=steps,
                     rank=rank, lora_alpha=lora_alpha, lr=lr, batch_size=batch_size,
                     frames=frames, resolution=resolution, camera_weight=camera_weight,
                     depth_weight=depth_weight, point_weight=point_weight, targets=targets, subspace_rank=sub_rank,
                     rank_bounds=bounds, alpha=alpha, eps=eps, max_iter=max_iter, device=device,
                     gradient_checkpointing=gradient_checkpointing, plant_rank=plant_rank, plant_gap=plant_gap,
                     plant_mode=plant_mode, plant_dose=plant_dose)
    if ctx.invoked_subcommand == "curve":
        return                                      # one mining run per checkpoint, each with its own folder
    with _mine_step():
        if (out / CONFIG_FILE).is_file() and preset is None:
            cfg = stored_config(out, **overrides)
        else:
            cfg = MineConfig.preset(preset or "default", out=str(out), **overrides)
        if not checkpoint_path(cfg).is_file():
            raise MineConfigError(f"{cfg.checkpoint}: no such checkpoint (the shipped one is "
                                  "assets/vggt_small.safetensors)")
        if ctx.invoked_subcommand is not None and any(a in ("--help", "-h") for a in sys.argv):
            return                                  # `mine train --help`: nothing to check or write
        # every step checks the settings against the run's (and the first one stores them)
        ctx.obj = {"cfg": open_run(cfg), "render": render}
        if ctx.invoked_subcommand is not None:
            return
        _mine_train(cfg, "0/1", render)             # all of it, even inside an array job
        _mine_extract(cfg)
        _mine_basis(cfg, None, None, None)
        _mine_report(cfg)


def _str(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)


def _int_option(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        fail(f"{name} {text!r}: expected an integer or 'auto'")


def _mine_train(cfg, shard, render: bool, attribute=None, member=None) -> None:
    from mining.pipeline import members_for, train_members
    from render.jobs import parse_shard

    chosen = members_for(cfg, parse_shard(shard), attribute, member)
    typer.echo(f"{len(chosen)} member(s) in this job: {', '.join(m.name for m in chosen[:6])}"
               f"{' ...' if len(chosen) > 6 else ''}")
    records = train_members(cfg, chosen, render=render, progress=typer.echo)
    improved = sum(r["held_out_after"]["loss"] < r["held_out_before"]["loss"] for r in records)
    typer.echo(f"{len(records)} member(s) done; held-out loss dropped for {improved} of them")


def _mine_extract(cfg) -> None:
    from mining.extract import run_extract

    run_extract(cfg, progress=typer.echo)
    typer.echo(f"subspaces: {cfg.out_dir / 'subspaces.safetensors'}; statistics: {cfg.out_dir / 'extract.json'}")


def _mine_basis(cfg, attributes, rank, path) -> None:
    from mining.pipeline import build_basis

    summary = build_basis(cfg, attributes, rank, path)
    dropped = sum(a + b for a, b in summary.dropped.values())
    typer.echo(f"basis: {summary.path}: {len(summary.modules)} layers, {summary.directions_A} / {summary.directions_B} "
               f"directions (column / row), {dropped} dependent directions dropped, "
               f"{summary.trainable_params:,} trainable parameters in M")


def _mine_report(cfg) -> None:
    from mining.report import write_report

    folder = write_report(cfg)
    typer.echo(f"report: {folder / 'README.md'}")


@mine_app.command("train")
def mine_train(
    ctx: typer.Context,
    attribute: Optional[str] = typer.Option(None, help="train one member: its attribute (or 'mixed')"),
    member: Optional[int] = typer.Option(None, help="train one member: its index (partition pNNN)"),
    shard: Optional[str] = typer.Option(None, help="I/N: the I-th of N slices of all members (default: SLURM array "
                                                   "variables, else all)"),
) -> None:
    """Train LoRA members (finished ones are skipped, killed ones resume)."""
    with _mine_step():
        _mine_train(ctx.obj["cfg"], shard, ctx.obj["render"], attribute, member)


@mine_app.command("render")
def mine_render(
    ctx: typer.Context,
    shard: Optional[str] = typer.Option(None, help="I/N: the I-th of N slices of the partitions (default: SLURM array "
                                                   "variables, else all)"),
) -> None:
    """Render every partition the run needs and lacks (members', then the transfer matrix's unseen ones),
    e.g. on CPU render nodes before the members train on GPUs."""
    from mining.pipeline import members_for, render_partitions
    from mining.transfer import render_unseen
    from render.jobs import parse_shard

    cfg = ctx.obj["cfg"]
    with _mine_step():
        part = parse_shard(shard)
        n = render_partitions(cfg, members_for(cfg, part)) + render_unseen(cfg, part)
        typer.echo(f"{n} partition(s) rendered into {cfg.data}")


@mine_app.command("extract")
def mine_extract(ctx: typer.Context) -> None:
    """Extract every attribute's shared subspace per layer, with the controls (chance, halves, activations)."""
    with _mine_step():
        _mine_extract(ctx.obj["cfg"])


@mine_app.command("basis")
def mine_basis(
    ctx: typer.Context,
    attributes: Optional[str] = typer.Option(None, help="comma-separated subset (default: all mined attributes)"),
    rank: Optional[str] = typer.Option(None, help="d' per attribute and layer: an integer or 'auto' (default: the run's)"),
    out_file: Optional[Path] = typer.Option(None, help="where to write (default: OUT/basis.safetensors)"),
) -> None:
    """Write the concatenated, orthonormalised attribute basis that finetune/ reads."""
    rank_value = rank if rank in (None, "auto") else _int_option(rank, "--rank")
    with _mine_step():
        _mine_basis(ctx.obj["cfg"], attributes.split(",") if attributes else None, rank_value, out_file)


@mine_app.command("transfer")
def mine_transfer(
    ctx: typer.Context,
    shard: Optional[str] = typer.Option(None, help="I/N: evaluate the I-th of N slices of the members "
                                                   "(default: SLURM array vars, else all)"),
) -> None:
    """The functional transfer matrix: every finished member on every member's held-out samples and on
    every sample of the unseen partitions (OUT/transfer/, then OUT/transfer.json and transfer.png once
    every member has its file)."""
    from mining.members import all_members, is_done
    from mining.pipeline import members_for
    from mining.transfer import evaluate_members, render_unseen, summarise_transfer
    from render.jobs import parse_shard

    cfg = ctx.obj["cfg"]
    with _mine_step():
        if ctx.obj["render"]:
            render_unseen(cfg, parse_shard(shard))
        written = evaluate_members(cfg, members_for(cfg, parse_shard(shard)), progress=typer.echo)
        typer.echo(f"{written} member(s) evaluated")
        try:
            summary = summarise_transfer(cfg)
        except FileNotFoundError as e:
            typer.echo(f"not summarised yet: {e}")
            return
        test = summary["contrast_test"]
        typer.echo(f"transfer: {cfg.out_dir / 'transfer.json'}; own attribute - other attributes: "
                   + (f"{100 * test['mean']:+.2f} % [{100 * test['ci95'][0]:+.2f}, {100 * test['ci95'][1]:+.2f}], "
                      f"p = {test['p_less']:.3f} over {test['members']} members" if "mean" in test
                      else f"too few members ({test['members']})"))
        unfinished = [m.name for m in all_members(cfg) if not is_done(cfg, m)]
        if unfinished:
            typer.echo(f"{len(unfinished)} member(s) not trained yet are left out: {', '.join(unfinished[:4])}")


@mine_app.command("curve")
def mine_curve(
    checkpoints: list[Path] = typer.Argument(..., help="base model weights in pretraining order (e.g. "
                                                      "runs/pretrain/milestones/*.safetensors)"),
    out: Path = typer.Option(Path("runs/mining_curve"), help="one mining run per checkpoint in OUT/<stem>/, "
                                                             "then OUT/curve.json and curve.png"),
    preset: str = typer.Option("quick", help="mining preset of every run"),
    data: Optional[Path] = typer.Option(None, help="render root of the mining partitions (default: data/synth)"),
    shard: Optional[str] = typer.Option(None, help="I/N: this job's slice of every run's members"),
    render: bool = typer.Option(True, "--render/--no-render", help="render missing partitions first"),
) -> None:
    """The mining signals (common share, cross/self, member p, transfer) against pretraining: the same
    mining run on each checkpoint (resumable, farm-shardable)."""
    from mining.curve import run_curve
    from render.jobs import parse_shard

    missing = [str(c) for c in checkpoints if not c.is_file()]
    if missing:
        fail(f"{missing[0]}: no such checkpoint")
    with _mine_step():
        rows = run_curve(checkpoints, out, preset=preset, shard=parse_shard(shard), render=render, progress=typer.echo,
                         **({"data": str(data)} if data else {}))
    typer.echo(f"curve: {out / 'curve.json'} ({len(rows)} of {len(checkpoints)} checkpoint(s) complete)")
    for r in rows:
        typer.echo(f"  step {r['step']}: common share {r['common_share']:.2f}, cross/self {r['cross_self']:.2f}, "
                   f"member p {r['member_p']:.3f}, transfer {100 * (r['transfer'] or float('nan')):+.2f} %")


@mine_app.command("report")
def mine_report(ctx: typer.Context) -> None:
    """Plots, summary.json and README.md of the run (needs `mine extract`)."""
    with _mine_step():
        _mine_report(ctx.obj["cfg"])


if __name__ == "__main__":
    app()
