"""Why the first small base model's aggregator blocks never opened, and which recipe opens them.

    python bench/aggregator.py                               # all variants, 600 steps each
    python bench/aggregator.py --steps 300 --variants old,nodecay --partitions 24

Each variant pretrains the `small` preset from scratch on the same mixed partitions (the first
--partitions complete ones of DATA/mixed, the last --held-out held out) with a short schedule, then
prints what the blocks do: mean |gamma| at the end, the depth change and the metrics with the blocks
switched off (training.evaluate.blocks_off_effect), beside held-out AbsRel and rotation error. Runs
live in --out/<variant> and resume; a finished one is only re-evaluated. Each run also writes
aggregator.csv / aggregator.png (gamma and gradient trajectories).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> PretrainConfig changes; "old" is the recipe of the first shipped small model
VARIANTS = {
    "old": dict(decay_all=True),
    "nodecay": dict(),
    "nodecay+gammalr10": dict(gamma_lr_scale=10.0),
    "nodecay+init0.1": dict(init_values=0.1),
    "nodecay+init1": dict(init_values=1.0),
    "nodecay+dino2": dict(patch_embed="dino", dino_depth=2),
    "old+lr1e-3": dict(decay_all=True, lr=1e-3),
    "nodecay+init0.1+lr1e-3": dict(init_values=0.1, lr=1e-3),
    "nodecay+init1+lr1e-3": dict(init_values=1.0, lr=1e-3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/synth"))
    ap.add_argument("--partitions", type=int, default=32)
    ap.add_argument("--held-out", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_aggregator"))
    args = ap.parse_args()

    import torch
    from apps.pretrain import PretrainConfig, pretrain
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r} (choose from {', '.join(VARIANTS)})")
        cfg = PretrainConfig(data=args.data, partitions=args.partitions, held_out=args.held_out, steps=args.steps,
                             out=args.out / name, **(dict(lr=args.lr) | VARIANTS[name]))
        metrics = pretrain(cfg, args.data / "mixed", progress=True)
        rows.append((name, metrics))
    print(table(rows))


def table(rows: list[tuple[str, dict]]) -> str:
    """Markdown: per variant, the training and validation loss, mean |gamma|, what switching the blocks
    off changes (depth, the depth maps' shape), and the held-out metrics beside their constant controls."""
    lines = ["| variant | lr | train loss | val loss | mean abs gamma | depth change off | shape change off | "
             "AbsRel on / off / const | rot deg on / off / identity | motorcycle AbsRel / const |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        agg, held, moto = m["aggregator"], m["held_out_renders"], m["middlebury_motorcycle"]
        gammas = agg.get("gamma", {})
        mean_gamma = sum(gammas.values()) / len(gammas) if gammas else float("nan")
        val = m["train"].get("val_loss")
        lines.append(f"| {name} | {m['pretrain_config']['lr']:g} | {m['train']['final_loss']:.3f} | "
                     f"{'—' if val is None else format(val, '.3f')} | {mean_gamma:.3f} | "
                     f"{100 * agg['depth_change']:.1f} % | {100 * agg['relief_change']:.1f} % | "
                     f"{agg['on']['abs_rel']:.3f} / {agg['off']['abs_rel']:.3f} / {held['baseline']['abs_rel']:.3f} | "
                     f"{agg['on']['rot_deg']:.1f} / {agg['off']['rot_deg']:.1f} / {held['baseline']['rot_deg']:.1f} | "
                     f"{moto['model']['abs_rel']:.3f} / {moto['baseline']['abs_rel']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
