"""Lighting: light count, type, placement, colour and power, and the sky (numbers in
``LightingConfig``, described in docs/attributes.md)."""
from __future__ import annotations

import colorsys

import numpy as np

from ..spec import GeometrySpec, Light, LightingSpec
from ._util import count, log_uniform, vec
from .config import LightingConfig


def sample_lighting(rng: np.random.Generator, geometry: GeometrySpec,
                    cfg: LightingConfig = LightingConfig()) -> LightingSpec:
    """MegaSynth's two white area lights (one under the ceiling pointing down, one near the floor
    pointing up) are one option among others: area lights anywhere, suns through the window, point
    lights and emissive bulbs."""
    X, Y, Z = geometry.room
    half = np.array([X, Y, Z]) / 2
    lights: list[Light] = []
    area_scale = X * Y  # keep irradiance comparable across room sizes

    def colour(p_white):
        if rng.random() < p_white:
            return (1.0, 1.0, 1.0)
        return vec(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*cfg.light_saturation), 1.0))

    if rng.random() < cfg.p_area_pair:
        for sign in (1, -1):
            lights.append(Light(kind="area", position=(0.0, 0.0, float(sign * (half[2] - cfg.area_pair_inset))),
                                direction=(0.0, 0.0, float(-sign)), color=(1.0, 1.0, 1.0),
                                power=float(rng.uniform(*cfg.area_pair_power) * area_scale
                                            * (1 if sign > 0 else cfg.area_pair_floor)),
                                size=float(rng.uniform(*cfg.area_pair_size))))
    else:
        for _ in range(count(rng, cfg.area_count)):
            p = rng.uniform(-cfg.area_position * half, cfg.area_position * half)
            aim = rng.uniform(-cfg.area_aim * half, cfg.area_aim * half) - p
            lights.append(Light(kind="area", position=vec(p), direction=vec(aim / np.linalg.norm(aim)),
                                color=colour(cfg.area_p_white),
                                power=float(log_uniform(rng, cfg.area_power) * area_scale),
                                size=float(rng.uniform(*cfg.area_size))))
    if geometry.window is not None and rng.random() < cfg.p_sun:
        wc = window_center(geometry)
        inward = -wall_normal(geometry.window.wall)
        for _ in range(count(rng, cfg.sun_count)):
            aim = rng.uniform(-cfg.sun_aim * half, cfg.sun_aim * half)
            aim[2] = rng.uniform(-half[2], wc[2])
            d = aim - wc
            d = d / np.linalg.norm(d) if np.dot(d, inward) > cfg.sun_min_inward else inward
            lights.append(Light(kind="sun", position=vec(wc - cfg.sun_distance * d), direction=vec(d),
                                color=colour(cfg.sun_p_white), power=float(rng.uniform(*cfg.sun_power)),
                                size=float(rng.uniform(*cfg.sun_size))))
    if rng.random() < cfg.p_point:
        for _ in range(count(rng, cfg.point_count)):
            lights.append(Light(kind="point", position=vec(rng.uniform(-cfg.point_position * half,
                                                                       cfg.point_position * half)),
                                direction=(0.0, 0.0, -1.0), color=colour(cfg.point_p_white),
                                power=float(log_uniform(rng, cfg.point_power)),
                                size=float(rng.uniform(*cfg.point_size))))
    if rng.random() < cfg.p_bulb:
        for _ in range(count(rng, cfg.bulb_count)):
            lights.append(Light(kind="bulb", position=vec(rng.uniform(-cfg.bulb_position * half,
                                                                      cfg.bulb_position * half)),
                                direction=(0.0, 0.0, -1.0), color=colour(cfg.bulb_p_white),
                                power=float(rng.uniform(*cfg.bulb_power)), size=float(rng.uniform(*cfg.bulb_size))))
    sky = colorsys.hsv_to_rgb(rng.uniform(*cfg.sky_hue), rng.uniform(*cfg.sky_saturation), 1.0)
    return LightingSpec(lights=tuple(lights), sky_color=vec(sky), sky_strength=float(rng.uniform(*cfg.sky_strength)))


def wall_normal(wall: int) -> np.ndarray:
    """Outward normal of wall 0..3 (-y, +x, +y, -x)."""
    return np.array([[0, -1, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0]][wall], dtype=float)


def window_center(geometry: GeometrySpec) -> np.ndarray:
    """Centre of the room's window, in scene coordinates."""
    w = geometry.window
    X, Y, _ = geometry.room
    u, z = w.center
    return np.array([(u, -Y / 2, z), (X / 2, u, z), (u, Y / 2, z), (-X / 2, u, z)][w.wall], dtype=float)
