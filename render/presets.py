"""Render presets (``assets/render_presets.json``): named job settings, and the job a preset and a few
explicit options describe. The CLI's ``render``, ``pretrain`` and every later command that renders
its own data build their jobs here, so a preset means the same thing everywhere."""
from __future__ import annotations

import json
from pathlib import Path

from .generator import GeneratorConfig, load_generator_config
from .jobs import JobError, RenderJob
from .spec import RenderSettings

PRESETS_FILE = Path(__file__).resolve().parents[1] / "assets" / "render_presets.json"


def load_presets(path: Path = PRESETS_FILE) -> dict[str, dict]:
    return json.loads(Path(path).read_text())


def preset_job(attribute: str, partitions: int, out: Path, preset: str = "default", *, samples: int | None = None,
               views: int | None = None, resolution: int | None = None, spp: int | None = None,
               denoise: bool | None = None, seed: int = 0, jitter: float = 1.0, first_partition: int = 0,
               textures: Path | None = None, generator_file: Path | None = None) -> RenderJob:
    """The render job of ``preset`` with any explicitly given option overriding it. ``generator_file``
    is a JSON file of generator settings overriding the preset's (docs/attributes.md); ``textures``
    applies on top."""
    presets = load_presets()
    if preset not in presets:
        raise JobError(f"--preset {preset!r}: unknown; choose one of {', '.join(presets)}")
    pre = presets[preset]
    pick = lambda given, key: pre[key] if given is None else given  # noqa: E731
    generator = GeneratorConfig.light() if pre["generator"] == "light" else GeneratorConfig()
    if generator_file is not None:
        try:
            generator = load_generator_config(generator_file, base=generator)
        except ValueError as e:  # names the file and the problem
            raise JobError(f"--generator-config {e}") from None
    if textures is not None:
        generator = generator.override({"texture": {"texture_dir": str(textures)}})
    size = pick(resolution, "resolution")
    return RenderJob(attribute=attribute, partitions=partitions, samples=pick(samples, "samples"),
                     views=pick(views, "views"), out=Path(out), seed=seed, jitter=jitter,
                     settings=RenderSettings(width=size, height=size, spp=pick(spp, "spp"),
                                             denoise=pick(denoise, "denoise")),
                     generator=generator, first_partition=first_partition)
