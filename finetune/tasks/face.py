"""The face anti-spoofing task end to end: meshes (finetune.tasks.face_meshes) → micro-baseline renders
(the renderer's mesh mode) → labelled partitions per split (train / val / test by identity).

    data = prepare_face_data(FaceData())          # builds and renders what is missing (resumable)
    data.partitions["train"], data.info[partition]["label"]     # 1 live, 0 spoof

Every mesh is one partition of ``samples`` samples (the rig placement and the studio lighting redrawn)
of ``views`` views, a few millimetres apart at about half a metre (render.rigs.MicroBaselineRig).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from render.dataset import load_partition

from ..data import TaskData, TaskDataError
from .face_meshes import DEFAULT_EXPRESSIONS, DEFAULT_IDENTITIES, FaceMeshError, build_face_meshes, load_face_index

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FaceData:
    """Where the face task's data lives and how it is made (all of it follows from these settings)."""
    root: str = "data/face"
    identities: int = DEFAULT_IDENTITIES
    expressions: int = DEFAULT_EXPRESSIONS
    seed: int = 0
    samples: int = 1                 # renders per mesh
    views: int = 4
    resolution: int = 126
    spp: int = 16
    preset: str = "default"

    @property
    def meshes(self) -> Path:
        return Path(self.root) / "meshes"

    @property
    def renders(self) -> Path:
        return Path(self.root) / "render"


def render_job(cfg: FaceData, split: str):
    from render.presets import mesh_job

    return mesh_job(cfg.meshes / f"{split}.txt", "micro-baseline", cfg.renders, cfg.preset, samples=cfg.samples,
                    views=cfg.views, resolution=cfg.resolution, spp=cfg.spp, seed=cfg.seed, name=split)


def prepare_face_data(cfg: FaceData = FaceData(), renderer=None, progress: bool = True, say=print) -> TaskData:
    """Build the meshes and render every split where missing (both resume), then label the partitions."""
    from render.jobs import JobError, run

    try:
        index = build_face_meshes(cfg.meshes, identities=cfg.identities, seed=cfg.seed,
                                  expressions=cfg.expressions, progress=progress)
    except FaceMeshError as e:
        raise TaskDataError(str(e)) from None
    for split in SPLITS:
        try:
            job = render_job(cfg, split)
            done = sum((job.partition_dir(p) / "manifest.json").is_file() for p in job.partition_ids())
            if done < len(job.partition_ids()):
                say(f"rendering the {split} split: {len(job.partition_ids()) - done} of "
                    f"{len(job.partition_ids())} meshes left")
                run(job, workers=1, renderer=renderer, progress=_bar(progress, split, job))
        except JobError as e:
            raise TaskDataError(str(e)) from None
    return face_task_data(cfg, index)


def face_task_data(cfg: FaceData, index_path: Path | None = None) -> TaskData:
    """The rendered splits with each partition's label, kind, identity and source from the mesh index."""
    index = load_face_index(index_path or cfg.meshes)
    rows = {m["file"]: m for m in index["meshes"]}
    partitions, info = {}, {}
    for split in SPLITS:
        folder = cfg.renders / split
        found = sorted(p.parent for p in folder.glob("p*/manifest.json"))
        if not found:
            raise TaskDataError(f"{folder}: no rendered partitions (run the face task's data preparation)")
        partitions[split] = found
        for p in found:
            mesh = load_partition(p).manifest.get("mesh", {})
            row = rows.get(mesh.get("file"))
            if row is None:
                raise TaskDataError(f"{p / 'manifest.json'}: mesh {mesh.get('file')!r} is not in the face index")
            info[p] = {"label": 1 if row["label"] == "live" else 0, "kind": row["kind"], "identity": row["identity"],
                       "source": row["source"], "split": split}
    return TaskData(name="face", partitions=partitions, info=info, settings=asdict(cfg), units_to_mm=1000.0)


def _bar(enabled: bool, split: str, job):
    if not enabled:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task(f"render {split}", total=len(job.items()))
    bar.start()

    def advance(n: int) -> None:
        bar.advance(task, n)
        if bar.finished:
            bar.stop()
    return advance


def describe(data: TaskData) -> str:
    counts = {s: {"live": sum(data.info[p]["label"] == 1 for p in ps), "spoof": sum(data.info[p]["label"] == 0 for p in ps)}
              for s, ps in data.partitions.items()}
    return json.dumps(counts)


__all__ = ["FaceData", "prepare_face_data", "face_task_data", "render_job", "SPLITS"]
