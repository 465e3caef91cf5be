"""Render presets (``assets/render_presets.json``): named job settings, and the job a preset and a few
explicit options describe. The CLI's ``render``, ``pretrain`` and every later command that renders
its own data build their jobs here, so a preset means the same thing everywhere. ``mesh_job`` is the
same for the mesh mode (docs/meshes.md) and ``transparent_job`` for the transparent-object scenes
(docs/transparent.md): the preset gives samples, views, resolution, spp and denoising."""
from __future__ import annotations

import json
from pathlib import Path

from . import meshes, rigs
from .generator import GeneratorConfig, load_generator_config
from .generator.transparent import TransparentConfig, load_transparent_config
from .jobs import TRANSPARENT_MAX_BOUNCES, JobError, MeshJob, RenderJob, TransparentJob
from .spec import RenderSettings, describe, from_plain

PRESETS_FILE = Path(__file__).resolve().parents[1] / "assets" / "render_presets.json"


def load_presets(path: Path = PRESETS_FILE) -> dict[str, dict]:
    return json.loads(Path(path).read_text())


def _preset(name: str) -> dict:
    presets = load_presets()
    if name not in presets:
        raise JobError(f"--preset {name!r}: unknown; choose one of {', '.join(presets)}")
    return presets[name]


def _settings_of(pre: dict, resolution: int | None, spp: int | None, denoise: bool | None,
                 **extra) -> RenderSettings:
    """The preset's render settings (square images) with the explicitly given ones instead."""
    size = pre["resolution"] if resolution is None else resolution
    return RenderSettings(width=size, height=size, spp=pre["spp"] if spp is None else spp,
                          denoise=pre["denoise"] if denoise is None else denoise, **extra)


def preset_job(attribute: str, partitions: int, out: Path, preset: str = "default", *, samples: int | None = None,
               views: int | None = None, resolution: int | None = None, spp: int | None = None,
               denoise: bool | None = None, seed: int = 0, jitter: float = 1.0, first_partition: int = 0,
               textures: Path | None = None, generator_file: Path | None = None) -> RenderJob:
    """The render job of ``preset`` with any explicitly given option overriding it. ``generator_file``
    is a JSON file of generator settings overriding the preset's (docs/attributes.md); ``textures``
    applies on top."""
    pre = _preset(preset)
    pick = lambda given, key: pre[key] if given is None else given  # noqa: E731
    generator = GeneratorConfig.light() if pre["generator"] == "light" else GeneratorConfig()
    if generator_file is not None:
        try:
            generator = load_generator_config(generator_file, base=generator)
        except ValueError as e:  # names the file and the problem
            raise JobError(f"--generator-config {e}") from None
    if textures is not None:
        generator = generator.override({"texture": {"texture_dir": str(textures)}})
    return RenderJob(attribute=attribute, partitions=partitions, samples=pick(samples, "samples"),
                     views=pick(views, "views"), out=Path(out), seed=seed, jitter=jitter,
                     settings=_settings_of(pre, resolution, spp, denoise), generator=generator,
                     first_partition=first_partition)


def mesh_job(source: Path, rig: str, out: Path, preset: str = "default", *, samples: int | None = None,
             views: int | None = None, resolution: int | None = None, spp: int | None = None,
             denoise: bool | None = None, seed: int = 0, first_partition: int = 0, partitions: int | None = None,
             units: str = "auto", up: str = "+y", front: str = "+z", name: str | None = None,
             rig_config: str | None = None, lighting_config: str | None = None) -> MeshJob:
    """The mesh-mode job of ``preset``: every mesh of ``source`` (a folder, a mesh file or a .txt list;
    ``render.meshes.find_meshes``) from ``first_partition`` on, or ``partitions`` of them, around the
    cameras of ``rig``. ``rig_config`` and ``lighting_config`` are JSON objects (a file, or the object
    itself) of the ``render.rigs`` / ``render.meshes.StudioLighting`` settings to change. Output goes to
    ``out/<name>``, by default the source folder's name (a list's or a single file's stem)."""
    pre = _preset(preset)
    if rig not in rigs.RIGS:
        raise JobError(f"--rig {rig!r}: unknown; choose one of {', '.join(rigs.RIGS)}")
    rig_cfg = _settings("--rig-config", rig_config, lambda data: rigs.rig_config(rig, data))
    lighting = _settings("--lighting-config", lighting_config, lambda data: from_plain(meshes.StudioLighting, data))
    try:
        root, files = meshes.find_meshes(source)
    except meshes.MeshError as e:
        raise JobError(str(e)) from None
    source = Path(source)
    default_name = source.absolute().name if source.is_dir() else source.stem
    pick = lambda given, key: pre[key] if given is None else given  # noqa: E731
    count = len(files) - first_partition if partitions is None else partitions
    return MeshJob(meshes=tuple(str(f) for f in files), source=str(root), name=name or default_name, rig=rig_cfg,
                   samples=pick(samples, "samples"), views=pick(views, "views"), out=Path(out), partitions=count,
                   settings=_settings_of(pre, resolution, spp, denoise), seed=seed, first_partition=first_partition,
                   units=units, up=up, front=front, lighting=lighting)


def transparent_job(out: Path, partitions: int = 10, preset: str = "default", *, samples: int | None = None,
                    views: int | None = None, resolution: int | None = None, spp: int | None = None,
                    denoise: bool | None = None, seed: int = 0, first_partition: int = 0,
                    scene_config: str | Path | None = None, textures: Path | None = None,
                    name: str | None = None) -> TransparentJob:
    """The transparent-scene job of ``preset`` (docs/transparent.md) with explicit options overriding it:
    ``partitions`` partitions from ``first_partition`` into ``out/<name>`` (default ``transparent``).
    ``scene_config`` is a JSON file, or a JSON object as text, of ``TransparentConfig`` settings to change
    (``preview`` starts from ``TransparentConfig.light()``); ``textures`` applies on top (images mixed into
    the room, table and clutter materials)."""
    pre = _preset(preset)
    pick = lambda given, key: pre[key] if given is None else given  # noqa: E731
    config = TransparentConfig.light() if pre["generator"] == "light" else TransparentConfig()
    if scene_config is not None:
        try:
            config = load_transparent_config(scene_config, base=config)
        except ValueError as e:  # names the file (if it is one) and the key
            raise JobError(f"--generator-config {e}") from None
    if textures is not None:
        config = config.override({"texture": {"texture_dir": str(textures)}})
    return TransparentJob(partitions=partitions, samples=pick(samples, "samples"), views=pick(views, "views"),
                          out=Path(out), seed=seed, config=config, first_partition=first_partition,
                          name=name or "transparent",
                          settings=_settings_of(pre, resolution, spp, denoise, max_bounces=TRANSPARENT_MAX_BOUNCES))


def _settings(option: str, text: str | None, build):
    """``build`` applied to the JSON object of ``text`` (a path, or the object itself: it starts with
    ``{``), or to {} without one; every problem is a JobError naming the option."""
    data: object = {}
    if text is not None:
        where = f"{option} {text}" if not text.lstrip().startswith("{") else option
        try:
            data = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
        except OSError as e:
            raise JobError(f"{where}: cannot read ({e.strerror or e})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise JobError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise JobError(f"{where}: expected a JSON object, got {describe(data)}")
    try:
        return build(data)
    except ValueError as e:
        raise JobError(f"{option}: {e}") from None
