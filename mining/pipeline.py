"""The mining run, step by step, each resumable (what `cli.py mine` calls).

    cfg = open_run(MineConfig.preset("quick"))     # checks / writes OUT/config.json
    train_members(cfg, members_for(cfg))           # renders missing partitions, trains, skips finished
    run_extract(cfg)                               # mining.extract
    build_basis(cfg)                               # OUT/basis.safetensors
    write_report(cfg)                              # mining.report

The first step writes the settings to ``OUT/config.json``; later steps (other shards, other
processes) read them from there, and a setting that changes what members learn is refused, so a
cluster never mixes settings.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from common.atomic import write_json

from .config import MineConfig, MineConfigError
from .members import Member, all_members, checkpoint_path, is_done, partition_dir, render_job, train_member

CONFIG_FILE = "config.json"
BASIS_FILE = "basis.safetensors"


# Settings of the machine a step runs on, not of the run: never taken from another step's config.json.
RUNTIME_FIELDS = ("device", "gradient_checkpointing", "out")


def open_run(cfg: MineConfig) -> MineConfig:
    """Check ``cfg`` against the run folder's stored settings (writing them on first use). The base
    model is identified by its sha256 as well as its path, so a re-written checkpoint is noticed."""
    from .basis import file_sha256

    path = cfg.out_dir / CONFIG_FILE
    stored = _read_config(path) if path.is_file() else None
    checkpoint = checkpoint_path(cfg)
    info = checkpoint.stat()
    stat = [info.st_size, info.st_mtime_ns]
    # every step and shard opens the run: hash a (possibly multi-GB) checkpoint only when it looks changed
    if stored is not None and stored.get("checkpoint_stat") == stat and stored.get("checkpoint_sha256"):
        sha = stored["checkpoint_sha256"]
    else:
        sha = file_sha256(checkpoint)
    if stored is not None:
        # a setting added after the run started counts as its default there
        defaults = MineConfig().member_settings()
        changed = [f"{k}: {stored.get(k, defaults[k])!r} -> {v!r}" for k, v in cfg.member_settings().items()
                   if stored.get(k, defaults[k]) != v]
        if stored.get("checkpoint_sha256", sha) != sha:
            changed.append(f"the base model {cfg.checkpoint} changed (sha256 {stored['checkpoint_sha256'][:12]}… -> "
                           f"{sha[:12]}…)")
        if changed:
            raise MineConfigError(f"{path}: the members here were trained with other settings ({'; '.join(changed)}); "
                                  "use another --out")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, cfg.to_dict() | {"checkpoint_sha256": sha, "checkpoint_stat": stat})
    return cfg


def stored_config(out: str | Path, **overrides) -> MineConfig:
    """The run's settings from ``OUT/config.json`` with ``overrides`` (None = keep) applied; the device
    and gradient checkpointing are this step's own (default: auto, off)."""
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise MineConfigError(f"{path}: no mining run here (run `python cli.py mine` or `mine train` first)")
    stored = _read_config(path)
    fields = {f.name for f in dataclasses.fields(MineConfig)}
    data = {k: v for k, v in stored.items() if k in fields and k not in RUNTIME_FIELDS}
    data |= {k: v for k, v in overrides.items() if v is not None}
    for key in ("attributes", "rank_bounds"):
        if key in data:
            data[key] = tuple(data[key])
    try:
        return MineConfig(**data, out=str(out))
    except TypeError as e:
        raise MineConfigError(f"{path}: {e}") from None


def stored_checkpoint_sha(cfg: MineConfig) -> str | None:
    path = cfg.out_dir / CONFIG_FILE
    return _read_config(path).get("checkpoint_sha256") if path.is_file() else None


def _read_config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MineConfigError(f"{path}: corrupt ({e}); delete it to start the run again") from None
    if not isinstance(data, dict):
        raise MineConfigError(f"{path}: not a mining config (a JSON object expected)")
    return data


def members_for(cfg: MineConfig, shard: tuple[int, int] = (0, 1), attribute: str | None = None,
                member: int | None = None) -> list[Member]:
    """One member (``attribute`` and ``member``), or the ``shard``-th slice of all of them."""
    everyone = all_members(cfg)
    if attribute is not None or member is not None:
        if attribute is None or member is None:
            raise MineConfigError("--attribute and --member go together")
        chosen = Member(attribute, member)
        if chosen not in everyone:
            raise MineConfigError(f"no member {chosen.name} in this run (attributes {list(cfg.attributes)}, "
                                  f"{cfg.members} members each, {cfg.mixed_members} mixed)")
        return [chosen]
    i, n = shard
    return everyone[i::n]


def render_partitions(cfg: MineConfig, members: list[Member], renderer=None, bars: bool = True) -> int:
    """Render the partitions these members train on where they are missing (one partition per job, so
    each shard renders only its own), with a progress bar over their samples; returns how many. A
    partition already there must have been rendered with the run's settings (render.jobs checks its
    header), so a member never trains on other renders than its config says."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from render.jobs import run, validate

    jobs = []
    for m in members:
        job = render_job(cfg, m)
        validate(job, workers=1)
        if not (partition_dir(cfg, m) / "manifest.json").is_file():
            jobs.append(job)
    if not jobs:
        return 0
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), disable=not bars) as bar:
        task = bar.add_task(f"render {len(jobs)} partition(s)", total=sum(len(j.items()) for j in jobs))
        for job in jobs:
            run(job, renderer=renderer, progress=lambda n: bar.advance(task, n))
    return len(jobs)


def train_members(cfg: MineConfig, members: list[Member], render: bool = True, renderer=None, progress=print,
                  bars: bool = True) -> list[dict]:
    """Render what is missing, then train each member (finished ones are skipped)."""
    if render:
        render_partitions(cfg, members, renderer=renderer, bars=bars)
    records = []
    for n, m in enumerate(members, 1):
        if is_done(cfg, m):
            records.append(train_member(cfg, m))
            continue
        progress(f"member {n}/{len(members)}: {m.name} on {partition_dir(cfg, m)}")
        started = time.time()
        record = train_member(cfg, m, progress=bars)
        b, a = record["held_out_before"]["loss"], record["held_out_after"]["loss"]
        progress(f"  held-out loss {b:.4f} -> {a:.4f} ({(a - b) / abs(b):+.1%}) in {time.time() - started:.0f} s")
        records.append(record)
    return records


def build_basis(cfg: MineConfig, attributes: list[str] | None = None, rank: int | str | None = None,
                path: Path | None = None):
    """Extract each chosen attribute's subspace at ``rank`` (default: the run's d′) and write the
    concatenated basis with its provenance. Returns mining.basis.BasisSummary."""
    from model import VGGTConfig
    from model.checkpoint import read_config

    from .basis import file_sha256, write_basis
    from .extract import extract_cluster, load_clusters, layers_of

    attributes = list(attributes or cfg.attributes)
    unknown = [a for a in attributes if a not in cfg.attributes]
    if unknown:
        raise MineConfigError(f"attribute(s) {unknown} were not mined in {cfg.out_dir} (have {list(cfg.attributes)})")
    clusters = load_clusters(cfg, include_mixed=False)
    layers = layers_of(clusters)
    subspaces, members = {}, {}
    for a in attributes:
        shared = extract_cluster(clusters[a].factors, layers, cfg, rank=rank)
        subspaces[a] = {layer: (s.A, s.B) for layer, s in shared.items()}
        members[a] = {"adapters": [str(cfg.out_dir / "members" / name / "adapter") for name in clusters[a].members],
                      "irls_weights": {layer: [round(float(w), 6) for w in s.weights] for layer, s in shared.items()}}
    checkpoint = checkpoint_path(cfg)
    config = read_config(checkpoint) or (VGGTConfig.preset(cfg.model_preset) if cfg.model_preset else None)
    # the model the members were trained on, as recorded when the run started
    sha = stored_checkpoint_sha(cfg) or file_sha256(checkpoint)
    return write_basis(path or cfg.out_dir / BASIS_FILE, subspaces, attributes=attributes, model_config=config,
                       checkpoint_sha256=sha, members=members)

