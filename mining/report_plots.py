"""The mining report's figures (mining.report writes them): spectra, distance heatmaps, per-layer
controls, member affinity, IRLS weights and the members' losses. Each takes the numbers mining.report
computed (its summary, the extract) and writes one PNG atomically."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from common.atomic import atomic_path

from .members import MIXED
from .report import SIDES, _arr, _f, _layerwise_mean, _pair, colour, irls_weights, member_table, short_layer
from .subspace import choose_rank


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
