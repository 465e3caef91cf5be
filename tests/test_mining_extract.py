"""mining.extract's controls on planted clusters with known answers: distinct planted attribute subspaces
come out separated (self ≪ cross between halves), one subspace shared by two attributes does not, and
projecting a common part out removes it."""
from __future__ import annotations

import numpy as np
import pytest

from mining.config import MineConfig
from mining.extract import Cluster, _project_out, chance_table, distance_tables, extract_cluster, halves_tables, pair_stats
from mining.subspace import energy_share, subspace_distance

M, N, R, D = 48, 40, 6, 3
LAYERS = ["l0", "l1"]


def planted_cluster(name, bases, k=6, noise=0.05, seed=0):
    """k members per layer: the planted (U, V) of that layer mixed per member, plus small noise."""
    rng = np.random.default_rng(seed)
    factors = []
    for _ in range(k):
        f = {}
        for layer, (U, V) in zip(LAYERS, bases):
            x = np.eye(D) + 0.1 * rng.standard_normal((D, D))
            a = np.hstack([U @ x, noise * rng.standard_normal((M, R - D))])
            b = np.hstack([V @ np.linalg.inv(x).T, rng.standard_normal((N, R - D)) / np.sqrt(N)])
            f[layer] = (a, b)
        factors.append(f)
    return Cluster(name, [f"{name}/m{i:02d}" for i in range(k)], factors)


def random_bases(rng):
    return [(np.linalg.qr(rng.standard_normal((M, D)))[0], np.linalg.qr(rng.standard_normal((N, D)))[0])
            for _ in LAYERS]


@pytest.fixture
def cfg():
    return MineConfig(subspace_rank=D, members=6, mixed_members=0)


def test_distinct_subspaces_are_separated_and_shared_ones_are_not(cfg):
    rng = np.random.default_rng(0)
    shared = random_bases(rng)
    clusters = {"texture": planted_cluster("texture", random_bases(rng), seed=1),
                "geometry": planted_cluster("geometry", shared, seed=2),
                "camera": planted_cluster("camera", shared, seed=3)}
    halves = halves_tables(cfg, clusters, LAYERS)
    for side in ("column", "row"):
        selfs = {a: np.mean(v["distance"]) for a, v in halves[side]["self"].items()}
        cross = {k: np.mean(v["distance"]) for k, v in halves[side]["cross"].items()}
        assert max(selfs.values()) < 1e-2                             # each attribute reproduces itself
        assert cross["texture|geometry"] > 0.1 and cross["texture|camera"] > 0.1
        assert cross["geometry|camera"] < 1e-2                        # same planted subspace: not separated

    subspaces = {n: extract_cluster(c.factors, LAYERS, cfg) for n, c in clusters.items()}
    full = distance_tables(subspaces, LAYERS)
    assert full["column"]["geometry|camera"]["overlap"][0] > 0.99
    chance = chance_table(subspaces, LAYERS)
    assert all(0.2 < d < 1 for d in chance["column"]["distance"]) and chance["column"]["overlap"][0] == D / M


def test_pair_stats_matches_the_distance_and_the_overlap_definition():
    rng = np.random.default_rng(4)
    S1, S2 = rng.standard_normal((30, 4)), rng.standard_normal((30, 6))
    distance, overlap = pair_stats(S1, S2)
    assert distance == pytest.approx(subspace_distance(S1, None, S2, None), abs=1e-12)
    Q1, Q2 = np.linalg.qr(S1)[0], np.linalg.qr(S2)[0]
    assert overlap == pytest.approx(np.sum((Q1.T @ Q2) ** 2) / 4, rel=1e-10)


def test_projecting_the_common_part_out_leaves_no_energy_in_it(cfg):
    rng = np.random.default_rng(5)
    cluster = planted_cluster("lighting", random_bases(rng), seed=6)
    common = extract_cluster(cluster.factors, LAYERS, cfg, rank=2)
    residual = _project_out(cluster.factors, LAYERS, common)
    for f in residual:
        for layer in LAYERS:
            a, b = f[layer]
            assert energy_share(a, b, common[layer].A) < 1e-20
            assert energy_share(a, b, common[layer].B, side="row") < 1e-20
