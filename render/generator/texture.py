"""Texture: a scene's material set — procedural PBR materials, optionally user images — and its glass
(numbers in ``TextureConfig``, described in docs/attributes.md)."""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from common.images import IMAGE_SUFFIXES

from ..spec import Glass, Material, TextureSpec
from ._util import count, log_uniform, vec
from .config import TextureConfig


def sample_texture(rng: np.random.Generator, cfg: TextureConfig = TextureConfig()) -> TextureSpec:
    """Materials with random patterns, colours, roughness, metallic and bump, with MegaSynth's scene-wide
    overrides (low roughness; specular); which material each shape gets is hashed from ``assign_seed``."""
    images = texture_images(cfg.texture_dir)
    n = count(rng, cfg.materials)
    override = rng.random() < cfg.p_override
    specular = rng.random() < cfg.p_specular
    mats = []
    for _ in range(n):
        ha, hb = rng.random(), rng.random()
        ca = colorsys.hsv_to_rgb(ha, rng.uniform(*cfg.saturation), rng.uniform(*cfg.value_a))
        cb = colorsys.hsv_to_rgb(hb if rng.random() < cfg.p_own_hue else ha, rng.uniform(*cfg.saturation),
                                 rng.uniform(*cfg.value_b))
        rough = rng.uniform(*cfg.roughness)
        metal = rng.uniform(*cfg.metallic) if rng.random() < cfg.p_metallic else 0.0
        if override:
            rough, metal = rng.uniform(*cfg.override_roughness), rng.uniform(*cfg.override_metallic)
        if specular:
            rough, metal = rng.uniform(*cfg.specular_roughness), rng.uniform(*cfg.specular_metallic)
        image = str(images[int(rng.integers(len(images)))]) if images and rng.random() < cfg.p_image else None
        mats.append(Material(pattern=str(rng.choice(cfg.patterns, p=cfg.pattern_p)),
                             color_a=vec(ca), color_b=vec(cb), scale=float(log_uniform(rng, cfg.scale)),
                             detail=float(rng.uniform(*cfg.detail)), roughness=float(rough), metallic=float(metal),
                             bump=float(rng.uniform(*cfg.bump) if rng.random() < cfg.p_bump else 0.0), image=image))
    glass = Glass(ior=float(rng.uniform(*cfg.glass_ior)), tint=vec(1 - rng.uniform(*cfg.glass_tint_loss, 3)),
                  roughness=float(rng.uniform(*cfg.glass_roughness)))
    pick = lambda: int(rng.integers(n))  # noqa: E731
    return TextureSpec(materials=tuple(mats), floor=pick(), walls=pick(), ceiling=pick(),
                       assign_seed=int(rng.integers(2**31)), glass=glass)


def texture_images(folder: str | None) -> list[Path]:
    """The image files directly in ``folder`` (by suffix, any case), sorted, as absolute paths."""
    if not folder:
        return []
    return sorted(p.resolve() for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
