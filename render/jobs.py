"""Render jobs: a deterministic list of (partition, sample) items, shard slices for render farms,
worker processes, resume, and the per-partition manifest.

Any farm runs a job by giving each task ``--shard I/N`` (or SLURM's array variables): shard I takes
the I-th contiguous slice of the items, so most partitions stay within one shard and keep their scene
loaded. A sample is written under a temporary name and renamed when complete, so a killed task loses
at most the samples it was rendering; a rerun skips complete samples. Whichever task finds all of a
partition's samples complete writes its contact sheet and, last, its manifest.

Three kinds of job share this machinery: ``RenderJob`` (procedural attribute partitions), ``MeshJob``
(user meshes, one partition per mesh file: docs/meshes.md) and ``TransparentJob`` (built-in tabletop
scenes of transparent objects: docs/transparent.md). Each says what its partitions are (``header``), what
each sample is (``spec``) and what to check before anything is written (``check``).
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from common import atomic

from . import files, meshes, rigs
from .dataset import PartitionError, Sample, read_manifest
from .generator import GeneratorConfig, sample_spec
from .generator import transparent as transparent_generator
from .spec import (GENERATOR_VERSION, MESH_GENERATOR_VERSION, RENDER_ATTRIBUTES, TRANSPARENT_GENERATOR_VERSION,
                   RenderSettings)

TRANSPARENT_MAX_BOUNCES = 12  # render.max_bounces of transparent jobs: hollow glasses behind glasses


class JobError(ValueError):
    """Bad job input; the message is one line naming the file or option at fault."""


class _Partitions:
    """Where a job's partitions and samples live, and its (partition, sample) items."""

    @property
    def root(self) -> Path:
        return Path(self.out) / self.folder

    def partition_dir(self, p: int) -> Path:
        return self.root / files.partition_name(p)

    def sample_dir(self, p: int, s: int) -> Path:
        return self.partition_dir(p) / files.sample_name(s)

    def _check_name_and_seed(self, mode: str) -> None:
        """Jobs with a user-named output folder (mesh mode, built-in scenes): a plain folder name, a seed >= 0."""
        if not self.name or self.name.startswith(".") or "/" in self.name or "\\" in self.name:
            raise JobError(f"--name {self.name!r}: must be a plain folder name")
        if self.seed < 0:
            raise JobError(f"--seed {self.seed}: must be >= 0 with {mode}")

    def partition_ids(self) -> range:
        return range(self.first_partition, self.first_partition + self.partitions)

    def items(self) -> list[tuple[int, int]]:
        return [(p, s) for p in self.partition_ids() for s in range(self.samples)]

    def resume_header(self, p: int) -> dict:
        """What a rerun into partition p's folder must match (the header, less what may change)."""
        return self.header(p)

    def checked_partitions(self, shard: tuple[int, int]) -> list[int]:
        """The partitions whose folders ``validate`` compares with the job before shard ``shard`` runs."""
        return list(self.partition_ids())


@dataclass(frozen=True)
class RenderJob(_Partitions):
    attribute: str
    partitions: int
    samples: int
    views: int
    out: Path
    settings: RenderSettings = RenderSettings()
    seed: int = 0
    jitter: float = 1.0
    generator: GeneratorConfig = GeneratorConfig()
    first_partition: int = 0

    @property
    def folder(self) -> str:
        return self.attribute

    def check(self) -> None:
        """Options only this kind of job has (``validate`` checks the shared ones)."""
        if self.attribute not in RENDER_ATTRIBUTES:
            raise JobError(f"--attribute {self.attribute!r}: unknown; choose one of {', '.join(RENDER_ATTRIBUTES)}")
        if not math.isfinite(self.jitter) or self.jitter < 0:
            raise JobError(f"--jitter {self.jitter}: must be >= 0")
        texture_dir = self.generator.texture.texture_dir
        if texture_dir and not Path(texture_dir).is_dir():
            raise JobError(f"--textures {texture_dir}: not a folder")

    def spec(self, p: int, s: int):
        return sample_spec(self.attribute, p, s, self.seed, self.views, self.generator, self.jitter)

    def sheet_title(self, p: int) -> str:
        return f"{self.attribute} {files.partition_name(p)}"

    def header(self, p: int) -> dict:
        """What a partition's content depends on; a rerun into the same folder must match it."""
        render = dataclasses.asdict(self.settings)
        render.pop("threads")  # does not change a pixel
        header = {"format": files.PARTITION_FORMAT, "attribute": self.attribute, "partition": p,
                  "seed": self.seed, "generator": GENERATOR_VERSION,
                  "generator_config": dataclasses.asdict(self.generator), "jitter": self.jitter,
                  "samples": self.samples, "views": self.views, "render": render}
        return json.loads(json.dumps(header))  # as it reads back from disk (tuples become lists)


@dataclass(frozen=True)
class MeshJob(_Partitions):
    """Render user meshes: partition p is ``meshes[p]`` (every mesh of the source, in order; the job
    renders ``partitions`` of them from ``first_partition``), ``samples`` samples of ``views`` views each,
    into ``OUT/<name>/pNNN``. Samples redraw the rig placement and the lighting, never the mesh."""
    meshes: tuple[str, ...]
    source: str  # the folder (or list file's folder) the header names meshes relative to
    name: str
    rig: rigs.RigConfig
    samples: int
    views: int
    out: Path
    partitions: int
    settings: RenderSettings = RenderSettings()
    seed: int = 0
    first_partition: int = 0
    units: str = "auto"
    up: str = "+y"
    front: str = "+z"
    lighting: meshes.StudioLighting = meshes.StudioLighting()
    attribute: ClassVar[str] = "mesh"  # the manifest's "attribute" of every mesh partition

    @property
    def folder(self) -> str:
        return self.name

    def check(self) -> None:
        self._check_name_and_seed("--meshes")
        try:
            meshes.axis_rotation(self.up, self.front)
            meshes.unit_scale(self.units, 1.0)
        except meshes.MeshError as e:
            raise JobError(str(e)) from None
        if self.first_partition >= len(self.meshes):
            raise JobError(f"--first-partition {self.first_partition}: the source has {len(self.meshes)} mesh "
                           f"file(s) ({self.source})")
        last = self.first_partition + self.partitions
        if self.partitions >= 1 and last > len(self.meshes):
            raise JobError(f"--first-partition {self.first_partition} --partitions {self.partitions}: the source "
                           f"has {len(self.meshes)} mesh file(s) ({self.source})")

    def checked_partitions(self, shard: tuple[int, int]) -> list[int]:
        # only this shard's: every header names its mesh's sha256, and hashing (and loading) thousands
        # of scans in every task of a farm would cost more than rendering its share
        return sorted({p for p, _ in shard_items(self.items(), shard)})

    def asset(self, p: int):
        try:
            return meshes.mesh_asset(self.meshes[p], self.units, self.up, self.front)
        except meshes.MeshError as e:
            raise JobError(str(e)) from None

    def spec(self, p: int, s: int):
        aspect = self.settings.height / self.settings.width
        return meshes.sample_mesh_spec(self.asset(p), p, s, self.seed, self.views, self.rig, self.lighting, aspect)

    def sheet_title(self, p: int) -> str:
        return f"{self.name} {files.partition_name(p)}: {meshes.relative_name(Path(self.meshes[p]), Path(self.source))}"

    def header(self, p: int) -> dict:
        asset = self.asset(p)
        render = dataclasses.asdict(self.settings)
        render.pop("threads")
        header = {"format": files.PARTITION_FORMAT, "attribute": self.attribute, "partition": p, "seed": self.seed,
                  "generator": MESH_GENERATOR_VERSION, "name": self.name,
                  "mesh": {"file": meshes.relative_name(Path(asset.path), Path(self.source)), "path": asset.path,
                           "sha256": asset.sha256, "units": asset.units, "scale": asset.scale, "up": asset.up,
                           "front": asset.front},
                  "rig": rigs.rig_record(self.rig), "lighting": dataclasses.asdict(self.lighting),
                  "samples": self.samples, "views": self.views, "render": render}
        return json.loads(json.dumps(header))

    def resume_header(self, p: int) -> dict:
        # the absolute path is a record, not a condition: a moved data set with unchanged files resumes
        header = self.header(p)
        header["mesh"].pop("path")
        return header


@dataclass(frozen=True)
class TransparentJob(_Partitions):
    """Built-in tabletop scenes of transparent objects (docs/transparent.md): partition p is one set-up
    (room, table, objects, materials) drawn from (seed, p); each of its ``samples`` samples redraws the
    arrangement on the table, the hand-held camera trajectory of ``views`` views and the lighting.
    Output: ``OUT/<name>/pNNN`` (default ``transparent``)."""
    partitions: int
    samples: int
    views: int
    out: Path
    settings: RenderSettings = RenderSettings(max_bounces=TRANSPARENT_MAX_BOUNCES)
    seed: int = 0
    config: transparent_generator.TransparentConfig = transparent_generator.TransparentConfig()
    first_partition: int = 0
    name: str = "transparent"
    attribute: ClassVar[str] = "transparent"  # the manifest's "attribute" of every transparent partition

    @property
    def folder(self) -> str:
        return self.name

    def check(self) -> None:
        self._check_name_and_seed("--scene transparent")
        texture_dir = self.config.texture.texture_dir
        if texture_dir and not Path(texture_dir).is_dir():
            raise JobError(f"--textures {texture_dir}: not a folder")

    def spec(self, p: int, s: int):
        return transparent_generator.sample_transparent_spec(p, s, self.seed, self.views, self.config)

    def sheet_title(self, p: int) -> str:
        return f"{self.name} {files.partition_name(p)}"

    def header(self, p: int) -> dict:
        render = dataclasses.asdict(self.settings)
        render.pop("threads")
        header = {"format": files.PARTITION_FORMAT, "attribute": self.attribute, "partition": p, "seed": self.seed,
                  "generator": TRANSPARENT_GENERATOR_VERSION, "name": self.name,
                  "scene_config": self.config.to_dict(), "samples": self.samples, "views": self.views,
                  "render": render}
        return json.loads(json.dumps(header))


@dataclass
class JobStats:
    rendered: int = 0
    skipped: int = 0
    views: int = 0
    wall_seconds: float = 0.0
    render_seconds: float = 0.0  # inside Cycles' render call, summed over workers
    finalized: list = field(default_factory=list)


def parse_shard(text: str | None, env: dict | None = None) -> tuple[int, int]:
    """``I/N`` with 0 <= I < N; without it, SLURM array variables; else the whole job (0/1)."""
    env = os.environ if env is None else env
    if text is None:
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            task_min = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            return _check_shard(int(env["SLURM_ARRAY_TASK_ID"]) - task_min, int(env["SLURM_ARRAY_TASK_COUNT"]),
                                "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise JobError(f"--shard {text!r}: expected I/N, e.g. 0/8") from None
    return _check_shard(i, n, f"--shard {text}")


def _check_shard(i: int, n: int, what: str) -> tuple[int, int]:
    if n < 1 or not 0 <= i < n:
        raise JobError(f"{what}: need 0 <= I < N (got {i}/{n})")
    return i, n


def shard_items(items: list, shard: tuple[int, int]) -> list:
    i, n = shard
    return items[len(items) * i // n: len(items) * (i + 1) // n]


# ---------------------------------------------------------------------------------- validation
def validate(job: RenderJob | MeshJob | TransparentJob, workers: int, shard: tuple[int, int] = (0, 1)) -> None:
    """Check everything before anything is written: the job's own options, the shared ones, the output
    folder and the folders of the partitions ``job.checked_partitions(shard)`` names (for a mesh job
    that loads those meshes: a file that cannot be used stops the job here)."""
    job.check()
    for name, value in (("--partitions", job.partitions), ("--samples", job.samples), ("--views", job.views),
                        ("--resolution", min(job.settings.width, job.settings.height)),
                        ("--spp", job.settings.spp), ("--workers", workers)):
        if value < 1:
            raise JobError(f"{name} {value}: must be a positive integer")
    if job.first_partition < 0:
        raise JobError(f"--first-partition {job.first_partition}: must be >= 0")
    out = Path(job.out)
    if out.exists() and not out.is_dir():
        raise JobError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / files.MARKER).exists():
        raise JobError(f"--out {out}: folder is not empty and was not made by attrspace render; choose another")
    existing = out if out.exists() else next(p for p in out.absolute().parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JobError(f"--out {out}: not writable")
    for p in job.checked_partitions(shard):
        expected = job.resume_header(p)
        pdir = job.partition_dir(p)
        manifest = pdir / "manifest.json"
        header = pdir / "partition.json"
        if manifest.exists():
            try:
                _expect_same(manifest, _normalised(read_manifest(manifest)), expected)
            except PartitionError as e:
                raise JobError(f"{e}; delete {pdir} to render it again") from None
        elif header.exists():
            try:
                _expect_same(header, _normalised(json.loads(header.read_text())), expected)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise JobError(f"{header}: corrupt ({e}); delete {pdir} to render it again") from None
        elif pdir.exists() and any(pdir.iterdir()):
            raise JobError(f"{pdir}: not empty and has no partition.json; not ours, choose another --out")


def _normalised(header) -> dict:
    """``header`` with its ``generator_config`` in today's nested form, as ``header()`` writes it.
    Partitions rendered before the generator's parameters were split by attribute store them flat;
    ``GeneratorConfig.from_dict`` reads both, filling the parameters that were then fixed in the code
    with those same values. A config it cannot read is left as found, for the comparison to report."""
    config = header.get("generator_config") if isinstance(header, dict) else None
    if not isinstance(config, dict):
        return header
    try:
        config = GeneratorConfig.from_dict(config).to_dict()
    except ValueError:
        return header
    return header | {"generator_config": json.loads(json.dumps(config))}


def _expect_same(path: Path, found: dict, expected: dict) -> None:
    diff = _first_difference(found, expected)
    if diff:
        key, was, now = diff
        raise JobError(f"{path}: rendered with other settings ({key}: {was!r}, now {now!r}); "
                       f"use another --out or delete {path.parent}")


def _first_difference(found, expected, prefix=""):
    """(dotted key, found value, expected value) of the first leaf where they differ, or None."""
    for key, value in expected.items():
        have = found.get(key) if isinstance(found, dict) else None
        if isinstance(value, dict) and isinstance(have, dict):
            diff = _first_difference(have, value, f"{prefix}{key}.")
            if diff:
                return diff
        elif have != value:
            return f"{prefix}{key}", have, value
    return None


# -------------------------------------------------------------------------------------- running
def run(job: RenderJob | MeshJob | TransparentJob, shard: tuple[int, int] = (0, 1), workers: int = 1, progress=None,
        threads: int | None = None, renderer=None) -> JobStats:
    """Render this shard's items with ``workers`` processes (1 = in this process), then finalize
    every partition of the job that is complete. ``progress(n)`` is called per finished sample.
    ``renderer`` makes a renderer from the job's ``RenderSettings`` (something with ``render(spec) ->
    [ViewPixels]`` and a ``render_seconds`` total; picklable when ``workers`` > 1); default: Blender."""
    validate(job, workers, shard)
    items = shard_items(job.items(), shard)
    out = Path(job.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out / files.MARKER, {"format": "attrspace-render-1"}, sort_keys=True)
    except OSError as e:
        raise JobError(f"--out {out}: not writable ({e.strerror})") from None
    for p in sorted({p for p, _ in items}):
        job.partition_dir(p).mkdir(parents=True, exist_ok=True)
        header = job.partition_dir(p) / "partition.json"
        if not header.exists():
            atomic.write_json(header, job.header(p), sort_keys=True)

    unfinished = [p for p in job.partition_ids() if not (job.partition_dir(p) / "manifest.json").exists()]
    todo = [(p, s) for p, s in items if not job.sample_dir(p, s).exists()]
    stats = JobStats(skipped=len(items) - len(todo))
    if progress and stats.skipped:
        progress(stats.skipped)
    t0 = time.perf_counter()
    threads = threads or max(1, _cpu_count() // workers)
    settings = dataclasses.replace(job.settings, threads=threads)
    tasks = _tasks(todo, workers)
    if workers == 1:
        _init_worker(settings, None, renderer, set_deathsig=False)
        for task in tasks:
            stats.render_seconds += _render_task(job, task, progress)
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(settings, queue, renderer)) as pool:
            result = pool.starmap_async(_render_task, [(job, t, None) for t in tasks])
            while not result.ready():
                _drain(queue, progress, timeout=0.2)
            stats.render_seconds += sum(result.get())
            _drain(queue, progress, timeout=0.0)
    stats.rendered = len(todo)
    stats.views = len(todo) * job.views
    stats.wall_seconds = time.perf_counter() - t0
    finalize(job)  # partitions completed by other shards, or by samples that were already there
    stats.finalized = [p for p in unfinished if (job.partition_dir(p) / "manifest.json").exists()]
    return stats


def _tasks(todo: list, workers: int) -> list[list[tuple[int, int]]]:
    """Group a partition's samples so one process keeps its scene; split groups only as far as
    needed to keep every worker busy."""
    by_partition: dict[int, list] = {}
    for p, s in todo:
        by_partition.setdefault(p, []).append((p, s))
    chunks_per = max(1, math.ceil(workers / max(len(by_partition), 1)))
    tasks = []
    for group in by_partition.values():
        k = min(chunks_per, len(group))
        tasks += [group[len(group) * i // k: len(group) * (i + 1) // k] for i in range(k)]
    return tasks


def _drain(queue, progress, timeout: float) -> None:
    import queue as q
    try:
        while True:
            n = queue.get(timeout=timeout)
            if progress:
                progress(n)
            timeout = 0.0
    except q.Empty:
        pass


_WORKER: dict = {"renderers": {}}  # this process's renderers by factory, and the current job's


def _blender(settings: RenderSettings):
    from .blender_backend import BlenderRenderer  # bpy: imported once, in the process that renders
    return BlenderRenderer(settings)


def _init_worker(settings: RenderSettings, queue, renderer=None, set_deathsig: bool = True) -> None:
    if set_deathsig and hasattr(ctypes, "CDLL"):
        try:  # die with the parent (Linux): a killed job leaves no orphan renderers behind
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    make = renderer or _blender
    made = _WORKER["renderers"].get(make)
    if made is None or made[0] != settings:  # one renderer of each kind per process, kept across jobs
        _WORKER["renderers"][make] = (settings, make(settings))
    _WORKER["renderer"] = _WORKER["renderers"][make][1]
    _WORKER["queue"] = queue


def _render_task(job: RenderJob, task: list[tuple[int, int]], progress=None) -> float:
    renderer = _WORKER["renderer"]
    before = renderer.render_seconds
    for p, s in task:
        final = job.sample_dir(p, s)
        if final.exists():
            continue
        atomic.remove_stale(final)  # left by a killed writer of this sample
        spec = job.spec(p, s)
        pixels = renderer.render(spec)
        files.write_sample(final, spec, pixels, job.settings.width, job.settings.height)
        if _WORKER.get("queue") is not None:
            _WORKER["queue"].put(1)
        elif progress:
            progress(1)
    for p in sorted({p for p, _ in task}):
        finalize_partition(job, p)
    return renderer.render_seconds - before


def finalize(job: RenderJob) -> list[int]:
    """Contact sheet, then manifest, for every complete partition that lacks a manifest."""
    return [p for p in job.partition_ids() if finalize_partition(job, p)]


def finalize_partition(job: RenderJob, p: int) -> bool:
    """Write partition p's contact sheet and, last, its manifest if all its samples are complete and
    it has no manifest yet. Returns whether it wrote one. Called as soon as a partition's last sample
    lands, so finished partitions are usable (e.g. for training) while the job goes on."""
    from .contact_sheet import write_contact_sheet
    pdir = job.partition_dir(p)
    if (pdir / "manifest.json").exists():
        return False
    if not all(job.sample_dir(p, s).is_dir() for s in range(job.samples)):
        return False
    samples = [Sample(job.sample_dir(p, s)) for s in range(job.samples)]
    write_contact_sheet(pdir / "contact_sheet.png", samples, job.sheet_title(p))
    manifest = job.header(p) | {"files": files.file_hashes(pdir, job.samples)}
    atomic.write_json(pdir / "manifest.json", manifest, sort_keys=True)
    return True


def _cpu_count() -> int:
    # On SLURM the affinity mask may be wider than the allocation when CPU binding is off,
    # so the scheduler's own figure wins.
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
