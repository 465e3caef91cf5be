"""One harness for every fine-tuning method: the same data, steps, schedule, loss and evaluation.

    cfg = FinetuneConfig(task="face", method="ours")
    data = task_data(cfg)                       # builds / renders the task's data where missing
    result = run_method(cfg, data, "ours")      # lr from the grid on validation, then every seed
    table = compare(cfg, data, METHODS)         # every method at the same budget, "no fine-tuning" first

Per run (method, rank or dim, learning rate, seed) the folder ``OUT/<task>/<method>-<size>/lr<lr>/seed<k>/``
holds the trainer's run (``run/``: log.csv, loss.png, checkpoints while training), the adapter
(``adapter/``) and ``record.json``, written last: a finished run is skipped, a killed one resumes from its
checkpoint. Learning rates: each method's grid (``LR_GRIDS``) is tried with seed 0 and the full budget on
the training split, the best validation AbsRel wins (recorded in ``lr_grid.json``); the other seeds then
train at that rate. The anti-spoofing threshold is each run's EER threshold on validation, applied to test.

Fairness (what every method shares): target layers (default: the layers the basis covers), the patch embed
frozen, the heads' policy (``heads``: "frozen" by default for every method — the comparison is about how
the aggregator adapts; "train" adds the depth head, fully trained, to every method), the loss (depth only:
prediction is by the depth head, as in the paper; the small model's camera head does not learn), AdamW with
linear warm-up then cosine decay, batch size, steps and data order per seed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.atomic import write_json

from .data import TaskData
from .methods import METHODS, MethodContext, MethodError, prepare

REPO = Path(__file__).resolve().parents[1]
TASKS = ("face", "transparent", "human")
NO_FINETUNE = "none"
# AdaLoRA's grid starts 10x higher than LoRA's: peft starts its P and Q at N(0, 0.02) and Λ at zero, and AdamW
# moves every entry by about lr per step whatever its gradient, so at first its ΔW = PΛQ grows with two factors of
# 0.02 where LoRA's BA grows with one factor of its Kaiming-initialised A. On the face task AdaLoRA's validation
# AbsRel did not move at all in 200 steps at 3e-4, 1e-3 and 3e-3 (the grid it had before).
LR_GRIDS = {  # peak learning rates tried per method (AdamW); chosen on validation
    "ours": (1e-3, 3e-3, 1e-2), "psv": (1e-3, 3e-3, 1e-2), "random": (1e-3, 3e-3, 1e-2),
    "lora": (3e-4, 1e-3, 3e-3), "pissa": (1e-4, 3e-4, 1e-3), "adalora": (3e-3, 1e-2, 3e-2),
    "eva": (3e-4, 1e-3, 3e-3), "corda": (1e-4, 3e-4, 1e-3), "full": (1e-5, 3e-5, 1e-4),
}
SELECT_BY = "abs_rel"       # validation metric that picks the learning rate (lower is better)
GRID_FACTOR, GRID_EXTENSIONS = 3.0, 2   # a best rate at a grid's end: one more ladder step beyond it, at most twice


class FinetuneError(ValueError):
    """A fine-tuning run that cannot start as asked (one line for the CLI)."""


@dataclass(frozen=True)
class FinetuneConfig:
    task: str = "face"
    method: str = "ours"
    rank: int = 16                        # LoRA-family rank r
    dim: int | None = None                # psv / random basis dimension (None: the mined basis's mean, else 4·rank)
    steps: int = 200
    lr: float | None = None               # None: pick from the method's grid on validation
    seeds: int = 1
    batch_size: int = 2
    frames: int = 4
    resolution: int = 126
    heads: str = "frozen"                 # frozen | train (the depth head, for every method)
    warmup: float = 0.05
    weight_decay: float = 0.0
    calibration_batches: int = 8          # EVA / CorDA: training batches their init sees
    max_dist_mm: float | None = None      # points metrics: distances capped here (None: the task's, TaskData)
    ranks: tuple[int, ...] | None = None  # --compare: LoRA at each of these ranks (None: --rank only)
    bases: tuple[str, ...] | None = None  # --compare: ours with each of these bases (None: --basis only)
    checkpoint: str = "assets/vggt_small.safetensors"
    model_preset: str | None = None
    basis: str = "mined/basis.safetensors"
    targets: str | None = None            # regex; None: the basis's layers (or mining's default targets)
    data: str | None = None               # user data (finetune.data.load_task_data); None: built-in
    out: str = "runs/finetune"
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise FinetuneError(f"--method {self.method!r}: unknown; choose from {', '.join(METHODS)}")
        if self.heads not in ("frozen", "train"):
            raise FinetuneError(f"--heads {self.heads!r}: choose frozen or train")
        for name in ("rank", "steps", "seeds", "batch_size", "frames"):
            if getattr(self, name) < 1:
                raise FinetuneError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.dim is not None and self.dim < 1:
            raise FinetuneError(f"--dim must be >= 1, got {self.dim}")
        if self.lr is not None and not self.lr > 0:
            raise FinetuneError(f"--lr must be > 0, got {self.lr}")
        if self.ranks is not None and (not self.ranks or min(self.ranks) < 1):
            raise FinetuneError(f"--ranks must be whole numbers >= 1, got {list(self.ranks)}")
        if self.bases is not None and not self.bases:
            raise FinetuneError("--bases names no basis file")

    @property
    def task_dir(self) -> Path:
        return Path(self.out) / self.task


# ---- the base model and the task --------------------------------------------------------------------------

def resolve(path: str) -> Path:
    """A relative path not found from here is looked up from the repository root (the shipped assets)."""
    p = Path(path)
    return REPO / p if not p.is_absolute() and not p.exists() and (REPO / p).exists() else p


@functools.lru_cache(maxsize=4)
def _sha(path: str, stat: tuple) -> str:
    from mining.basis import file_sha256
    return file_sha256(path)


def file_sha(path: str | Path) -> str:
    """sha256 of a file (``resolve``d), hashed once per size and modification time."""
    path = resolve(str(path))
    st = path.stat()
    return _sha(str(path), (st.st_size, st.st_mtime_ns))


def checkpoint_sha(cfg: FinetuneConfig) -> str:
    return file_sha(cfg.checkpoint)


def load_base(cfg: FinetuneConfig) -> torch.nn.Module:
    from model import VGGTConfig, load_model
    from model.checkpoint import CheckpointError

    path = resolve(cfg.checkpoint)
    try:
        return load_model(path, config=VGGTConfig.preset(cfg.model_preset) if cfg.model_preset else None).float()
    except (CheckpointError, ValueError) as e:
        raise FinetuneError(str(e)) from None


def task_data(cfg: FinetuneConfig, renderer=None, say=print) -> TaskData:
    """The task's splits: the user's ``--data`` folder, or the built-in data (made where missing)."""
    from .data import load_task_data

    if cfg.task == "transparent":
        from .tasks.transparent import TransparentData, clearpose_task_data, is_clearpose, prepare_transparent_data
        if cfg.data is None:
            return prepare_transparent_data(TransparentData(resolution=cfg.resolution, views=max(cfg.frames, 4)),
                                            renderer=renderer, progress=cfg.progress, say=say)
        if is_clearpose(cfg.data):
            return clearpose_task_data(cfg.data)
        data = load_task_data(cfg.data, name=cfg.task)
        data.evaluation = "transparent"
        return data
    if cfg.task == "human" and cfg.data is not None:
        from .tasks.human import MAX_DIST_MM, HumanData, human_scans_at, scan_task_data
        found = human_scans_at(cfg.data)
        if found:
            return scan_task_data(cfg.data, HumanData(resolution=cfg.resolution, views=max(cfg.frames, 4)),
                                  renderer=renderer, progress=cfg.progress, say=say, found=found)
        data = load_task_data(cfg.data, name=cfg.task)
        data.evaluation, data.max_dist_mm = "human", MAX_DIST_MM
        return data
    if cfg.data is not None:
        return load_task_data(cfg.data, name=cfg.task)
    if cfg.task == "face":
        from .tasks.face import FaceData, prepare_face_data
        return prepare_face_data(FaceData(resolution=cfg.resolution, views=max(cfg.frames, 4)), renderer=renderer,
                                 progress=cfg.progress, say=say)
    if cfg.task == "human":
        from .tasks.human import HumanData, prepare_human_data
        return prepare_human_data(HumanData(resolution=cfg.resolution, views=max(cfg.frames, 4)), renderer=renderer,
                                  progress=cfg.progress, say=say)
    raise FinetuneError(f"task {cfg.task!r}: unknown; choose from {', '.join(TASKS)}")


def target_layers(cfg: FinetuneConfig, model: torch.nn.Module) -> list[str]:
    """The layers every method adapts: ``--targets``, else the basis's layers, else mining's targets."""
    from mining.config import DEFAULT_TARGETS

    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if cfg.targets is None and resolve(cfg.basis).is_file():
        from mining.basis import read_basis
        names = read_basis(resolve(cfg.basis)).modules
        missing = [n for n in names if n not in linear]
        if missing:
            raise FinetuneError(f"{cfg.basis}: layer {missing[0]} is not a linear layer of the model "
                                "(a basis mined on another model?)")
        return names
    pattern = re.compile(cfg.targets or DEFAULT_TARGETS)
    names = [n for n in linear if pattern.fullmatch(n)]
    if not names:
        raise FinetuneError(f"--targets {pattern.pattern!r}: matches no linear layer of the model")
    return names


def check_basis(cfg: FinetuneConfig) -> None:
    """Refuse early (before any data is built) a basis that does not fit the base model: another
    architecture, another checkpoint (when the basis records its sha256), or layers the model lacks."""
    from mining.basis import check_against_model, read_basis

    from .adapters.subspace import _check_checkpoint, _check_model_config

    basis = read_basis(resolve(cfg.basis))
    model = load_base(cfg)
    _check_model_config(basis, model)
    _check_checkpoint(basis, checkpoint_sha(cfg))
    check_against_model(basis, model)


def method_size(cfg: FinetuneConfig, method: str) -> tuple[str, int | None]:
    """(folder tag, rank or dim) of a method: LoRA-family rank, generated-basis dim, or the mined basis."""
    if method == "ours":   # several bases in one comparison: each its own folder
        return ("mined" if not cfg.bases or len(cfg.bases) < 2 else f"mined-{Path(cfg.basis).stem}"), None
    if method in ("psv", "random"):
        return f"d{basis_dim(cfg)}", basis_dim(cfg)
    if method == "full":
        return "all", None
    return f"r{cfg.rank}", cfg.rank


@functools.lru_cache(maxsize=8)
def _mean_basis_dim(path: str, stat: tuple) -> int:
    from mining.basis import read_basis
    basis = read_basis(path)
    return max(1, round(float(np.mean([basis.A[m].shape[1] for m in basis.modules]))))


def mean_basis_dim(path: str | Path) -> int:
    """A basis file's mean per-layer dimension (rounded; read once per file version)."""
    st = Path(path).stat()
    return _mean_basis_dim(str(path), (st.st_size, st.st_mtime_ns))


def basis_dim(cfg: FinetuneConfig) -> int:
    """psv/random dimension: ``--dim``, else the mined basis's mean per-layer dimension (the same budget
    as ours), else 4·rank (four attributes of d′ = rank)."""
    if cfg.dim is not None:
        return cfg.dim
    path = resolve(cfg.basis)
    return mean_basis_dim(path) if path.is_file() else 4 * cfg.rank


# ---- one run ------------------------------------------------------------------------------------------------

def run_dir(cfg: FinetuneConfig, method: str, lr: float, seed: int) -> Path:
    tag, _ = method_size(cfg, method)
    return cfg.task_dir / f"{method}-{tag}" / f"lr{lr:g}" / f"seed{seed}"


def _loss_fn(regulariser):
    from training import LossWeights, vggt_loss

    weights = LossWeights(camera=0.0, depth=1.0, point=0.0)

    def loss(predictions, batch):
        total, parts = vggt_loss(predictions, batch, weights)
        if regulariser is not None:
            reg = regulariser()
            parts = dict(parts, regulariser=reg.detach())
            total = total + reg
        return total, parts
    return loss


def _device(cfg: FinetuneConfig) -> torch.device:
    return torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _heads_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".depth_head." in f".{n}" or n.startswith("depth_head.")]


def run_one(cfg: FinetuneConfig, data: TaskData, method: str, lr: float, seed: int, say=print) -> dict:
    """Train one (method, lr, seed) and evaluate it on validation and test; skipped when finished."""
    from training import TrainConfig, make_loader, train

    folder = run_dir(cfg, method, lr, seed)
    done = folder / "record.json"
    identity = run_identity(cfg, method)
    if done.is_file():
        return check_reuse(done, json.loads(done.read_text()), identity)
    started_with = folder / "identity.json"       # a killed run resumes only on the same base, basis, settings
    if started_with.is_file():
        check_reuse(started_with, json.loads(started_with.read_text()), identity)
    else:
        write_json(started_with, identity)
    device = _device(cfg)
    train_set = data.dataset("train", cfg.frames, cfg.resolution, seed=seed)
    loader = make_loader(train_set, batch_size=cfg.batch_size)
    calibration = lambda: [b for _, b in zip(range(cfg.calibration_batches), loader.batches(0, seed))]  # noqa: E731
    model = load_base(cfg)
    _, size = method_size(cfg, method)
    ctx = MethodContext(method=method, targets=target_layers(cfg, model), rank=size or cfg.rank, steps=cfg.steps,
                        seed=seed, basis=resolve(cfg.basis), calibration=calibration, device=device,
                        checkpoint_sha256=identity["checkpoint_sha256"], workdir=cfg.task_dir / "cache")
    started = time.time()
    adapted = prepare(method, model, ctx)
    params = list(adapted.params)
    if cfg.heads == "train":
        params += [p for p in _heads_params(adapted.model) if all(p is not q for q in params)]
    trainable = sum(p.numel() for p in params)
    say(f"{method} lr {lr:g} seed {seed}: {trainable:,} trainable parameters")
    tcfg = TrainConfig(steps=cfg.steps, lr=lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay, seed=seed,
                       checkpoint_every=max(1, min(100, cfg.steps // 4)), device=str(device), progress=cfg.progress)
    result = train(adapted.model, params, loader, tcfg, loss_fn=_loss_fn(adapted.regulariser), out_dir=folder / "run",
                   after_step=adapted.after_step)
    if result.status == "interrupted":
        raise KeyboardInterrupt(result.message)
    record = {"method": method, "lr": lr, "seed": seed, "trainable": trainable, "status": result.status,
              "train": _log_summary(folder / "run" / "log.csv"), "log": str(folder / "run" / "log.csv"), "info": adapted.info} | identity
    if result.status == "finished":
        adapted.save(folder / "adapter")
        record |= evaluate_model(cfg, data, adapted.model, folder)
    else:                                   # a diverged method is a result too: it counts as failed
        record |= {"message": result.message, "val": None, "test": None}
    record["seconds"] = time.time() - started
    record = _finite(record)
    write_json(done, record)
    return record


def evaluate_model(cfg: FinetuneConfig, data: TaskData, model, folder: Path | None = None) -> dict:
    """Validation and test summaries (the test's ACER at the validation EER threshold); per-sequence rows
    go to ``folder/sequences.json``."""
    from .evaluate import eer_threshold, predict_split, summarize

    device = _device(cfg)
    out, rows_all = {}, {}
    threshold = None
    for split in ("val", "test"):
        ds = data.dataset(split, cfg.frames, cfg.resolution, normalize=False)
        rows = predict_split(model, ds, device, data.units_to_mm, max_dist(cfg, data), evaluation=data.evaluation)
        labels = data.labels(split, ds)
        info = data.sequence_info(split, ds)
        for r, i in zip(rows, info):
            r.update({k: i.get(k) for k in ("label", "kind", "identity", "source")})
        if split == "val":
            threshold = eer_threshold(rows, labels)
        out[split] = summarize(rows, labels, threshold if split == "test" else None, data.evaluation)
        if split == "test":
            out["test_by_source"] = {src: summarize([r for r in rows if r.get("source") == src],
                                                    [r["label"] for r in rows if r.get("source") == src], threshold,
                                                    data.evaluation)
                                     for src in sorted({r.get("source") for r in rows} - {None})}
        rows_all[split] = rows
    if folder is not None:
        write_json(folder / "sequences.json", _finite(rows_all))
    return out


def max_dist(cfg: FinetuneConfig, data: TaskData) -> float:
    """The points metrics' distance cap: the config's, else the task's (TaskData.max_dist_mm)."""
    return cfg.max_dist_mm if cfg.max_dist_mm is not None else getattr(data, "max_dist_mm", 20.0)


def no_finetune(cfg: FinetuneConfig, data: TaskData) -> dict:
    """The base model and a constant depth map on the same splits (the table's first rows)."""
    from .evaluate import constant_depth_rows, eer_threshold, summarize

    folder = cfg.task_dir / NO_FINETUNE
    done = folder / "record.json"
    identity = run_identity(cfg, NO_FINETUNE)
    if done.is_file():
        return check_reuse(done, json.loads(done.read_text()), identity)
    record = {"method": NO_FINETUNE, "trainable": 0} | identity | evaluate_model(cfg, data, load_base(cfg), folder)
    const = {}
    for split in ("val", "test"):
        ds = data.dataset(split, cfg.frames, cfg.resolution, normalize=False)
        rows = constant_depth_rows(ds, data.units_to_mm, max_dist(cfg, data), data.evaluation)
        for r, i in zip(rows, data.sequence_info(split, ds)):
            r["source"] = i.get("source")
        const[split] = (rows, data.labels(split, ds))
    t = eer_threshold(*const["val"])
    record["constant_depth"] = {s: summarize(r, lab, t if s == "test" else None, data.evaluation)
                                for s, (r, lab) in const.items()}
    rows, labels = const["test"]
    record["constant_depth"]["test_by_source"] = {
        src: summarize([r for r in rows if r["source"] == src], [lab for r, lab in zip(rows, labels) if r["source"] == src],
                       t, data.evaluation) for src in sorted({r["source"] for r in rows} - {None})}
    record["max_dist_mm"] = max_dist(cfg, data)
    record = _finite(record)
    write_json(done, record)
    return record


# ---- learning rate and seeds --------------------------------------------------------------------------------

def run_method(cfg: FinetuneConfig, data: TaskData, method: str, say=print) -> dict:
    """Pick the method's learning rate (``cfg.lr``, else its grid on validation, seed 0), train every seed
    at it; returns {"method", "lr", "grid", "runs": [records]}. When the best rate of the grid is at one of
    its ends, the grid is extended by one more step of the 1-3-10 ladder on that side (up to ``GRID_EXTENSIONS`` times),
    so that no method is judged at a rate its grid merely cut off; every method gets the same rule."""
    grid = [cfg.lr] if cfg.lr is not None else list(LR_GRIDS[method])
    tried: dict[float, dict] = {}

    def score(lr: float) -> float:
        if lr not in tried:
            rec = run_one(cfg, data, method, lr, seed=0, say=say)
            value = (rec.get("val") or {}).get(SELECT_BY)
            tried[lr] = {"lr": lr, f"val_{SELECT_BY}": math.nan if value is None else float(value),
                         "status": rec["status"]}
        return tried[lr][f"val_{SELECT_BY}"]

    for lr in grid:
        score(lr)
    for _ in range(GRID_EXTENSIONS if cfg.lr is None else 0):
        finite = sorted(lr for lr in tried if math.isfinite(tried[lr][f"val_{SELECT_BY}"]))
        if len(finite) < 2:
            break
        best = min(finite, key=score)
        if best == max(tried):
            score(_ladder(best, up=True))
        elif best == min(tried):
            score(_ladder(best, up=False))
        else:
            break
    finite = [lr for lr in tried if math.isfinite(tried[lr][f"val_{SELECT_BY}"])]
    if not finite:
        raise FinetuneError(f"{method}: every learning rate of {sorted(tried)} diverged")
    best = min(finite, key=score)
    tag, _ = method_size(cfg, method)
    write_json(cfg.task_dir / f"{method}-{tag}" / "lr_grid.json",
               _finite({"select_by": f"val {SELECT_BY}", "tried": [tried[lr] for lr in sorted(tried)], "chosen": best,
                        "steps": cfg.steps}))
    runs = [run_one(cfg, data, method, best, seed=s, say=say) for s in range(cfg.seeds)]
    return {"method": method, "lr": best, "grid": [tried[lr] for lr in sorted(tried)], "runs": runs}


def _ladder(lr: float, up: bool) -> float:
    """The next rate on the 1-3-10 ladder the grids use (1e-3 → 3e-3 → 1e-2), ×3 or ÷3 off the ladder."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = lr / 10 ** exponent
    if abs(mantissa - 1) < 1e-6:
        return float(f"{3 * 10 ** exponent:g}") if up else float(f"{3 * 10 ** (exponent - 1):g}")
    if abs(mantissa - 3) < 1e-6:
        return float(f"{10 ** (exponent + 1):g}") if up else float(f"{10 ** exponent:g}")
    return lr * GRID_FACTOR if up else lr / GRID_FACTOR


def compare(cfg: FinetuneConfig, data: TaskData, methods=METHODS, say=print) -> dict:
    """Every method at the same budget and the no-fine-tuning controls; writes the table and plots."""
    from .report import write_comparison

    base = no_finetune(cfg, data)
    results = []
    for m in methods:
        for variant, label in _variants(cfg, m):
            try:
                res = run_method(variant, data, m, say=say)
            except (MethodError, FinetuneError) as e:
                if m == "ours" and not resolve(variant.basis).is_file():
                    say(f"skipping ours: {e}")
                    continue
                raise
            results.append(res | {"method": label})
    return write_comparison(cfg, base, results)


def _variants(cfg: FinetuneConfig, method: str) -> list[tuple[FinetuneConfig, str]]:
    """(config, row label) of each size a comparison trains a method at: LoRA at every ``--ranks``, ours
    with every ``--bases`` (labelled by the basis's mean per-layer dimension); one row otherwise."""
    if method == "lora" and cfg.ranks:
        return [(dataclasses.replace(cfg, rank=r), f"lora r{r}") for r in cfg.ranks]
    if method == "ours" and cfg.bases and len(cfg.bases) > 1:
        out = []
        for b in cfg.bases:
            v = dataclasses.replace(cfg, basis=b)
            dim = basis_dim(dataclasses.replace(v, dim=None)) if resolve(b).is_file() else "?"
            out.append((v, f"ours d{dim} ({Path(b).stem})"))
        return out
    return [(cfg, method)]


# ---- helpers ------------------------------------------------------------------------------------------------

def _settings(cfg: FinetuneConfig) -> dict:
    keep = ("task", "rank", "dim", "steps", "batch_size", "frames", "resolution", "heads", "warmup", "weight_decay",
            "checkpoint", "basis", "targets", "data", "max_dist_mm")
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k in keep}


def run_identity(cfg: FinetuneConfig, method: str) -> dict:
    """What a finished run's numbers depend on beyond its folder name (method, lr, seed): the settings, the
    base model's sha256 and, for ``ours``, the mined basis's."""
    settings = _settings(cfg)
    if method == NO_FINETUNE:               # the base model's evaluation depends on the data and its sampling only
        settings = {k: v for k, v in settings.items() if k in ("task", "frames", "resolution", "data", "max_dist_mm", "checkpoint")}
    ident = {"settings": settings, "checkpoint_sha256": checkpoint_sha(cfg)}
    if method == "ours" and cfg.basis is not None and resolve(cfg.basis).is_file():
        ident["basis_sha256"] = file_sha(cfg.basis)
    return ident


def check_reuse(path: Path, record: dict, identity: dict) -> dict:
    """``record`` when it was made on the same base model, basis and settings as ``identity``; otherwise
    FinetuneError in one line naming what differs (records from before the base model's sha256 was stored
    are refused too: nothing says which weights made them)."""
    for key, what in (("checkpoint_sha256", "base model"), ("basis_sha256", "mined basis")):
        if key not in identity:
            continue
        stored = record.get(key)
        if stored is None:
            raise FinetuneError(f"{path}: made before runs recorded their {what}'s sha256 (this {what}: "
                                f"{identity[key][:12]}…); delete the folder or use another --out")
        if stored != identity[key]:
            raise FinetuneError(f"{path}: made on another {what} (sha256 {stored[:12]}…, this one {identity[key][:12]}…); "
                                "delete the folder or use another --out")
    stored = record.get("settings") or {}
    changed = [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in identity["settings"].items()
               if k in stored and stored[k] != v and k not in ("checkpoint", "basis")]   # files: their sha256 above
    if changed:
        raise FinetuneError(f"{path}: made with other settings ({'; '.join(changed)}); delete the folder or use another --out")
    return record


def _log_summary(log: Path, window: int = 20) -> dict:
    from training.logs import read_log

    rows = read_log(log)
    loss = [float(r["loss"]) for r in rows]
    if not loss:
        return {"steps": 0}
    return {"steps": len(rows), "loss_first": float(np.mean(loss[:window])), "loss_last": float(np.mean(loss[-window:])),
            "seconds": float(rows[-1]["seconds"])}


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


__all__ = ["FinetuneConfig", "FinetuneError", "LR_GRIDS", "task_data", "run_one", "run_method", "compare",
           "no_finetune", "evaluate_model", "target_layers", "max_dist", "TASKS"]
