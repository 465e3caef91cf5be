"""Mining benchmark: the factored shared-subspace IRLS (mining.subspace.extract_shared) against a dense
reference and against peft's SVD merge, per VGGT-1B layer shape, and the whole-model extraction time.

    python bench/mining.py                     # full VGGT-1B shapes, whole model (192 layers x 4 attributes)
    python bench/mining.py --quick             # dims / 8, 1 repeat, whole model cut to 3 blocks (< 1 min)
    python bench/mining.py --layers fc1 --no-whole-model        # one full-size layer only
    python bench/mining.py --dense-iters 3     # cap the dense reference's iterations (time per iteration shown)

Data: per layer, k members of rank r drawn with a seeded numpy generator: a shared rank-d′ update
U₀ S V₀ᵀ (each member gets it through its own random orthogonal mix Qᵢ, Aᵢ = U₀S^½Qᵢ, Bᵢ = V₀S^½Qᵢ) plus
member noise on both factors (--noise, relative), so there is a real subspace to find; --outliers
replaces the last members by unrelated, larger updates.

Table 1 (per layer shape): "factored" is extract_shared(alpha=--alpha) (median of --repeats runs after a
warm-up); "dense" is the same IRLS on m×n matrices inside this script (ΔWᵢ = AᵢBᵢᵀ built, C = Σwᵢ ΔWᵢ/Σwᵢ,
reduced SVD by torch.linalg.svd in float64, dense residual norms, same weight update and stopping rule),
run for --dense-iters iterations (default: as many as the factored run needed) and --dense-repeats times;
when capped below that, its total is estimated as setup + (factored iterations + 1) × time per fit.
"peft" is peft's add_weighted_adapter(combination_type="svd", svd_rank=d′, weights 1/k, its defaults
otherwise, i.e. full_matrices=True) on a one-layer nn.Linear model with k LoRA adapters holding the same
factors in float32. Agreement: largest principal angle (scipy.linalg.subspace_angles, degrees) between
column (output) spaces and between row (input) spaces, and max |weight difference| factored vs dense;
peft is compared with the factored alpha=2 solution (the same plain mean) and the alpha=1 solution.

Table 2: whole-model extraction, 48 blocks × [qkv, proj, fc1, fc2] × 4 attributes, factored only,
member factors generated per layer outside the timed region. The issue's goals (factored ≥ 100× faster
than dense, whole model < 60 s on two cores) are checked against the measured numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (whose mining.py is this file)

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402

from mining.subspace import DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, extract_shared  # noqa: E402

# VGGT-1B transformer block linears: name -> (out features m, in features n)
LAYERS = {"qkv": (3072, 1024), "proj": (1024, 1024), "fc1": (4096, 1024), "fc2": (1024, 4096)}
BLOCKS = 48          # 24 frame + 24 global blocks
ATTRIBUTES = 4
SPEEDUP_GOAL = 100.0
WHOLE_MODEL_GOAL_S = 60.0


def cpu_name() -> str:
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name or 'unknown CPU'} ({platform.machine()})"


def make_members(m: int, n: int, k: int, r: int, d: int, rng: np.random.Generator, noise: float = 0.3,
                 outliers: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """k rank-r factor pairs (Aᵢ [m, r], Bᵢ [n, r], float64) sharing a rank-d update; see the module doc."""
    d = min(d, r, m, n)
    u0 = np.linalg.qr(rng.standard_normal((m, d)))[0]
    v0 = np.linalg.qr(rng.standard_normal((n, d)))[0]
    root = np.sqrt(np.linspace(1.0, 0.5, d))
    a0, b0 = u0 * root, v0 * root
    As, Bs = [], []
    for i in range(k):
        if i >= k - outliers:                       # unrelated, larger update
            As.append(rng.standard_normal((m, r)) * 2.0 / np.sqrt(m))
            Bs.append(rng.standard_normal((n, r)) * 2.0 / np.sqrt(n))
            continue
        q = np.linalg.qr(rng.standard_normal((d, d)))[0]
        a = np.hstack([a0 @ q, rng.standard_normal((m, r - d)) / np.sqrt(m)])
        b = np.hstack([b0 @ q, rng.standard_normal((n, r - d)) / np.sqrt(n)])
        a += rng.standard_normal((m, r)) * noise / np.sqrt(m)
        b += rng.standard_normal((n, r)) * noise / np.sqrt(n)
        As.append(a)
        Bs.append(b)
    return As, Bs


def dense_irls(As, Bs, rank, alpha=1.0, eps=DEFAULT_EPS, max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL):
    """The same IRLS as extract_shared on dense m×n float64 matrices. Returns U [m, rank], V [n, rank],
    weights, iterations run, converged, setup seconds, per-fit seconds (list), total seconds."""
    t_start = time.perf_counter()
    W = torch.stack([torch.from_numpy(a) @ torch.from_numpy(b).T for a, b in zip(As, Bs)])   # [k, m, n]
    eps_abs = eps * float(W.flatten(1).norm(dim=1).pow(2).mean().sqrt())
    k = W.shape[0]
    setup = time.perf_counter() - t_start
    fit_times = []

    def fit(w):
        t0 = time.perf_counter()
        C = torch.einsum("i,imn->mn", w / w.sum(), W)
        U, S, Vh = torch.linalg.svd(C, full_matrices=False)
        approx = (U[:, :rank] * S[:rank]) @ Vh[:rank]
        residuals = torch.stack([torch.linalg.matrix_norm(approx - W[i]) for i in range(k)])
        fit_times.append(time.perf_counter() - t0)
        return U, S, Vh, residuals

    w = torch.ones(k, dtype=torch.float64)
    converged, iterations = False, 0
    for iterations in range(1, max_iter + 1):
        _, _, _, residuals = fit(w)
        new_w = (eps_abs ** 2 + residuals ** 2).pow(-(2 - alpha) / 2)
        new_w = new_w / new_w.mean()
        change = float(((new_w - w).abs() / w).max())
        w = new_w
        if change <= tol:
            converged = True
            break
    U, _, Vh, _ = fit(w)
    total = time.perf_counter() - t_start
    return U[:, :rank].numpy(), Vh[:rank].T.numpy(), w.numpy(), iterations, converged, setup, fit_times, total


def peft_merge(As, Bs, rank, repeats):
    """Median seconds of peft's add_weighted_adapter(svd) over ``repeats`` calls, and the merged factors
    (column factor [m, rank], row factor [n, rank]) as numpy. None if peft is not installed."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return None
    m, n = As[0].shape[0], Bs[0].shape[0]
    k, r = len(As), As[0].shape[1]
    base = torch.nn.Sequential(torch.nn.Linear(n, m, bias=False))
    config = LoraConfig(r=r, lora_alpha=r, target_modules=["0"], lora_dropout=0.0)
    names = [f"m{i}" for i in range(k)]
    model = get_peft_model(base, config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, LoraConfig(r=r, lora_alpha=r, target_modules=["0"], lora_dropout=0.0))
    layer = model.base_model.model[0]
    with torch.no_grad():
        for name, a, b in zip(names, As, Bs):
            layer.lora_B[name].weight.copy_(torch.from_numpy(a))         # [m, r]
            layer.lora_A[name].weight.copy_(torch.from_numpy(b.T))       # [r, n]
    times = []
    for rep in range(repeats + 1):                                       # the first is a warm-up
        if "merged" in model.peft_config:
            model.delete_adapter("merged")
        t0 = time.perf_counter()
        model.add_weighted_adapter(names, [1.0 / k] * k, "merged", combination_type="svd", svd_rank=rank)
        if rep:
            times.append(time.perf_counter() - t0)
    col = layer.lora_B["merged"].weight.detach().double().numpy()         # [m, rank]
    row = layer.lora_A["merged"].weight.detach().double().numpy().T       # [n, rank]
    return statistics.median(times), col, row


def angle(x: np.ndarray, y: np.ndarray) -> float:
    """Largest principal angle between the column spaces of x and y, degrees."""
    return float(np.degrees(np.max(scipy.linalg.subspace_angles(x, y))))


def timed_extract(As, Bs, args, alpha, repeats):
    times, result = [], None
    for rep in range(repeats + 1):                                       # the first is a warm-up
        t0 = time.perf_counter()
        result = extract_shared(As, Bs, rank=args.rank, alpha=alpha, eps=args.eps, max_iter=args.max_iter, tol=args.tol)
        if rep:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def shape_of(name: str, shrink: int) -> tuple[int, int]:
    m, n = LAYERS[name]
    return max(1, m // shrink), max(1, n // shrink)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.4f}" if seconds < 1 else f"{seconds:.2f}"


def per_layer(args) -> list[float]:
    """Table 1; returns the factored-vs-dense speed-ups."""
    timing, agreement, speedups = [], [], []
    for li, name in enumerate(args.layers):
        m, n = shape_of(name, args.shrink)
        rng = np.random.default_rng([args.seed, li])
        As, Bs = make_members(m, n, args.k, args.r, args.rank, rng, args.noise, args.outliers)

        t_fact, fact = timed_extract(As, Bs, args, args.alpha, args.repeats)
        dense_iters = args.dense_iters or fact.iterations
        runs = [dense_irls(As, Bs, args.rank, args.alpha, args.eps, dense_iters, args.tol)
                for _ in range(args.dense_repeats)]
        U, V, w_dense, it_dense, conv_dense, setup, fit_times, _ = runs[-1]
        t_dense = statistics.median(run[-1] for run in runs)
        per_fit = statistics.median(t for run in runs for t in run[6])
        capped = it_dense < fact.iterations and not conv_dense
        t_dense_full = (statistics.median(run[5] for run in runs) + (fact.iterations + 1) * per_fit) if capped else t_dense
        speedup = t_dense_full / t_fact
        speedups.append(speedup)

        peft = None if args.no_peft else peft_merge(As, Bs, args.rank, args.repeats)
        plain = extract_shared(As, Bs, rank=args.rank, alpha=2.0, eps=args.eps, max_iter=args.max_iter,
                               tol=args.tol) if peft else None

        timing.append(
            f"| {name} | {m}×{n} | {fmt_s(t_fact)} | {fact.iterations}{'' if fact.converged else ' (max)'} | "
            f"{fmt_s(t_dense)} | {it_dense}{'' if conv_dense else ' (cap)' if capped else ' (max)'} | {fmt_s(per_fit)} | "
            f"{fmt_s(t_dense_full)}{' est.' if capped else ''} | {speedup:,.{0 if speedup >= 10 else 1}f}× | "
            + (f"{fmt_s(peft[0])} | {peft[0] / t_fact:,.1f}× |" if peft else "— | — |"))
        agree = (f"| {name} | {angle(np.asarray(fact.A), U):.2e} | {angle(np.asarray(fact.B), V):.2e} | "
                 f"{np.max(np.abs(np.asarray(fact.weights) - w_dense)):.1e} | "
                 f"{np.min(fact.weights):.3f}–{np.max(fact.weights):.3f} | ")
        if peft:
            agree += (f"{angle(peft[1], plain.A):.2e} / {angle(peft[2], plain.B):.2e} | "
                      f"{angle(peft[1], fact.A):.2e} / {angle(peft[2], fact.B):.2e} |")
        else:
            agree += "— | — |"
        agreement.append(agree)
        print(f"  done {name} ({m}×{n})", file=sys.stderr, flush=True)

    print(f"\nPer layer shape: k = {args.k} members of rank r = {args.r}, d′ = {args.rank}, alpha = {args.alpha:g}, "
          f"noise {args.noise:g}, {args.outliers} outlier(s); factored and peft: median of {args.repeats} after a "
          f"warm-up; dense (float64, reduced SVD): median of {args.dense_repeats} run(s)"
          + (f", capped at {args.dense_iters} iteration(s)" if args.dense_iters else ", as many iterations as factored")
          + "\n")
    print("| layer | m×n | factored s | iters | dense s | dense iters | dense s/fit | dense s (full) | "
          "speed-up vs dense | peft svd merge s | peft / factored |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(timing))
    print("\n'dense s/fit': one weighted mean + SVD + residuals; a run does iterations + 1 fits plus building ΔWᵢ. "
          "'est.' = setup + (factored iterations + 1) × s/fit, when the dense run was capped.\n")
    print("| layer | factored vs dense: column ° | row ° | max abs Δweight | factored weights (min–max) | "
          "peft vs factored α=2: col ° / row ° | peft vs factored α=1: col ° / row ° |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(agreement))
    return speedups


def whole_model(args) -> float:
    """Table 2; returns the total seconds."""
    names = list(LAYERS)
    totals = {name: [0.0, 0, 0, 0] for name in names}     # seconds, calls, iterations, not converged
    for block in range(args.blocks):
        for li, name in enumerate(names):
            m, n = shape_of(name, args.shrink)
            for attribute in range(ATTRIBUTES):
                rng = np.random.default_rng([args.seed, 1000 + block, li, attribute])
                As, Bs = make_members(m, n, args.k, args.r, args.rank, rng, args.noise, args.outliers)
                t0 = time.perf_counter()
                result = extract_shared(As, Bs, rank=args.rank, alpha=args.alpha, eps=args.eps,
                                        max_iter=args.max_iter, tol=args.tol)
                dt = time.perf_counter() - t0
                t = totals[name]
                t[0] += dt
                t[1] += 1
                t[2] += result.iterations
                t[3] += not result.converged
        print(f"  block {block + 1}/{args.blocks}", file=sys.stderr, flush=True)
    print(f"\nWhole model, factored only: {args.blocks} blocks × {len(names)} layers × {ATTRIBUTES} attributes, "
          f"k = {args.k}, r = {args.r}, d′ = {args.rank}, alpha = {args.alpha:g} (generation not timed)\n")
    print("| layer | m×n | extractions | total s | mean ms | mean iters | not converged |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        s, calls, its, nc = totals[name]
        m, n = shape_of(name, args.shrink)
        print(f"| {name} | {m}×{n} | {calls} | {s:.2f} | {1000 * s / calls:.1f} | {its / calls:.1f} | {nc} |")
    total = sum(t[0] for t in totals.values())
    calls = sum(t[1] for t in totals.values())
    print(f"| **all** | | {calls} | **{total:.2f}** | {1000 * total / calls:.1f} | "
          f"{sum(t[2] for t in totals.values()) / calls:.1f} | {sum(t[3] for t in totals.values())} |")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="dims / 8, 1 repeat, whole model cut to 3 blocks")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5; quick 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    ap.add_argument("--shrink", type=int, default=None, help="divide every layer dim by this (default 1; quick 8)")
    ap.add_argument("--blocks", type=int, default=None, help=f"blocks in the whole-model table (default {BLOCKS}; quick 3)")
    ap.add_argument("--no-whole-model", action="store_true")
    ap.add_argument("--no-peft", action="store_true")
    ap.add_argument("--dense-iters", type=int, default=0,
                    help="cap on the dense reference's iterations (0: as many as the factored run needed)")
    ap.add_argument("--dense-repeats", type=int, default=1)
    ap.add_argument("--k", type=int, default=10, help="members per cluster")
    ap.add_argument("--r", type=int, default=16, help="member LoRA rank")
    ap.add_argument("--rank", type=int, default=16, help="d′, the shared rank")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--noise", type=float, default=0.3, help="member noise relative to the shared factors")
    ap.add_argument("--outliers", type=int, default=0, help="members replaced by unrelated larger updates")
    ap.add_argument("--eps", type=float, default=DEFAULT_EPS)
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL)
    ap.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER)
    args = ap.parse_args()
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    args.shrink = args.shrink if args.shrink is not None else (8 if args.quick else 1)
    args.blocks = args.blocks if args.blocks is not None else (3 if args.quick else BLOCKS)

    torch.set_num_threads(args.threads)
    try:
        import peft
        peft_version = peft.__version__
    except ImportError:
        peft_version, args.no_peft = "not installed", True
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU: {cpu_name()}, "
          f"{os.cpu_count()} logical CPUs, load average {load:.2f} at start; peft {peft_version}; "
          f"float64 (peft: float32); seed {args.seed}" + (f"; dims / {args.shrink}" if args.shrink > 1 else ""))

    extract_shared([np.ones((8, 2))] * 2, [np.ones((8, 2))] * 2, rank=1)     # warm-up (lazy init)
    torch.linalg.svd(torch.randn(64, 32, dtype=torch.float64), full_matrices=False)

    speedups = per_layer(args)
    total = None if args.no_whole_model else whole_model(args)

    full = args.shrink == 1 and args.k == 10 and args.r == 16 and args.rank == 16
    note = "" if full else " (NOT the issue's configuration: shapes/k/r/d′ differ)"
    print("\nGoals")
    worst = min(speedups)
    print(f"- factored ≥ {SPEEDUP_GOAL:.0f}× faster than dense on every layer: smallest speed-up {worst:,.{0 if worst >= 10 else 1}f}× → "
          f"{'MET' if worst >= SPEEDUP_GOAL else 'NOT met'}{note}"
          + ("" if set(args.layers) == set(LAYERS) else f" (layers: {', '.join(args.layers)})"))
    if total is None:
        print("- whole model < 60 s: not run (--no-whole-model)")
    else:
        whole = full and args.blocks == BLOCKS
        scaled = total * BLOCKS / args.blocks
        print(f"- whole model < {WHOLE_MODEL_GOAL_S:.0f} s on two cores: {total:.1f} s for {args.blocks} block(s)"
              + ("" if args.blocks == BLOCKS else f" (×{BLOCKS}/{args.blocks} → {scaled:.1f} s)")
              + f" on {torch.get_num_threads()} thread(s) → {'MET' if scaled < WHOLE_MODEL_GOAL_S else 'NOT met'}"
              + ("" if whole else " (NOT the issue's configuration)")
              + ("" if torch.get_num_threads() == 2 else " (not 2 threads)"))


if __name__ == "__main__":
    main()
