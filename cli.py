"""AttrSpace command line: a thin layer over the packages (see README.md)."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
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
) -> None:
    """Render attribute-controlled partitions with Blender (resumable; farm-shardable)."""
    from render.generator import GeneratorConfig
    from render.jobs import JobError, RenderJob, parse_shard, run
    from render.dataset import PartitionError
    from render.spec import RenderSettings

    presets = json.loads((ASSETS / "render_presets.json").read_text())
    if preset not in presets:
        fail(f"--preset {preset!r}: unknown; choose one of {', '.join(presets)}")
    pre = presets[preset]
    res = resolution if resolution is not None else pre["resolution"]
    gen = GeneratorConfig.light() if pre["generator"] == "light" else GeneratorConfig()
    if textures is not None:
        gen = dataclasses.replace(gen, texture_dir=str(textures))
    try:
        job = RenderJob(attribute=attribute, partitions=partitions,
                        samples=samples if samples is not None else pre["samples"],
                        views=views if views is not None else pre["views"], out=out,
                        settings=RenderSettings(width=res, height=res, spp=spp if spp is not None else pre["spp"],
                                                denoise=denoise if denoise is not None else pre["denoise"]),
                        seed=seed, jitter=jitter, generator=gen, first_partition=first_partition)
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


if __name__ == "__main__":
    app()
