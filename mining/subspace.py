"""The shared subspace of a cluster of LoRA updates, and distances between subspaces.

    from mining.subspace import extract_shared, subspace_distance
    shared = extract_shared(As, Bs, rank=16)          # As[i] [m,r], Bs[i] [n,r]: member i's ΔWᵢ = AᵢBᵢᵀ
    shared.A, shared.B, shared.weights, shared.singular_values
    subspace_distance(shared.A, shared.B, other.A, other.B, side="column")   # 0 = same, 1 = orthogonal

**Robust shared subspace.** ``min_{A,B} Σᵢ ‖ABᵀ − AᵢBᵢᵀ‖_F^α`` by iteratively re-weighted least
squares (Fast-Median-Subspace style): with weights wᵢ fixed, the minimiser is the truncated SVD of
``C = Σ wᵢ AᵢBᵢᵀ / Σ wᵢ`` (A = U Σ^½, B = V Σ^½); with A, B fixed, ``wᵢ = (ε² + rᵢ²)^{−(2−α)/2}``,
rᵢ = ‖ABᵀ − AᵢBᵢᵀ‖_F. α = 2 is the plain mean (one iteration); α = 1 is median-like, so a few
outlier members cannot drag the subspace.

**Factored.** No m×n matrix is ever built. Stack the factors, ``Â = [A₁ … A_k]`` (m×kr) and
``B̂ = [B₁ … B_k]`` (n×kr), and take reduced QRs once: Â = Q_a R_a, B̂ = Q_b R_b. Then
``C = Q_a (R_a D R_bᵀ) Q_bᵀ`` with D = diag(wᵢ/Σw ⊗ I_r), so each iteration is the SVD of a kr×kr core,
and every residual lives in the same coordinates: ``rᵢ = ‖U_d S_d V_dᵀ − R_a,ᵢ R_b,ᵢᵀ‖_F`` with R_a,ᵢ
member i's r columns of R_a. At VGGT-1B shapes (4096×1024, k = 10, r = 16) that is two thin QRs and
160×160 SVDs instead of 4096×1024 ones. Computed in float64 torch on the inputs' device; numpy in,
numpy out.

**Distance.** ``d(S, S′) = min ‖Sx − S′x′‖² / (‖Sx‖² + ‖S′x′‖²)``, the smallest generalised eigenvalue
of ``(PᵀP, blockdiag(SᵀS, S′ᵀS′))`` with P = [S, −S′]. Writing S = Q₁R₁, S′ = Q₂R₂ it equals
``1 − σ_max(Q₁ᵀQ₂) = 1 − cos θ₁`` (θ₁ the smallest principal angle), which is how it is computed:
from orthonormal bases of the factors, scale- and ``A → AX, B → BX⁻ᵀ``-invariant, in [0, 1]. This is
the squared form; without the squares the minimum is sin(θ₁/2). The column side compares A's (output)
spaces, the row side B's (input) spaces.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

Array = np.ndarray | torch.Tensor
DEFAULT_EPS = 1e-6          # relative to the RMS member norm: the fit is scale-invariant
DEFAULT_TOL = 1e-6          # stop when no weight changes by more than this, relatively
DEFAULT_MAX_ITER = 100
DEFAULT_RANK_BOUNDS = (4, 32)


@dataclass
class SharedSubspace:
    """The result of :func:`extract_shared` (arrays of the inputs' kind: numpy or torch)."""
    A: Array                     # [m, rank] = U Σ^½
    B: Array                     # [n, rank] = V Σ^½
    weights: Array               # [k] final IRLS weights, scaled to mean 1
    singular_values: Array       # the full spectrum of the final weighted mean C (min(m, n, kr) values)
    residuals: Array             # [k] ‖ABᵀ − AᵢBᵢᵀ‖_F
    rank: int
    iterations: int
    converged: bool
    objective: list[float] = field(default_factory=list)   # Σ (ε² + rᵢ²)^{α/2} after each iteration

    @property
    def U(self) -> Array:
        """Orthonormal column (output) basis [m, rank]."""
        return _like(self.A, _to_torch(self.A) / _to_torch(self.singular_values[:self.rank]).sqrt().clamp_min(1e-300))

    @property
    def V(self) -> Array:
        """Orthonormal row (input) basis [n, rank]."""
        return _like(self.B, _to_torch(self.B) / _to_torch(self.singular_values[:self.rank]).sqrt().clamp_min(1e-300))


def extract_shared(As: Sequence[Array], Bs: Sequence[Array], rank: int | str = 16, alpha: float = 1.0,
                   eps: float = DEFAULT_EPS, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL,
                   rank_bounds: tuple[int, int] = DEFAULT_RANK_BOUNDS) -> SharedSubspace:
    """The robust rank-``rank`` approximation A Bᵀ of the members' updates AᵢBᵢᵀ (see the module doc).

    ``rank="auto"`` picks d′ at the largest gap σⱼ/σⱼ₊₁ of the plain mean's spectrum within
    ``rank_bounds`` (:func:`choose_rank`). ``eps`` is relative to the RMS of the members' norms
    ‖AᵢBᵢᵀ‖_F, so scaling every member scales the result and leaves the weights alone."""
    if len(As) != len(Bs) or not As:
        raise ValueError(f"need as many A factors as B factors, at least one (got {len(As)} and {len(Bs)})")
    if not 0 < alpha <= 2:
        raise ValueError(f"alpha must be in (0, 2], got {alpha}")
    template = As[0]
    a = [_to_torch(x) for x in As]
    b = [_to_torch(x).to(a[0].device) for x in Bs]
    m, n = a[0].shape[0], b[0].shape[0]
    for i, (ai, bi) in enumerate(zip(a, b)):
        if ai.ndim != 2 or bi.ndim != 2 or ai.shape[0] != m or bi.shape[0] != n or ai.shape[1] != bi.shape[1]:
            raise ValueError(f"member {i}: A {tuple(ai.shape)} and B {tuple(bi.shape)} do not match "
                             f"[{m}, r] and [{n}, r]")
    ranks = [ai.shape[1] for ai in a]
    qa, ra = torch.linalg.qr(torch.cat(a, 1))           # [m, p], [p, K]  with K = Σ rᵢ
    qb, rb = torch.linalg.qr(torch.cat(b, 1))           # [n, q], [q, K]
    cols = np.cumsum([0] + ranks)
    # each member's update in core coordinates: R_a,ᵢ R_b,ᵢᵀ, [k, p, q]
    members = torch.stack([ra[:, s:e] @ rb[:, s:e].T for s, e in zip(cols[:-1], cols[1:])])
    k = len(a)
    member_norms = members.flatten(1).norm(dim=1)
    # floored: a layer every member left at zero still gets finite (equal) weights
    eps_abs = max(eps * float(member_norms.pow(2).mean().sqrt()), 1e-150)
    max_rank = min(members.shape[1], members.shape[2])

    def fit(w: torch.Tensor, d: int):
        core = torch.einsum("i,ipq->pq", w / w.sum(), members)
        u, s, vh = torch.linalg.svd(core, full_matrices=False)
        approx = (u[:, :d] * s[:d]) @ vh[:d]
        residuals = (approx.unsqueeze(0) - members).flatten(1).norm(dim=1)
        return u, s, vh, residuals

    if rank == "auto":
        _, s0, _, _ = fit(torch.ones(k, dtype=members.dtype, device=members.device), max_rank)
        rank = choose_rank(s0, *rank_bounds)
    if not isinstance(rank, int) or not 1 <= rank <= max_rank:
        raise ValueError(f"rank must be 'auto' or an integer in [1, {max_rank}] "
                         f"(min(m, n, total member rank)), got {rank!r}")

    w = torch.ones(k, dtype=members.dtype, device=members.device)
    objective, converged, iterations = [], False, 0
    for iterations in range(1, max_iter + 1):
        u, s, vh, residuals = fit(w, rank)
        objective.append(float((eps_abs ** 2 + residuals ** 2).pow(alpha / 2).sum()))
        new_w = (eps_abs ** 2 + residuals ** 2).pow(-(2 - alpha) / 2)
        new_w = new_w / new_w.mean()
        change = float(((new_w - w).abs() / w).max())
        w = new_w
        if change <= tol:
            converged = True
            break
    # A, B (and the spectrum) from the final weights, so that A Bᵀ is the fit the weights describe
    u, s, vh, residuals = fit(w, rank)
    root = s[:rank].sqrt()
    A = (qa @ u[:, :rank]) * root
    B = (qb @ vh[:rank].T) * root
    return SharedSubspace(A=_like(template, A), B=_like(template, B), weights=_like(template, w),
                          singular_values=_like(template, s), residuals=_like(template, residuals), rank=rank,
                          iterations=iterations, converged=converged, objective=objective)


def choose_rank(singular_values: Array, low: int = DEFAULT_RANK_BOUNDS[0], high: int = DEFAULT_RANK_BOUNDS[1]) -> int:
    """d′ at the spectrum's cliff: the j in [low, high] with the largest σⱼ/σⱼ₊₁ (1-based; keeping j
    directions). Bounds are clipped to the spectrum; values at round-off level count as zero."""
    s = np.asarray(_to_torch(singular_values).cpu(), dtype=np.float64)
    if s.size < 2:
        return int(s.size)
    high = min(high, s.size - 1)
    low = max(1, min(low, high))
    floor = max(s[0], 1e-300) * 1e-12
    s = np.maximum(s, floor)
    ratios = s[low - 1:high] / s[low:high + 1]
    return int(low + np.argmax(ratios))


def orthonormal_basis(S: Array, rtol: float = 1e-10) -> torch.Tensor:
    """An orthonormal basis (float64 torch) of the column space of S, numerically null directions dropped."""
    s = _to_torch(S)
    u, sv, _ = torch.linalg.svd(s, full_matrices=False)
    if sv.numel() == 0 or sv[0] == 0:
        return u[:, :0]
    return u[:, sv > rtol * sv[0]]


def subspace_distance(A1: Array, B1: Array, A2: Array, B2: Array, side: str = "column") -> float:
    """``d(S, S′) = 1 − cos θ₁`` between the column spaces of A1 and A2 (``side="column"``, the output
    side) or of B1 and B2 (``side="row"``, the input side); 0 for a shared direction, 1 for orthogonal
    subspaces. See the module doc for why this is the paper's generalised-eigenvalue distance."""
    if side == "column":
        s1, s2 = A1, A2
    elif side == "row":
        s1, s2 = B1, B2
    else:
        raise ValueError(f"side must be 'column' or 'row', got {side!r}")
    q1, q2 = orthonormal_basis(s1), orthonormal_basis(s2)
    q2 = q2.to(q1.device)
    if q1.shape[0] != q2.shape[0]:
        raise ValueError(f"the subspaces live in spaces of different sizes ({q1.shape[0]} and {q2.shape[0]})")
    if q1.shape[1] == 0 or q2.shape[1] == 0:
        raise ValueError("a subspace is empty (all-zero factor)")
    cosine = float(torch.linalg.matrix_norm(q1.T @ q2, ord=2))
    return min(1.0, max(0.0, 1.0 - cosine))


def chance_distance(n: int, d1: int, d2: int | None = None, samples: int = 200, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of :func:`subspace_distance` between independent uniformly random
    d1- and d2-dimensional subspaces of ℝⁿ (Monte Carlo, ``samples`` pairs, its own generator)."""
    d2 = d1 if d2 is None else d2
    if d1 + d2 > n:
        return 0.0, 0.0                       # they must intersect
    g = torch.Generator().manual_seed(seed)
    q1 = torch.linalg.qr(torch.randn(samples, n, d1, generator=g, dtype=torch.float64))[0]
    q2 = torch.linalg.qr(torch.randn(samples, n, d2, generator=g, dtype=torch.float64))[0]
    distances = 1.0 - torch.linalg.matrix_norm(q1.transpose(1, 2) @ q2, ord=2)
    return float(distances.mean()), float(distances.std()) if samples > 1 else 0.0


def energy_share(update_A: Array, update_B: Array, basis: Array, side: str = "column") -> float:
    """Share of the Frobenius energy of ΔW = A Bᵀ inside span(basis) on one side:
    ‖Qᵀ ΔW‖²/‖ΔW‖² (column side) or ‖ΔW Q‖²/‖ΔW‖² (row side), from the factors."""
    inside, total = energy_inside(update_A, update_B, orthonormal_basis(basis), side)
    return inside / total if total else float("nan")


def energy_inside(update_A: Array, update_B: Array, q: torch.Tensor, side: str = "column") -> tuple[float, float]:
    """(energy of ΔW = A Bᵀ inside span(q) on one side, total energy ‖ΔW‖²_F) for an orthonormal ``q``
    (as :func:`orthonormal_basis` gives), from the factors; callers with many updates per basis
    orthonormalise it once."""
    a, b = _to_torch(update_A).to(q.device), _to_torch(update_B).to(q.device)
    if side == "row":
        a, b = b, a
    return _factored_norm2(q.T @ a, b), _factored_norm2(a, b)


def _factored_norm2(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a bᵀ‖_F² = tr((aᵀa)(bᵀb)) without forming a bᵀ."""
    return float(((a.T @ a) * (b.T @ b)).sum())


def _to_torch(x: Array) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if not torch.is_tensor(x) else x.detach()
    return t.to(torch.float64)


def _like(template: Array, value: torch.Tensor) -> Array:
    """Return ``value`` as the template's kind: numpy for numpy inputs, torch (on its device) otherwise."""
    if torch.is_tensor(template):
        return value
    return value.cpu().numpy()


__all__ = ["SharedSubspace", "extract_shared", "subspace_distance", "choose_rank", "chance_distance",
           "orthonormal_basis", "energy_share", "energy_inside"]
