"""Render benchmark: throughput, overhead outside Cycles, scene reuse, and memory over long runs.

    python bench/render.py                 # throughput table (128² 16 spp and 256² 32 spp)
    python bench/render.py --memory 300    # a worker's resident memory over 300 renders
    python bench/render.py --exposure 40   # brightness of 40 fresh (mixed) scenes: are lights sane?

Each configuration renders lighting-partition samples the way a render worker does (scene update,
every view with all passes, files written) in one process with all CPUs as Cycles threads.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (whose render.py is this file)

from render import files  # noqa: E402
from render.generator import sample_spec  # noqa: E402
from render.spec import RenderSettings  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_samples(renderer, attribute, samples, views, settings, out, rebuild=False, partition=0):
    t0 = time.perf_counter()
    r0 = renderer.render_seconds
    for s in range(samples):
        if rebuild:
            renderer.reset()
        spec = sample_spec(attribute, partition, s, 0, views)
        px = renderer.render(spec)
        files.write_sample(out / f"s{s:04d}", spec, px, settings.width, settings.height)
    return time.perf_counter() - t0, renderer.render_seconds - r0


def throughput(args):
    from render.blender_backend import BlenderRenderer
    rows = []
    for res, spp in ((128, 16), (256, 32)):
        settings = RenderSettings(width=res, height=res, spp=spp, threads=args.threads)
        renderer = BlenderRenderer(settings)
        with tempfile.TemporaryDirectory() as tmp:
            run_samples(renderer, "lighting", 1, args.views, settings, Path(tmp) / "warm")  # warm-up
            for mode, rebuild in (("reuse", False), ("rebuild", True)):
                out = Path(tmp) / mode
                out.mkdir()
                wall, cycles = run_samples(renderer, "lighting", args.samples, args.views, settings, out,
                                           rebuild=rebuild, partition=1)
                n = args.samples * args.views
                rows.append((f"{res}²", spp, mode, n, wall, n / wall, 1 - cycles / wall))
        renderer.close()
    print(f"\nCycles on {args.threads} thread(s), lighting partition, {args.samples} samples x {args.views} views, all passes + files\n")
    print("| size | spp | scene | views | wall s | views/s | outside Cycles' render call |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.2f} | {100 * r[6]:.1f} % |")
    for res in ("128²", "256²"):
        reuse = next(r for r in rows if r[0] == res and r[2] == "reuse")
        rebuild = next(r for r in rows if r[0] == res and r[2] == "rebuild")
        print(f"scene reuse speed-up at {res}: {rebuild[4] / reuse[4]:.2f}x")


def memory(args):
    from render.blender_backend import BlenderRenderer
    settings = RenderSettings(width=128, height=128, spp=16, threads=args.threads)
    renderer = BlenderRenderer(settings)
    tmp = Path(tempfile.mkdtemp())
    renders, marks = 0, []
    start = time.perf_counter()
    attributes = ("lighting", "texture", "geometry", "camera", "mixed")
    k = 0
    while renders < args.memory:
        attribute = attributes[(k // 4) % len(attributes)]  # 4 samples per partition, then switch
        spec = sample_spec(attribute, k // 4, k % 4, 0, args.views)
        px = renderer.render(spec)
        out = tmp / f"s{k:05d}"
        files.write_sample(out, spec, px, settings.width, settings.height)
        shutil.rmtree(out)
        renders += len(px)
        k += 1
        if not marks or renders - marks[-1][0] >= 25:
            marks.append((renders, rss_mb(), time.perf_counter() - start))
    marks.append((renders, rss_mb(), time.perf_counter() - start))
    shutil.rmtree(tmp)
    print(f"\nResident memory of one render process over {renders} renders (128², 16 spp; attributes cycled)\n")
    print("| renders | RSS MB | seconds |")
    print("|---|---|---|")
    for r, m, t in marks:
        print(f"| {r} | {m:.0f} | {t:.0f} |")
    mid = min(marks, key=lambda m: abs(m[0] - renders / 2))
    print(f"peak {max(m[1] for m in marks):.0f} MB; growth over the second half "
          f"(renders {mid[0]} to {renders}): {marks[-1][1] - mid[1]:+.0f} MB")


def exposure(args):
    import numpy as np
    from render.blender_backend import BlenderRenderer
    renderer = BlenderRenderer(RenderSettings(width=64, height=64, spp=16, threads=args.threads))
    medians, clipped = [], []
    for k in range(args.exposure):
        spec = sample_spec("mixed", k, 0, 1, 1)
        renderer.set_scene(spec)
        srgb = files.linear_to_srgb8(renderer.render_view(spec, 0).rgb_linear) / 255.0
        medians.append(np.median(srgb))
        clipped.append((srgb >= 0.999).any(-1).mean())
    m, c = np.array(medians), np.array(clipped)
    print(f"\nExposure of view 0 of {len(m)} mixed scenes (64², 16 spp)\n")
    print("| statistic | p10 | p50 | p90 |\n|---|---|---|---|")
    print("| median sRGB value | " + " | ".join(f"{v:.2f}" for v in np.percentile(m, [10, 50, 90])) + " |")
    print("| share of clipped pixels | " + " | ".join(f"{v:.3f}" for v in np.percentile(c, [10, 50, 90])) + " |")
    print(f"too dark (median < 0.1): {(m < 0.1).sum()}; blown (> 30 % clipped): {(c > 0.3).sum()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory", type=int, default=0, help="renders for the memory run (0: throughput table)")
    ap.add_argument("--exposure", type=int, default=0, help="scenes for the exposure statistics")
    args = ap.parse_args()
    if args.memory:
        memory(args)
    elif args.exposure:
        exposure(args)
    else:
        throughput(args)
