"""The subspace adapter: fine-tune only the middle matrix M of ΔW = A M Bᵀ, with a mined basis A, B frozen.

    n = apply_basis(model, "mined/basis.safetensors")   # freezes everything, wraps the basis's layers
    ... train model.parameters() that require grad (only the M's, n numbers in all) ...
    save_middle(model, "runs/x/middle.safetensors", "mined/basis.safetensors")
    load_middle(fresh_applied_model, "runs/x/middle.safetensors")
    merge_basis(model)                                  # W ← W + A M Bᵀ: a plain model again
    export_peft(model, "runs/x/peft")                   # or: a standard peft LoRA folder

Each wrapped layer is a :class:`SubspaceLinear`, an ``nn.Linear`` subclass that keeps the layer's own
``weight``/``bias`` Parameters (same objects, same state-dict keys), holds A [out, dA] and B [in, dB] as
non-persistent buffers (they come from the basis file, so checkpoints need not repeat them, and they move
with ``.to()``), and adds one trainable Parameter ``M`` [dA, dB], zero at first so that the adapted model
starts as the base model exactly. dA and dB may differ (mining.basis keeps them separately).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from common.atomic import atomic_path, write_json
from mining.basis import Basis, BasisError, check_against_model, file_sha256, read_basis

MIDDLE_FORMAT = "attrspace-middle/1"

# VGGTConfig fields that change no parameter's shape or presence: initialisation (the weights come from a
# checkpoint), loop counts, chunking and the RoPE frequency. Every other field decides the architecture and
# must agree between the model a basis was mined on and the model it is applied to. Listing the exceptions
# (not the rules) means a field added to VGGTConfig later is compared until someone decides otherwise.
NON_ARCHITECTURE_FIELDS = frozenset({"init_values", "camera_init_values", "rope_freq", "camera_iterations",
                                     "dpt_frames_chunk", "track_iters"})


class SubspaceLinear(nn.Linear):
    """``y = W x + b + A M Bᵀ x``, computed as ``((x B) Mᵀ) Aᵀ`` so the dense ΔW [out, in] is never built:
    the extra cost is O(dB·in + dA·dB + dA·out) per token instead of O(out·in)."""

    def __init__(self, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, basis_sha256: str | None = None):
        # nn.Module.__init__, not nn.Linear's: nn.Linear would allocate and initialise a fresh weight that
        # we throw away at once (hundreds of MB over a 1B model). We take over base's Parameters instead.
        nn.Module.__init__(self)
        out_features, in_features = base.weight.shape
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != out_features or B.shape[0] != in_features:
            raise ValueError(f"A {tuple(A.shape)} and B {tuple(B.shape)} do not fit a layer with out_features "
                             f"{out_features}, in_features {in_features} (need [out, dA] and [in, dB])")
        self.in_features, self.out_features = in_features, out_features
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.register_buffer("A", A.detach().to(**like).contiguous(), persistent=False)
        self.register_buffer("B", B.detach().to(**like).contiguous(), persistent=False)
        self.M = nn.Parameter(torch.zeros(A.shape[1], B.shape[1], **like))
        self.basis_sha256 = basis_sha256      # which basis file A, B came from; load_middle checks it
        self.train(base.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + ((x @ self.B) @ self.M.T) @ self.A.T

    def delta_weight(self) -> torch.Tensor:
        """ΔW = A M Bᵀ [out, in] in float64 (for merging and checks; the forward never builds it)."""
        A, M, B = (t.detach().to(torch.float64) for t in (self.A, self.M, self.B))
        return A @ M @ B.T

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding this layer's weight and bias Parameters (ΔW not included)."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight = self.weight
        plain.register_parameter("bias", self.bias)
        plain.train(self.training)
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dA={self.A.shape[1]}, dB={self.B.shape[1]}"


# ---- applying a basis ------------------------------------------------------------------------------------

def apply_basis(model: nn.Module, basis: str | Path | Basis, *, checkpoint_sha256: str | None = None) -> int:
    """Freeze every parameter of ``model`` and wrap each layer the basis covers in a :class:`SubspaceLinear`.

    ``basis`` is a basis file or a :class:`mining.basis.Basis` read from one (its file is hashed either
    way: the hash ties saved M's to this basis). Refused with a one-line :class:`BasisError` when the model
    already has a basis applied, when the basis's recorded model config differs from ``model.config`` on a
    field that decides the architecture, when ``checkpoint_sha256`` and the basis's recorded one are both
    given and differ, or when a module is missing or has another shape. Returns Σ dA·dB, the number of
    trainable parameters left."""
    if not isinstance(basis, Basis):
        basis = read_basis(basis)
    already = wrapped_layers(model)
    if already:
        raise BasisError(f"{basis.path}: the model already has a basis applied ({len(already)} layers, "
                         f"e.g. {next(iter(already))}); apply one to a fresh model, or merge_basis first")
    _check_model_config(basis, model)
    _check_checkpoint(basis, checkpoint_sha256)
    check_against_model(basis, model)
    if not basis.path.is_file():
        raise BasisError(f"{basis.path}: basis file is gone; its sha256 is needed to tie saved M's to it")
    sha = file_sha256(basis.path)

    for p in model.parameters():
        p.requires_grad_(False)
    for name in basis.modules:
        layer = model.get_submodule(name)
        model.set_submodule(name, SubspaceLinear(layer, basis.A[name], basis.B[name], basis_sha256=sha))
    return sum(layer.M.numel() for layer in wrapped_layers(model).values())


def wrapped_layers(model: nn.Module) -> dict[str, SubspaceLinear]:
    """Module name -> :class:`SubspaceLinear`, in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SubspaceLinear)}


def _check_model_config(basis: Basis, model: nn.Module) -> None:
    """The basis's recorded ``model_config`` against ``model.config`` on the architecture fields. Fields
    one side lacks are skipped (a hand-made basis may record a few); so is a model without a config."""
    recorded = basis.metadata.get("model_config")
    config = getattr(model, "config", None)
    if recorded is None or config is None or not hasattr(config, "to_dict"):
        return
    if not isinstance(recorded, dict):
        raise BasisError(f"{basis.path}: metadata 'model_config' is not a JSON object")
    # through JSON, so the model's tuples compare equal to the file's lists
    current = json.loads(json.dumps(config.to_dict(), default=str))
    for field, value in current.items():
        if field in NON_ARCHITECTURE_FIELDS or field not in recorded:
            continue
        if recorded[field] != value:
            raise BasisError(f"{basis.path}: basis was mined on a model with {field}={recorded[field]!r}; "
                             f"this model has {field}={value!r}")


def _check_checkpoint(basis: Basis, checkpoint_sha256: str | None) -> None:
    recorded = basis.metadata.get("checkpoint_sha256")
    if checkpoint_sha256 is None or recorded is None:
        return
    if str(recorded).lower() != str(checkpoint_sha256).lower():
        raise BasisError(f"{basis.path}: basis was mined on another checkpoint (sha256 {str(recorded)[:12]}…, "
                         f"this model's is {str(checkpoint_sha256)[:12]}…)")


def _applied(model: nn.Module, what: str) -> tuple[dict[str, SubspaceLinear], str | None]:
    """The wrapped layers and the sha256 of the basis they came from; BasisError when there are none."""
    layers = wrapped_layers(model)
    if not layers:
        raise BasisError(f"{what}: the model has no basis applied (call apply_basis first)")
    shas = {layer.basis_sha256 for layer in layers.values()}
    if len(shas) != 1:    # only reachable by wrapping layers by hand from different bases
        raise BasisError(f"{what}: the model's wrapped layers come from {len(shas)} different bases")
    return layers, shas.pop()


# ---- the middle matrices -----------------------------------------------------------------------------------

def middle_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.M": M}`` for every wrapped layer, detached float copies on the CPU, in model order."""
    layers, _ = _applied(model, "middle_state")
    return {f"{name}.M": layer.M.detach().cpu().clone().contiguous() for name, layer in layers.items()}


def save_middle(model: nn.Module, path: str | Path, basis_path: str | Path) -> Path:
    """Write only the M's (safetensors, keys ``<module>.M``) atomically, with the basis file's sha256 and
    the module list in the header. ``basis_path`` must be the basis that was applied (checked by hash), so
    the file can never claim a basis it was not trained on."""
    path = Path(path)
    layers, applied_sha = _applied(model, str(path))
    sha = file_sha256(basis_path) if Path(basis_path).is_file() else None
    if sha is None:
        raise BasisError(f"{basis_path}: no such basis file")
    if sha != applied_sha:
        raise BasisError(f"{basis_path}: not the basis applied to this model (sha256 {sha[:12]}…, "
                         f"applied {str(applied_sha)[:12]}…)")
    meta = {"format": MIDDLE_FORMAT, "basis_sha256": sha, "basis": str(basis_path), "modules": json.dumps(list(layers))}
    with atomic_path(path) as tmp:
        save_file(middle_state(model), str(tmp), metadata=meta)
    return path


def load_middle(model: nn.Module, path: str | Path, basis_path: str | Path | None = None) -> None:
    """Load saved M's into a model with the same basis applied. Refused (one-line :class:`BasisError`) when
    the file was saved with another basis than the one applied (or than ``basis_path``, when given), or
    when its modules or shapes differ from the wrapped layers'."""
    path = Path(path)
    layers, applied_sha = _applied(model, str(path))
    meta, tensors = _read_middle(path)
    stored = meta.get("basis_sha256")
    if stored != applied_sha:
        raise BasisError(f"{path}: M was trained on another basis (sha256 {str(stored)[:12]}…) than the one "
                         f"applied to this model ({str(applied_sha)[:12]}…)")
    if basis_path is not None:
        given = file_sha256(basis_path) if Path(basis_path).is_file() else "missing"
        if given != stored:
            raise BasisError(f"{path}: M was trained on another basis than {basis_path} "
                             f"(sha256 {str(stored)[:12]}… vs {given[:12]}…)")
    expected = {f"{name}.M": layer.M for name, layer in layers.items()}
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which is not a wrapped layer"
        more = len(missing) + len(extra) - 1
        raise BasisError(f"{path}: {what}" + (f" (and {more} more module differences)" if more else ""))
    for key, M in expected.items():
        if tuple(tensors[key].shape) != tuple(M.shape):
            raise BasisError(f"{path}: {key} is {list(tensors[key].shape)}, the layer's M is {list(M.shape)}")
    with torch.no_grad():
        for key, M in expected.items():
            M.copy_(tensors[key])      # copy_ keeps M's device, dtype and identity (optimizers hold it)


def _read_middle(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise BasisError(f"{path}: no such middle-matrix file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # the parser's message, first line: the caller needs the file, not a trace
        detail = (str(exc).splitlines() or [""])[0][:120]
        raise BasisError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {detail})") from None
    if meta.get("format") != MIDDLE_FORMAT:
        raise BasisError(f"{path}: not a middle-matrix file (format {meta.get('format')!r}, expected {MIDDLE_FORMAT!r})")
    return meta, tensors


# ---- leaving the adapter -----------------------------------------------------------------------------------

def merge_basis(model: nn.Module) -> int:
    """``W ← W + A M Bᵀ`` for every wrapped layer (summed in float64, cast back to W's dtype once), then put
    plain ``nn.Linear``s back, so the state dict has exactly the unwrapped model's keys. Parameters stay
    frozen as apply_basis left them. Returns the number of layers merged."""
    layers, _ = _applied(model, "merge_basis")
    with torch.no_grad():
        for name, layer in layers.items():
            merged = layer.weight.detach().to(torch.float64) + layer.delta_weight().to(layer.weight.device)
            layer.weight.copy_(merged.to(layer.weight.dtype))
            model.set_submodule(name, layer.to_linear())
    return len(layers)


def export_peft(model: nn.Module, out_dir: str | Path) -> Path:
    """Write the adapter as a standard peft LoRA folder that ``peft.PeftModel.from_pretrained(base, out_dir)``
    loads onto the unwrapped base model.

    peft computes ``ΔW = scaling · lora_B.weight @ lora_A.weight`` with ``scaling = alpha / r``. We write
    ``lora_B = A M`` [out, dB] and ``lora_A = Bᵀ`` [dB, in] (rank dB per module) and give every module its
    own ``rank_pattern`` / ``alpha_pattern`` entry equal to its dB, so that scaling is exactly 1 whatever the
    ranks. Both files are written atomically into ``out_dir`` (an existing export is replaced)."""
    import peft   # here, not at the top: peft is slow to import and only this function needs it

    layers, _ = _applied(model, "export_peft")
    out_dir = Path(out_dir)
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for name, layer in layers.items():
        A, M, B = (t.detach().cpu().to(torch.float64) for t in (layer.A, layer.M, layer.B))
        prefix = f"base_model.model.{name}"          # peft's key names, adapter name left out
        tensors[f"{prefix}.lora_A.weight"] = B.T.to(torch.float32).contiguous()
        tensors[f"{prefix}.lora_B.weight"] = (A @ M).to(torch.float32).contiguous()
        ranks[name] = int(B.shape[1])
    # Module names are full paths, so peft's pattern match `(.*\.)?(<name>)$` hits exactly the named layer.
    r = max(ranks.values())
    config = peft.LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0, bias="none", target_modules=list(layers),
                             rank_pattern=dict(ranks), alpha_pattern=dict(ranks))
    plain = {k: (list(layers) if k == "target_modules" else sorted(v) if isinstance(v, set) else v)
             for k, v in config.to_dict().items()}
    with atomic_path(out_dir / "adapter_model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(out_dir / "adapter_config.json", plain, indent=2, sort_keys=True)
    return out_dir


__all__ = ["MIDDLE_FORMAT", "NON_ARCHITECTURE_FIELDS", "SubspaceLinear", "apply_basis", "wrapped_layers",
           "middle_state", "save_middle", "load_middle", "merge_basis", "export_peft"]
