"""The concatenated attribute basis: one safetensors file the fine-tuning package reads.

    from mining.basis import write_basis, read_basis, check_against_model, file_sha256
    summary = write_basis("out/basis.safetensors", subspaces, attributes=["camera", "lighting"],
                          model_config=model.config, checkpoint_sha256=file_sha256(ckpt))
    basis = read_basis("out/basis.safetensors")        # BasisError (one line) on anything malformed
    check_against_model(basis, model)                  # every module an nn.Linear of the right shape
    basis.A["aggregator.frame_blocks.0.attn.qkv"]      # [out, dA] float32, orthonormal columns

``subspaces`` maps attribute -> {module name (as in ``model.named_modules()``) -> (A [out, d′], B [in, d′])}
(numpy or torch), e.g. the ``A``/``B`` of :func:`mining.subspace.extract_shared`. Only modules covered by
*every* chosen attribute are written. Per module the chosen attributes' A's are concatenated in attribute
order and orthonormalised (float64, Gram–Schmidt in order, so earlier attributes keep their directions),
and likewise the B's. A new direction whose component outside the span kept so far is at most ``rtol`` of
its norm is numerically dependent: it is dropped and counted, per module and side.

**The two sides may keep different numbers of directions.** The file stores ``<module>.A [out, dA]`` and
``<module>.B [in, dB]``; usually dA == dB, but not always, so the trainable middle matrix M of an update
ΔW = A M Bᵀ is [dA, dB] and must be sized from the tensors, never from a single rank.

Header metadata (all strings): ``format`` = ``attrspace-basis/1``; ``attributes`` (JSON list);
``dims`` (JSON {attribute: {module: d′}}, the inputs' dims for the written modules); ``kept`` (JSON
{module: [dA, dB]}); ``dropped`` (JSON {module: [dropped on A, dropped on B]}); optionally
``model_config`` (JSON), ``checkpoint_sha256`` and ``members`` (JSON, stored as given).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from common.atomic import atomic_path

FORMAT = "attrspace-basis/1"
ORTHONORMAL_TOL = 1e-4          # float32 storage: anything looser than this is a broken file, not round-off
_REQUIRED = ("format", "attributes", "dims")
_JSON_KEYS = ("attributes", "dims", "kept", "dropped", "model_config", "members")

Array = np.ndarray | torch.Tensor


class BasisError(ValueError):
    """A basis file that cannot be read or does not fit the model; the message is one line naming the file."""


@dataclass
class BasisSummary:
    """What :func:`write_basis` wrote."""
    path: Path
    modules: list[str]
    directions_A: int                        # Σ dA over modules
    directions_B: int                        # Σ dB over modules
    dropped: dict[str, tuple[int, int]]      # module -> (dropped on A, dropped on B)
    trainable_params: int                    # Σ dA·dB: the size of all middle matrices M
    skipped: list[str] = field(default_factory=list)   # modules some chosen attribute lacks


@dataclass
class Basis:
    """A basis file as read by :func:`read_basis`."""
    A: dict[str, torch.Tensor]               # module -> [out, dA]
    B: dict[str, torch.Tensor]               # module -> [in, dB]
    attributes: list[str]
    dims: dict[str, dict[str, int]]
    metadata: dict[str, Any]                 # every header entry, JSON ones parsed
    path: Path

    @property
    def modules(self) -> list[str]:
        return list(self.A)


def write_basis(path: str | Path, subspaces: Mapping[str, Mapping[str, tuple[Array, Array]]], *,
                attributes: Sequence[str], model_config: Any = None, checkpoint_sha256: str | None = None,
                members: Any = None, rtol: float = 1e-6) -> BasisSummary:
    """Concatenate and orthonormalise the chosen attributes' subspaces per module; write them atomically.

    ``model_config`` may be a dict or anything with ``to_dict()`` (a ``VGGTConfig``). ``ValueError`` for
    unknown or repeated attributes, no module common to all of them, or factors whose shapes disagree."""
    path = Path(path)
    attributes = list(attributes)
    if not attributes or len(set(attributes)) != len(attributes):
        raise ValueError(f"attributes must be a non-empty list without repeats, got {attributes}")
    unknown = [a for a in attributes if a not in subspaces]
    if unknown:
        raise ValueError(f"attributes not in subspaces: {', '.join(unknown)} (have {', '.join(subspaces)})")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    # module order: the first attribute's (normally model order), so the file lists layers as the model does
    first = list(subspaces[attributes[0]])
    covered = [m for m in first if all(m in subspaces[a] for a in attributes)]
    skipped = sorted({m for a in attributes for m in subspaces[a]} - set(covered))
    if not covered:
        raise ValueError(f"no module is covered by every one of {attributes}")

    tensors: dict[str, np.ndarray] = {}
    dims: dict[str, dict[str, int]] = {a: {} for a in attributes}
    kept: dict[str, list[int]] = {}
    dropped: dict[str, list[int]] = {}
    for module in covered:
        As, Bs = [], []
        for a in attributes:
            A, B = (_float64(x) for x in subspaces[a][module])
            if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
                raise ValueError(f"{a}/{module}: A {A.shape} and B {B.shape} are not [out, d] and [in, d]")
            if As and (A.shape[0] != As[0].shape[0] or B.shape[0] != Bs[0].shape[0]):
                raise ValueError(f"{a}/{module}: A {A.shape}, B {B.shape} disagree with {attributes[0]}'s "
                                 f"[{As[0].shape[0]}, ·], [{Bs[0].shape[0]}, ·]")
            As.append(A)
            Bs.append(B)
            dims[a][module] = int(A.shape[1])
        qa, na = _orthonormalise(np.concatenate(As, 1), rtol)
        qb, nb = _orthonormalise(np.concatenate(Bs, 1), rtol)
        if qa.shape[1] == 0 or qb.shape[1] == 0:
            raise ValueError(f"{module}: the chosen attributes' factors are all zero on one side")
        tensors[f"{module}.A"] = qa.astype(np.float32)
        tensors[f"{module}.B"] = qb.astype(np.float32)
        kept[module] = [qa.shape[1], qb.shape[1]]
        dropped[module] = [na, nb]

    meta = {"format": FORMAT, "attributes": json.dumps(attributes), "dims": json.dumps(dims),
            "kept": json.dumps(kept), "dropped": json.dumps(dropped)}
    if model_config is not None:
        config = model_config.to_dict() if hasattr(model_config, "to_dict") else model_config
        meta["model_config"] = json.dumps(config, default=str)
    if checkpoint_sha256 is not None:
        meta["checkpoint_sha256"] = str(checkpoint_sha256)
    if members is not None:
        meta["members"] = json.dumps(members, default=str)   # default=str: adapter paths may be Path objects
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return BasisSummary(path=path, modules=covered, directions_A=sum(k[0] for k in kept.values()),
                        directions_B=sum(k[1] for k in kept.values()),
                        dropped={m: (d[0], d[1]) for m, d in dropped.items()},
                        trainable_params=sum(k[0] * k[1] for k in kept.values()), skipped=skipped)


def read_basis(path: str | Path) -> Basis:
    """Read and validate a basis file; :class:`BasisError` with one line naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise BasisError(f"{path}: no such basis file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # the parser's own message, first line only: the caller needs the file, not a trace
        detail = (str(exc).splitlines() or [""])[0][:120]
        raise BasisError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {detail})") from None

    if raw.get("format") != FORMAT:
        found = f"format {raw['format']!r}" if "format" in raw else "no format"
        raise BasisError(f"{path}: not an attribute basis ({found}, expected {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise BasisError(f"{path}: metadata lacks {', '.join(missing)}")
    metadata: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _JSON_KEYS:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise BasisError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from None
        metadata[key] = value
    attributes, dims = metadata["attributes"], metadata["dims"]
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise BasisError(f"{path}: metadata 'attributes' is not a list of names")
    if not isinstance(dims, dict) or set(dims) != set(attributes):
        raise BasisError(f"{path}: metadata 'dims' does not have one entry per attribute")

    A: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        module, _, side = key.rpartition(".")
        if not module or side not in ("A", "B"):
            raise BasisError(f"{path}: unexpected tensor {key!r} (expected <module>.A / <module>.B)")
        if t.ndim != 2:
            raise BasisError(f"{path}: {key} is {t.ndim}-D {tuple(t.shape)}, expected 2-D")
        (A if side == "A" else B)[module] = t
    for have, lack, side in ((A, B, "B"), (B, A, "A")):
        orphans = sorted(set(have) - set(lack))
        if orphans:
            raise BasisError(f"{path}: module {orphans[0]} has no {side} factor"
                             + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""))
    if not A:
        raise BasisError(f"{path}: holds no modules")
    for module in A:
        for side, t in (("A", A[module]), ("B", B[module])):
            q = t.to(torch.float64)
            error = float((q.T @ q - torch.eye(q.shape[1], dtype=torch.float64)).abs().max()) if q.shape[1] else 0.0
            if not error <= ORTHONORMAL_TOL:     # `not <=` so that NaN fails too
                raise BasisError(f"{path}: {module}.{side} columns are not orthonormal "
                                 f"(max |QᵀQ − I| = {error:.2e} > {ORTHONORMAL_TOL:g})")
    kept = metadata.get("kept")
    if isinstance(kept, dict):
        for module, dims_kept in kept.items():
            if module not in A or [A[module].shape[1], B[module].shape[1]] != dims_kept:
                raise BasisError(f"{path}: metadata 'kept' says {module} has {dims_kept} directions; "
                                 "the tensors disagree")
        order = [m for m in kept if m in A] + sorted(set(A) - set(kept))
    else:
        order = sorted(A)
    return Basis(A={m: A[m] for m in order}, B={m: B[m] for m in order}, attributes=attributes, dims=dims,
                 metadata=metadata, path=path)


def check_against_model(basis: Basis, model: torch.nn.Module) -> None:
    """Every basis module must be an ``nn.Linear`` of ``model`` with A rows == out_features and B rows ==
    in_features; :class:`BasisError` naming the first module that is not. (Not for peft-wrapped models.)"""
    modules = dict(model.named_modules())
    for name in basis.A:
        layer = modules.get(name)
        if layer is None:
            raise BasisError(f"{basis.path}: module {name} is not in the model")
        if not isinstance(layer, torch.nn.Linear):
            raise BasisError(f"{basis.path}: module {name} is a {type(layer).__name__}, not an nn.Linear")
        a, b = basis.A[name].shape[0], basis.B[name].shape[0]
        if (a, b) != (layer.out_features, layer.in_features):
            raise BasisError(f"{basis.path}: module {name}: basis has A rows {a}, B rows {b}; the layer has "
                             f"out_features {layer.out_features}, in_features {layer.in_features}")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints are GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _orthonormalise(S: np.ndarray, rtol: float) -> tuple[np.ndarray, int]:
    """Orthonormal columns spanning S's columns, in order (pivot-free Gram–Schmidt, projected twice so the
    result stays orthonormal to round-off), and how many columns were dropped as dependent."""
    kept: list[np.ndarray] = []
    dropped = 0
    for v in S.T:
        norm = np.linalg.norm(v)
        r = v.copy()
        if kept:
            Q = np.stack(kept, 1)
            r -= Q @ (Q.T @ r)
            r -= Q @ (Q.T @ r)
        rn = np.linalg.norm(r)
        if rn <= rtol * norm or norm == 0:      # nothing new outside the span kept so far (or a zero column)
            dropped += 1
            continue
        kept.append(r / rn)
    Q = np.stack(kept, 1) if kept else np.zeros((S.shape[0], 0))
    return Q, dropped


def _float64(x: Array) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


__all__ = ["Basis", "BasisError", "BasisSummary", "FORMAT", "write_basis", "read_basis", "check_against_model",
           "file_sha256"]
