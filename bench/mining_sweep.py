"""Mining sweep: which member-training settings (data per member, steps, learning rate, LoRA rank, layers)
let the attribute subspaces separate on our small base model? Each setting is a complete, resumable
mining run (members, extraction with every control) in its own folder; the table puts their controls
side by side.

    python bench/mining_sweep.py                       # every setting (hours on two cores; resumable)
    python bench/mining_sweep.py --only defaults,lr1e-4
    python bench/mining_sweep.py --table               # print the table of what is finished, train nothing
    python bench/mining_sweep.py --list                # the settings and what they change

Every setting trains ``--members`` (default 4) members per attribute and no ``mixed`` cluster (the
common-subspace and member-level controls need none), so halves are 2 + 2 members; runs go to
``runs/mining_sweep/<setting>``. Partitions with other render settings (more samples, other jitter) go
to their own data folder. A member whose settings equal a finished member of ``--reuse`` (default
``mined``, the default `cli.py mine` run) is copied from there rather than trained again: same settings,
same seed, same adapter.

Columns: held-out loss change (median over members); the share of a member's column-side update energy
in the common 4-d subspace of all attribute members; column-side self and cross (halves) distances
1 − cos θ₁ and their ratio (chance beside them); the same pair as overlaps (mean cos² over all principal
angles); the row-side pair; the member-level centred cosine within and across attributes with its
permutation p-value and leave-one-out accuracy (mining.affinity); pairs separated by the report's rule.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from mining.config import MineConfig  # noqa: E402
from mining.members import DONE, all_members, member_dir  # noqa: E402

ROOT = Path("runs/mining_sweep")

# name -> (what it tests, MineConfig overrides). "defaults" is the shipped run's setting.
SETTINGS: dict[str, tuple[str, dict]] = {
    "defaults": ("the default run's member settings", {}),
    "samples32": ("4x the data per member: 32 samples (28 train, 4 held out)",
                  {"samples": 32, "held_out": 4, "data": "data/sweep/samples32"}),
    "samples32-steps1200": ("4x the data and 4x the steps", {"samples": 32, "held_out": 4, "steps": 1200,
                                                              "data": "data/sweep/samples32"}),
    "lr1e-4": ("10x lower learning rate (closer to the linearised regime)", {"lr": 1e-4}),
    "lr3e-3": ("3x higher learning rate", {"lr": 3e-3}),
    "rank4": ("LoRA rank 4 (d' = 4)", {"rank": 4, "lora_alpha": 4.0, "subspace_rank": 4}),
    "global-only": ("LoRA on the global (cross-view) blocks only",
                    {"targets": r"aggregator\.global_blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"}),
    "frame-only": ("LoRA on the frame (per-view) blocks only",
                   {"targets": r"aggregator\.frame_blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"}),
    "jitter0": ("the held attributes exactly fixed (render jitter 0)", {"jitter": 0.0, "data": "data/sweep/jitter0"}),
    "jitter10": ("10x the render jitter of the held attributes", {"jitter": 10.0, "data": "data/sweep/jitter10"}),
}


def config_for(name: str, members: int) -> MineConfig:
    _, overrides = SETTINGS[name]
    return MineConfig.preset("default", out=str(ROOT / name), members=members, mixed_members=0,
                             **{k: v for k, v in overrides.items()})


def reuse_members(cfg: MineConfig, source: Path) -> int:
    """Copy finished members of ``source`` trained with exactly this run's member settings."""
    src_cfg = source / "config.json"
    if not src_cfg.is_file():
        return 0
    copied = 0
    for m in all_members(cfg):
        src, dst = source / "members" / m.attribute / f"m{m.index:02d}", member_dir(cfg, m)
        if dst.joinpath(DONE).is_file() or not src.joinpath(DONE).is_file():
            continue
        record = json.loads(src.joinpath(DONE).read_text())
        settings = MineConfig().member_settings() | record.get("settings", {})   # fields added later: defaults
        if settings != cfg.member_settings() or not Path(record["data"]["partition"]) == \
                Path(cfg.data) / m.attribute / f"p{m.index:03d}":
            continue
        tmp = dst.with_name(dst.name + ".copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoints"))
        tmp.rename(dst)
        copied += 1
    return copied


def run_setting(name: str, members: int, reuse: Path) -> None:
    from mining.extract import EXTRACT_FILE, run_extract
    from mining.pipeline import open_run, train_members

    cfg = open_run(config_for(name, members))
    n = reuse_members(cfg, reuse)
    if n:
        print(f"[{name}] {n} member(s) copied from {reuse}")
    started = time.time()
    train_members(cfg, all_members(cfg), progress=lambda t: print(f"[{name}] {t}", flush=True))
    if not (cfg.out_dir / EXTRACT_FILE).is_file() or _stale(cfg):
        run_extract(cfg, activations=False, progress=lambda t: print(f"[{name}] {t}", flush=True))
    print(f"[{name}] done in {time.time() - started:.0f} s", flush=True)


def _stale(cfg: MineConfig) -> bool:
    from mining.extract import EXTRACT_FILE
    ex = cfg.out_dir / EXTRACT_FILE
    newest = max(p.stat().st_mtime for p in (cfg.out_dir / "members").rglob(DONE))
    return ex.stat().st_mtime < newest


def row(name: str, members: int) -> list[str] | None:
    from mining.report import load_extract, load_members, summarize

    cfg = config_for(name, members)
    if not (cfg.out_dir / "extract.json").is_file():
        return None
    ex = load_extract(cfg)
    s = summarize(cfg, ex, load_members(cfg, ex))
    c, r = s["controls"]["column"], s["controls"]["row"]
    aff = s["member_affinity"]["stats"]["centered"]
    f = lambda x, fmt=".2f": "n/a" if x is None or x != x else format(x, fmt)  # noqa: E731
    ratio = c["cross_halves_mean"] / c["self_mean"] if c["self_mean"] else float("nan")
    return [name, f(100 * s["members"]["median_relative_change"], "+.0f") + " %",
            f(100 * s["common"]["attribute_members_mean"]["column"], ".0f") + " %",
            f(c["self_mean"]), f(c["cross_halves_mean"]), f(ratio), f(c["chance"]["mean"]),
            f"{f(c['self_overlap'], '.3f')} / {f(c['cross_halves_overlap'], '.3f')}",
            f"{f(r['self_mean'])} / {f(r['cross_halves_mean'])}",
            f"{f(aff['within'], '.3f')} / {f(aff['across'], '.3f')}", f(aff["p"], ".3g"),
            f(100 * aff["loo_accuracy"], ".0f") + " %",
            f"{s['separation']['column']['count']} / {s['separation']['row']['count']} of {s['separation']['column']['total']}"]


HEADER = ["setting", "held-out Δ", "common share", "col self", "col cross (halves)", "ratio", "col chance",
          "col overlap self / cross", "row self / cross", "member centred within / across", "p", "LOO acc",
          "separated col / row"]


def print_table(names: list[str], members: int) -> None:
    rows = [r for r in (row(n, members) for n in names) if r is not None]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    missing = [n for n in names if row(n, members) is None]
    if missing:
        print(f"\nnot finished: {', '.join(missing)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated settings (default: all)")
    ap.add_argument("--members", type=int, default=4, help="members per attribute (default 4: halves of 2)")
    ap.add_argument("--reuse", type=Path, default=Path("mined"), help="a finished run to copy identical members from")
    ap.add_argument("--table", action="store_true", help="only print the table of finished settings")
    ap.add_argument("--list", action="store_true", help="list the settings")
    args = ap.parse_args()
    names = list(SETTINGS) if not args.only else args.only.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        sys.exit(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    if args.list:
        for n in names:
            print(f"{n:22s} {SETTINGS[n][0]}  {SETTINGS[n][1]}")
        return
    if not args.table:
        for n in names:
            run_setting(n, args.members, args.reuse)
    print_table(names, args.members)


if __name__ == "__main__":
    main()
