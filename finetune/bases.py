"""Bases that need no mining, in the same file format as the mined one (mining.basis.write_basis), so
that fine-tuning reads every basis through one code path:

    psv_basis(model, "bases/psv16.safetensors", 16)          # top singular vectors of each W (LoRA-XS-like)
    random_basis(model, "bases/rand16.safetensors", 16, seed=0)
    apply_basis(model, "bases/psv16.safetensors")

They are the paper's controls: does a mined attribute subspace beat the layer's own principal directions,
or any random subspace of the same size?
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mining.basis import BasisSummary, write_basis
from mining.config import DEFAULT_TARGETS

Factors = Callable[[str, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def psv_basis(model: nn.Module, path: str | Path, dim: int, targets: str = DEFAULT_TARGETS,
              checkpoint_sha256: str | None = None) -> BasisSummary:
    """Per target ``nn.Linear``: A = the top-``dim`` left singular vectors of W [out, in], B = the top-``dim``
    right ones (attribute ``"psv"``). ``targets`` is a regular expression over full module names."""
    def factors(name, weight, d):
        # float64 SVD: float32 mixes up close singular values and then the top-d subspace itself
        U, _, Vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
        return U[:, :d], Vh[:d].T
    return _write(model, path, dim, targets, "psv", factors, checkpoint_sha256)


def random_basis(model: nn.Module, path: str | Path, dim: int, targets: str = DEFAULT_TARGETS, seed: int = 0,
                 checkpoint_sha256: str | None = None) -> BasisSummary:
    """Random orthonormal A [out, dim] and B [in, dim] per target layer (attribute ``"random"``): the
    Q factors of seeded Gaussians, which are uniformly (Haar) distributed subspaces. Each layer draws from
    its own generator seeded by (seed, module name), so a layer's basis depends on the seed and its name
    only, not on which other layers are targeted."""
    def factors(name, weight, d):
        g = torch.Generator().manual_seed(_module_seed(seed, name))
        out_features, in_features = weight.shape
        A = torch.linalg.qr(torch.randn(out_features, d, generator=g, dtype=torch.float64))[0]
        B = torch.linalg.qr(torch.randn(in_features, d, generator=g, dtype=torch.float64))[0]
        return A, B
    return _write(model, path, dim, targets, "random", factors, checkpoint_sha256)


def target_linears(model: nn.Module, targets: str) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose full name matches ``targets`` (a regex, matched whole), in model order."""
    try:
        regex = re.compile(targets)
    except re.error as exc:
        raise ValueError(f"targets {targets!r}: not a regular expression ({exc})") from None
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and regex.fullmatch(n)}
    if not found:
        raise ValueError(f"targets {targets!r} match no nn.Linear of the model")
    return found


def _write(model: nn.Module, path: str | Path, dim: int, targets: str, attribute: str, factors: Factors,
           checkpoint_sha256: str | None) -> BasisSummary:
    """Check ``dim`` against every target layer before computing anything, build the factors, write."""
    layers = target_linears(model, targets)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    for name, layer in layers.items():
        out_features, in_features = layer.weight.shape
        if dim > min(out_features, in_features):
            raise ValueError(f"dim {dim} is larger than min(out, in) = {min(out_features, in_features)} of "
                             f"{name} [{out_features}×{in_features}]; a {attribute} basis cannot have more "
                             "directions than the layer has")
    subspaces = {name: tuple(t.cpu() for t in factors(name, layer.weight, dim)) for name, layer in layers.items()}
    return write_basis(path, {attribute: subspaces}, attributes=[attribute],
                       model_config=getattr(model, "config", None), checkpoint_sha256=checkpoint_sha256)


def _module_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed from (seed, module name); sha256 because Python's hash() of a str is salted."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


__all__ = ["psv_basis", "random_basis", "target_linears"]
