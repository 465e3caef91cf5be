"""The report of a mining run: plots, the numbers behind them, and a plain README that says whether the
paper's claims hold here.

    python cli.py mine report            # -> OUT/report/..., OUT/README.md
    folder = write_report(cfg)

Reads ``OUT/extract.json`` (mining.extract), the members' ``member.json`` and ``run/log.csv``
(mining.members) and, when present, ``OUT/basis.safetensors`` (mining.basis). Writes ``OUT/report/``:

- ``spectra.png``   per layer, every cluster's spectrum σⱼ/σ₁ (log axis), the extracted rank d′ (dashed)
                    and the largest gap within ``rank_bounds`` (▼, :func:`mining.subspace.choose_rank`);
- ``distances.png`` attribute × attribute distance heatmaps, column and row side: off-diagonal the full
                    clusters' cross distance, diagonal the self distance (halves), chance and cross (halves)
                    beside each;
- ``layers.png``    the same controls per layer (and, row side, the activation controls);
- ``members.png``   member × member similarity of the updates (mining.affinity), raw and centred;
- ``weights.png``   IRLS weights per member: mean over layers, min–max whiskers;
- ``losses.png``    members' training loss curves, held-out loss before → after and its relative change;
- ``summary.json``  every number above and the verdicts (NaN written as null);
- ``README.md``     what was run, the tables, the images and the verdicts; also copied to ``OUT/README.md``.

All means are over layers unless said otherwise; NaNs (a degenerate layer) are left out of means and
medians, and a mean of nothing is NaN / null / "n/a".
"""
from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np

from common.atomic import atomic_path, write_json, write_text
from training.logs import read_log

from .config import MineConfig, MineConfigError
from .members import MIXED
from .subspace import choose_rank

REPORT_DIR = "report"
EXTRACT_FILE = "extract.json"          # mining.extract.EXTRACT_FILE (not imported: that pulls in torch work)
BASIS_FILE = "basis.safetensors"       # mining.pipeline.BASIS_FILE
SIDES = ("column", "row")

# The verdict rules (README): a cliff "near" d′ is within this many positions of it; a pair is separated when
# its cross (halves) distance is ≥ SEPARATION_FACTOR × the mean of the two self distances and at chance level
# or above (≥ chance − CHANCE_STDS × the spread of one random pair); the paper's claim is about distances
# above DISTANCE_CLAIM.
CLIFF_WINDOW = 2
SEPARATION_FACTOR = 1.5
CHANCE_STDS = 2.0
DISTANCE_CLAIM = 0.5
SIGNAL_P = 0.05          # member affinity: "the attribute leaves a mark on the updates" below this p-value

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
MIXED_COLOUR = "#7f7f7f"


# ---- entry point ------------------------------------------------------------------------------------------

def write_report(cfg: MineConfig) -> Path:
    """Write ``OUT/report/`` (and ``OUT/README.md``); returns the report folder."""
    ex = load_extract(cfg)
    members = load_members(cfg, ex)
    summary = summarize(cfg, ex, members)
    folder = cfg.out_dir / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    attrs = summary["attributes"]
    plot_spectra(ex, summary, folder / "spectra.png")
    plot_distances(summary, folder / "distances.png")
    plot_layers(ex, attrs, folder / "layers.png")
    plot_weights(ex, folder / "weights.png")
    plot_losses(members, attrs, folder / "losses.png")
    plot_members(ex, summary, folder / "members.png")
    write_json(folder / "summary.json", finite(summary))
    write_text(folder / "README.md", readme(summary, image_prefix=""))
    # the run folder's README: the same text, with the images' paths relative to OUT/
    write_text(cfg.out_dir / "README.md", readme(summary, image_prefix=f"{REPORT_DIR}/"))
    return folder


def load_extract(cfg: MineConfig) -> dict:
    path = cfg.out_dir / EXTRACT_FILE
    if not path.is_file():
        raise MineConfigError(f"{path}: missing; run `python cli.py mine extract` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MineConfigError(f"{path}: corrupt ({e.msg}); run `python cli.py mine extract` again") from None


def load_members(cfg: MineConfig, ex: dict) -> list[dict]:
    """One record per member the extraction used: its ``member.json`` (None if gone) and training log rows."""
    out = []
    for cluster, names in ex.get("clusters", {}).items():
        for name in names:
            folder = cfg.out_dir / "members" / name
            record = _read_json(folder / "member.json")
            out.append({"name": name, "cluster": cluster, "record": record, "log": _read_log(folder / "run" / "log.csv")})
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_log(path: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a training log; [] when there is none."""
    try:
        return [(int(r["step"]), float(r["loss"])) for r in read_log(path) if r.get("loss") not in (None, "")]
    except (OSError, KeyError, ValueError):
        return []


# ---- small numeric helpers (NaN-tolerant) -----------------------------------------------------------------

def _arr(values) -> np.ndarray:
    if values is None:
        return np.array([], dtype=float)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def nanmean(values) -> float:
    x = _arr(values)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def nanmedian(values) -> float:
    x = _arr(values)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def _layerwise_mean(rows: list) -> list[float]:
    """Per layer, the mean over rows (each a per-layer list), NaNs left out."""
    if not rows:
        return []
    n = max(len(r) for r in rows)
    return [nanmean([r[i] if i < len(r) else None for r in rows]) for i in range(n)]


def finite(obj):
    """``obj`` with NaN / ±inf replaced by None, so that summary.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return finite(obj.item())
    return obj


def _pair(table: dict, a: str, b: str) -> dict | None:
    """The entry of pair a|b in a pair table, whichever order it was written in."""
    return table.get(f"{a}|{b}") or table.get(f"{b}|{a}")


def short_layer(name: str) -> str:
    """``aggregator.frame_blocks.0.attn.qkv`` -> ``F0 qkv``, ``...global_blocks.3.mlp.fc2`` -> ``G3 fc2``."""
    m = re.search(r"(frame|global)_blocks\.(\d+)\.(?:.*\.)?([^.]+)$", name)
    if m:
        return f"{m.group(1)[0].upper()}{m.group(2)} {m.group(3)}"
    return " ".join(name.split(".")[-2:])


def colour(cluster: str, attrs: list[str]) -> str:
    return MIXED_COLOUR if cluster not in attrs else PALETTE[attrs.index(cluster) % len(PALETTE)]


# ---- the numbers ------------------------------------------------------------------------------------------

def summarize(cfg: MineConfig, ex: dict, members: list[dict]) -> dict:
    """Every number the plots and README show (see the module doc); NaN where undefined."""
    clusters = list(ex.get("clusters", {}))
    attrs = [a for a in cfg.attributes if a in clusters]      # cfg order, only what was extracted
    layers = ex.get("layers", [])
    summary = {
        "run": run_settings(cfg, ex),
        "attributes": attrs,
        "clusters": clusters,
        "layers": layers,
        "matrices": {side: distance_matrices(ex, attrs, side) for side in SIDES},
        "controls": {side: controls(ex, attrs, side) for side in SIDES},
        "pairs": {side: pair_means(ex.get("distances", {}).get(side, {}), ex.get("halves", {}).get(side, {}))
                  for side in SIDES},
        "self": {side: _self_means(ex.get("halves", {}).get(side, {})) for side in SIDES},
        "separation": {side: separation(ex, attrs, side) for side in SIDES},
        "after_removing_common": after_removing_common(ex, attrs),
        "activations": activation_controls(ex),
        "common": common_subspace(ex, attrs),
        "member_affinity": affinity_summary(ex),
        "members": member_table(members),
        "irls_weights": irls_weights(ex),
        "parameters": parameter_counts(cfg, ex, attrs),
    }
    summary["cliff"] = {c: cliff_stats(ex, c, tuple(summary["run"]["rank_bounds"])) for c in clusters}
    summary["verdicts"] = verdicts(summary)
    return summary


def run_settings(cfg: MineConfig, ex: dict) -> dict:
    keys = ("checkpoint", "members", "mixed_members", "steps", "rank", "lora_alpha", "subspace_rank", "rank_bounds",
            "alpha", "targets", "batch_size", "lr", "resolution", "frames", "seed")
    settings = {k: cfg.to_dict()[k] for k in keys}
    # the extraction's own settings win: extract.json may have been made with other ones than cfg's now
    settings.update({k: v for k, v in (ex.get("settings") or {}).items() if k in ("subspace_rank", "rank_bounds", "alpha")})
    settings["layers"] = len(ex.get("layers", []))
    settings["cluster_sizes"] = {c: len(m) for c, m in ex.get("clusters", {}).items()}
    settings["extraction_settings"] = ex.get("settings", {})   # what extract.json was made with
    return settings


def distance_matrices(ex: dict, attrs: list[str], side: str, source: dict | None = None) -> dict:
    """n×n means over layers, attributes in cfg order: ``cross`` (full clusters) and ``cross_halves``
    off the diagonal, the self distance (halves) on it."""
    src = ex if source is None else source
    dist, halves = src.get("distances", {}).get(side, {}), src.get("halves", {}).get(side, {})
    selfs = halves.get("self", {})
    cross, cross_h = [], []
    for a in attrs:
        row, row_h = [], []
        for b in attrs:
            if a == b:
                s = nanmean((selfs.get(a) or {}).get("distance"))
                row.append(s)
                row_h.append(s)
            else:
                row.append(nanmean((_pair(dist, a, b) or {}).get("distance")))
                row_h.append(nanmean((_pair(halves.get("cross", {}), a, b) or {}).get("distance")))
        cross.append(row)
        cross_h.append(row_h)
    return {"attributes": attrs, "cross": cross, "cross_halves": cross_h}


def controls(ex: dict, attrs: list[str], side: str) -> dict:
    """The scalars that put a side's distances in context: mean cross, cross (halves), self; chance."""
    dist = ex.get("distances", {}).get(side, {})
    halves = ex.get("halves", {}).get(side, {})
    chance = ex.get("chance", {}).get(side, {})
    pairs = list(itertools.combinations(attrs, 2))
    return {
        "cross_mean": nanmean([nanmean((_pair(dist, a, b) or {}).get("distance")) for a, b in pairs]),
        "cross_halves_mean": nanmean([nanmean((_pair(halves.get("cross", {}), a, b) or {}).get("distance"))
                                      for a, b in pairs]),
        "self_mean": nanmean([nanmean((halves.get("self", {}).get(a) or {}).get("distance")) for a in attrs]),
        "cross_halves_overlap": nanmean([nanmean((_pair(halves.get("cross", {}), a, b) or {}).get("overlap"))
                                         for a, b in pairs]),
        "self_overlap": nanmean([nanmean((halves.get("self", {}).get(a) or {}).get("overlap")) for a in attrs]),
        # mean over layers of the Monte Carlo mean and of its std (the spread of one random pair)
        "chance": {"mean": nanmean(chance.get("distance")), "std": nanmean(chance.get("std"))},
        "chance_overlap": nanmean(chance.get("overlap")),
    }


def pair_means(dist: dict, halves: dict) -> dict:
    """Per pair (mixed included for the full clusters): mean distance and overlap, and the same between
    halves where there are halves."""
    out = {}
    for key, v in dist.items():
        out[key] = {"distance": nanmean(v.get("distance")), "overlap": nanmean(v.get("overlap"))}
    for key, v in halves.get("cross", {}).items():
        entry = out.setdefault(key, {})
        entry["distance_halves"] = nanmean(v.get("distance"))
        entry["overlap_halves"] = nanmean(v.get("overlap"))
    return out


def _self_means(halves: dict) -> dict:
    return {a: {"distance": nanmean(v.get("distance")), "overlap": nanmean(v.get("overlap"))}
            for a, v in halves.get("self", {}).items()}


def separation(ex: dict, attrs: list[str], side: str, source: dict | None = None) -> dict:
    """Per attribute pair: is the cross (halves) distance ≥ SEPARATION_FACTOR × the mean of the two self
    distances, and at chance level or above (≥ chance − CHANCE_STDS × std)? Halves against halves, so both sides of the comparison
    come from clusters of the same size (self of a full cluster is not measurable)."""
    src = ex if source is None else source
    halves = src.get("halves", {}).get(side, {})
    chance = nanmean(ex.get("chance", {}).get(side, {}).get("distance"))
    chance_floor = chance - CHANCE_STDS * nanmean(ex.get("chance", {}).get(side, {}).get("std"))
    pairs = {}
    for a, b in itertools.combinations(attrs, 2):
        cross = nanmean((_pair(halves.get("cross", {}), a, b) or {}).get("distance"))
        self_mean = nanmean([nanmean((halves.get("self", {}).get(x) or {}).get("distance")) for x in (a, b)])
        if not (np.isfinite(cross) and np.isfinite(self_mean)):
            ratio = float("nan")
        else:
            ratio = cross / self_mean if self_mean > 0 else (float("inf") if cross > 0 else float("nan"))
        # NaN anywhere compares False: an undefined pair is never counted as separated
        separated = bool(cross >= SEPARATION_FACTOR * self_mean and cross >= chance_floor)
        pairs[f"{a}|{b}"] = {"cross_halves": cross, "self_mean": self_mean, "ratio": ratio, "chance": chance,
                             "separated": separated}
    return {"pairs": pairs, "count": sum(p["separated"] for p in pairs.values()), "total": len(pairs)}


def after_removing_common(ex: dict, attrs: list[str]) -> dict:
    """The distance tables again after the common subspace was projected out of every member
    (separation judged against the same chance level)."""
    src = ex.get("after_removing_common")
    if not src:
        return {}
    return {
        "matrices": {side: distance_matrices(ex, attrs, side, source=src) for side in SIDES},
        "pairs": {side: pair_means(src.get("distances", {}).get(side, {}), src.get("halves", {}).get(side, {}))
                  for side in SIDES},
        "self": {side: _self_means(src.get("halves", {}).get(side, {})) for side in SIDES},
        "separation": {side: separation(ex, attrs, side, source=src) for side in SIDES},
    }


def activation_controls(ex: dict) -> dict | None:
    """Row side against the inputs' principal subspaces; None when extraction ran without them."""
    act = ex.get("activations")
    if not act:
        return None
    to_act = {a: {"distance": nanmean(v.get("distance")), "overlap": nanmean(v.get("overlap"))}
              for a, v in act.get("row_to_activations", {}).items()}
    between = {k: {"distance": nanmean(v.get("distance")), "overlap": nanmean(v.get("overlap"))}
               for k, v in act.get("activations_between", {}).items()}
    return {"row_to_activations": to_act, "activations_between": between,
            "row_to_activations_mean": nanmean([v["distance"] for v in to_act.values()]),
            "activations_between_mean": nanmean([v["distance"] for v in between.values()]),
            "batches": act.get("batches")}


def common_subspace(ex: dict, attrs: list[str]) -> dict:
    common = ex.get("common") or {}
    shares = common.get("member_energy_share", {})
    per_attr = {}
    for cluster in [*attrs, MIXED]:
        names = [m for m in shares if m.split("/")[0] == cluster]
        if names:
            per_attr[cluster] = {side: nanmean([shares[m].get(side) for m in names]) for side in SIDES}
    attr_members = [m for m in shares if m.split("/")[0] in attrs]
    return {
        "rank": common.get("rank"),
        "member_energy_share": shares,
        "attribute_mean": per_attr,
        "attribute_members_mean": {side: nanmean([shares[m].get(side) for m in attr_members]) for side in SIDES},
        "mixed_explains": {a: {side: nanmean(v.get(side)) for side in SIDES}
                           for a, v in (common.get("mixed_explains") or {}).items()},
    }


def affinity_summary(ex: dict) -> dict | None:
    """The member-level statistics (mining.affinity) without the matrices (those are in extract.json)."""
    aff = ex.get("member_affinity")
    if not aff:
        return None
    return {"stats": aff["stats"], "chance_accuracy": aff["chance_accuracy"], "permutations": aff["permutations"],
            "members": len(aff["members"])}


def member_table(members: list[dict]) -> dict:
    """Held-out loss before / after per member, its relative change, training seconds."""
    rows, missing = [], []
    for m in members:
        rec = m["record"]
        if rec is None:
            missing.append(m["name"])
            continue
        before = (rec.get("held_out_before") or {}).get("loss", float("nan"))
        after = (rec.get("held_out_after") or {}).get("loss", float("nan"))
        before = float("nan") if before is None else float(before)
        after = float("nan") if after is None else float(after)
        change = (after - before) / abs(before) if before else float("nan")
        train = rec.get("train") or {}
        rows.append({"member": m["name"], "cluster": m["cluster"], "before": before, "after": after,
                     "relative_change": change, "train_seconds": train.get("seconds"), "steps": train.get("steps")})
    changes = [r["relative_change"] for r in rows]
    return {"table": rows, "dropped": sum(1 for r in rows if r["after"] < r["before"]), "total": len(rows),
            "missing": missing, "median_relative_change": nanmedian(changes),
            "train_seconds_total": float(np.nansum(_arr([r["train_seconds"] for r in rows]))) if rows else 0.0}


def irls_weights(ex: dict) -> dict:
    """Per cluster and member (the order of ``clusters``): mean, min, max of its IRLS weight over layers."""
    out = {}
    for cluster, names in ex.get("clusters", {}).items():
        per_layer = ex.get("extraction", {}).get(cluster, {})
        if not names:
            continue
        w = np.array([_arr(v.get("weights"))[:len(names)] for v in per_layer.values()
                      if len(v.get("weights") or []) >= len(names)], dtype=float).reshape(-1, len(names))
        stats = [_finite_stats(w[:, i]) for i in range(len(names))]
        out[cluster] = {"members": names, "mean": [s[0] for s in stats], "min": [s[1] for s in stats],
                        "max": [s[2] for s in stats],
                        "iterations_mean": nanmean([v.get("iterations") for v in per_layer.values()]),
                        "converged_layers": sum(bool(v.get("converged")) for v in per_layer.values()),
                        "layers": len(per_layer)}
    return out


def _finite_stats(x: np.ndarray) -> tuple[float, float, float]:
    x = x[np.isfinite(x)]
    return (float(x.mean()), float(x.min()), float(x.max())) if x.size else (float("nan"),) * 3


def gap_candidates(n: int, low: int, high: int) -> list[int]:
    """The positions choose_rank can pick for a spectrum of n values (its clipping, reproduced)."""
    if n < 2:
        return [n]
    high = min(high, n - 1)
    low = max(1, min(low, high))
    return list(range(low, high + 1))


def cliff_stats(ex: dict, cluster: str, bounds: tuple[int, int]) -> dict:
    """Per layer: d′, the largest-gap position within bounds, whether it sits within ±CLIFF_WINDOW of d′;
    σ_d′/σ_d′+1 against all consecutive ratios; and how often a position drawn uniformly from the
    candidates would hit the window anyway (a short spectrum or narrow bounds make a hit cheap)."""
    rows = []
    for layer, v in ex.get("extraction", {}).get(cluster, {}).items():
        s = _arr(v.get("singular_values"))
        if s.size == 0 or v.get("rank") is None or not np.all(np.isfinite(s)):
            continue
        d = int(v["rank"])
        gap = choose_rank(s, *bounds)
        floor = max(s[0], 1e-300) * 1e-12          # as choose_rank: round-off-level values count as zero
        f = np.maximum(s, floor)
        ratios = f[:-1] / f[1:]
        cands = gap_candidates(s.size, *bounds)
        rows.append({"layer": layer, "d": d, "gap": gap, "hit": abs(gap - d) <= CLIFF_WINDOW,
                     "ratio_at_d": float(ratios[d - 1]) if 1 <= d <= ratios.size else float("nan"),
                     "ratios": ratios.tolist(), "values": int(s.size),
                     "chance_hit": sum(abs(c - d) <= CLIFF_WINDOW for c in cands) / len(cands)})
    return {"layers": len(rows), "hits": sum(r["hit"] for r in rows),
            "median_ratio_at_d": nanmedian([r["ratio_at_d"] for r in rows]),
            "median_ratio_all": nanmedian([x for r in rows for x in r["ratios"]]),
            "chance_hit_rate": nanmean([r["chance_hit"] for r in rows]),
            "spectrum_length": int(np.median([r["values"] for r in rows])) if rows else 0,
            "per_layer": [{k: r[k] for k in ("layer", "d", "gap", "hit", "ratio_at_d")} for r in rows]}


def parameter_counts(cfg: MineConfig, ex: dict, attrs: list[str]) -> dict:
    """Trainable parameters of the basis's middle matrices (Σ dA·dB) beside LoRA at rank cfg.rank and
    full fine-tuning, over the same layers."""
    shapes = {l: tuple(s) for l, s in ex.get("shapes", {}).items()}        # [out, in]
    dims, source, note = _basis_dims(cfg.out_dir / BASIS_FILE)
    if dims is None:
        # no basis file: what one of every attribute at its extracted d′ would give (capped by the layer's
        # size, as orthonormalising would cap it)
        source = "extract.json ranks"
        dims = {}
        for layer, (out, inp) in shapes.items():
            total = sum(int((ex.get("extraction", {}).get(a, {}).get(layer) or {}).get("rank") or 0) for a in attrs)
            dims[layer] = (min(total, out), min(total, inp), out, inp)
    counts = {"source": source, "layers": len(dims), "basis": 0, "lora": 0, "full": 0}
    for layer, (da, db, out, inp) in dims.items():
        out, inp = shapes.get(layer, (out, inp))
        counts["basis"] += da * db
        counts["lora"] += cfg.rank * (out + inp)
        counts["full"] += out * inp
    if note:
        counts["note"] = note
    return counts


def _basis_dims(path: Path) -> tuple[dict | None, str, str | None]:
    """{layer: (dA, dB, out, in)} from the basis file, or (None, ..., why) when there is no readable one."""
    if not path.is_file():
        return None, "", None
    from .basis import BasisError, read_basis

    try:
        basis = read_basis(path)
    except BasisError as e:
        return None, "", f"basis file unreadable, counted from extract.json ranks: {e}"
    return ({m: (int(basis.A[m].shape[1]), int(basis.B[m].shape[1]), int(basis.A[m].shape[0]), int(basis.B[m].shape[0]))
             for m in basis.modules}, BASIS_FILE, None)


# ---- verdicts ---------------------------------------------------------------------------------------------

def verdicts(s: dict) -> dict:
    """The README's verdicts, computed from the summary's numbers (so a test can flip them)."""
    attrs = s["attributes"]
    cliffs = [s["cliff"][a] for a in attrs if a in s["cliff"]]
    spectra, hits = sum(c["layers"] for c in cliffs), sum(c["hits"] for c in cliffs)
    chance_hit = nanmean([c["chance_hit_rate"] for c in cliffs])
    cliff = {"spectra": spectra, "hits": hits, "holds": bool(spectra and hits >= spectra / 2),
             "chance_hit_rate": chance_hit,
             # a hit a random position would score half the time or more says nothing about a cliff
             "informative": bool(chance_hit < 0.5),
             "rank_auto": s["run"]["subspace_rank"] == "auto"}

    col = s["matrices"]["column"]["cross"]
    pairs = list(itertools.combinations(range(len(attrs)), 2))
    above = sum(1 for i, j in pairs if col[i][j] > DISTANCE_CLAIM)
    sep = s["separation"]["column"]
    distances = {"pairs": len(pairs), "above": above, "share_above": above / len(pairs) if pairs else float("nan"),
                 "separated": sep["count"], "mostly_above": bool(pairs and above > len(pairs) / 2),
                 "mostly_separated": bool(pairs and sep["count"] > len(pairs) / 2)}
    distances["holds"] = distances["mostly_above"] and distances["mostly_separated"]

    after = s["after_removing_common"].get("separation", {}).get("column")
    common = {"energy_share_column": s["common"]["attribute_members_mean"]["column"],
              "separated_before": sep["count"], "separated_after": after["count"] if after else None}
    aff = s.get("member_affinity")
    centred = (aff or {}).get("stats", {}).get("centered", {})
    p = centred.get("p", float("nan"))
    signal = {"p": p, "within": centred.get("within"), "across": centred.get("across"),
              "loo_accuracy": centred.get("loo_accuracy"), "chance_accuracy": (aff or {}).get("chance_accuracy"),
              "found": bool(np.isfinite(p) and p < SIGNAL_P)}
    return {"cliff": cliff, "distances": distances, "common": common, "member_signal": signal}


# ---- plots ------------------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    # a plain Figure: no pyplot state and no backend switch (see training.logs.plot_losses)
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def _save(fig, path: Path, dpi: int = 100, max_pixels: int = 5000) -> None:
    # a big run (VGGT-1B: 192 layers) makes tall grids: lower the resolution rather than write a huge PNG
    dpi = min(dpi, max_pixels / max(fig.get_size_inches()))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def plot_spectra(ex: dict, s: dict, path: Path) -> None:
    from matplotlib.lines import Line2D

    layers, clusters, attrs = s["layers"], s["clusters"], s["attributes"]
    bounds = tuple(s["run"]["rank_bounds"])
    rows, cols = _grid(max(1, len(layers)), 6 if len(layers) <= 48 else 8)
    fig = _figure(max(2.7 * cols, 7.5), 2.2 * rows + 0.6)
    # one y range for all panels, set by hand: sharey=True costs minutes on a 192-panel grid
    axes = fig.subplots(rows, cols, squeeze=False)
    lowest = [_spectrum_panel(ax, ex, layer, clusters, attrs, bounds) for ax, layer in zip(axes.flat, layers)]
    low = nanmin_or(lowest, 1e-3)
    for i, ax in enumerate(axes.flat):
        if i >= len(layers):
            ax.set_visible(False)
            continue
        ax.set_ylim(low / 2, 2.0)
        ax.tick_params(labelleft=i % cols == 0)
    for ax in axes[:, 0]:
        ax.set_ylabel("σⱼ / σ₁", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("j", fontsize=8)
    handles = [Line2D([], [], color=colour(c, attrs), lw=1.5, label=c) for c in clusters]
    handles += [Line2D([], [], color="black", ls="--", label="extracted rank d′"),
                Line2D([], [], marker="v", ls="", color="white", mec="black", label=f"largest gap in {list(bounds)}")]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    # fixed margins in inches rather than tight_layout, which is slow on big grids
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.15 / w, bottom=0.5 / h, top=1 - 0.7 / h, wspace=0.1, hspace=0.45)
    _save(fig, path)


def _spectrum_panel(ax, ex: dict, layer: str, clusters: list[str], attrs: list[str], bounds) -> float:
    """One layer's spectra, d′ and largest-gap markers; returns the smallest value drawn."""
    from matplotlib.ticker import MaxNLocator

    ds, lowest = set(), []
    for c in clusters:
        v = ex.get("extraction", {}).get(c, {}).get(layer) or {}
        sv = _arr(v.get("singular_values"))
        if sv.size == 0 or not sv[0] > 0:
            continue
        y = np.where(sv > 0, sv / sv[0], np.nan)     # zeros cannot sit on a log axis
        ax.plot(np.arange(1, sv.size + 1), y, "-", color=colour(c, attrs), lw=1.2, alpha=0.9)
        lowest.append(nanmin_or(y, np.nan))
        if np.all(np.isfinite(sv)):
            g = choose_rank(sv, *bounds)
            ax.plot([g], [y[g - 1]], "v", color=colour(c, attrs), ms=7, mec="black", mew=0.6)
        if v.get("rank") is not None:
            ds.add(int(v["rank"]))
    for d in ds:      # usually one d′ for every cluster
        ax.axvline(d, color="black", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_title(short_layer(layer), fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    return nanmin_or(lowest, np.nan)


def nanmin_or(values, default: float) -> float:
    x = _arr(values)
    x = x[np.isfinite(x) & (x > 0)]
    return float(x.min()) if x.size else default


def plot_distances(s: dict, path: Path) -> None:
    attrs = s["attributes"]
    n = len(attrs)
    size = max(3.6, 0.9 * n + 1.6)
    fig = _figure(2 * size + 1.2, size + 1.3)
    fig.set_layout_engine("constrained")          # places the shared colour bar without overlap
    axes = fig.subplots(1, 2, squeeze=False)[0]
    image = None
    for ax, side in zip(axes, SIDES):
        m = np.array(s["matrices"][side]["cross"], dtype=float).reshape(n, n)
        image = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=1, cmap="viridis")
        for i, j in itertools.product(range(n), range(n)):
            v = m[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, fontweight="bold" if i == j else "normal",
                    color="white" if (np.isfinite(v) and v < 0.55) else "black")
        for i in range(n):     # the diagonal is a different quantity (self, halves): outline it
            ax.add_patch(_square(i))
        ax.set_xticks(range(n), attrs, rotation=30, ha="right", fontsize=9)
        ax.set_yticks(range(n), attrs, fontsize=9)
        c = s["controls"][side]
        ax.set_title(f"{side} side ({'output' if side == 'column' else 'input'})\n"
                     "off-diagonal: cross · diagonal (outlined): self", fontsize=9)
        ax.set_xlabel(f"chance {_f(c['chance']['mean'])} ± {_f(c['chance']['std'])}   ·   "
                      f"cross (halves) {_f(c['cross_halves_mean'])}", fontsize=9)
    fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.03, label="distance 1 − cos θ₁")
    _save(fig, path)


def _square(i: int):
    from matplotlib.patches import Rectangle
    return Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="white", lw=2)


def plot_layers(ex: dict, attrs: list[str], path: Path) -> None:
    layers = ex.get("layers", [])
    x = np.arange(len(layers))
    fig = _figure(min(max(7.0, 0.35 * len(layers) + 2.5), 24.0), 7.6)
    axes = fig.subplots(2, 1, sharex=True)
    pairs = list(itertools.combinations(attrs, 2))
    for ax, side in zip(axes, SIDES):
        dist, halves = ex.get("distances", {}).get(side, {}), ex.get("halves", {}).get(side, {})
        chance = ex.get("chance", {}).get(side, {})
        curves = {
            "cross (mean over pairs)": _layerwise_mean([(_pair(dist, a, b) or {}).get("distance") or [] for a, b in pairs]),
            "cross, halves": _layerwise_mean([(_pair(halves.get("cross", {}), a, b) or {}).get("distance") or []
                                              for a, b in pairs]),
            "self (halves)": _layerwise_mean([(halves.get("self", {}).get(a) or {}).get("distance") or [] for a in attrs]),
        }
        act = ex.get("activations") or {}
        if side == "row" and act:
            curves["row subspace vs activations"] = _layerwise_mean(
                [v.get("distance") or [] for v in act.get("row_to_activations", {}).values()])
            curves["activations between attributes"] = _layerwise_mean(
                [v.get("distance") or [] for v in act.get("activations_between", {}).values()])
        for (label, y), style in zip(curves.items(), ["o-", "s-", "^-", "d:", "x:"]):
            if y:
                ax.plot(x[:len(y)], _arr(y), style, ms=4, lw=1.2, label=label)
        mean, std = _arr(chance.get("distance")), _arr(chance.get("std"))
        if mean.size:
            # the marker keeps chance visible when there is a single layer (a line needs two points)
            ax.plot(x[:mean.size], mean, "k--", marker="_", ms=10, lw=1, label="chance (band: ± std)")
            if std.size == mean.size:
                ax.fill_between(x[:mean.size], mean - std, mean + std, color="black", alpha=0.1, lw=0)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("distance 1 − cos θ₁")
        ax.set_title(f"{side} side", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    step = max(1, math.ceil(len(layers) / 64))       # at most 64 tick labels: they must stay readable
    axes[-1].set_xticks(x[::step], [short_layer(l) for l in layers][::step], rotation=90, fontsize=8)
    axes[-1].set_xlim(-0.5, max(len(layers) - 0.5, 0.5))
    fig.tight_layout()
    _save(fig, path)


def plot_members(ex: dict, s: dict, path: Path) -> None:
    """Member × member similarity (mining.affinity), raw and centred cosine, members grouped by cluster."""
    aff = ex.get("member_affinity")
    fig = _figure(11.0, 5.4)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, 2, squeeze=False)[0]
    if not aff:
        for ax in axes:
            ax.text(0.5, 0.5, "no member affinity in extract.json", ha="center", va="center")
            ax.set_axis_off()
        _save(fig, path)
        return
    labels = aff["labels"]
    edges = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    starts = [0] + edges
    ends = edges + [len(labels)]
    for ax, measure, title in zip(axes, ("cosine", "centered"), ("cosine of the updates", "centred (mean update removed)")):
        m = np.array(aff["matrices"][measure], dtype=float)
        np.fill_diagonal(m, np.nan)
        lim = np.nanmax(np.abs(m)) if np.isfinite(m).any() else 1.0
        image = ax.imshow(np.ma.masked_invalid(m), cmap="RdBu_r", vmin=-lim, vmax=lim)
        for e in edges:
            ax.axhline(e - 0.5, color="black", lw=0.8)
            ax.axvline(e - 0.5, color="black", lw=0.8)
        centres = [(a + b - 1) / 2 for a, b in zip(starts, ends)]
        names = [labels[a] for a in starts]
        ax.set_xticks(centres, names, rotation=30, ha="right", fontsize=9)
        ax.set_yticks(centres, names, fontsize=9)
        st = aff["stats"].get(measure, {})
        ax.set_title(f"{title}\nwithin {_f(st.get('within'), '.3f')} · across {_f(st.get('across'), '.3f')} · "
                     f"p {_f(st.get('p'), '.3g')}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    _save(fig, path)


def plot_weights(ex: dict, path: Path) -> None:
    stats = irls_weights(ex)
    clusters = list(stats)
    attrs = [c for c in clusters if c != MIXED]
    rows, cols = _grid(max(1, len(clusters)), 5)
    fig = _figure(max(3.0 * cols, 6.0), 2.9 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, c in zip(axes.flat, clusters):
        st = stats[c]
        mean, lo, hi = (_arr(st[k]) for k in ("mean", "min", "max"))
        x = np.arange(len(mean))
        ax.errorbar(x, mean, yerr=[np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)], fmt="o",
                    color=colour(c, attrs), capsize=3, lw=1)
        ax.axhline(1.0, color="black", lw=0.8, ls=":")
        ax.set_xticks(x, [m.split("/")[-1] for m in st["members"]], fontsize=8, rotation=90 if len(x) > 8 else 0)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_title(f"{c} ({st['converged_layers']}/{st['layers']} layers converged)", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(clusters):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("IRLS weight (mean 1)", fontsize=8)
    fig.suptitle("IRLS weight per member: mean over layers, whiskers min–max", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_losses(members: list[dict], attrs: list[str], path: Path) -> None:
    from matplotlib.lines import Line2D

    fig = _figure(15, 5.2)
    ax_train, ax_held, ax_change = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    styles = ["-", "--", ":", "-."]
    for m in members:
        if m["log"]:
            steps, loss = zip(*m["log"])
            index = int(m["name"].rsplit("m", 1)[-1]) if m["name"].rsplit("m", 1)[-1].isdigit() else 0
            ax_train.plot(steps, loss, styles[index % len(styles)], color=colour(m["cluster"], attrs), lw=1, alpha=0.8)
    from matplotlib.ticker import MaxNLocator
    ax_train.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_train.set_xlabel("step")
    ax_train.set_ylabel("training loss")
    ax_train.set_title("training loss (line style: member index)", fontsize=9)
    ax_train.grid(alpha=0.3)
    clusters = list(dict.fromkeys(m["cluster"] for m in members))
    ax_train.legend(handles=[Line2D([], [], color=colour(c, attrs), label=c) for c in clusters], fontsize=8)

    table = member_table(members)["table"]
    x = np.arange(len(table))
    for i, r in enumerate(table):
        col = colour(r["cluster"], attrs)
        ax_held.plot([i, i], [r["before"], r["after"]], "-", color=col, lw=1.5)
        ax_held.plot([i], [r["before"]], "o", mfc="white", mec=col, ms=6)
        ax_held.plot([i], [r["after"]], "o", color=col, ms=6)
        ax_change.bar([i], [100 * r["relative_change"]], color=col)
    ax_held.set_title("held-out loss: ○ before → ● after", fontsize=9)
    ax_held.set_ylabel("held-out loss")
    ax_change.set_title("held-out loss change (after − before) / before", fontsize=9)
    ax_change.set_ylabel("%")
    ax_change.axhline(0, color="black", lw=0.8)
    for ax in (ax_held, ax_change):
        ax.set_xticks(x, [r["member"] for r in table], rotation=90, fontsize=7)
        ax.grid(alpha=0.3)
    if len(table):
        ax_change.ticklabel_format(axis="y", useOffset=False)
    fig.tight_layout()
    _save(fig, path)


# ---- README -----------------------------------------------------------------------------------------------

def _f(x, fmt: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _pct(x) -> str:
    # 3 significant digits: a 4-step run changes the loss by thousandths of a percent, which must not read 0.00%
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.3g}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def readme(s: dict, image_prefix: str = "") -> str:
    """The report's README, all from the summary's numbers."""
    lines = ["# Mining run report", ""]
    lines += _readme_run(s) + [""] + _readme_verdicts(s) + [""] + _readme_members(s) + [""]
    lines += _readme_distances(s) + [""] + _readme_controls(s) + [""] + _readme_parameters(s) + [""]
    lines += ["## Plots", ""]
    for name, caption in (("spectra", "spectra per layer, d′ and the largest gap"), ("distances", "distance heatmaps"),
                          ("layers", "distances per layer"), ("members", "member-to-member similarity"),
                          ("weights", "IRLS weights"), ("losses", "members' losses")):
        lines += [f"![{caption}]({image_prefix}{name}.png)", ""]
    lines += ["All numbers, per layer and per pair: `summary.json` (report folder); the raw per-layer data: "
              "`extract.json`.", ""]
    return "\n".join(lines)


def _readme_run(s: dict) -> list[str]:
    r = s["run"]
    sizes = ", ".join(f"{c} {n}" for c, n in r["cluster_sizes"].items())
    return ["## What was run", "",
            f"- base checkpoint `{r['checkpoint']}`; {r['layers']} layers (targets `{r['targets']}`)",
            f"- {r['members']} members per attribute, {r['mixed_members']} in the generic `mixed` cluster "
            f"(extracted: {sizes})",
            f"- each member: LoRA rank {r['rank']} (alpha {r['lora_alpha']}), {r['steps']} steps, batch "
            f"{r['batch_size']}, lr {r['lr']}, {r['frames']} frames at {r['resolution']} px",
            f"- extraction: d′ = {r['subspace_rank']} (gap search within {list(r['rank_bounds'])}), IRLS α = {r['alpha']}"]


def _readme_verdicts(s: dict) -> list[str]:
    v = s["verdicts"]
    c, d, cm = v["cliff"], v["distances"], v["common"]
    lines = ["## Do the paper's claims hold here?", ""]
    head = "holds" if c["holds"] else "does not hold here"
    if c["holds"] and not c["informative"]:
        head = "holds by the count, but the test is not informative here"
    if not c["spectra"]:
        head = "cannot be judged (no usable spectra)"
    cliff = (f"**(a) A cliff near d′: {head}.** In {c['hits']} of "
             f"{c['spectra']} layer × attribute spectra the largest gap σⱼ/σⱼ₊₁ within the bounds sits within "
             f"±{CLIFF_WINDOW} of d′ (rule: at least half).")
    if c["spectra"] and not c["informative"]:
        cliff += (f" This test cannot tell here: a position drawn at random from the allowed ones would land "
                  f"that close {_f(100 * c['chance_hit_rate'], '.0f')}% of the time (the spectra are short or the "
                  "bounds narrow), so the count says nothing about a cliff.")
    if c["rank_auto"]:
        cliff += (" d′ was itself chosen at the largest gap of the plain mean's spectrum (`subspace_rank = auto`), "
                  "so hits are likely by construction.")
    ratio = [f"{a} {_f(s['cliff'][a]['median_ratio_at_d'], '.3g')} "
             f"(all consecutive ratios: {_f(s['cliff'][a]['median_ratio_all'], '.3g')})"
             for a in s["attributes"] if a in s["cliff"]]
    cliff += " Median σ_d′/σ_d′+1 per attribute: " + "; ".join(ratio) + "."
    lines += [cliff, ""]

    dist = (f"**(b) Pairwise distances mostly above {DISTANCE_CLAIM}: "
            f"{'holds' if d['holds'] else 'does not hold here'}.** {d['above']} of {d['pairs']} attribute pairs have a "
            f"mean column-side distance above {DISTANCE_CLAIM} ({_f(100 * d['share_above'], '.0f')}%). "
            f"Against the controls, {d['separated']} of {d['pairs']} pairs are separated (cross (halves) ≥ "
            f"{SEPARATION_FACTOR}× the mean self distance and at chance level or above, i.e. ≥ chance − "
            f"{CHANCE_STDS:g} std of a random pair).")
    if d["mostly_above"] and not d["mostly_separated"]:
        dist += (" The raw distances are high, but halves of one attribute are about as far apart as different "
                 "attributes (or the distances are near chance), so they do not show distinct attribute subspaces.")
    lines += [dist, ""]
    sep = s["separation"]["column"]["pairs"]
    rows = [[p.replace("|", " vs "), _f(x["cross_halves"]), _f(x["self_mean"]), _f(x["ratio"]), _f(x["chance"]),
             "yes" if x["separated"] else "no"] for p, x in sep.items()]
    lines += _table(["pair (column side)", "cross (halves)", "mean self", "ratio", "chance", "separated"], rows) + [""]

    common = (f"**Common subspace** (rank {s['common']['rank']}): on average "
              f"{_f(100 * cm['energy_share_column'], '.0f')}% of an attribute member's update energy (column side) "
              "lies in the subspace shared by all attributes' members.")
    if cm["separated_after"] is not None:
        change = ("does not change" if cm["separated_after"] == cm["separated_before"] else
                  "increases" if cm["separated_after"] > cm["separated_before"] else "decreases")
        common += (f" After projecting it out, {cm['separated_after']} of {d['pairs']} pairs are separated "
                   f"(before: {cm['separated_before']}): separation {change}.")
    lines += [common]
    sig = v["member_signal"]
    if np.isfinite(sig["p"]):
        lines += ["", f"**Member level** (no extraction; mean update of all attribute members removed): two members "
                      f"of one attribute have a mean centred cosine of {_f(sig['within'], '.3f')}, two of different "
                      f"attributes {_f(sig['across'], '.3f')}; permutation p = {_f(sig['p'], '.3g')}, leave-one-out "
                      f"attribute accuracy {_f(100 * sig['loo_accuracy'], '.0f')}% (chance "
                      f"{_f(100 * sig['chance_accuracy'], '.0f')}%). "
                      + ("The attributes do leave a mark on the members' updates." if sig["found"] else
                         f"At p ≥ {SIGNAL_P} the members of one attribute are no more alike than any two members.")]
    return lines


def _readme_members(s: dict) -> list[str]:
    m = s["members"]
    lines = ["## Members", "",
             f"Held-out loss went down for {m['dropped']} of {m['total']} members (median change "
             f"{_pct(m['median_relative_change'])}); training took {_f(m['train_seconds_total'], '.0f')} s in all."]
    if m["missing"]:
        lines.append(f"No member.json for {len(m['missing'])} member(s): {', '.join(m['missing'])}.")
    rows = [[r["member"], _f(r["before"], ".4f"), _f(r["after"], ".4f"), _pct(r["relative_change"]),
             _f(r["train_seconds"], ".1f")] for r in m["table"]]
    return lines + [""] + _table(["member", "held-out before", "after", "change", "train s"], rows)


def _readme_distances(s: dict) -> list[str]:
    lines = ["## Distances (mean over layers)", "",
             "Distance 1 − cos θ₁ between subspaces: 0 = share a direction, 1 = orthogonal. Off the diagonal: "
             "the full clusters' cross distance; on it: the self distance between two halves of one attribute."]
    attrs = s["attributes"]
    for side in SIDES:
        m, c = s["matrices"][side]["cross"], s["controls"][side]
        rows = [[f"**{a}**"] + [_f(v) for v in row] for a, row in zip(attrs, m)]
        lines += ["", f"{side} side ({'output' if side == 'column' else 'input'}):", ""]
        lines += _table([""] + attrs, rows)
        lines += ["", f"cross {_f(c['cross_mean'])}, self {_f(c['self_mean'])}, cross (halves) "
                      f"{_f(c['cross_halves_mean'])}, chance {_f(c['chance']['mean'])} ± {_f(c['chance']['std'])}; "
                      f"{s['separation'][side]['count']} of {s['separation'][side]['total']} pairs separated."]
        lines += ["", f"Overlap (mean cos² over all principal angles, 1 = same subspace; chance d/n = "
                      f"{_f(c['chance_overlap'], '.3f')}): self {_f(c['self_overlap'], '.3f')}, cross (halves) "
                      f"{_f(c['cross_halves_overlap'], '.3f')}."]
    return lines


def _readme_controls(s: dict) -> list[str]:
    lines = ["## Other controls", ""]
    aff = s.get("member_affinity")
    if aff:
        rows = [[m, _f(x["within"], ".3f"), _f(x["across"], ".3f"), _f(x["p"], ".3g"), _f(100 * x["loo_accuracy"], ".0f")]
                for m, x in aff["stats"].items()]
        lines += ["Member to member (mining.affinity; mean over layers; attribute members only; p from "
                  f"{aff['permutations']} label permutations; leave-one-out chance "
                  f"{_f(100 * aff['chance_accuracy'], '.0f')}%):", ""]
        lines += _table(["measure", "within attribute", "across", "p", "LOO accuracy %"], rows) + [""]
    a = s["activations"]
    if a:
        lines.append(f"- row side vs the inputs' principal subspace: mean distance {_f(a['row_to_activations_mean'])} "
                     f"(attributes' row self distance {_f(s['controls']['row']['self_mean'])}); the attributes' "
                     f"activation subspaces are {_f(a['activations_between_mean'])} apart. A row subspace close to "
                     "the activations' says more about the inputs than about the attribute.")
    else:
        lines.append("- activation control: not computed (extraction ran without it).")
    explains = s["common"]["mixed_explains"]
    if explains:
        lines.append("- share of each attribute subspace's energy the generic `mixed` subspace explains (column / "
                     "row): " + "; ".join(f"{k} {_f(v['column'])} / {_f(v['row'])}" for k, v in explains.items()))
    if s["after_removing_common"]:
        m = s["after_removing_common"]["matrices"]["column"]
        n = len(s["attributes"])
        off = [m["cross"][i][j] for i in range(n) for j in range(n) if i != j]
        lines.append(f"- after removing the common subspace: column-side mean cross {_f(nanmean(off))}, mean self "
                     f"{_f(nanmean([m['cross'][i][i] for i in range(n)]))}")
    return lines


def _readme_parameters(s: dict) -> list[str]:
    p = s["parameters"]
    lines = ["## Trainable parameters over the same layers", "",
             f"- attribute basis (Σ dA·dB, from {p['source']}): {p['basis']:,}",
             f"- LoRA at rank {s['run']['rank']}: {p['lora']:,}",
             f"- full fine-tuning of these layers: {p['full']:,}"]
    if p.get("note"):
        lines.append(f"- note: {p['note']}")
    return lines


__all__ = ["write_report", "summarize", "readme", "short_layer", "cliff_stats", "separation", "verdicts"]
