"""Member-level attribute signal: are two members of one attribute more alike than members of two
different attributes? The most sensitive of the controls, because it needs no extraction at all.

    stats = member_affinity(clusters, layers, attributes)     # -> extract.json["member_affinity"]

Subspace distances between extracted subspaces look at the closest pair of directions, so one generic
direction shared by every member makes every pair look alike. Here each pair of members (i, j) is
compared directly, per layer, from the factors (no out×in matrix is formed), then averaged over layers:

- ``cosine``: ⟨ΔWᵢ, ΔWⱼ⟩_F / (‖ΔWᵢ‖ ‖ΔWⱼ‖), the signed similarity of the whole updates;
- ``centered``: the same after subtracting the mean update of all attribute members from each, i.e.
  with the generic part every member shares taken out (computed by double-centring the Gram matrix);
- ``column`` / ``row``: the cosine between the members' output (ΔWΔWᵀ) or input (ΔWᵀΔW) covariance
  matrices, an energy-weighted subspace overlap that ignores signs.

For each measure: the mean similarity within attributes and across attributes (off the diagonal,
attribute members only), a permutation test of "within > across" (attribute labels shuffled, cluster
sizes kept) and the leave-one-out accuracy of assigning each member to the attribute whose other members
it resembles most (chance: 1 / number of attributes). A p-value well below 0.05 says the attribute
leaves a mark on the updates, whatever the extracted subspaces show; a large p-value says the members
of one attribute are no more alike than any two members.
"""
from __future__ import annotations

import numpy as np
import torch

MEASURES = ("cosine", "centered", "column", "row")
PERMUTATIONS = 10000


def pair_matrices(factors: list[dict[str, tuple]], layers: list[str], centre: list[int]) -> dict[str, np.ndarray]:
    """Per measure, the [k, k] similarity matrix of the members averaged over layers; ``centre`` are the
    indices whose mean update is subtracted for the ``centered`` measure."""
    k = len(factors)
    sums = {m: np.zeros((k, k)) for m in MEASURES}
    used = 0
    for layer in layers:
        a = torch.stack([torch.as_tensor(np.asarray(f[layer][0]), dtype=torch.float64) for f in factors])  # [k, m, r]
        b = torch.stack([torch.as_tensor(np.asarray(f[layer][1]), dtype=torch.float64) for f in factors])  # [k, n, r]
        aa = torch.einsum("imr,jms->ijrs", a, a)          # Aᵢᵀ Aⱼ  [k, k, r, r]
        bb = torch.einsum("inr,jns->ijrs", b, b)          # Bᵢᵀ Bⱼ
        gram = (aa * bb).sum((2, 3))                      # ⟨ΔWᵢ, ΔWⱼ⟩_F = tr(AᵢᵀAⱼ (BᵢᵀBⱼ)ᵀ)
        if not torch.all(torch.diagonal(gram) > 0):
            continue                                      # a member left this layer at zero: nothing to compare
        sums["cosine"] += _cosines(gram)
        sums["centered"] += _cosines(_double_centre(gram, centre))
        sums["column"] += _cosines(_covariance_gram(aa, bb))   # ⟨ΔWᵢΔWᵢᵀ, ΔWⱼΔWⱼᵀ⟩
        sums["row"] += _cosines(_covariance_gram(bb, aa))
        used += 1
    if not used:
        return {m: np.full((k, k), np.nan) for m in MEASURES}
    return {m: v / used for m, v in sums.items()}


def _covariance_gram(aa: torch.Tensor, bb: torch.Tensor) -> torch.Tensor:
    """⟨AᵢGᵢAᵢᵀ, AⱼGⱼAⱼᵀ⟩_F with Gᵢ = BᵢᵀBᵢ: tr(Gᵢ X Gⱼ Xᵀ), X = AᵢᵀAⱼ."""
    g = torch.diagonal(bb).permute(2, 0, 1)              # [k, r, r]: Gᵢ
    return torch.einsum("irs,ijst,jtu,ijru->ij", g, aa, g, aa)


def _double_centre(gram: torch.Tensor, centre: list[int]) -> torch.Tensor:
    """Gram matrix of ΔWᵢ − mean_{c ∈ centre} ΔW_c from the Gram matrix of the ΔWᵢ."""
    mean_col = gram[:, centre].mean(1, keepdim=True)      # ⟨ΔWᵢ, mean⟩
    mean_mean = gram[centre][:, centre].mean()             # ‖mean‖²
    return gram - mean_col - mean_col.T + mean_mean


def _cosines(gram: torch.Tensor) -> np.ndarray:
    d = torch.diagonal(gram).clamp_min(1e-300).sqrt()
    return (gram / d[:, None] / d[None, :]).numpy()


def within_across(sim: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return float(sim[same & off].mean()), float(sim[~same].mean())


def permutation_p(sim: np.ndarray, labels: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """One-sided p-value of (within − across) under shuffled labels (cluster sizes kept)."""
    w, a = within_across(sim, labels)
    observed = w - a
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        w, a = within_across(sim, rng.permutation(labels))
        hits += (w - a) >= observed - 1e-12
    return (hits + 1) / (permutations + 1)


def loo_accuracy(sim: np.ndarray, labels: np.ndarray) -> float:
    """Share of members whose mean similarity to their own attribute's other members beats every other
    attribute's mean (ties count as misses)."""
    classes = list(dict.fromkeys(labels.tolist()))
    hits = 0
    for i, own in enumerate(labels):
        score = {}
        for c in classes:
            idx = [j for j in range(len(labels)) if labels[j] == c and j != i]
            score[c] = sim[i, idx].mean() if idx else -np.inf
        best = max(score.values())
        hits += score[own] == best and sum(v == best for v in score.values()) == 1
    return hits / len(labels)


def member_affinity(clusters: dict, layers: list[str], attributes: list[str], seed: int = 0) -> dict:
    """Similarity matrices of every member (attribute clusters first, then any others such as ``mixed``)
    and the within/across statistics over the attribute members (see the module doc)."""
    names, labels, factors = [], [], []
    order = [a for a in attributes if a in clusters] + [c for c in clusters if c not in attributes]
    for c in order:
        names += clusters[c].members
        labels += [c] * len(clusters[c].members)
        factors += clusters[c].factors
    labels = np.asarray(labels)
    attr_ix = [i for i, lab in enumerate(labels) if lab in attributes]
    matrices = pair_matrices(factors, layers, centre=attr_ix)
    stats = {}
    sub_labels = labels[attr_ix]
    enough = len(set(sub_labels.tolist())) >= 2 and all((sub_labels == c).sum() >= 2 for c in set(sub_labels.tolist()))
    for measure, sim in matrices.items():
        sub = sim[np.ix_(attr_ix, attr_ix)]
        if not enough or not np.all(np.isfinite(sub)):
            stats[measure] = {"within": float("nan"), "across": float("nan"), "p": float("nan"), "loo_accuracy": float("nan")}
            continue
        w, a = within_across(sub, sub_labels)
        stats[measure] = {"within": w, "across": a, "p": permutation_p(sub, sub_labels, seed=seed),
                          "loo_accuracy": loo_accuracy(sub, sub_labels)}
    return {"members": names, "labels": labels.tolist(), "matrices": {m: v.tolist() for m, v in matrices.items()},
            "stats": stats, "chance_accuracy": 1.0 / max(1, len(set(sub_labels.tolist()))),
            "permutations": PERMUTATIONS}


__all__ = ["MEASURES", "member_affinity", "pair_matrices", "permutation_p", "loo_accuracy", "within_across"]
