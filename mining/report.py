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
medians, and a mean of nothing is NaN / null / "n/a". This file computes the numbers and the verdicts;
the figures are drawn by mining.report_plots and the README written by mining.report_text.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np

from common.atomic import write_json, write_text
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
    from .report_plots import plot_distances, plot_layers, plot_losses, plot_members, plot_spectra, plot_weights
    from .report_text import readme

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


def _f(x, fmt: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


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


__all__ = ["write_report", "summarize", "short_layer", "cliff_stats", "separation", "verdicts"]
