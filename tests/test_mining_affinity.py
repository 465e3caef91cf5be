"""mining.affinity on planted members with known answers: the factored similarities equal the dense ones;
a large generic direction shared by everyone hides the attributes from the raw cosine but not from the
centred one; members with no attribute structure give no signal."""
from __future__ import annotations

import numpy as np

from mining.affinity import loo_accuracy, member_affinity, pair_matrices, permutation_p, within_across
from mining.extract import Cluster

M, N, R = 30, 24, 4
LAYERS = ["l0", "l1", "l2"]
ATTRS = ["texture", "geometry", "camera"]


def planted(rng, attribute_strength: float, generic_strength: float = 3.0, k: int = 4) -> dict[str, Cluster]:
    """Per layer: ΔWᵢ = generic (shared by all) + attribute part (shared by an attribute) + member noise."""
    def rank1(u, v):
        return u[:, None], v[:, None]

    generic = {l: (rng.standard_normal(M), rng.standard_normal(N)) for l in LAYERS}
    own = {a: {l: (rng.standard_normal(M), rng.standard_normal(N)) for l in LAYERS} for a in ATTRS}
    clusters = {}
    for a in ATTRS:
        factors = []
        for _ in range(k):
            f = {}
            for l in LAYERS:
                parts = [rank1(generic_strength * generic[l][0], generic[l][1]),
                         rank1(attribute_strength * own[a][l][0], own[a][l][1]),
                         (rng.standard_normal((M, R - 2)), rng.standard_normal((N, R - 2)))]
                f[l] = (np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts]))
            factors.append(f)
        clusters[a] = Cluster(a, [f"{a}/m{i:02d}" for i in range(k)], factors)
    return clusters


def test_factored_similarities_equal_dense():
    rng = np.random.default_rng(0)
    clusters = planted(rng, 1.0)
    factors = [f for c in clusters.values() for f in c.factors]
    centre = list(range(len(factors)))
    got = pair_matrices(factors, LAYERS, centre)
    dense = {m: np.zeros((len(factors),) * 2) for m in got}
    for l in LAYERS:
        w = [f[l][0] @ f[l][1].T for f in factors]
        mean = np.mean(w, axis=0)
        for i, wi in enumerate(w):
            for j, wj in enumerate(w):
                cos = lambda x, y: float((x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
                dense["cosine"][i, j] += cos(wi, wj) / len(LAYERS)
                dense["centered"][i, j] += cos(wi - mean, wj - mean) / len(LAYERS)
                dense["column"][i, j] += cos(wi @ wi.T, wj @ wj.T) / len(LAYERS)
                dense["row"][i, j] += cos(wi.T @ wi, wj.T @ wj) / len(LAYERS)
    for m in got:
        np.testing.assert_allclose(got[m], dense[m], atol=1e-10)


def test_generic_direction_hides_attributes_from_raw_cosine_only():
    rng = np.random.default_rng(1)
    result = member_affinity(planted(rng, attribute_strength=1.0), LAYERS, ATTRS)
    s = result["stats"]
    assert s["cosine"]["across"] > 0.5                     # the generic part makes everyone look alike
    assert s["centered"]["across"] < 0.1 < s["centered"]["within"]
    assert s["centered"]["p"] < 0.01 and s["centered"]["loo_accuracy"] == 1.0
    assert result["chance_accuracy"] == 1 / 3
    assert result["members"][:4] == [f"texture/m{i:02d}" for i in range(4)]


def test_no_attribute_structure_no_signal():
    rng = np.random.default_rng(2)
    s = member_affinity(planted(rng, attribute_strength=0.0), LAYERS, ATTRS)["stats"]
    assert abs(s["centered"]["within"] - s["centered"]["across"]) < 0.1
    assert s["centered"]["p"] > 0.05                       # fixed seed: deterministic


def test_statistics_on_hand_made_matrix():
    labels = np.array(["a", "a", "b", "b"])
    sim = np.array([[1, .9, .1, .2], [.9, 1, .2, .1], [.1, .2, 1, .8], [.2, .1, .8, 1]])
    w, a = within_across(sim, labels)
    assert np.isclose(w, 0.85) and np.isclose(a, 0.15)
    assert loo_accuracy(sim, labels) == 1.0
    # with 2 + 2 members only 3 distinct labelings exist: the observed one is the best of them
    assert permutation_p(sim, labels, permutations=2000) < 0.5
