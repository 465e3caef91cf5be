"""Why the small model's camera head does not learn: what its input holds, and whether it can learn
cameras at all.

    python bench/cameras.py probe runs/pretrain/milestones/step_00001250.safetensors assets/vggt_small.safetensors
    python bench/cameras.py overfit --sequences 8 --steps 300 [--camera-weight 5] [--init CHECKPOINT]

``probe``: per checkpoint, the spread of the predicted cameras (a head that ignores its input predicts
one pose for every frame) and how much of the true relative pose (translation, rotation quaternion,
field of view) a ridge regression reads from the camera head's input (the last layer's camera tokens,
with and without frame 0's), from the mean patch token of the frame, on training sequences: held-out R²
per component (0: nothing beyond the mean). Rows are frames 1..S-1 of evenly spread training sequences,
the first 3/4 of them to fit, the rest to test; the ridge strength is the best of a small grid for
the rotation.

``overfit``: the pretraining recipe on a handful of training sequences only. A model that can learn
cameras at all drives the rotation error on those very sequences well below the identity's; one whose
camera path is broken (encoding, normalisation, loss) cannot, however long it trains.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

COMPONENTS = ("tx", "ty", "tz", "qx", "qy", "qz", "qw", "fov_h", "fov_w")


def training_sequences(data: Path, seed: int = 0):
    from apps.pretrain import PretrainConfig, split_partitions
    from training.data import SynthSequences

    cfg = PretrainConfig()
    train_parts, _ = split_partitions(data / "mixed", cfg)
    return SynthSequences(train_parts, num_frames=cfg.frames, resolution=cfg.resolution, seed=seed)


@torch.no_grad()
def features(model, ds, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per frame 1..S-1 of ``n`` evenly spread sequences: candidate inputs, true pose encodings and the
    predicted ones."""
    from model.pose import extrinsics_intrinsics_to_pose_encoding

    model.eval()
    feats: dict[str, list] = {"camera token": [], "camera token + frame 0's": [], "mean patch token": []}
    truth, pred = [], []
    for i in np.linspace(0, len(ds) - 1, n).round().astype(int):
        seq = ds[int(i)]
        images = seq["images"][None]
        tokens, start = model.aggregator(images)
        last = tokens[-1][0]
        poses = model.camera_head(tokens, model.config.camera_iterations)[-1][0]
        gt = extrinsics_intrinsics_to_pose_encoding(seq["extrinsics"][None].double(), seq["intrinsics"][None].double(),
                                                    images.shape[-2:])[0]
        for f in range(1, len(last)):
            feats["camera token"].append(last[f, 0].numpy())
            feats["camera token + frame 0's"].append(torch.cat([last[f, 0], last[0, 0]]).numpy())
            feats["mean patch token"].append(last[f, start:].mean(0).numpy())
            truth.append(gt[f].numpy())
            pred.append(poses[f].numpy())
    return {k: np.array(v) for k, v in feats.items()}, np.array(truth), np.array(pred)


def ridge_r2(X: np.ndarray, Y: np.ndarray, fit: int, strengths=(1.0, 10.0, 100.0, 1000.0)) -> np.ndarray:
    """Held-out R² per column of Y from a ridge regression on standardised X (rows [:fit] to fit)."""
    mu, sd = X[:fit].mean(0), X[:fit].std(0) + 1e-6
    Xs, ym = (X - mu) / sd, Y[:fit].mean(0)
    denom = ((Y[fit:] - ym) ** 2).sum(0)
    best = None
    for lam in strengths:
        A = Xs[:fit]
        W = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ (Y[:fit] - ym))
        r2 = 1 - ((Xs[fit:] @ W + ym - Y[fit:]) ** 2).sum(0) / denom
        if best is None or np.nanmean(r2[3:6]) > np.nanmean(best[3:6]):
            best = r2
    return best


def probe(args) -> None:
    from model import load_model

    ds = training_sequences(args.data)
    print("| checkpoint | predicted rotation spread (quaternion xyz std) | true spread | input | "
          + " | ".join(f"R² {c}" for c in COMPONENTS) + " |")
    print("|---|---|---|---|" + "---|" * len(COMPONENTS))
    for path in args.checkpoints:
        feats, truth, pred = features(load_model(path).float(), ds, args.sequences)
        fit = int(0.75 * len(truth))
        spread = lambda a: float(a[:, 3:6].std(0).mean())  # noqa: E731
        for name, X in feats.items():
            r2 = ridge_r2(X, truth, fit)
            print(f"| {Path(path).name} | {spread(pred):.4f} | {spread(truth):.4f} | {name} | "
                  + " | ".join(f"{v:+.2f}" for v in r2) + " |")


def overfit(args) -> None:
    from torch.utils.data import Subset

    from apps.pretrain import PretrainConfig, model_config
    from model import VGGT, load_model
    from training import LossWeights, TrainConfig, make_loader, train, vggt_loss
    from training.evaluate import evaluate_on_sequences
    from training.param_groups import pretraining_groups
    from training.rng import seeded

    ds = training_sequences(args.data)
    few = Subset(ds, [int(i) for i in np.linspace(0, len(ds) - 1, args.sequences).round()])
    cfg = PretrainConfig()
    if args.init:
        model = load_model(args.init).float()
    else:
        with seeded(0):
            model = VGGT(model_config(cfg))
    weights = LossWeights(camera=args.camera_weight, depth=cfg.depth_weight, point=cfg.point_weight)
    out = args.out / (f"n{args.sequences}_w{args.camera_weight:g}" + ("_init" if args.init else ""))
    print("| step | rotation error on the training sequences (°) | identity (°) | translation error | AbsRel |")
    print("|---|---|---|---|---|")

    def report(step: int) -> None:
        if (step + 1) % args.every:
            return
        r = evaluate_on_sequences(model, few)
        model.train()
        print(f"| {step + 1} | {r['model']['rot_deg']:.2f} | {r['baseline']['rot_deg']:.2f} | "
              f"{r['model']['trans_rel']:.3f} | {r['model']['abs_rel']:.3f} |", flush=True)

    tcfg = TrainConfig(steps=args.steps, lr=args.lr, warmup=0.05, weight_decay=cfg.weight_decay, seed=0,
                       checkpoint_every=args.steps, progress=False)
    groups = pretraining_groups(model, cfg.weight_decay, args.lr, cfg.gamma_lr_scale, cfg.decay_all)
    train(model, groups, make_loader(few, batch_size=cfg.batch_size), tcfg,
          loss_fn=functools.partial(vggt_loss, weights=weights), out_dir=out, after_step=report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("probe")
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--sequences", type=int, default=240)
    o = sub.add_parser("overfit")
    o.add_argument("--sequences", type=int, default=8)
    o.add_argument("--steps", type=int, default=300)
    o.add_argument("--every", type=int, default=100)
    o.add_argument("--camera-weight", type=float, default=5.0)
    o.add_argument("--lr", type=float, default=3e-4)
    o.add_argument("--init", type=Path, default=None, help="start from these weights (default: from scratch)")
    o.add_argument("--out", type=Path, default=Path("runs/bench_cameras"))
    for q in (p, o):
        q.add_argument("--data", type=Path, default=Path("data/synth"))
        q.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    probe(args) if args.mode == "probe" else overfit(args)


if __name__ == "__main__":
    main()
