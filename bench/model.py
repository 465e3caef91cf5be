"""Model benchmark: CPU time and peak memory of a forward and a forward+backward pass, and the
parameter count of each component of the official-size model.

    python bench/model.py                       # tiny and small presets, 2/4/8 frames
    python bench/model.py --presets small --frames 4 16 --repeats 5
    python bench/model.py --params-only         # vggt-1b parameter table only (built on the meta device)
    python bench/model.py --blocks-off-only     # what the shipped model's aggregator blocks do

The blocks-off table (always printed, for assets/vggt_small.safetensors or --checkpoint) is the check
that a base model's aggregator is not bypassed: its outputs with every frame/global block switched off
(training.evaluate.blocks_off_effect) on the Middlebury motorcycle pair and, where they are rendered,
the held-out mixed partitions of pretraining (data/synth/mixed p088-p095).

Each measurement runs in a fresh process so that its peak resident memory (ru_maxrss) is its own;
"peak MB" is that peak minus the process's resident memory before the first full pass (model and
inputs built, one single-frame pass done), i.e. the activations, gradients and workspace the pass needs. Times are the
median of --repeats passes after one warm-up. "fwd+bwd ckpt" is the same with per-block gradient
checkpointing, the memory saver for training large models.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REFERENCE = ROOT / "tests" / "fixtures" / "param_counts.json"  # the official counts

# (reference key in param_counts.json, our submodule path; "" = the whole model)
COMPONENTS = [
    ("aggregator", "aggregator"),
    ("aggregator.patch_embed (DINOv2 ViT-L/14 reg)", "aggregator.patch_embed"),
    ("aggregator.frame_blocks", "aggregator.frame_blocks"),
    ("aggregator.global_blocks", "aggregator.global_blocks"),
    ("camera_head", "camera_head"),
    ("camera_head.trunk", "camera_head.trunk"),
    ("depth_head", "depth_head"),
    ("point_head", "point_head"),
    ("track_head", "track_head"),
    ("track_head.feature_extractor", "track_head.feature_extractor"),
    ("track_head.tracker", "track_head.tracker"),
    ("total", ""),
]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(preset: str, frames: int, mode: str, repeats: int, threads: int, queue) -> None:
    """Child process: build, warm up, time ``repeats`` passes, report (median s, peak MB over baseline)."""
    import torch
    from model import VGGT, VGGTConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = VGGTConfig.preset(preset)
    model = VGGT(cfg)
    images = torch.rand(1, frames, 3, cfg.img_size, cfg.img_size)
    train = mode != "fwd"
    model.train(train)
    if mode == "fwd+bwd ckpt":
        model.set_gradient_checkpointing(True)

    def one_pass(x=images):
        if not train:
            with torch.no_grad():
                model(x)
            return
        out = model(x)
        loss = out["depth"].mean() + out["world_points"].mean() + sum(p.mean() for p in out["pose_enc_list"])
        loss.backward()
        model.zero_grad(set_to_none=True)

    one_pass(images[:, :1])                        # loads lazily imported code (checkpointing) before the baseline
    base = rss_mb()
    one_pass()                                     # warm-up (allocator pools)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((statistics.median(times), peak - base, sum(p.numel() for p in model.parameters())))


def run_in_child(*args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def param_table() -> None:
    import torch
    from model import VGGT, VGGTConfig

    with torch.device("meta"):
        model = VGGT(VGGTConfig.preset("vggt-1b"))
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    print(f"\nvggt-1b parameters per component (reference: {REFERENCE if reference else 'not found'})")
    print(f"| {'component':<30} | {'ours':>15} | {'official':>15} | match |")
    print(f"|{'-' * 32}|{'-' * 17}|{'-' * 17}|-------|")
    for ref_key, path in COMPONENTS:
        module = model.get_submodule(path) if path else model
        ours = sum(p.numel() for p in module.parameters())
        official = reference.get(ref_key)
        match = "—" if official is None else ("yes" if official == ours else "NO")
        shown = ref_key.split(" ")[0]
        print(f"| {shown:<30} | {ours:>15,} | {official if official is None else format(official, ','):>15} | {match:^5} |")


def blocks_off_table(checkpoint: Path, data: Path, held_out: range = range(88, 96)) -> None:
    from model import load_model
    from training import SynthSequences, find_partitions
    from training.evaluate import blocks_off_effect, motorcycle_sequence

    model = load_model(checkpoint)
    sets = [("Middlebury motorcycle", [motorcycle_sequence(model.config.img_size, model.config.patch_size)])]
    parts = [p for p in find_partitions(data) if int(p.name[1:]) in held_out] if data.is_dir() else []
    if parts:
        sets.append((f"held-out renders ({len(parts)} partitions)",
                     SynthSequences(parts, num_frames=4, resolution=model.config.img_size, seed=1)))
    print(f"\n{checkpoint}: aggregator blocks switched off (LayerScale gammas 0)")
    print("| data | depth change | depth-map shape change | rotation change (°) | AbsRel on / off | rot (°) on / off |")
    print("|---|---|---|---|---|---|")
    for name, dataset in sets:
        e = blocks_off_effect(model, dataset)
        print(f"| {name} | {100 * e['depth_change']:.1f} % | {100 * e['relief_change']:.1f} % | "
              f"{e['pose_change_deg']:.1f} | {e['on']['abs_rel']:.3f} / {e['off']['abs_rel']:.3f} | "
              f"{e['on']['rot_deg']:.1f} / {e['off']['rot_deg']:.1f} |")
    if not parts:
        print(f"(no held-out renders in {data}: python cli.py pretrain renders them)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--frames", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd", "fwd+bwd ckpt"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--params-only", action="store_true")
    parser.add_argument("--blocks-off-only", action="store_true")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "assets" / "vggt_small.safetensors")
    parser.add_argument("--data", type=Path, default=Path("data/synth/mixed"))
    args = parser.parse_args()

    if args.blocks_off_only:
        blocks_off_table(args.checkpoint, args.data)
        return
    if not args.params_only:
        print(f"CPU, {args.threads} threads, batch 1, float32; median of {args.repeats} passes after a warm-up")
        print(f"| {'preset':<6} | {'params':>10} | {'input':>14} | {'pass':<13} | {'time s':>8} | {'peak MB':>8} |")
        print("|--------|------------|----------------|---------------|----------|----------|")
        for preset in args.presets:
            for frames in args.frames:
                for mode in args.modes:
                    seconds, peak, n = run_in_child(preset, frames, mode, args.repeats, args.threads)
                    from model import VGGTConfig
                    size = VGGTConfig.preset(preset).img_size
                    print(f"| {preset:<6} | {n:>10,} | {f'{frames}x{size}x{size}':>14} | {mode:<13} | "
                          f"{seconds:>8.3f} | {peak:>8.0f} |", flush=True)
    param_table()
    blocks_off_table(args.checkpoint, args.data)


if __name__ == "__main__":
    main()
