"""Small numeric helpers shared by the samplers."""
from __future__ import annotations

import math

import numpy as np


def vec(x) -> tuple:
    """Any array-like as a flat tuple of Python floats (how specs store vectors)."""
    return tuple(float(a) for a in np.asarray(x, dtype=float).ravel())


def nudge(x, delta, lo=-np.inf, hi=np.inf) -> tuple:
    return vec(np.clip(np.add(x, delta), lo, hi))


def count(rng: np.random.Generator, bounds) -> int:
    """An integer U{lo, ..., hi} (inclusive)."""
    return int(rng.integers(bounds[0], bounds[1] + 1))


def log_uniform(rng: np.random.Generator, bounds) -> float:
    return math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1])))

