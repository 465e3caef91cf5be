"""The clothed-human task: dressed anny bodies in two domains (built-in), or THuman 2.1 / 2K2K scans in
their published layouts, rendered by the mesh mode with a turntable rig into train / val / test.

    data = prepare_human_data(HumanData())            # builds and renders what is missing (resumable)
    data = scan_task_data("datasets/", HumanData())    # THuman 2.1 and/or 2K2K (finetune.tasks.human_scans)

Two domains mirror the paper's THuman 2.1 → 2K2K set-up. The **in-domain** subjects (young to middle-aged
adults, casual clothes, standing A- and relaxed poses, a level camera ring under studio light) are split by
subject into train / val / test; the **cross-domain** subjects differ in body (older, heavier), clothing
(coats, skirts and dresses, looser cloth, deeper folds, darker colours, more hair), pose (more walking
strides), camera height (a ring 15–30° above the body's centre) and light (fewer, warmer lamps): they are
test data only. The test split holds both; results are reported per domain (the ``source`` of a
sequence). With real scans, THuman 2.1 is split by subject and 2K2K is the cross-domain test.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import write_bytes, write_json, write_text_if_changed

from ..data import TaskData, TaskDataError

INDEX_NAME = "humans.json"
FORMAT = "attrspace-human-meshes"
VERSION = 1
IN_DOMAIN, CROSS_DOMAIN = "in-domain", "cross-domain"
LISTS = ("train", "val", "test", "cross")          # mesh lists and render folders
MAX_DIST_MM = 100.0                                # points metrics cap: bodies are ~2.5 m from the camera


@dataclass(frozen=True)
class HumanDomain:
    phenotype: dict            # anny phenotype ranges (uniform)
    stature: dict              # per-sex normal (mean, sd) in metres, and a clip range
    poses: dict                # pose family -> weight (human_body.POSE_FAMILIES)
    style: dict                # clothing distribution (human_dress.sample_outfit)
    rig: dict = field(default_factory=dict)        # turntable settings changed (render.rigs.TurntableRig)
    lighting: dict = field(default_factory=dict)   # studio lighting settings changed (render.meshes.StudioLighting)


DOMAINS = {
    IN_DOMAIN: HumanDomain(
        phenotype={"gender": (0.0, 1.0), "age": (0.5, 0.8), "muscle": (0.2, 0.9), "weight": (0.2, 0.65),
                   "proportions": (0.2, 0.9)},
        stature={"male": (1.76, 0.07), "female": (1.63, 0.06), "clip": (1.5, 1.95)},
        poses={"a_pose": 0.4, "relaxed": 0.5, "walking": 0.1},
        style={"tops": {"tank": 0.1, "tshirt": 0.4, "longsleeve": 0.3, "jacket": 0.2},
               "bottoms": {"shorts": 0.2, "capri": 0.1, "trousers": 0.6, "skirt": 0.1},
               "ease": (0.003, 0.015), "folds": (0.002, 0.006), "skirt_length": (0.3, 0.6),
               "palette": {"saturation": (0.1, 0.75), "value": (0.2, 0.9)},
               "patterns": {"solid": 0.5, "hstripes": 0.15, "vstripes": 0.1, "checks": 0.1, "print": 0.15},
               "hair": {"bald": 0.05, "short": 0.5, "medium": 0.3, "long": 0.15}},
        rig={"elevation_deg": [-5.0, 5.0]}),
    CROSS_DOMAIN: HumanDomain(
        phenotype={"gender": (0.0, 1.0), "age": (0.7, 1.0), "muscle": (0.0, 0.6), "weight": (0.45, 0.95),
                   "proportions": (0.0, 0.7)},
        stature={"male": (1.72, 0.08), "female": (1.60, 0.07), "clip": (1.45, 1.95)},
        poses={"a_pose": 0.1, "relaxed": 0.4, "walking": 0.5},
        style={"tops": {"tshirt": 0.2, "longsleeve": 0.2, "jacket": 0.2, "coat": 0.4},
               "bottoms": {"trousers": 0.35, "skirt": 0.3, "dress": 0.35},
               "ease": (0.01, 0.035), "folds": (0.005, 0.012), "skirt_length": (0.5, 0.95),
               "palette": {"saturation": (0.0, 0.5), "value": (0.05, 0.6)},
               "patterns": {"solid": 0.3, "hstripes": 0.1, "vstripes": 0.2, "checks": 0.2, "print": 0.2},
               "hair": {"short": 0.2, "medium": 0.2, "long": 0.3, "voluminous": 0.3}},
        rig={"elevation_deg": [15.0, 30.0]},
        lighting={"lights": [1, 2], "temperature_k": [2700.0, 4200.0], "irradiance": [0.5, 3.0],
                  "background_value": [0.02, 0.2]}),
}


@dataclass(frozen=True)
class HumanData:
    """Where the human task's data lives and how it is made (all of it follows from these settings)."""
    root: str = "data/human"
    subjects: int = 48               # in-domain subjects, split by subject
    cross_subjects: int = 12         # cross-domain subjects (test only)
    splits: tuple = (0.7, 0.15, 0.15)
    samples: int = 2                 # turntable placements and lightings per subject
    views: int = 4
    resolution: int = 126
    spp: int = 16
    preset: str = "default"
    seed: int = 0

    @property
    def meshes(self) -> Path:
        return Path(self.root) / "meshes"

    @property
    def renders(self) -> Path:
        return Path(self.root) / "render"


# ------------------------------------------------------------------------------------------ meshes

def plan_subjects(cfg: HumanData) -> list[dict]:
    """Every subject's domain, split and number (no anny yet): in-domain subjects are split by a seeded
    permutation in the ``splits`` fractions; cross-domain subjects are test data."""
    n = cfg.subjects
    counts = [int(math.floor(f * n)) for f in cfg.splits]
    for k in np.argsort([-(f * n - math.floor(f * n)) for f in cfg.splits])[: n - sum(counts)]:
        counts[k] += 1
    order = np.random.default_rng([cfg.seed, 11]).permutation(n)
    split_of = np.empty(n, dtype=object)
    start = 0
    for split, c in zip(("train", "val", "test"), counts):
        split_of[order[start:start + c]] = split
        start += c
    plan = [{"subject": f"in_{i:04d}", "domain": IN_DOMAIN, "number": i, "split": str(split_of[i]),
             "list": str(split_of[i])} for i in range(n)]
    plan += [{"subject": f"cross_{i:04d}", "domain": CROSS_DOMAIN, "number": i, "split": "test", "list": "cross"}
             for i in range(cfg.cross_subjects)]
    return plan


def sample_subject(cfg: HumanData, unit: dict, body) -> dict:
    """Phenotype (stature solved), pose and outfit of one subject: a seeded stream per (domain, number)."""
    from .human_body import sample_phenotype, sample_pose, solve_height
    from .human_dress import sample_outfit

    domain = DOMAINS[unit["domain"]]
    rng = np.random.default_rng([cfg.seed, 1 + list(DOMAINS).index(unit["domain"]), unit["number"]])
    phenotype = sample_phenotype(rng, domain.phenotype, domain.stature)
    phenotype["height"] = round(solve_height(body, {**phenotype, "height": 0.5}, phenotype["stature"]), 6)
    return {"phenotype": phenotype, "pose": sample_pose(rng, domain.poses), "outfit": sample_outfit(rng, domain.style)}


def dressed_ply(mesh) -> bytes:
    from .face_meshes import ply_bytes
    return ply_bytes(mesh, comment="AttrSpace clothed human: metres, +Y up, facing +Z, feet on y = 0")


def build_human_meshes(cfg: HumanData = HumanData(), progress: bool = True) -> Path:
    """Generate every subject's dressed mesh (PLY with vertex colours) where missing, the index and the
    mesh lists; returns the index path. A finished build reruns in well under a second per subject."""
    from .human_body import load_anny_body, posed_body
    from .human_dress import dress, stature

    out = cfg.meshes
    args = {k: v for k, v in asdict(cfg).items() if k in ("subjects", "cross_subjects", "splits", "seed")}
    args |= {"splits": list(cfg.splits), "version": VERSION}
    _claim(out, args)
    plan = plan_subjects(cfg)
    body = load_anny_body()
    rows = []
    for unit in _bar(plan, progress):
        params = sample_subject(cfg, unit, body)
        file = f"{unit['domain']}/{unit['split']}/{unit['subject']}.ply"
        row = {**unit, "file": file, **params}
        if not (out / file).is_file():
            mesh = dress(body, posed_body(body, params["phenotype"], params["pose"]), params["outfit"])
            write_bytes(out / file, dressed_ply(mesh))
            row["stature_dressed"] = round(stature(mesh), 4)
        rows.append(row)
    for name in LISTS:
        files = [r["file"] for r in rows if r["list"] == name]
        write_text_if_changed(out / f"{name}.txt", f"# {name}: {len(files)} human meshes ({INDEX_NAME})\n"
                              + "".join(f"{f}\n" for f in files))
    index = {"format": FORMAT, "version": VERSION, "arguments": args, "units": "metres",
             "frame": "+Y up, facing +Z, feet on y = 0, bounding box centred in x and z",
             "domains": {k: asdict(v) for k, v in DOMAINS.items()},
             "subjects": [{k: v for k, v in r.items() if k != "stature_dressed"} for r in rows]}
    path = out / INDEX_NAME
    write_text_if_changed(path, json.dumps(index, indent=1) + "\n")
    return path


def _claim(out: Path, args: dict) -> None:
    record = out / ".human_meshes_build.json"
    if record.is_file():
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError):
            raise TaskDataError(f"{record}: unreadable; remove it or use another folder") from None
        if old != args:
            diff = ", ".join(f"{k}={old.get(k)!r} (now {v!r})" for k, v in args.items() if old.get(k) != v)
            raise TaskDataError(f"{out} was built with other settings: {diff}; use another --root or the same settings")
    else:
        write_json(record, args)


def _bar(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc="human meshes", unit="subject")


def load_human_index(path: str | Path) -> dict:
    path = Path(path)
    path = path / INDEX_NAME if path.is_dir() else path
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TaskDataError(f"{path}: cannot read the human mesh index ({e.__class__.__name__})") from None
    if index.get("format") != FORMAT:
        raise TaskDataError(f"{path}: not a human mesh index")
    return index


# ------------------------------------------------------------------------------------------ renders

def render_job(cfg: HumanData, name: str, source: Path | None = None, domain: str | None = None, out: Path | None = None,
               units: str = "m"):
    """The mesh-mode job of one list: turntable, the domain's rig and lighting changes."""
    from render.presets import mesh_job

    d = DOMAINS[domain or (CROSS_DOMAIN if name == "cross" else IN_DOMAIN)]
    return mesh_job(source or cfg.meshes / f"{name}.txt", "turntable", out or cfg.renders, cfg.preset,
                    samples=cfg.samples, views=cfg.views, resolution=cfg.resolution, spp=cfg.spp, seed=cfg.seed,
                    name=name, units=units, rig_config=json.dumps(d.rig) if d.rig else None,
                    lighting_config=json.dumps(d.lighting) if d.lighting else None)


def _render(jobs: dict, renderer, progress: bool, say) -> None:
    from render.jobs import JobError, run

    from .face import _bar as render_bar
    for name, job in jobs.items():
        try:
            done = sum((job.partition_dir(p) / "manifest.json").is_file() for p in job.partition_ids())
            if done < len(job.partition_ids()):
                say(f"human {name}: rendering {len(job.partition_ids()) - done} of {len(job.partition_ids())} "
                    f"subjects ({job.samples} x {job.views} views at {job.settings.width} px)")
                run(job, workers=1, renderer=renderer, progress=render_bar(progress, name, job))
        except JobError as e:
            raise TaskDataError(str(e)) from None


def prepare_human_data(cfg: HumanData = HumanData(), renderer=None, progress: bool = True, say=print) -> TaskData:
    """Build the meshes and render every list where missing (both resume), then index the partitions."""
    build_human_meshes(cfg, progress=progress)
    jobs = {name: render_job(cfg, name) for name in LISTS if _listed(cfg.meshes / f"{name}.txt")}
    _render(jobs, renderer, progress, say)
    index = load_human_index(cfg.meshes)
    by_file = {r["file"]: r for r in index["subjects"]}
    return _task_data(jobs, lambda mesh: by_file.get(mesh), cfg, {"data": "built-in", **asdict(cfg)})


def _listed(path: Path) -> bool:
    return any(line.strip() and not line.startswith("#") for line in path.read_text().splitlines())


def _task_data(jobs: dict, row_of, cfg: HumanData, settings: dict) -> TaskData:
    """Partitions per split from the rendered lists: train, val, and test = in-domain test + cross."""
    from render.dataset import PartitionError, load_partition

    partitions = {"train": [], "val": [], "test": []}
    info = {}
    for name, job in jobs.items():
        split = "test" if name == "cross" else name
        for p in job.partition_ids():
            d = job.partition_dir(p)
            try:
                mesh = load_partition(d).manifest.get("mesh", {}).get("file")
            except PartitionError as e:
                raise TaskDataError(str(e)) from None
            row = row_of(mesh) or {}
            partitions[split].append(d)
            info[d] = {"label": -1, "kind": "human", "identity": row.get("subject", mesh),
                       "source": CROSS_DOMAIN if name == "cross" else IN_DOMAIN, "split": split,
                       "dataset": row.get("dataset", "built-in")}
    for split, found in partitions.items():
        if not found:
            raise TaskDataError(f"human task: no {split} partitions (check the data's splits)")
    return TaskData(name="human", partitions=partitions, info=info, settings=settings, evaluation="human",
                    max_dist_mm=MAX_DIST_MM)


# ------------------------------------------------------------------------------------------ real scans

def human_scans_at(root: str | Path) -> dict:
    """The THuman 2.1 / 2K2K scans at ``root`` (``human_scans.find_human_datasets``), {} where there are none
    (the folder holds another layout)."""
    from .human_scans import HumanScanError, find_human_datasets
    try:
        return find_human_datasets(root)
    except HumanScanError:
        return {}


def scan_task_data(root: str | Path, cfg: HumanData = HumanData(), renderer=None, progress: bool = True,
                   say=print, found: dict | None = None) -> TaskData:
    """THuman 2.1 and/or 2K2K at ``root`` (docs/human.md): THuman split by subject (80 / 10 / 10) with 2K2K
    as the cross-domain test; one dataset alone is split by subject and has no cross-domain column.
    Renders go to ``cfg.root/scans/<root's name>/`` (resumable), with the in-domain rig and lighting for
    both (the domain gap is then the data's own). ``found``: the scans already found at ``root``, so that
    the headers of thousands of scans are not read twice."""
    from .human_scans import THUMAN, TWO_K2K, HumanScanError, find_human_datasets, split_subjects, write_mesh_list

    try:
        found = found or find_human_datasets(root)
        main = THUMAN if THUMAN in found else TWO_K2K
        splits = split_subjects(found[main], seed=cfg.seed)
    except HumanScanError as e:
        raise TaskDataError(str(e)) from None
    lists = {"train": splits["train"], "val": splits["val"], "test": splits["test"]}
    if main == THUMAN and TWO_K2K in found:
        lists["cross"] = found[TWO_K2K]
    folder = Path(cfg.root) / "scans" / Path(root).absolute().name
    rows = {}
    jobs = {}
    for name, scans in lists.items():
        path = write_mesh_list(folder / f"{name}.txt", scans, comment=f"{name}: {len(scans)} scans from {root}")
        for s in scans:
            rows[Path(s.path).resolve()] = {"subject": s.subject, "dataset": s.dataset}
        jobs[name] = render_job(cfg, name, source=path, domain=IN_DOMAIN, out=folder / "render", units="auto")
    _render(jobs, renderer, progress, say)
    base = folder.absolute()
    return _task_data(jobs, lambda mesh: rows.get((base / mesh).resolve()) if mesh else None, cfg,
                      {"data": str(root), "datasets": {k: len(v) for k, v in found.items()}, "seed": cfg.seed,
                       "samples": cfg.samples, "views": cfg.views, "resolution": cfg.resolution})


__all__ = ["HumanData", "HumanDomain", "DOMAINS", "IN_DOMAIN", "CROSS_DOMAIN", "prepare_human_data", "scan_task_data",
           "build_human_meshes", "load_human_index", "plan_subjects", "render_job", "human_scans_at", "MAX_DIST_MM"]
