"""The mining signals against the base model's pretraining: the same mining run (a preset, the same
partitions) on each of a pretraining run's milestone weights, and what it found on each.

    python cli.py mine curve runs/pretrain/milestones/*.safetensors --out runs/mining_curve
    rows = run_curve([Path("a.safetensors"), ...], Path("runs/mining_curve"))

Each checkpoint gets its own ordinary mining run in ``OUT/<checkpoint stem>/`` (members, extraction,
report, transfer matrix), so a killed curve resumes member by member and a shard of a farm job can take
its slice of every run. ``OUT/curve.json`` and ``OUT/curve.png`` then hold, per checkpoint:

- ``common_share``: the share of the attribute members' update energy in the common subspace (column);
- ``cross_self``: the mean over attribute pairs of cross (halves) / self distance, before and after the
  common subspace is projected out, and how many pairs the report calls separated;
- ``member_p``: the member-level permutation p of "same attribute, more similar updates" (centred);
- ``transfer``: own attribute minus other attributes in the functional transfer matrix (held-out loss,
  relative; negative = members help their own attribute more), with its bootstrap CI and sign-flip p;
- ``member_gain``: the median relative change of the members' own held-out loss.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from common.atomic import write_json

from .config import MineConfig
from .report import SEPARATION_FACTOR, finite, nanmean

CURVE_FILE = "curve.json"


def step_of(checkpoint: Path) -> int | None:
    """The pretraining step in a milestone's name (``step_00000312.safetensors``), else None."""
    m = re.search(r"step_?(\d+)", Path(checkpoint).stem)
    return int(m.group(1)) if m else None


def run_folder(out: Path, checkpoint: Path) -> Path:
    return Path(out) / Path(checkpoint).stem


def is_complete(run: Path) -> bool:
    """Both summaries exist only once every member was trained and evaluated (mine_checkpoint)."""
    return (Path(run) / "report" / "summary.json").is_file() and (Path(run) / "transfer.json").is_file()


def mine_checkpoint(cfg: MineConfig, shard: tuple[int, int] = (0, 1), render: bool = True, progress=print) -> bool:
    """One checkpoint's mining run (this shard's members, then, when every member is done, extraction,
    report and transfer summary). True when the run is complete."""
    from .extract import run_extract
    from .members import all_members, is_done
    from .pipeline import members_for, open_run, train_members
    from .report import write_report
    from .transfer import evaluate_members, render_unseen, summarise_transfer

    cfg = open_run(cfg)
    if is_complete(cfg.out_dir):
        return True
    chosen = members_for(cfg, shard)
    if render:
        render_unseen(cfg, shard)
    train_members(cfg, chosen, render=render, progress=progress)
    evaluate_members(cfg, chosen, progress=progress)
    if not all(is_done(cfg, m) for m in all_members(cfg)):
        return False
    try:
        summarise_transfer(cfg)
    except FileNotFoundError:               # another shard's members have no transfer file yet
        return False
    if not (cfg.out_dir / "extract.json").is_file():
        run_extract(cfg, progress=progress)
    write_report(cfg)
    return True


def signals(run: Path) -> dict:
    """The curve's numbers from one finished mining run's report summary and transfer summary."""
    s = json.loads((Path(run) / "report" / "summary.json").read_text())
    t = json.loads((Path(run) / "transfer.json").read_text())
    v = s["verdicts"]
    ratio = lambda sep: nanmean([p["ratio"] for p in sep["pairs"].values()])  # noqa: E731
    after = (s.get("after_removing_common") or {}).get("separation", {}).get("column")
    test = t.get("contrast_test", {})
    return {
        "common_share": v["common"]["energy_share_column"],
        "cross_self": ratio(s["separation"]["column"]),
        "cross_self_after_common": ratio(after) if after else None,
        "separated_pairs": s["separation"]["column"]["count"],
        "pairs": s["separation"]["column"]["total"],
        "member_p": v["member_signal"]["p"],
        "loo_accuracy": v["member_signal"]["loo_accuracy"],
        "chance_accuracy": v["member_signal"]["chance_accuracy"],
        "transfer": test.get("mean"),
        "transfer_ci95": test.get("ci95"),
        "transfer_p": test.get("p_less"),
        "own_partition": t.get("own_partition"),
        "member_gain": s["members"]["median_relative_change"],
        "members": s["members"]["total"],
    }


def collect(out: Path, checkpoints: list[Path], base_metrics: dict | None = None) -> list[dict]:
    """Rows of every checkpoint whose run is complete, in the given order, into OUT/curve.json and
    OUT/curve.png. ``base_metrics`` (checkpoint stem -> pretraining metrics) joins the base model's own
    held-out numbers when given."""
    rows = []
    for ck in checkpoints:
        run = run_folder(out, ck)
        if not is_complete(run):
            continue
        rows.append({"checkpoint": str(ck), "step": step_of(ck)} | signals(run)
                    | ({"base": base_metrics.get(Path(ck).stem)} if base_metrics else {}))
    write_json(Path(out) / CURVE_FILE, finite(rows))
    plot_curve(rows, Path(out) / "curve.png")
    return rows


def run_curve(checkpoints: list[Path], out: Path, preset: str = "quick", shard: tuple[int, int] = (0, 1),
              render: bool = True, progress=print, **overrides) -> list[dict]:
    """Mine every checkpoint in turn (this shard's members of each), then collect what is complete."""
    for i, ck in enumerate(checkpoints):
        progress(f"[{i + 1}/{len(checkpoints)}] mining on {ck}")
        cfg = MineConfig.preset(preset, checkpoint=str(ck), out=str(run_folder(out, ck)), **overrides)
        mine_checkpoint(cfg, shard, render=render, progress=progress)
    return collect(out, checkpoints)


def plot_curve(rows: list[dict], path: Path) -> None:
    """Four panels against the pretraining step: common share, cross/self (with the separation line),
    member-level p and the transfer contrast with its CI."""
    from matplotlib.figure import Figure

    from .report_plots import _save

    if not rows:
        return
    # checkpoints may be mined in any order (the final one first, say): the lines follow the step
    rows = sorted(rows, key=lambda r: -1 if r["step"] is None else r["step"])
    x = [r["step"] if r["step"] is not None else i for i, r in enumerate(rows)]
    val = lambda k: [np.nan if r.get(k) is None else r[k] for r in rows]  # noqa: E731
    fig = Figure(figsize=(14, 3.6))
    ax = fig.subplots(1, 4)
    ax[0].plot(x, val("common_share"), "o-")
    ax[0].set_title("common-subspace share\nof member update energy", fontsize=9)
    ax[0].set_ylim(0, 1)
    ax[1].plot(x, val("cross_self"), "o-", label="all")
    ax[1].plot(x, val("cross_self_after_common"), "s--", label="common removed")
    ax[1].axhline(SEPARATION_FACTOR, color="grey", ls=":", label=f"separated ({SEPARATION_FACTOR:g})")
    ax[1].set_title("cross / self distance\n(mean over attribute pairs)", fontsize=9)
    ax[1].legend(fontsize=7)
    ax[2].plot(x, val("member_p"), "o-")
    ax[2].axhline(0.05, color="grey", ls=":")
    ax[2].set_title("member-level permutation p", fontsize=9)
    ax[2].set_yscale("log")
    mean = np.array(val("transfer"), float) * 100
    ci = np.array([r.get("transfer_ci95") or [np.nan, np.nan] for r in rows], float) * 100
    ax[3].errorbar(x, mean, yerr=[mean - ci[:, 0], ci[:, 1] - mean], fmt="o-", capsize=3)
    ax[3].axhline(0, color="grey", ls=":")
    ax[3].set_title("transfer: own − other attributes\n(held-out loss, %, 95 % CI)", fontsize=9)
    for a in ax:
        a.set_xlabel("pretraining step")
        a.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path, dpi=90)


__all__ = ["run_curve", "mine_checkpoint", "collect", "signals", "step_of"]
