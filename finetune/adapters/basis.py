"""The three basis methods on the subspace adapter (adapters/subspace.py): ``ours`` (the mined attribute
basis), ``psv`` (each W's top singular vectors) and ``random`` (random orthonormal A, B). All three go
through one file format and one code path; only where A and B come from differs. The psv and random
bases are written once per (base model, layers, dimension, seed) into the method context's workdir."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from mining.basis import BasisError, read_basis

from ..bases import psv_basis, random_basis
from ..methods import Adapted, MethodContext, MethodError
from .subspace import apply_basis, save_middle


def basis_file(model: torch.nn.Module, ctx: MethodContext) -> Path:
    """The basis this method trains in: the mined file for ``ours``, a generated one otherwise."""
    if ctx.method == "ours":
        if ctx.basis is None:
            raise MethodError("ours needs a mined basis (python cli.py mine)")
        return Path(ctx.basis)
    pattern = "|".join(re.escape(t) for t in ctx.targets)
    tag = f"{ctx.method}_d{ctx.rank}" + (f"_s{ctx.seed}" if ctx.method == "random" else "")
    path = ctx.workdir / f"{tag}_{(ctx.checkpoint_sha256 or 'unknown')[:12]}_{len(ctx.targets)}layers.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if ctx.method == "psv":
                psv_basis(model, path, ctx.rank, targets=pattern, checkpoint_sha256=ctx.checkpoint_sha256)
            else:
                random_basis(model, path, ctx.rank, targets=pattern, seed=ctx.seed,
                             checkpoint_sha256=ctx.checkpoint_sha256)
        except ValueError as e:
            raise MethodError(f"{ctx.method}: {e}") from None
    return path


def prepare(model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    path = basis_file(model, ctx)
    basis = read_basis(path)
    not_covered = sorted(set(ctx.targets) - set(basis.modules))
    if not_covered:
        raise BasisError(f"{path}: does not cover target layer {not_covered[0]} "
                         f"({len(not_covered)} of {len(ctx.targets)} not covered)")
    trainable = apply_basis(model, basis, checkpoint_sha256=ctx.checkpoint_sha256)
    params = [p for n, p in model.named_parameters() if n.endswith(".M")]

    def save(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_middle(model, folder / "middle.safetensors", path)

    dims = [int(basis.A[m].shape[1]) for m in basis.modules]
    return Adapted(model=model, params=params, trainable=trainable, save=save,
                   info={"basis": str(path), "attributes": basis.attributes, "mean_dim": sum(dims) / len(dims)})
