"""mining.subspace: the factored IRLS against a dense reference, planted shared subspaces with outliers,
and the subspace distance against scipy's principal angles."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from mining.subspace import chance_distance, choose_rank, energy_share, extract_shared, subspace_distance


def dense_irls(As, Bs, rank, alpha=1.0, eps=1e-6, max_iter=100, tol=1e-6):
    """The textbook algorithm on dense m×n matrices: the reference the factored code must equal."""
    W = [a @ b.T for a, b in zip(As, Bs)]
    eps_abs = eps * np.sqrt(np.mean([np.sum(x ** 2) for x in W]))
    w = np.ones(len(W))
    for _ in range(max_iter):
        C = sum(wi * x for wi, x in zip(w, W)) / w.sum()
        U, s, Vt = np.linalg.svd(C, full_matrices=False)
        approx = (U[:, :rank] * s[:rank]) @ Vt[:rank]
        r = np.array([np.linalg.norm(approx - x) for x in W])
        new = (eps_abs ** 2 + r ** 2) ** (-(2 - alpha) / 2)
        new /= new.mean()
        done = np.max(np.abs(new - w) / w) <= tol
        w = new
        if done:
            break
    C = sum(wi * x for wi, x in zip(w, W)) / w.sum()
    U, s, Vt = np.linalg.svd(C, full_matrices=False)
    return U[:, :rank], Vt[:rank].T, s, w


def planted(m=60, n=40, k=10, r=6, d=3, noise=0.3, outliers=2, outlier_scale=4.0, seed=0):
    """k rank-r LoRAs: a shared rank-d update plus member noise; the last ``outliers`` members are
    instead large updates in unrelated directions. Returns As, Bs and the true column/row bases."""
    rng = np.random.default_rng(seed)
    U0 = np.linalg.qr(rng.standard_normal((m, d)))[0]
    V0 = np.linalg.qr(rng.standard_normal((n, d)))[0]
    core = np.diag(np.linspace(2.0, 1.0, d))
    As, Bs = [], []
    for i in range(k):
        if i >= k - outliers:
            a = rng.standard_normal((m, r)) * outlier_scale / np.sqrt(m)
            b = rng.standard_normal((n, r)) / np.sqrt(n) * 3
        else:
            x = rng.standard_normal((d, d)) * 0.1 + np.eye(d)         # each member's own mix of the shared part
            shared_a, shared_b = U0 @ core @ x, V0 @ np.linalg.inv(x).T
            na = rng.standard_normal((m, r - d)) * noise / np.sqrt(m)
            nb = rng.standard_normal((n, r - d)) / np.sqrt(n)
            a, b = np.hstack([shared_a, na]), np.hstack([shared_b, nb])
        As.append(a)
        Bs.append(b)
    return As, Bs, U0, V0


def largest_angle_deg(X, Y):
    return float(np.degrees(np.max(scipy.linalg.subspace_angles(X, Y))))


def test_factored_equals_dense_subspace_and_weights():
    As, Bs, _, _ = planted(seed=1)
    for alpha in (1.0, 0.5, 2.0):
        got = extract_shared(As, Bs, rank=3, alpha=alpha)
        U, V, s, w = dense_irls(As, Bs, 3, alpha=alpha)
        np.testing.assert_allclose(got.weights, w, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.singular_values[:len(s)][:20], s[:20], rtol=1e-6, atol=1e-12)
        assert largest_angle_deg(got.U, U) < 1e-4 and largest_angle_deg(got.V, V) < 1e-4
        assert np.abs(got.U @ got.U.T - U @ U.T).max() < 1e-6 and np.abs(got.V @ got.V.T - V @ V.T).max() < 1e-6
        # A Bᵀ is the dense rank-3 fit itself
        np.testing.assert_allclose(got.A @ got.B.T, (U * s[:3]) @ V.T, atol=1e-6 * np.abs(s[0]))


def test_irls_recovers_a_planted_subspace_where_the_mean_and_peft_svd_merge_do_not():
    As, Bs, U0, V0 = planted(k=10, noise=0.05, outliers=3, outlier_scale=8.0, seed=3)
    robust = extract_shared(As, Bs, rank=3, alpha=1.0)
    plain = extract_shared(As, Bs, rank=3, alpha=2.0)
    assert largest_angle_deg(robust.U, U0) < 1.0 and largest_angle_deg(robust.V, V0) < 1.0
    assert largest_angle_deg(plain.U, U0) > 5.0
    assert np.all(robust.weights[-3:] < 0.5 * robust.weights[:-3].min())        # the outliers' weights drop
    assert robust.converged and all(np.diff(robust.objective) <= 1e-9 * robust.objective[0])  # IRLS never goes up

    # peft's svd merge of the same adapters (equal weights, the α = 2 answer) misses it too
    peft = pytest.importorskip("peft")
    m, n = As[0].shape[0], Bs[0].shape[0]
    model = torch.nn.Sequential(torch.nn.Linear(n, m, bias=False))
    r = As[0].shape[1]
    config = peft.LoraConfig(r=r, lora_alpha=r, target_modules=["0"], init_lora_weights=False)
    pm = peft.get_peft_model(model, config, adapter_name="m0")
    for i in range(1, len(As)):
        pm.add_adapter(f"m{i}", config)
    layer = pm.base_model.model[0]
    for i, (a, b) in enumerate(zip(As, Bs)):
        layer.lora_B[f"m{i}"].weight.data = torch.from_numpy(a).float()
        layer.lora_A[f"m{i}"].weight.data = torch.from_numpy(b.T).float()
    pm.add_weighted_adapter([f"m{i}" for i in range(len(As))], [1.0 / len(As)] * len(As), "merged",
                            combination_type="svd", svd_rank=3)
    merged_A = layer.lora_B["merged"].weight.detach().double().numpy()
    assert largest_angle_deg(merged_A, U0) > 5.0
    assert largest_angle_deg(merged_A, plain.U) < 0.5                             # it is the plain mean


def test_scaling_every_member_scales_the_fit_and_keeps_the_weights():
    As, Bs, _, _ = planted(seed=4)
    a = extract_shared(As, Bs, rank=3)
    b = extract_shared([x * 7.0 for x in As], Bs, rank=3)
    np.testing.assert_allclose(b.weights, a.weights, rtol=1e-8)
    np.testing.assert_allclose(b.singular_values, 7.0 * a.singular_values, rtol=1e-8, atol=1e-12)


def test_torch_inputs_give_torch_outputs_equal_to_numpy():
    As, Bs, _, _ = planted(seed=5)
    n = extract_shared(As, Bs, rank=3)
    t = extract_shared([torch.from_numpy(x).float() for x in As], [torch.from_numpy(x).float() for x in Bs], rank=3)
    assert torch.is_tensor(t.A) and t.A.shape == (60, 3) and t.B.shape == (40, 3) and t.weights.shape == (10,)
    np.testing.assert_allclose(t.weights.numpy(), n.weights, rtol=1e-4)
    assert largest_angle_deg(t.U.numpy(), n.U) < 1e-2


def test_auto_rank_finds_the_planted_cliff():
    As, Bs, _, _ = planted(k=10, d=5, r=8, noise=0.05, outliers=0, seed=6)
    shared = extract_shared(As, Bs, rank="auto", rank_bounds=(2, 12))
    assert shared.rank == 5
    assert choose_rank(np.array([10, 9, 8, 1, 0.9, 0.8]), 1, 5) == 3
    assert choose_rank(np.array([10, 9, 8, 1, 0.5, 0.45]), 4, 5) == 4               # bounds respected


def test_a_layer_no_member_updated_gives_finite_equal_weights():
    zeros = [np.zeros((20, 4)) for _ in range(3)]
    shared = extract_shared(zeros, [np.zeros((10, 4)) for _ in range(3)], rank=2)
    assert np.all(shared.weights == 1.0) and np.all(shared.A == 0) and np.all(shared.singular_values == 0)


def test_bad_inputs_are_refused():
    As, Bs, _, _ = planted()
    with pytest.raises(ValueError, match="rank"):
        extract_shared(As, Bs, rank=10_000)
    with pytest.raises(ValueError, match="member 1"):
        extract_shared(As, [Bs[0], Bs[1][:5]] + Bs[2:], rank=2)
    with pytest.raises(ValueError, match="alpha"):
        extract_shared(As, Bs, rank=2, alpha=3.0)


# ---- distance ---------------------------------------------------------------------------------------------

def test_distance_is_one_minus_cos_of_the_smallest_principal_angle():
    rng = np.random.default_rng(0)
    for _ in range(5):
        A1, A2 = rng.standard_normal((30, 4)), rng.standard_normal((30, 6))
        B = rng.standard_normal((20, 4))
        expected = 1.0 - np.cos(np.min(scipy.linalg.subspace_angles(A1, A2)))
        assert subspace_distance(A1, B, A2, B[:, :1].repeat(6, 1)) == pytest.approx(expected, abs=1e-10)


def test_distance_is_the_smallest_generalised_eigenvalue():
    rng = np.random.default_rng(1)
    S1, S2 = rng.standard_normal((25, 3)), rng.standard_normal((25, 5))
    P = np.hstack([S1, -S2])
    D = scipy.linalg.block_diag(S1.T @ S1, S2.T @ S2)
    smallest = scipy.linalg.eigh(P.T @ P, D, eigvals_only=True)[0]
    assert subspace_distance(S1, None, S2, None) == pytest.approx(smallest, abs=1e-10)


def test_distance_invariances_and_extremes():
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((40, 5)), rng.standard_normal((30, 5))
    A2, B2 = rng.standard_normal((40, 5)), rng.standard_normal((30, 5))
    X = rng.standard_normal((5, 5))
    base_col, base_row = subspace_distance(A, B, A2, B2), subspace_distance(A, B, A2, B2, side="row")
    assert subspace_distance(A @ X, B @ np.linalg.inv(X).T, A2, B2) == pytest.approx(base_col, abs=1e-10)
    assert subspace_distance(A @ X, B @ np.linalg.inv(X).T, A2, B2, side="row") == pytest.approx(base_row, abs=1e-10)
    assert subspace_distance(3.5 * A, B, 1e-3 * A2, B2) == pytest.approx(base_col, abs=1e-10)
    assert subspace_distance(A, B, A @ X, B) == pytest.approx(0.0, abs=1e-10)
    E = np.eye(40)
    assert subspace_distance(E[:, :5], B, E[:, 5:12], B) == pytest.approx(1.0, abs=1e-12)
    # a single shared direction among otherwise orthogonal ones is distance 0 (the smallest angle)
    assert subspace_distance(E[:, :5], B, E[:, 4:9], B) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="side"):
        subspace_distance(A, B, A2, B2, side="diagonal")


def test_chance_distance_matches_the_known_levels():
    mean, std = chance_distance(192, 16, samples=400)
    assert 0.44 < mean < 0.52 and 0 < std < 0.1                # facts: ≈ 0.48
    assert chance_distance(1024, 16, samples=100)[0] == pytest.approx(0.77, abs=0.03)
    assert chance_distance(20, 12)[0] == 0.0                    # 12 + 12 > 20: they must intersect


def test_energy_share_from_factors_equals_dense():
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((30, 4)), rng.standard_normal((20, 4))
    Q = rng.standard_normal((30, 6))
    P = np.linalg.qr(Q)[0]
    W = A @ B.T
    assert energy_share(A, B, Q) == pytest.approx(np.sum((P.T @ W) ** 2) / np.sum(W ** 2), rel=1e-10)
    R = rng.standard_normal((20, 3))
    PR = np.linalg.qr(R)[0]
    assert energy_share(A, B, R, side="row") == pytest.approx(np.sum((W @ PR) ** 2) / np.sum(W ** 2), rel=1e-10)
