"""MegaSynth-style procedural scene generator with one-attribute-at-a-time control.

The distributions follow MegaSynth (Jiang et al., CVPR 2025), re-implemented from their published
parameters (docs/attributes.md lists them). Raw lengths are in MegaSynth's room units (a room is 17–30
wide) and every geometry is then scaled so the room's longest horizontal side spans [-1, 1].

Attribute control (docs/attributes.md): partition ``p`` of attribute ``X`` draws a base scene from
(seed, X, p). Sample ``k`` redraws X over its full range from (seed, X, p, k) and keeps the other three
at the base, each perturbed by a small jitter (``JitterConfig``, scaled by ``jitter``).

Every range, probability and count lives in ``GeneratorConfig`` (config.py), one frozen config per
attribute; the samplers are in geometry.py, camera.py, lighting.py, texture.py and jitter.py. The
order of the random draws is part of the output: the same seeds and config give the same specs.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..spec import ATTRIBUTES, PATTERNS, RENDER_ATTRIBUTES, SceneSpec
from .camera import sample_camera
from .config import (CameraConfig, GeneratorConfig, GeometryConfig, JitterConfig, LightingConfig, TextureConfig,
                     load_generator_config)
from .geometry import euler_matrix, sample_room, sample_shapes, shape_distance
from .jitter import JITTER, JITTER_FN, jitter_camera, jitter_geometry, jitter_lighting, jitter_texture
from .lighting import sample_lighting, wall_normal, window_center
from .texture import sample_texture

__all__ = ["CameraConfig", "GeneratorConfig", "GeometryConfig", "JitterConfig", "LightingConfig", "TextureConfig",
           "load_generator_config", "JITTER", "PATTERNS", "rng_for", "partition_base", "sample_spec", "sample_scene",
           "sample_room", "sample_shapes", "sample_camera", "sample_lighting", "sample_texture", "shape_distance",
           "euler_matrix", "wall_normal", "window_center", "jitter_geometry", "jitter_texture", "jitter_lighting",
           "jitter_camera"]

_ATTR_CODE = {"texture": 1, "geometry": 2, "camera": 3, "lighting": 4, "mixed": 5}
_PURPOSE = {"base": 0, "redraw": 1, "jitter": 2}


def rng_for(seed: int, attribute: str, partition: int, sample: int, purpose: str) -> np.random.Generator:
    """Independent stream per (seed, attribute, partition, sample, purpose); sample -1 is the base."""
    ss = np.random.SeedSequence([seed, _ATTR_CODE[attribute], partition, sample + 1, _PURPOSE[purpose]])
    return np.random.default_rng(ss)


def partition_base(attribute: str, partition: int, seed: int, views: int,
                   cfg: GeneratorConfig = GeneratorConfig()) -> SceneSpec:
    """The base scene of partition ``partition`` of ``attribute``."""
    _check_attribute(attribute)
    return sample_scene(rng_for(seed, attribute, partition, -1, "base"), views, cfg)


def sample_spec(attribute: str, partition: int, sample: int, seed: int, views: int,
                cfg: GeneratorConfig = GeneratorConfig(), jitter: float = 1.0) -> SceneSpec:
    """The scene of sample ``sample`` of partition ``partition`` of ``attribute``."""
    _check_attribute(attribute)
    if attribute == "mixed":  # MegaSynth-style: every sample a fresh scene, wide baselines only
        wide = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, baseline=cfg.camera.mixed_baseline))
        return sample_scene(rng_for(seed, attribute, partition, sample, "redraw"), views, wide)
    base = partition_base(attribute, partition, seed, views, cfg)
    redraw = rng_for(seed, attribute, partition, sample, "redraw")
    jit = rng_for(seed, attribute, partition, sample, "jitter")
    parts = {}
    for name in ATTRIBUTES:  # fixed order: the jitter stream is consumed identically everywhere
        if name == attribute:
            continue
        parts[name] = JITTER_FN[name](base.part(name), jit, jitter, cfg.jitter) if jitter else base.part(name)
    if attribute == "geometry":
        keep_clear = [v.position for v in base.camera.views]
        keep_clear += [l.position for l in base.lighting.lights if l.kind in ("point", "bulb")]
        parts["geometry"] = sample_shapes(redraw, base.geometry, cfg.geometry, keep_clear)
    elif attribute == "texture":
        parts["texture"] = sample_texture(redraw, cfg.texture)
    elif attribute == "lighting":
        parts["lighting"] = sample_lighting(redraw, base.geometry, cfg.lighting)
    elif attribute == "camera":
        parts["camera"] = sample_camera(redraw, base.geometry, views, cfg.camera, cfg.geometry.camera_clearance)
    return base.replace(**parts)


def sample_scene(rng: np.random.Generator, views: int, cfg: GeneratorConfig = GeneratorConfig()) -> SceneSpec:
    """A whole scene from one stream, in a fixed order: room, shapes, cameras, lights, materials."""
    room = sample_room(rng, cfg.geometry)
    geometry = sample_shapes(rng, room, cfg.geometry, keep_clear=[])
    camera = sample_camera(rng, geometry, views, cfg.camera, cfg.geometry.camera_clearance)
    lighting = sample_lighting(rng, geometry, cfg.lighting)
    texture = sample_texture(rng, cfg.texture)
    return SceneSpec(geometry=geometry, texture=texture, lighting=lighting, camera=camera)


def _check_attribute(attribute: str) -> None:
    if attribute not in RENDER_ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {', '.join(RENDER_ATTRIBUTES)}")
