"""A downstream task's data: sequences per split (train / val / test), each with its label and facts, in the
training layer's batch format, whether they come from our renders or from a user's RGB-D captures.

    data = load_task_data("data/my_faces")               # DIR/{train,val,test}/ (partitions or RGB-D layout)
    train = data.dataset("train", frames=4, resolution=126)
    data.labels("test")                                   # per sequence: 1 live, 0 spoof, -1 unknown

Rendered partitions (``manifest.json``) are read by training.data.SynthSequences, one sequence per sample;
a split folder of RGB-D sequences (``frames.json``, docs/rgbd.md) by finetune.rgbd.RGBDSequences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")


class TaskDataError(ValueError):
    """Task data that cannot be used (one line naming the folder or file)."""


@dataclass
class TaskData:
    name: str
    partitions: dict[str, list[Path]]           # split -> partition or RGB-D sequence folders
    info: dict[Path, dict] = field(default_factory=dict)   # folder -> {"label", "kind", "identity", ...}
    settings: dict = field(default_factory=dict)
    units_to_mm: float = 1000.0                 # scene units are metres
    kind: str = "partitions"                    # or "rgbd", "clearpose" (scene folders)
    evaluation: str = "face"                    # finetune.evaluate.EVALUATIONS: which per-sequence metrics
    max_dist_mm: float = 20.0                   # points metrics: distances capped here (the task's scale)

    def dataset(self, split: str, frames: int, resolution: int | None, seed: int = 0, normalize: bool = True,
                extras: bool = False) -> Dataset:
        folders = self.partitions.get(split)
        if not folders:
            raise TaskDataError(f"task {self.name}: no {split} split")
        if self.kind == "rgbd":
            from .rgbd import RGBDSequences
            return RGBDSequences(folders[0].parent, num_frames=frames, resolution=resolution, seed=seed,
                                 normalize=normalize)
        if self.kind == "clearpose":
            from .tasks.clearpose import DEFAULT_STRIDE, ClearPoseError, ClearPoseSequences
            try:
                return ClearPoseSequences(folders, num_frames=frames, resolution=resolution, seed=seed,
                                          normalize=normalize, stride=self.settings.get("stride", DEFAULT_STRIDE))
            except ClearPoseError as e:
                raise TaskDataError(str(e)) from None
        from training import SynthSequences
        return SynthSequences(folders, num_frames=frames, resolution=resolution, seed=seed, normalize=normalize,
                              extras=extras, transparent_masks=self.evaluation == "transparent")

    def sequence_info(self, split: str, dataset: Dataset) -> list[dict]:
        """Per sequence of ``dataset`` (made by :meth:`dataset`), the facts of its partition or capture."""
        if self.kind == "rgbd":
            return [{"label": int(label), "kind": "rgbd", "identity": None} for label in dataset.labels]
        if self.kind == "clearpose":  # an item's folder is its scene
            return [self.info.get(Path(d), {"label": -1}) for d in dataset.sample_dirs]
        return [self.info.get(Path(d).parent, {"label": -1}) for d in dataset.sample_dirs]

    def labels(self, split: str, dataset: Dataset) -> list[int]:
        return [int(i.get("label", -1)) for i in self.sequence_info(split, dataset)]


def load_task_data(root: str | Path, name: str = "data") -> TaskData:
    """User data for ``--data DIR``: ``DIR/{train,val,test}/`` holding rendered partitions or RGB-D
    sequences (docs/rgbd.md). Rendered partitions carry no live/spoof label unless DIR has a
    ``labels.json`` ({partition folder relative to DIR: "live" | "spoof"})."""
    import json

    root = Path(root)
    if not root.is_dir():
        raise TaskDataError(f"--data {root}: not a folder")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise TaskDataError(f"--data {root}: no {missing[0]}/ folder (expected {', '.join(s + '/' for s in SPLITS)})")
    rgbd = [s for s in SPLITS if any((root / s).glob("*/frames.json"))]
    if rgbd and len(rgbd) < len(SPLITS):
        raise TaskDataError(f"--data {root}: {rgbd[0]}/ holds RGB-D sequences but not every split does")
    if rgbd:
        from .rgbd import RGBDError, find_sequences
        try:
            parts = {s: find_sequences(root / s) for s in SPLITS}
        except RGBDError as e:
            raise TaskDataError(str(e)) from None
        return TaskData(name=name, partitions=parts, kind="rgbd", settings={"data": str(root)})
    parts = {s: sorted(m.parent for m in (root / s).rglob("manifest.json")) for s in SPLITS}
    empty = [s for s in SPLITS if not parts[s]]
    if empty:
        raise TaskDataError(f"--data {root}/{empty[0]}: neither rendered partitions (manifest.json) nor RGB-D "
                            "sequences (frames.json)")
    info = {}
    labels_file = root / "labels.json"
    if labels_file.is_file():
        try:
            labels = json.loads(labels_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TaskDataError(f"{labels_file}: unreadable ({e})") from None
        for rel, label in labels.items():
            if label not in ("live", "spoof"):
                raise TaskDataError(f"{labels_file}: {rel}: label must be 'live' or 'spoof', got {label!r}")
            info[(root / rel)] = {"label": 1 if label == "live" else 0}
    return TaskData(name=name, partitions=parts, info=info, settings={"data": str(root)})


__all__ = ["TaskData", "TaskDataError", "load_task_data", "SPLITS"]
