"""Fine-tuning benchmark: train-step time and peak memory of the subspace adapter (ours) against peft LoRA of
the same rank and full fine-tuning of the same layers, on the small preset; and every method's trainable
parameter count at VGGT-1B shapes (meta device), with the paper's accounting beside it.

    python bench/finetune.py                     # small preset, batch 2 x 4 frames at 126 px, 2 threads
    python bench/finetune.py --steps 20 --methods ours,lora --basis mined/basis.safetensors
    python bench/finetune.py --counts-only       # the vggt-1b table only

A step is forward, depth loss, backward, AdamW step (what the harness's trainer does, without data
loading). Each method runs in a fresh process so its peak resident memory (ru_maxrss) is its own; "peak MB"
is that peak minus the resident memory before the first step (model, adapter and inputs built), i.e.
activations, gradients, optimizer state and workspace. Times: median of --steps steps after 2 warm-ups.
ours uses --basis if it exists, else a random basis of dimension --dim (the same shapes; the time does not
depend on the values). The goal of the issue: ours ≤ LoRA's step time.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(method: str, args, queue) -> None:
    import torch

    from finetune.methods import MethodContext, prepare
    from mining.config import DEFAULT_TARGETS
    from model import VGGT, VGGTConfig
    from training import LossWeights, vggt_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = VGGT(VGGTConfig.preset(args.preset))
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(DEFAULT_TARGETS, n)]
    basis = Path(args.basis)
    use_mined = method == "ours" and basis.is_file()
    ctx = MethodContext(method="ours" if use_mined else ("random" if method == "ours" else method), targets=names,
                        rank=args.dim if method == "ours" else args.rank, steps=args.steps, basis=basis,
                        workdir=Path(args.workdir))
    if use_mined:
        from mining.basis import read_basis
        if read_basis(basis).metadata.get("model_config", {}).get("embed_dim") != model.config.embed_dim:
            ctx.method = "random"
            use_mined = False
    adapted = prepare(ctx.method, model, ctx)
    for p in adapted.model.parameters():
        p.requires_grad_(any(p is q for q in adapted.params))
    opt = torch.optim.AdamW(adapted.params, lr=1e-4)
    s, h = args.frames, args.resolution
    images = torch.rand(args.batch, s, 3, h, h)
    depths = torch.rand(args.batch, s, h, h) + 1
    batch = {"images": images, "depths": depths, "point_masks": depths > 0,
             "extrinsics": torch.eye(3, 4).expand(args.batch, s, 3, 4), "intrinsics": torch.eye(3).expand(args.batch, s, 3, 3),
             "world_points": torch.rand(args.batch, s, h, h, 3), "cam_points": torch.rand(args.batch, s, h, h, 3)}
    weights = LossWeights(camera=0.0, depth=1.0, point=0.0)

    def step():
        loss, _ = vggt_loss(adapted.model(images), batch, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    base_rss = rss_mb()
    times = []
    for i in range(args.steps + 2):
        t = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    label = "ours (mined basis)" if use_mined else ("ours (random basis)" if method == "ours" else method)
    queue.put((label, adapted.trainable, statistics.median(times), peak - base_rss))


def counts_table(rank: int, dim: int) -> list[str]:
    from finetune.params import method_counts, paper_accounting
    from model import VGGTConfig

    cfg = VGGTConfig.preset("vggt-1b")
    counts = method_counts(cfg, rank=rank, dim=dim)
    paper = paper_accounting(cfg, rank=rank)
    lines = [f"## Trainable parameters at vggt-1b shapes (meta device; 192 aggregator layers; r = {rank}, d = {dim})", "",
             "| method | trainable |", "|---|---|"]
    lines += [f"| {m} | {n:,} ({n / 1e6:.2f} M) |" for m, n in counts.items()]
    lines += ["", "The paper's accounting (LoRA also on the camera head's linears and the depth head's convolutions; "
                  "full = all but patch embed, track and point heads):", "",
              "| count | ours | paper |", "|---|---|---|",
              f"| LoRA r{rank} | {paper['lora']:,} ({paper['lora'] / 1e6:.1f} M) | 16.3 M (r16) |",
              f"| of which aggregator / camera head / depth head | {paper['lora_aggregator']:,} / "
              f"{paper['lora_camera_head']:,} / {paper['lora_depth_head']:,} | 12.58 / 2.33 / 1.43 M |",
              f"| full | {paper['full']:,} ({paper['full'] / 1e6:.1f} M) | 853.6 M |",
              f"| whole model | {paper['all']:,} | 1,256.5 M |"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="ours,lora,full")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=126)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dim", type=int, default=64, help="ours' dimension when no mined basis is used")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--basis", default="mined/basis.safetensors")
    ap.add_argument("--workdir", default="runs/bench_finetune")
    ap.add_argument("--counts-only", action="store_true")
    args = ap.parse_args()
    if not args.counts_only:
        ctx = mp.get_context("spawn")
        rows = []
        for method in args.methods.split(","):
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(method, args, queue))
            proc.start()
            rows.append(queue.get())
            proc.join()
        print(f"## Train step, {args.preset} preset, batch {args.batch} x {args.frames} frames at {args.resolution} px, "
              f"{args.threads} threads (median of {args.steps})\n")
        print("| method | trainable | step s | vs LoRA | peak MB |\n|---|---|---|---|---|")
        lora = next((r[2] for r in rows if r[0] == "lora"), None)
        for name, trainable, seconds, peak in rows:
            rel = f"{seconds / lora:.2f}×" if lora else "—"
            print(f"| {name} | {trainable:,} | {seconds:.3f} | {rel} | {peak:.0f} |")
        print()
    print("\n".join(counts_table(args.rank, args.dim)))


if __name__ == "__main__":
    main()
