"""AttrSpace command line: a thin layer over the packages (see README.md)."""
from __future__ import annotations

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
    attribute: str = typer.Option(..., help="texture | geometry | camera | lighting | mixed"),
    partitions: int = typer.Option(10, help="number of partitions"),
    samples: Optional[int] = typer.Option(None, help="samples per partition"),
    views: Optional[int] = typer.Option(None, help="views per sample"),
    resolution: Optional[int] = typer.Option(None, help="image width = height in pixels"),
    spp: Optional[int] = typer.Option(None, help="Cycles samples per pixel"),
    denoise: Optional[bool] = typer.Option(None, "--denoise/--no-denoise", help="OpenImageDenoise"),
    preset: str = typer.Option("default", help="default | paper | preview (assets/render_presets.json)"),
    seed: int = typer.Option(0, help="master seed"),
    jitter: float = typer.Option(1.0, help="scale of the jitter of the attributes a partition holds fixed"),
    out: Path = typer.Option(Path("data/synth"), help="output root; partitions go to OUT/ATTRIBUTE/pNNN"),
    workers: int = typer.Option(1, help="render processes; CPUs are split among them as Cycles threads"),
    shard: Optional[str] = typer.Option(None, help="I/N: render the I-th of N slices (default: SLURM array vars)"),
    first_partition: int = typer.Option(0, help="index of the first partition"),
    textures: Optional[Path] = typer.Option(None, help="folder of texture images to mix into the materials"),
    generator_config: Optional[Path] = typer.Option(None, help="JSON file of generator ranges overriding the "
                                                              "preset's (docs/attributes.md)"),
) -> None:
    """Render attribute-controlled partitions with Blender (resumable; farm-shardable)."""
    from render.jobs import JobError, parse_shard, run
    from render.dataset import PartitionError
    from render.presets import preset_job

    try:
        job = preset_job(attribute, partitions, out, preset, samples=samples, views=views, resolution=resolution,
                         spp=spp, denoise=denoise, seed=seed, jitter=jitter, first_partition=first_partition,
                         textures=textures, generator_file=generator_config)
        shard_ix = parse_shard(shard)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
        from render.jobs import shard_items
        total = len(shard_items(job.items(), shard_ix))
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(f"{attribute} shard {shard_ix[0]}/{shard_ix[1]}", total=total)
            stats = run(job, shard_ix, workers=workers, progress=lambda n: bar.advance(task, n))
    except (JobError, PartitionError) as e:
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
) -> None:
    """Pretrain a small VGGT from scratch on mixed renders (CPU-scale), evaluate it and write a model card."""
    from render.dataset import PartitionError
    from apps.pretrain import PretrainConfig, pretrain as run_pretrain, render_data

    cfg = PretrainConfig(data=data, partitions=partitions, held_out=held_out, preset=preset, steps=steps,
                         batch_size=batch_size, frames=frames, resolution=resolution, lr=lr, seed=seed, out=out,
                         ship=ship)
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


if __name__ == "__main__":
    app()
