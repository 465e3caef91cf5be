"""The comparison table of a task, paper-style, with its controls, and the plots beside it.

    write_comparison(cfg, base_record, method_results)   # -> OUT/<task>/compare.{md,csv,json}, plots

Rows: "no fine-tuning" first (as in the paper), then the controls that make the others mean something
(a constant depth map; the oracle AUC of the ground-truth geometry is in the notes), then every method:
trainable parameters, the learning rate picked on validation, and every test metric as mean ± std over
seeds (std over seeds, n = the number of seeds; "—" with one seed). Columns for the held-out real scan
(source "scan") come from the same runs.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from common.atomic import atomic_path, write_json, write_text

# (source of the test sequences, or None for the whole test split; key in a split summary; column title; better)
FACE_COLUMNS = ((None, "abs_rel", "AbsRel", "↓"), (None, "delta1", "δ<1.25", "↑"), (None, "acc_mean", "Acc mm", "↓"),
                (None, "comp_mean", "Comp mm", "↓"), (None, "nc_mean", "NC", "↑"), (None, "auc", "AUC", "↑"),
                (None, "acer", "ACER", "↓"), ("scan", "abs_rel", "scan AbsRel", "↓"), ("scan", "acc_mean", "scan Acc mm", "↓"))
TRANSPARENT_COLUMNS = ((None, "abs_rel", "AbsRel", "↓"), (None, "delta1", "δ<1.25", "↑"),
                       (None, "abs_rel_tr", "AbsRel glass", "↓"), (None, "delta1_tr", "δ<1.25 glass", "↑"),
                       (None, "acc_mean", "Acc mm glass", "↓"), (None, "comp_mean", "Comp mm glass", "↓"),
                       (None, "nc_mean", "NC glass", "↑"))
HUMAN_COLUMNS = tuple((src, key, f"{tag} {title}", better) for src, tag in (("in-domain", "in"), ("cross-domain", "cross"))
                      for key, title, better in (("abs_rel", "AbsRel", "↓"), ("acc_mean", "Acc mm", "↓"),
                                                 ("comp_mean", "Comp mm", "↓"), ("nc_mean", "NC", "↑")))
TASK_COLUMNS = {"face": FACE_COLUMNS, "transparent": TRANSPARENT_COLUMNS, "human": HUMAN_COLUMNS}
BASE_ROW, CONSTANT_ROW = "no fine-tuning", "constant depth (control)"   # the control rows' labels (table and plot)
SOURCE_TAGS = {"scan": "scan", "in-domain": "in", "cross-domain": "cross"}   # a source's prefix in column names
# task -> (column name, plot title) of the metrics-vs-parameters plot
PLOTTED = {"face": (("abs_rel", "AbsRel ↓"), ("acc_mean", "Acc (mm) ↓"), ("nc_mean", "NC ↑"), ("auc", "AUC ↑")),
           "transparent": (("abs_rel", "AbsRel ↓"), ("abs_rel_tr", "AbsRel glass ↓"), ("acc_mean", "Acc glass (mm) ↓"),
                           ("nc_mean", "NC glass ↑")),
           "human": (("in_acc_mean", "in-domain Acc (mm) ↓"), ("in_nc_mean", "in-domain NC ↑"),
                     ("cross_acc_mean", "cross-domain Acc (mm) ↓"), ("cross_nc_mean", "cross-domain NC ↑"))}


def column_name(source: str | None, key: str) -> str:
    """A column's name in table rows, compare.csv and compare.json: the key, prefixed by its source's tag."""
    return key if source is None else f"{SOURCE_TAGS.get(source, source)}_{key}"


def _value(record: dict, source: str | None, key: str):
    split = record.get("test") if source is None else (record.get("test_by_source") or {}).get(source)
    return (split or {}).get(key)


def _stat(values) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def table_rows(base: dict, results: list[dict], task: str = "face") -> list[dict]:
    """One dict per row: name, trainable, lr, seeds, and (mean, std, n) per column (``column_name``)."""
    def row(name, records, trainable, lr):
        out = {"method": name, "trainable": trainable, "lr": lr, "seeds": len(records)}
        for source, key, _, _ in TASK_COLUMNS[task]:
            out[column_name(source, key)] = _stat([_value(r, source, key) for r in records])
        return out

    rows = [row(BASE_ROW, [base], 0, None)]
    if base.get("constant_depth"):
        const = base["constant_depth"]
        rows.append(row(CONSTANT_ROW, [{"test": const["test"],
                                                      "test_by_source": const.get("test_by_source")}], 0, None))
    for res in results:
        finished = [r for r in res["runs"] if r.get("status") == "finished"]
        trainable = res["runs"][0]["trainable"] if res["runs"] else 0
        rows.append(row(res["method"], finished, trainable, res["lr"]))
    return rows


def markdown(rows: list[dict], notes: list[str], task: str = "face") -> str:
    columns = TASK_COLUMNS[task]
    head = ["method", "trainable", "lr", "seeds"] + [f"{t} {b}" for _, _, t, b in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['trainable']:,}", "—" if r["lr"] is None else f"{r['lr']:g}", str(r["seeds"])]
        cells += [_fmt(*r[column_name(s, k)][:2]) for s, k, _, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def csv_text(rows: list[dict], task: str = "face") -> str:
    buf = io.StringIO()
    keys = [column_name(s, k) for s, k, _, _ in TASK_COLUMNS[task]]
    w = csv.writer(buf)
    w.writerow(["method", "trainable", "lr", "seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")])
    for r in rows:
        w.writerow([r["method"], r["trainable"], "" if r["lr"] is None else r["lr"], r["seeds"]]
                   + [f"{x:.6g}" if math.isfinite(x) else "" for k in keys for x in r[k][:2]])
    return buf.getvalue()


def notes(base: dict, results: list[dict], cfg) -> list[str]:
    out = [f"test split, {base['test'].get('sequences', 0)} sequences; {cfg.steps} steps, batch {cfg.batch_size}, "
           f"{cfg.frames} views at {cfg.resolution} px, heads {cfg.heads}; mean ± std over seeds",
           "AbsRel / δ<1.25 after per-view median scaling; points from the scaled depth and the ground-truth "
           f"cameras, distances capped at {base.get('max_dist_mm') or cfg.max_dist_mm or 20:g} mm; "
           + TASK_NOTES.get(cfg.task, "")]
    auc_gt = base["test"].get("auc_gt")
    if auc_gt is not None:
        out.append(f"oracle: the relief score of the ground-truth geometry separates live from spoof with AUC "
                   f"{auc_gt:.3f} (chance 0.5)")
    for res in results:
        grid = ", ".join(f"{t['lr']:g}: {t.get('val_abs_rel') if t.get('val_abs_rel') is None else round(t['val_abs_rel'], 4)}"
                         for t in res["grid"])
        out.append(f"{res['method']}: lr picked on validation AbsRel from [{grid}]")
    return out


TASK_NOTES = {
    "face": "AUC / ACER of the relief score of the predicted face (ACER at the validation EER threshold)",
    "transparent": "'glass': on the pixels whose first surface is a transparent object (the median scale still "
                   "comes from all pixels)",
    "human": "'in': test subjects of the training domain; 'cross': the other domain (body, clothing, pose, camera "
             "height and light differ), never trained on; points of the whole body, every view fused",
}


def write_comparison(cfg, base: dict, results: list[dict]) -> dict:
    folder = cfg.task_dir
    rows = table_rows(base, results, cfg.task)
    text = markdown(rows, notes(base, results, cfg), cfg.task)
    write_text(folder / "compare.md", text)
    write_text(folder / "compare.csv", csv_text(rows, cfg.task))
    write_json(folder / "compare.json", {"rows": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()}
                                                  for r in rows]}, )
    plot_metrics(rows, folder / "metrics_vs_params.png", PLOTTED[cfg.task])
    plot_losses(results, folder / "losses.png")
    return {"rows": rows, "markdown": text, "folder": str(folder)}


def plot_metrics(rows: list[dict], path: Path, shown=PLOTTED["face"]) -> None:
    """Each metric against trainable parameters (log scale). Rows of one family (ours at several d′, LoRA at
    several ranks: the label's first word) share a colour and a line, so the paper's question — which rank does
    LoRA need to match the basis — can be read off; the base model and the constant control are horizontal lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(12, 3.6))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, len(shown))
    controls = ((BASE_ROW, dict(color="grey", ls="--")), (CONSTANT_ROW, dict(color="black", ls=":")))
    methods = [r for r in rows if r["trainable"] > 0]
    family = {r["method"]: r["method"].split()[0] for r in methods}   # "lora r16" -> "lora"
    families = list(dict.fromkeys(family.values()))
    colours = {f: f"C{i % 10}" for i, f in enumerate(families)}
    for ax, (key, title) in zip(axes, shown):
        for fam in families:
            pts = sorted((r["trainable"], *r[key][:2], r["method"]) for r in methods
                         if family[r["method"]] == fam and math.isfinite(r[key][0]))
            if not pts:
                continue
            x, m, s, labels = zip(*pts)
            ax.errorbar(x, m, yerr=[v if math.isfinite(v) else 0.0 for v in s], fmt="o-" if len(pts) > 1 else "o",
                        color=colours[fam], capsize=3, ms=4, lw=1, label=fam)
            for xi, mi, label in zip(x, m, labels):
                short = label.split()[1] if len(pts) > 1 and len(label.split()) > 1 else label
                ax.annotate(short, (xi, mi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for name, style in controls:
            r = next((r for r in rows if r["method"] == name), None)
            if r is not None and math.isfinite(r[key][0]):
                ax.axhline(r[key][0], lw=1, label=name, **style)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("trainable parameters")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def plot_losses(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from training.logs import read_log

    fig = Figure(figsize=(7, 4))
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    for res in results:
        for r in res["runs"][:1]:
            log = Path(r.get("log", "")) if r.get("log") else None
            if log is None or not log.is_file():
                continue
            rows = read_log(log)
            loss = np.array([float(x["loss"]) for x in rows])
            k = max(1, len(loss) // 20)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + k, smooth, label=f"{res['method']} (lr {res['lr']:g})", lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (running mean)")
    ax.set_yscale("log")
    if ax.lines:
        ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


__all__ = ["write_comparison", "table_rows", "markdown", "csv_text", "column_name", "TASK_COLUMNS"]
