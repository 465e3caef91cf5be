"""The functional transfer matrix: what each member does to the held-out samples of every other partition.

A member of attribute X learns from one partition in which only X varies. If its LoRA carries an
X-specific update, it should lower the loss on unseen partitions of X more than on partitions of the
other attributes. Distances between subspaces say whether the updates *look* alike; this says whether
they *act* alike, and it needs no subspace extraction.

    evaluate_members(cfg, members_for(cfg, shard))   # OUT/transfer/<attribute>_mNN.json, one per member
    summary = summarise_transfer(cfg)                 # OUT/transfer.json and OUT/transfer.png

Each member's update ``ΔW = A Bᵀ`` (mining.members.load_member_factors) is added to the base weights,
two kinds of evaluation set are scored with the run's loss, and the weights are put back:

- every member's held-out samples (the last ``held_out`` samples of its partition, named by the member);
- the *unseen partitions*: per cluster, the ``transfer_partitions`` partitions after its members'
  (``lighting/p002``… with two members), all of whose samples are evaluated. No member of the run
  trains on them, and they hold 4× more sequences than a member's held-out pair, so they carry most of
  the matrix's statistical power. A later ``--transfer-partitions`` adds sets to a finished run: only
  the missing ones are evaluated.

``rel`` is the relative change of the loss against the base model, per held-out sequence. Per member
and evaluation set it is averaged over the set's sequences; the matrix averages over members of the row's attribute and partitions of the column's,
without the member's own partition (reported apart as ``own``).

The contrast of member m is mean rel on the other partitions of its own attribute minus mean rel on
the other attributes' partitions (negative: it helps its own attribute more). Over the attribute
members: the mean contrast, its 95 % bootstrap CI, and a sign-flip permutation p (members share the
evaluation sets, so the p treats members as exchangeable units, which they are by design: same
settings, independent seeds and partitions).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_path, write_json
from render.dataset import load_partition
from training import SynthSequences, make_loader, vggt_loss

from .config import MineConfig, MineConfigError
from .members import (MIXED, Member, all_members, is_done, load_base, load_member_factors, member_data, member_dir,
                      member_seed, partition_dir, partition_index, plant_of)

FOLDER = "transfer"


def _file(cfg: MineConfig, name: str) -> Path:
    return cfg.out_dir / FOLDER / f"{name.replace('/', '_')}.json"


@torch.no_grad()
def _losses(model, held: dict[str, list], loss_fn, device) -> dict[str, list[float]]:
    """Per evaluated member name, the loss of each of its held-out sequences."""
    model.eval()
    out = {}
    for name, loader in held.items():
        out[name] = []
        for batch in loader:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss, _ = loss_fn(model(batch["images"]), batch)
            out[name].append(float(loss))
    return out


def unseen_partitions(cfg: MineConfig) -> list[Member]:
    """Per cluster, the ``transfer_partitions`` partitions after its members' (as the members that would
    train on them; none of this run does)."""
    k = cfg.transfer_partitions
    return ([Member(a, cfg.members + j) for a in cfg.attributes for j in range(k)]
            + [Member(MIXED, cfg.mixed_members + j) for j in range(k if cfg.mixed_members else 0)])


def set_name(cfg: MineConfig, partition: Member) -> str:
    """An unseen partition's evaluation-set name: ``lighting/p002`` (members' sets are ``lighting/m00``)."""
    return f"{partition.attribute}/p{partition_index(cfg, partition):03d}"


def set_attributes(cfg: MineConfig) -> dict[str, str]:
    """Every evaluation set's name -> its cluster."""
    return ({m.name: m.attribute for m in all_members(cfg)}
            | {set_name(cfg, p): p.attribute for p in unseen_partitions(cfg)})


def render_unseen(cfg: MineConfig, shard: tuple[int, int] = (0, 1), renderer=None, bars: bool = True) -> int:
    """Render this shard's slice of the unseen partitions that are missing; returns how many."""
    from .pipeline import render_partitions

    index, count = shard
    return render_partitions(cfg, unseen_partitions(cfg)[index::count], renderer=renderer, bars=bars)


def _held_out(cfg: MineConfig, names: set[str] | None = None) -> dict[str, list]:
    """The evaluation sets (``names`` only, when given) as lists of batches of one, loaded once."""
    sets = {}
    for m in all_members(cfg):
        if names is None or m.name in names:
            _, held, _ = member_data(cfg, m, member_seed(cfg, m))
            sets[m.name] = list(make_loader(held, batch_size=1, shuffle=False))
    for p in unseen_partitions(cfg):
        name = set_name(cfg, p)
        if names is not None and name not in names:
            continue
        folder = partition_dir(cfg, p)
        if not (folder / "manifest.json").is_file():
            raise MineConfigError(f"{folder}: unseen partition for the transfer matrix is not rendered (run without "
                                  "--no-render, or `cli.py render`, or set --transfer-partitions 0)")
        load_partition(folder)                     # a broken partition fails here in one line
        sequences = SynthSequences([folder], num_frames=cfg.frames, resolution=cfg.resolution, seed=cfg.seed)
        if cfg.plant_rank:
            sequences = plant_of(cfg).targets(sequences, p.attribute)
        sets[name] = list(make_loader(sequences, batch_size=1, shuffle=False))
    return sets


def _missing(path: Path, names: list[str]) -> tuple[dict, list[str]]:
    """A transfer file's losses so far and the evaluation sets it lacks."""
    losses = json.loads(path.read_text())["losses"] if path.is_file() else {}
    return losses, [n for n in names if n not in losses]


def evaluate_members(cfg: MineConfig, members: list[Member], progress=print) -> int:
    """Write (or complete) the transfer file of each finished member of ``members`` and the base model's,
    scoring only the evaluation sets a file lacks; returns how many members were evaluated. Members still
    training are skipped."""
    names = list(set_attributes(cfg))
    base_file = _file(cfg, "base")
    base_losses, base_todo = _missing(base_file, names)
    todo = [(m, *_missing(_file(cfg, m.name), names)) for m in members if is_done(cfg, m)]
    todo = [t for t in todo if t[2]]
    if not todo and not base_todo:
        return 0
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_base(cfg).to(device)
    loss_fn = functools.partial(vggt_loss, weights=cfg.loss_weights())
    held = _held_out(cfg, set(base_todo).union(*(t[2] for t in todo)))
    if base_todo:
        write_json(base_file, {"losses": base_losses | _losses(model, {n: held[n] for n in base_todo}, loss_fn, device)})
    modules = dict(model.named_modules())
    for n, (m, losses, missing) in enumerate(todo, 1):
        factors = load_member_factors(member_dir(cfg, m))
        saved = {}
        try:
            for name, (A, B) in factors.items():
                weight = modules[name].weight
                saved[name] = weight.detach().clone()
                weight.data += torch.from_numpy(A @ B.T).to(weight.dtype).to(device)
            losses = losses | _losses(model, {k: held[k] for k in missing}, loss_fn, device)
        finally:
            for name, weight in saved.items():
                modules[name].weight.data.copy_(weight)
        write_json(_file(cfg, m.name), {"member": m.name, "losses": losses})
        progress(f"transfer {n}/{len(todo)}: {m.name} ({len(missing)} set(s))")
    return len(todo)


def summarise_transfer(cfg: MineConfig, seed: int = 0) -> dict:
    """Aggregate the per-member files into OUT/transfer.json and OUT/transfer.png (every finished member
    must have its file: run ``evaluate_members`` on all of them first)."""
    from scipy import stats

    attribute_of = set_attributes(cfg)
    base_file = _file(cfg, "base")
    base, lacking = _missing(base_file, list(attribute_of))
    if lacking:
        raise FileNotFoundError(f"{base_file}: the base model has no loss on {', '.join(lacking[:4])}; "
                                "run `mine transfer` first")
    base = {k: base[k] for k in attribute_of}
    members = [m for m in all_members(cfg) if is_done(cfg, m)]
    files = {m.name: _missing(_file(cfg, m.name), list(attribute_of)) for m in members}  # each file read once
    missing = [name for name, (_, lacking) in files.items() if lacking]
    if missing:
        raise FileNotFoundError(f"{cfg.out_dir / FOLDER}: no transfer file for {', '.join(missing[:4])}"
                                f"{' ...' if len(missing) > 4 else ''}; run `mine transfer` on every shard first")
    attrs = [a for a in (*cfg.attributes, MIXED) if any(m.attribute == a for m in members)]
    rel: dict[str, dict[str, float]] = {}
    for m in members:
        losses = files[m.name][0]
        rel[m.name] = {e: float(np.mean((np.array(losses[e]) - np.array(base[e])) / np.abs(base[e]))) for e in base}
    matrix, own = {}, {}
    for a in attrs:
        rows = [m for m in members if m.attribute == a]
        own[a] = float(np.mean([rel[m.name][m.name] for m in rows]))
        matrix[a] = {b: float(np.mean([rel[m.name][e] for m in rows for e in base
                                       if attribute_of[e] == b and e != m.name] or [np.nan])) for b in attrs}
    contrasts = {}
    for m in members:
        if m.attribute == MIXED:
            continue
        same = [rel[m.name][e] for e in base if attribute_of[e] == m.attribute and e != m.name]
        other = [rel[m.name][e] for e in base if attribute_of[e] not in (m.attribute, MIXED)]
        if same and other:
            contrasts[m.name] = float(np.mean(same) - np.mean(other))
    c = np.array(list(contrasts.values()))
    test = {"members": len(c)}
    if len(c) >= 3:
        ci = stats.bootstrap((c,), np.mean, confidence_level=0.95, n_resamples=9999,
                             random_state=np.random.default_rng(seed)).confidence_interval
        perm = stats.permutation_test((c,), np.mean, permutation_type="samples", n_resamples=9999,
                                      alternative="less", random_state=np.random.default_rng(seed))
        test |= {"mean": float(c.mean()), "ci95": [float(ci.low), float(ci.high)], "p_less": float(perm.pvalue)}
    summary = {"attributes": attrs, "matrix": matrix, "own_partition": own, "member_rel": rel,
               "contrast": contrasts, "contrast_test": test,
               "sequences_per_partition": cfg.held_out, "members": len(members),
               "unseen_partitions": [set_name(cfg, p) for p in unseen_partitions(cfg)],
               "sequences": {n: len(v) for n, v in base.items()}}
    write_json(cfg.out_dir / "transfer.json", summary)
    plot_transfer(summary, cfg.out_dir / "transfer.png")
    return summary


def plot_transfer(summary: dict, path: Path) -> None:
    """Heatmap of the matrix in percent (blue: the members of the row lower the loss on the column's
    partitions), with the own-partition column beside it."""
    from matplotlib.figure import Figure

    attrs = summary["attributes"]
    grid = np.array([[summary["matrix"][a][b] for b in attrs] + [summary["own_partition"][a]] for a in attrs]) * 100
    limit = max(float(np.nanmax(np.abs(grid))), 1e-6)
    fig = Figure(figsize=(1.2 * len(attrs) + 2.5, 0.8 * len(attrs) + 1.6))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(attrs) + 1), [*attrs, "own\npartition"], fontsize=8)
    ax.set_yticks(range(len(attrs)), [f"{a} members" for a in attrs], fontsize=8)
    ax.set_xlabel("held-out samples of other partitions of")
    test = summary["contrast_test"]
    title = "relative change of the held-out loss (%)"
    if "mean" in test:
        title += (f"\nown - other attributes: {100 * test['mean']:+.2f} % "
                  f"[{100 * test['ci95'][0]:+.2f}, {100 * test['ci95'][1]:+.2f}], p = {test['p_less']:.3f}")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
