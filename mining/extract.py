"""Extraction and its controls: per attribute and layer the robust shared subspace of the cluster, then
every number that says whether the attribute subspaces mean anything.

    python cli.py mine extract          # -> mined/subspaces.safetensors, mined/extract.json

For each layer and side (column = output, row = input), all distances 1 − cos θ₁ (mining.subspace):
- **cross**: between the attributes' subspaces (and the generic ``mixed`` cluster's);
- **self**: between the subspaces of two disjoint halves of one attribute's members, and **cross
  (halves)**: between halves of different attributes — the same cluster sizes as self, so the fair
  comparison. An attribute subspace is real where self ≪ cross (halves);
- **chance**: independent uniformly random subspaces of the same shapes (Monte Carlo);
- **activations** (row side): the attribute's row subspace against the top principal subspace of the
  layer's inputs on the attribute's own training data, and those input subspaces between attributes;
- **common**: the subspace shared by all attribute members pooled (``common_rank`` directions): each
  member's share of update energy inside it, how much of each attribute subspace the generic ``mixed``
  subspace explains, and the cross/self distances again after projecting the common part out.
- **member affinity** (mining.affinity): members compared pairwise, without extraction — are two members of
  one attribute more alike than two of different attributes (also after removing the mean update)?
Besides the distance (the smallest angle: one shared direction makes it 0) every pair also gets the
**overlap** ‖Q₁ᵀQ₂‖_F² / min(d₁, d₂), the mean cos² over all principal angles (chance ≈ d/n).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_path, write_json

from .affinity import member_affinity
from .config import MineConfig, MineConfigError
from .members import MIXED, Member, all_members, is_done, load_member_factors, member_dir
from .subspace import SharedSubspace, chance_distance, energy_inside, energy_share, extract_shared, orthonormal_basis

COMMON_RANK = 4
CHANCE_SAMPLES = 100
SUBSPACES_FILE = "subspaces.safetensors"
EXTRACT_FILE = "extract.json"


@dataclass
class Cluster:
    name: str                                            # an attribute or "mixed"
    members: list[str]                                   # member names, in order
    factors: list[dict[str, tuple[np.ndarray, np.ndarray]]]


def load_clusters(cfg: MineConfig, include_mixed: bool = True) -> dict[str, Cluster]:
    """Every cluster's finished members' factors; refuses to go on while members are unfinished."""
    members = [m for m in all_members(cfg) if include_mixed or m.attribute != MIXED]
    missing = [m.name for m in members if not is_done(cfg, m)]
    if missing:
        raise MineConfigError(f"{cfg.out_dir}: {len(missing)} member(s) not trained yet (first: {missing[0]}); "
                              "run `python cli.py mine train` first")
    clusters: dict[str, Cluster] = {}
    for m in members:
        c = clusters.setdefault(m.attribute, Cluster(m.attribute, [], []))
        c.members.append(m.name)
        c.factors.append(load_member_factors(member_dir(cfg, m)))
    layers = list(next(iter(clusters.values())).factors[0])
    for c in clusters.values():
        for name, f in zip(c.members, c.factors):
            if list(f) != layers:
                raise MineConfigError(f"{name}: its adapter covers other layers than the first member's")
    return clusters


def layers_of(clusters: dict[str, Cluster]) -> list[str]:
    return list(next(iter(clusters.values())).factors[0])


def extract_cluster(factors: list[dict], layers: list[str], cfg: MineConfig, rank: int | str | None = None,
                    device: torch.device | None = None) -> dict[str, SharedSubspace]:
    """The shared subspace of every layer over the given members (torch on ``device`` if given)."""
    rank = cfg.subspace_rank if rank is None else rank
    out = {}
    for layer in layers:
        As = [f[layer][0] for f in factors]
        Bs = [f[layer][1] for f in factors]
        if device is not None:
            As = [torch.as_tensor(a, device=device) for a in As]
            Bs = [torch.as_tensor(b, device=device) for b in Bs]
        rank_here = rank if rank == "auto" else min(rank, sum(a.shape[1] for a in As), As[0].shape[0], Bs[0].shape[0])
        out[layer] = extract_shared(As, Bs, rank=rank_here, alpha=cfg.alpha, eps=cfg.eps, max_iter=cfg.max_iter,
                                    rank_bounds=cfg.rank_bounds)
    return out


def pair_stats(S1, S2) -> tuple[float, float]:
    """(distance 1 − cos θ₁, overlap = mean cos² over the min(d₁, d₂) principal angles)."""
    q1, q2 = orthonormal_basis(S1), orthonormal_basis(S2)
    if q1.shape[1] == 0 or q2.shape[1] == 0:
        return float("nan"), float("nan")           # a layer no member updated: nothing to compare
    cosines = torch.linalg.svdvals(q1.T @ q2.to(q1.device))
    return float(1.0 - cosines[0].clamp(max=1.0)), float((cosines ** 2).sum() / min(q1.shape[1], q2.shape[1]))


def _side(s: SharedSubspace, side: str):
    return s.A if side == "column" else s.B


def _project_out(factors: list[dict], layers: list[str], common: dict[str, SharedSubspace]) -> list[dict]:
    """Members' factors with the common column subspace removed from A and the common row subspace from B."""
    bases = {layer: (orthonormal_basis(common[layer].A).cpu().numpy(), orthonormal_basis(common[layer].B).cpu().numpy())
             for layer in layers}
    out = []
    for f in factors:
        g = {}
        for layer, (qa, qb) in bases.items():
            a, b = f[layer]
            g[layer] = (a - qa @ (qa.T @ a), b - qb @ (qb.T @ b))
        out.append(g)
    return out


def distance_tables(subspaces: dict[str, dict[str, SharedSubspace]], layers: list[str]) -> dict:
    """{side: {"a|b": {"distance": [per layer], "overlap": [per layer]}}} over all pairs of clusters."""
    tables = {}
    for side in ("column", "row"):
        tables[side] = {}
        for a, b in itertools.combinations(subspaces, 2):
            stats = [pair_stats(_side(subspaces[a][l], side), _side(subspaces[b][l], side)) for l in layers]
            tables[side][f"{a}|{b}"] = {"distance": [s[0] for s in stats], "overlap": [s[1] for s in stats]}
    return tables


def halves_tables(cfg: MineConfig, clusters: dict[str, Cluster], layers: list[str], device=None) -> dict:
    """Self (two halves of one attribute) and cross (halves of different attributes) distances."""
    halves = {}
    for name, c in clusters.items():
        if name == MIXED or len(c.factors) < 2:
            continue
        halves[name] = (extract_cluster(c.factors[0::2], layers, cfg, device=device),
                        extract_cluster(c.factors[1::2], layers, cfg, device=device))
    out = {}
    for side in ("column", "row"):
        selfs = {a: [pair_stats(_side(h[0][l], side), _side(h[1][l], side)) for l in layers] for a, h in halves.items()}
        cross = {}
        for a, b in itertools.combinations(halves, 2):
            # each half of a against the other attribute's opposite half: two estimates, averaged
            s1 = [pair_stats(_side(halves[a][0][l], side), _side(halves[b][1][l], side)) for l in layers]
            s2 = [pair_stats(_side(halves[a][1][l], side), _side(halves[b][0][l], side)) for l in layers]
            cross[f"{a}|{b}"] = {"distance": [(x[0] + y[0]) / 2 for x, y in zip(s1, s2)],
                                 "overlap": [(x[1] + y[1]) / 2 for x, y in zip(s1, s2)]}
        out[side] = {"self": {a: {"distance": [s[0] for s in v], "overlap": [s[1] for s in v]} for a, v in selfs.items()},
                     "cross": cross}
    return out


def chance_table(subspaces: dict[str, dict[str, SharedSubspace]], layers: list[str], seed: int = 0) -> dict:
    """Per layer and side, the mean (and std) distance and overlap of random subspaces of the same sizes
    (the median attribute rank)."""
    cache: dict[tuple[int, int], tuple[float, float]] = {}
    out = {"column": {"distance": [], "std": [], "overlap": []}, "row": {"distance": [], "std": [], "overlap": []}}
    for layer in layers:
        any_s = next(iter(subspaces.values()))[layer]
        d = int(np.median([s[layer].rank for s in subspaces.values()]))
        for side, n in (("column", any_s.A.shape[0]), ("row", any_s.B.shape[0])):
            if (n, d) not in cache:
                cache[(n, d)] = chance_distance(n, d, samples=CHANCE_SAMPLES, seed=seed)
            mean, std = cache[(n, d)]
            out[side]["distance"].append(mean)
            out[side]["std"].append(std)
            out[side]["overlap"].append(min(1.0, d / n))      # E‖Q₁ᵀQ₂‖²/d = d/n for random subspaces
    return out


def common_analysis(cfg: MineConfig, clusters: dict[str, Cluster], layers: list[str],
                    subspaces: dict[str, dict[str, SharedSubspace]], device=None) -> tuple[dict, dict]:
    """The common subspace of all attribute members pooled; returns (its statistics, the subspaces)."""
    attrs = [a for a in clusters if a != MIXED]
    pooled = [f for a in attrs for f in clusters[a].factors]
    common = extract_cluster(pooled, layers, cfg, rank=COMMON_RANK, device=device)
    bases = {side: {l: orthonormal_basis(_side(common[l], side)) for l in layers} for side in ("column", "row")}
    shares = {}
    for a in clusters:
        for name, f in zip(clusters[a].members, clusters[a].factors):
            shares[name] = {side: _energy_weighted(f, bases[side], side) for side in bases}
    explained = {}
    if MIXED in subspaces:
        for a in attrs:
            explained[a] = {side: [energy_share(subspaces[a][l].A, subspaces[a][l].B, _side(subspaces[MIXED][l], side),
                                                side=side) for l in layers] for side in ("column", "row")}
    return {"rank": COMMON_RANK, "member_energy_share": shares, "mixed_explains": explained}, common


def _energy_weighted(factors: dict, bases: dict[str, torch.Tensor], side: str) -> float:
    """Share of a member's total update energy (summed over layers) inside the per-layer orthonormal bases."""
    parts = [energy_inside(*factors[layer], q, side) for layer, q in bases.items()]
    total = sum(p[1] for p in parts)
    return sum(p[0] for p in parts) / total if total else float("nan")


def activation_table(cfg: MineConfig, subspaces: dict[str, dict[str, SharedSubspace]], layers: list[str]) -> dict:
    """Row side against the inputs' principal subspaces (see mining.activations)."""
    from training import SynthSequences, make_loader
    from torch.utils.data import Subset

    from .activations import input_second_moments, top_directions
    from .members import load_base, partition_dir

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_base(cfg).to(device)
    acts = {}
    for a in [x for x in subspaces if x != MIXED]:
        folders = [partition_dir(cfg, Member(a, i)) for i in range(cfg.members)]
        data = SynthSequences(folders, num_frames=cfg.frames, resolution=cfg.resolution, seed=cfg.seed)
        per = len(data) // len(folders)
        train_ix = [p * per + s for p in range(len(folders)) for s in range(per - cfg.held_out)]
        loader = make_loader(Subset(data, train_ix), batch_size=cfg.batch_size, shuffle=True)
        batches = (b for _, b in zip(range(cfg.activation_batches), loader.batches(0, cfg.seed)))
        grams = input_second_moments(model, batches, layers, device)
        acts[a] = {l: top_directions(grams[l], subspaces[a][l].rank) for l in layers}
    row_to_act = {a: [pair_stats(subspaces[a][l].B, acts[a][l]) for l in layers] for a in acts}
    between = {f"{a}|{b}": [pair_stats(acts[a][l], acts[b][l]) for l in layers] for a, b in itertools.combinations(acts, 2)}
    pack = lambda v: {"distance": [s[0] for s in v], "overlap": [s[1] for s in v]}   # noqa: E731
    return {"row_to_activations": {a: pack(v) for a, v in row_to_act.items()},
            "activations_between": {k: pack(v) for k, v in between.items()}, "batches": cfg.activation_batches}


def run_extract(cfg: MineConfig, activations: bool = True, progress=None) -> dict:
    """Extract every cluster, compute every control, write ``subspaces.safetensors`` and ``extract.json``."""
    device = torch.device(cfg.device) if cfg.device else None
    say = progress or (lambda text: None)
    say("loading members")
    clusters = load_clusters(cfg)
    layers = layers_of(clusters)
    say(f"extracting {len(clusters)} clusters x {len(layers)} layers")
    subspaces = {name: extract_cluster(c.factors, layers, cfg, device=device) for name, c in clusters.items()}
    say("controls: halves")
    halves = halves_tables(cfg, clusters, layers, device)
    say("controls: common subspace")
    common_stats, common = common_analysis(cfg, clusters, layers, subspaces, device)
    residual = {name: _project_out(c.factors, layers, common) for name, c in clusters.items() if name != MIXED}
    residual_clusters = {n: Cluster(n, clusters[n].members, f) for n, f in residual.items()}
    residual_subspaces = {n: extract_cluster(c.factors, layers, cfg, device=device) for n, c in residual_clusters.items()}
    say("controls: chance")
    chance = chance_table(subspaces, layers, cfg.seed)
    say("controls: member affinity")
    affinity = member_affinity(clusters, layers, list(cfg.attributes), seed=cfg.seed)
    summary = {
        "layers": layers,
        "shapes": {l: [int(s.A.shape[0]), int(s.B.shape[0])] for l, s in next(iter(subspaces.values())).items()},
        "clusters": {n: c.members for n, c in clusters.items()},
        "extraction": {n: {l: {"rank": s.rank, "singular_values": _floats(s.singular_values), "weights": _floats(s.weights),
                               "residuals": _floats(s.residuals), "iterations": s.iterations, "converged": s.converged}
                           for l, s in subs.items()} for n, subs in subspaces.items()},
        "distances": distance_tables(subspaces, layers),
        "halves": halves,
        "chance": chance,
        "common": common_stats,
        "member_affinity": affinity,
        "after_removing_common": {"distances": distance_tables(residual_subspaces, layers),
                                  "halves": halves_tables(cfg, residual_clusters, layers, device)},
        "settings": {k: cfg.to_dict()[k] for k in ("subspace_rank", "rank_bounds", "alpha", "eps", "max_iter")},
    }
    if activations:
        say("controls: activations")
        summary["activations"] = activation_table(cfg, subspaces, layers)
    write_subspaces(cfg.out_dir / SUBSPACES_FILE, subspaces)
    write_json(cfg.out_dir / EXTRACT_FILE, summary)
    return summary


def write_subspaces(path: Path, subspaces: dict[str, dict[str, SharedSubspace]]) -> None:
    from safetensors.numpy import save_file

    tensors = {}
    for name, subs in subspaces.items():
        for layer, s in subs.items():
            tensors[f"{name}:{layer}.A"] = np.ascontiguousarray(_np(s.A), dtype=np.float32)
            tensors[f"{name}:{layer}.B"] = np.ascontiguousarray(_np(s.B), dtype=np.float32)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "attrspace-subspaces/1", "clusters": json.dumps(list(subspaces))})


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _floats(x) -> list[float]:
    return [float(v) for v in _np(x)]
