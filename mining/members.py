"""The LoRA clusters: one member per (attribute, partition), trained with the shared training layer.

    for member in all_members(cfg): train_member(cfg, member)      # skips finished, resumes killed ones
    factors = load_member_factors(member_dir(cfg, member))          # {module: (Aᵢ [out,r], Bᵢ [in,r])}

Member i of attribute X trains on partition ``DATA/X/p{i:03d}`` (the generic cluster on
``DATA/mixed/p{mixed_first + i:03d}``), keeping its last ``held_out`` samples for evaluation: its loss on
those before and after training says whether it learned the partition's attribute rather than its
few scenes. Every member has the same settings; only its LoRA init and data order (seeded by (seed, attribute, i)) differ,
so each is an independent LoRA, as in the paper. A member folder holds peft's files
(``adapter/adapter_model.safetensors``, ``adapter/adapter_config.json``), the run (``run/log.csv``,
``run/loss.png``, checkpoints while training) and ``member.json``, written last, which marks it done.
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from common.atomic import atomic_path, write_json
from model import VGGTConfig, load_model
from render.dataset import load_partition
from training import SynthSequences, TrainConfig, make_loader, train, vggt_loss
from training.logs import read_log
from training.rng import seeded
from training.trainer import validate

from .config import MineConfig, MineConfigError

MIXED = "mixed"
REPO = Path(__file__).resolve().parents[1]
DONE = "member.json"


@dataclass(frozen=True)
class Member:
    attribute: str          # one of the attributes, or "mixed" (the generic cluster)
    index: int              # within its cluster

    @property
    def name(self) -> str:
        return f"{self.attribute}/m{self.index:02d}"


def all_members(cfg: MineConfig) -> list[Member]:
    """Every member of the run, attribute clusters first, then the generic (mixed) cluster; the order
    ``--shard I/N`` slices."""
    members = [Member(a, i) for a in cfg.attributes for i in range(cfg.members)]
    return members + [Member(MIXED, i) for i in range(cfg.mixed_members)]


def partition_index(cfg: MineConfig, member: Member) -> int:
    return member.index + (cfg.mixed_first if member.attribute == MIXED else 0)


def partition_dir(cfg: MineConfig, member: Member) -> Path:
    return Path(cfg.data) / member.attribute / f"p{partition_index(cfg, member):03d}"


def member_seed(cfg: MineConfig, member: Member) -> int:
    """The member's own seed (LoRA init, data order), from (seed, attribute, index). Members of different
    attributes must not share an init: the row space of a short LoRA run stays close to its initial
    ``lora_A``, so shared inits would make every cluster's row subspaces look alike."""
    key = [cfg.seed, *member.attribute.encode(), member.index]
    return int(np.random.SeedSequence(key).generate_state(1)[0] & 0x7FFFFFFF)


def member_dir(cfg: MineConfig, member: Member) -> Path:
    return cfg.out_dir / "members" / member.attribute / f"m{member.index:02d}"


def is_done(cfg: MineConfig, member: Member) -> bool:
    return (member_dir(cfg, member) / DONE).is_file()


def render_job(cfg: MineConfig, member: Member):
    """The one-partition render job of the member's partition (the same renders as `cli.py render`)."""
    from render.presets import preset_job

    return preset_job(member.attribute, 1, Path(cfg.data), cfg.render_preset, samples=cfg.samples, seed=cfg.seed,
                      jitter=cfg.jitter, first_partition=partition_index(cfg, member))


# ---- the model ------------------------------------------------------------------------------------------

def checkpoint_path(cfg: MineConfig) -> Path:
    """``cfg.checkpoint``; a relative path not found from here is looked up from the repository root, so
    the default (the shipped base model) works from any directory."""
    path = Path(cfg.checkpoint)
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        return REPO / path
    return path


def load_base(cfg: MineConfig) -> torch.nn.Module:
    """The base VGGT from ``cfg.checkpoint`` (its stored config, or ``cfg.model_preset``), in float32."""
    config = VGGTConfig.preset(cfg.model_preset) if cfg.model_preset else None
    model = load_model(checkpoint_path(cfg), config=config).float()
    if cfg.gradient_checkpointing:
        model.set_gradient_checkpointing(True)
    return model


def target_modules(model: torch.nn.Module, pattern: str) -> list[str]:
    """The ``nn.Linear`` modules whose full name matches ``pattern``, in model order."""
    regex = re.compile(pattern)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and regex.fullmatch(n)]
    if not names:
        raise MineConfigError(f"targets {pattern!r} match no nn.Linear of the model")
    return names


def lora_model(base: torch.nn.Module, cfg: MineConfig, seed: int):
    """``base`` wrapped by peft with a fresh LoRA on the targets (initialised from ``seed``)."""
    import peft

    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                             target_modules=target_modules(base, cfg.targets))
    with seeded(seed):
        return peft.get_peft_model(base, config)


# ---- data -----------------------------------------------------------------------------------------------

def member_data(cfg: MineConfig, member: Member, seed: int, planted: bool = True) -> tuple[Subset, Subset, dict]:
    """(training samples, held-out samples, the partition's render settings). In a planted run
    (``cfg.plant_rank``; mining.plant) the samples carry the plant's targets unless ``planted`` is False."""
    folder = partition_dir(cfg, member)
    part = load_partition(folder)
    sequences = SynthSequences([folder], num_frames=cfg.frames, resolution=cfg.resolution, seed=seed)
    n = len(sequences)
    if n - cfg.held_out < cfg.batch_size:
        raise MineConfigError(f"{folder}: {n} samples leave {n - cfg.held_out} for training after holding out "
                              f"{cfg.held_out}; need at least batch_size={cfg.batch_size}")
    manifest = part.manifest
    settings = {"partition": str(folder), "render": manifest["render"], "samples": n, "views": manifest["views"],
                "seed": manifest.get("seed"), "jitter": manifest.get("jitter"), "generator": manifest.get("generator")}
    if cfg.plant_rank and planted:
        sequences = plant_of(cfg).targets(sequences, member.attribute)
    return Subset(sequences, range(n - cfg.held_out)), Subset(sequences, range(n - cfg.held_out, n)), settings


_PLANTS: dict = {}


def plant_of(cfg: MineConfig):
    """The run's mining.plant.Plant, opened once per process."""
    from .plant import Plant

    key = json.dumps(cfg.to_dict() | {"out": str(cfg.out_dir.resolve())}, sort_keys=True)
    if key not in _PLANTS:
        _PLANTS.clear()
        _PLANTS[key] = Plant.open(cfg)
    return _PLANTS[key]


# ---- training -------------------------------------------------------------------------------------------

def train_member(cfg: MineConfig, member: Member, progress: bool = True) -> dict:
    """Train (or finish, or skip) one member; returns its ``member.json`` record. Raises
    KeyboardInterrupt when stopped by a signal (the run's checkpoint is written; rerunning resumes)."""
    folder = member_dir(cfg, member)
    if (folder / DONE).is_file():
        return json.loads((folder / DONE).read_text())
    seed = member_seed(cfg, member)
    train_set, held_set, settings = member_data(cfg, member, seed)
    model = lora_model(load_base(cfg), cfg, seed)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    loss_fn = functools.partial(vggt_loss, weights=cfg.loss_weights())
    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay, seed=seed,
                       checkpoint_every=max(1, min(100, cfg.steps // 4)), device=cfg.device, progress=progress)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    held_loader = make_loader(held_set, batch_size=1, shuffle=False)
    model.to(device)
    # Before: the LoRA's B starts at zero, so this is the base model on the held-out samples.
    before = validate(model, held_loader, loss_fn, device)
    result = train(model, params, make_loader(train_set, batch_size=cfg.batch_size), tcfg, loss_fn=loss_fn,
                   val_loader=None, out_dir=folder / "run")
    if result.status == "interrupted":
        raise KeyboardInterrupt(result.message)
    if result.exit_code:
        raise RuntimeError(f"{member.name}: {result.message}")
    after = validate(model, held_loader, loss_fn, device)
    with atomic_path(folder / "adapter", directory=True) as tmp:
        model.save_pretrained(str(tmp))
    record = {"member": member.name, "attribute": member.attribute, "index": member.index, "seed": seed,
              "data": settings, "train_samples": len(train_set), "held_out_samples": len(held_set),
              "held_out_before": before, "held_out_after": after, "train": _log_summary(folder / "run" / "log.csv"),
              "settings": cfg.member_settings(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(folder / DONE, record)
    shutil.rmtree(folder / "run" / "checkpoints", ignore_errors=True)   # the adapter is the result
    return record


def _log_summary(log: Path, window: int = 20) -> dict:
    """First and last loss (means over ``window`` steps) and the training time, from the run's log."""
    rows = read_log(log)
    loss = [float(r["loss"]) for r in rows]
    return {"steps": len(rows), "loss_first": float(np.mean(loss[:window])), "loss_last": float(np.mean(loss[-window:])),
            "seconds": float(rows[-1]["seconds"]) if rows else None}


# ---- the factors ----------------------------------------------------------------------------------------

def load_member_factors(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Member's effective update per module, peft's scaling included: ``ΔW = A Bᵀ`` with
    ``A = scaling · lora_B.weight`` [out, r] and ``B = lora_A.weight.T`` [in, r] (float64).
    ``folder`` is a member folder or its ``adapter/`` folder in peft's format."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    adapter = folder / "adapter" if (folder / "adapter").is_dir() else folder
    weights_file, config_file = adapter / "adapter_model.safetensors", adapter / "adapter_config.json"
    for path in (weights_file, config_file):
        if not path.is_file():
            raise MineConfigError(f"{path}: missing (is {folder} a finished member?)")
    config = json.loads(config_file.read_text())
    tensors = load_file(str(weights_file))
    factors = {}
    for key, lora_a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[:-len(".lora_A.weight")].removeprefix("base_model.model.")
        lora_b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if lora_b is None:
            raise MineConfigError(f"{weights_file}: {module} has lora_A but no lora_B")
        r = config.get("rank_pattern", {}).get(module, config["r"])
        alpha = config.get("alpha_pattern", {}).get(module, config["lora_alpha"])
        scaling = alpha / (np.sqrt(r) if config.get("use_rslora") else r)
        factors[module] = (lora_b.astype(np.float64) * scaling, lora_a.astype(np.float64).T)
    if not factors:
        raise MineConfigError(f"{weights_file}: no LoRA weights inside")
    return factors
