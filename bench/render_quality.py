"""Render noise against render time: which samples-per-pixel and denoising to render training data with.

    python bench/render_quality.py                          # 3 mixed scenes x 2 views, both domains
    python bench/render_quality.py --scenes 4 --ref-spp 2048 --generator-config assets/generator_narrow.json

For each view a reference is rendered at --ref-spp samples without denoising (unbiased, slow); every
candidate (spp x denoise) is then scored against it in the 8-bit sRGB images the training reads:
PSNR (dB) and the share of pixels off by more than 16/255 ("speckle", the fireflies and grain one sees
on a contact sheet), beside the seconds per view on --threads Cycles threads. The scenes are `mixed`
samples (seed 0, partitions 900+) of MegaSynth's ranges and, with --generator-config, of that domain.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from render.files import linear_to_srgb8  # noqa: E402
from render.generator import GeneratorConfig, load_generator_config, sample_spec  # noqa: E402
from render.spec import RenderSettings  # noqa: E402

CANDIDATES = [(4, False), (8, False), (16, False), (32, False), (64, False),
              (4, True), (8, True), (16, True), (32, True)]


def render_views(spec, settings: RenderSettings, views: int) -> tuple[list[np.ndarray], float]:
    """The first ``views`` views of ``spec`` as 8-bit sRGB, and Cycles' seconds per view."""
    from render.blender_backend import BlenderRenderer

    renderer = BlenderRenderer(settings)
    try:
        renderer.set_scene(spec)
        images = [linear_to_srgb8(renderer.render_view(spec, i).rgb_linear) for i in range(views)]
        return images, renderer.render_seconds / views
    finally:
        renderer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=126)
    ap.add_argument("--ref-spp", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--generator-config", type=Path, default=None,
                    help="also score scenes of this domain (e.g. assets/generator_narrow.json)")
    args = ap.parse_args()

    domains = [("MegaSynth ranges", GeneratorConfig())]
    if args.generator_config is not None:
        domains.append((args.generator_config.stem, load_generator_config(args.generator_config)))
    size = dict(width=args.resolution, height=args.resolution, threads=args.threads)
    for label, cfg in domains:
        scores = {c: {"psnr": [], "speckle": [], "seconds": []} for c in CANDIDATES}
        for scene in range(args.scenes):
            spec = sample_spec("mixed", 900 + scene, 0, 0, max(args.views, 2), cfg)
            reference, _ = render_views(spec, RenderSettings(spp=args.ref_spp, denoise=False, **size), args.views)
            for spp, denoise in CANDIDATES:
                images, seconds = render_views(spec, RenderSettings(spp=spp, denoise=denoise, **size), args.views)
                for image, ref in zip(images, reference):
                    err = image.astype(np.float64) - ref.astype(np.float64)
                    mse = float(np.mean(err ** 2))
                    scores[(spp, denoise)]["psnr"].append(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))
                    scores[(spp, denoise)]["speckle"].append(float(np.mean(np.abs(err).max(-1) > 16)))
                scores[(spp, denoise)]["seconds"].append(seconds)
            print(f"{label}: scene {scene + 1}/{args.scenes} done", file=sys.stderr, flush=True)
        print(f"\n{label}: {args.scenes} scenes x {args.views} views at {args.resolution} px, reference "
              f"{args.ref_spp} spp, Cycles on {args.threads} thread(s)\n")
        print("| spp | denoise | PSNR dB (mean) | speckle > 16/255 | s / view |")
        print("|---|---|---|---|---|")
        for spp, denoise in CANDIDATES:
            s = scores[(spp, denoise)]
            print(f"| {spp} | {'OIDN' if denoise else 'no'} | {np.mean(s['psnr']):.1f} | "
                  f"{100 * np.mean(s['speckle']):.1f} % | {np.mean(s['seconds']):.2f} |")


if __name__ == "__main__":
    main()
