"""The transparent-object task: built-in renders of tabletop glass (render --scene transparent) or ClearPose
in its published layout, as train / val / test sequences with per-pixel transparent masks.

    data = prepare_transparent_data(TransparentData())       # renders what is missing (resumable)
    data = clearpose_task_data("data/clearpose")             # the real dataset (docs/clearpose.md)

Built-in splits are disjoint set-ups: partitions 0..n_train-1 train, the next n_val validate, the next
n_test test (each partition is one room, table and set of objects; its samples rearrange them and film
them from another hand-held trajectory). ClearPose's splits are the paper's (finetune.tasks.clearpose.
PAPER_SPLITS): its train scenes less the last scene of each set, which validates; every test split
present is the test split, each a "source" of its own in the results. Scenes of a split that are missing
are skipped (a partial download works) as long as every split keeps one scene.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..data import SPLITS, TaskData, TaskDataError


@dataclass(frozen=True)
class TransparentData:
    """Where the built-in transparent task's renders live and how they are made."""
    root: str = "data/transparent"
    train: int = 24                  # partitions (set-ups) per split
    val: int = 4
    test: int = 8
    samples: int = 2                 # arrangements and trajectories per set-up
    views: int = 4
    resolution: int = 126
    spp: int = 16
    preset: str = "default"
    seed: int = 0

    def first_partition(self, split: str) -> int:
        return {"train": 0, "val": self.train, "test": self.train + self.val}[split]

    def count(self, split: str) -> int:
        return getattr(self, split)


def render_job(cfg: TransparentData, split: str):
    from render.presets import transparent_job

    return transparent_job(Path(cfg.root) / "render", cfg.count(split), cfg.preset, samples=cfg.samples,
                           views=cfg.views, resolution=cfg.resolution, spp=cfg.spp, seed=cfg.seed,
                           first_partition=cfg.first_partition(split), name=split)


def prepare_transparent_data(cfg: TransparentData = TransparentData(), renderer=None, progress: bool = True,
                             say=print) -> TaskData:
    """Render the splits' partitions where missing (resumable, as ``render`` is) and index them."""
    from render.dataset import PartitionError, load_partition
    from render.jobs import JobError, run

    from .face import _bar

    partitions, info = {}, {}
    for split in SPLITS:
        job = render_job(cfg, split)
        todo = [p for p in job.partition_ids() if not (job.partition_dir(p) / "manifest.json").is_file()]
        if todo:
            say(f"transparent {split}: rendering {len(todo)} of {cfg.count(split)} set-ups "
                f"({cfg.samples} x {cfg.views} views at {cfg.resolution} px) into {job.out / job.folder}")
            try:
                run(job, workers=1, renderer=renderer, progress=_bar(progress, split, job))
            except (JobError, PartitionError) as e:
                raise TaskDataError(str(e)) from None
        partitions[split] = [job.partition_dir(p) for p in job.partition_ids()]
        for d in partitions[split]:
            try:
                load_partition(d)
            except PartitionError as e:
                raise TaskDataError(str(e)) from None
            info[d] = {"label": -1, "kind": "transparent", "identity": d.name, "source": "render"}
    return TaskData(name="transparent", partitions=partitions, info=info, settings=asdict(cfg),
                    evaluation="transparent")


# ------------------------------------------------------------------------------------------- ClearPose
def is_clearpose(root: str | Path) -> bool:
    """A folder laid out like ClearPose: ``set<k>/scene<m>/metadata.mat`` somewhere below it."""
    return any(Path(root).glob("set*/scene*/metadata.mat"))


def clearpose_splits(root: str | Path) -> dict[str, list[tuple[Path, str]]]:
    """split -> [(scene folder, source)] by the paper's splits, scenes present only."""
    from .clearpose import PAPER_SPLITS, METADATA_FILE

    root = Path(root)

    def present(split_name: str) -> list[Path]:
        out = []
        for set_name, numbers in PAPER_SPLITS[split_name].items():
            folder = root / set_name
            if numbers is None:
                scenes = sorted(folder.glob("scene*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0)
            else:
                scenes = [folder / f"scene{n}" for n in numbers]
            out += [s for s in scenes if (s / METADATA_FILE).is_file()]
        return out

    train = present("train")
    by_set: dict[Path, list[Path]] = {}
    for scene in train:
        by_set.setdefault(scene.parent, []).append(scene)
    val = [scenes[-1] for scenes in by_set.values() if len(scenes) > 1]  # the last train scene of each set
    splits = {"train": [(s, "train") for s in train if s not in val], "val": [(s, "val") for s in val],
              "test": [(s, name) for name in PAPER_SPLITS if name.startswith("test") for s in present(name)]}
    for split in SPLITS:
        if not splits[split]:
            raise TaskDataError(f"--data {root}: no scene of ClearPose's {split} split is present (the paper's "
                                "splits: docs/clearpose.md)")
    return splits


def clearpose_task_data(root: str | Path, stride: int | None = None) -> TaskData:
    """ClearPose at ``root`` as task data (kind "clearpose": finetune.tasks.clearpose.ClearPoseSequences)."""
    from .clearpose import DEFAULT_STRIDE, ClearPoseError, read_clearpose_scene

    splits = clearpose_splits(root)
    partitions, info = {}, {}
    for split, scenes in splits.items():
        partitions[split] = [s for s, _ in scenes]
        for s, source in scenes:
            try:
                read_clearpose_scene(s)
            except ClearPoseError as e:
                raise TaskDataError(str(e)) from None
            info[s] = {"label": -1, "kind": "clearpose", "identity": f"{s.parent.name}/{s.name}", "source": source}
    return TaskData(name="transparent", partitions=partitions, info=info, kind="clearpose",
                    settings={"data": str(root), "stride": stride or DEFAULT_STRIDE}, evaluation="transparent")


__all__ = ["TransparentData", "prepare_transparent_data", "render_job", "is_clearpose", "clearpose_splits",
           "clearpose_task_data"]
