"""Reading and writing VGGT weights.

`load_checkpoint` takes the official files as they are distributed (``model.pt``, a plain state dict,
or ``model.safetensors``) and our own. Our safetensors files carry the model config as JSON in the
header metadata ("config"), so `load_model` can rebuild the right architecture from the file alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from common.atomic import atomic_path

from .config import VGGTConfig

# Wrappers other trainers put around a state dict.
_CONTAINER_KEYS = ("model", "state_dict", "module")
_SHOW = 3  # keys listed per kind of mismatch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        elif path.suffix in (".pt", ".pth", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"{path}: unknown checkpoint format (use .safetensors, .pt or .pth)")
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt or truncated file: say which, not where in the parser it broke
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    # A state dict holds tensors only; anything else around a `model`/`state_dict` entry is a wrapper
    # (other trainers' checkpoints, and ours with step, optimizer and RNG states beside the weights).
    for key in _CONTAINER_KEYS:
        if isinstance(state, dict) and not _tensors_only(state) and isinstance(state.get(key), dict):
            state = state[key]
    if not _tensors_only(state):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    # DataParallel/DDP checkpoints prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _tensors_only(state) -> bool:
    return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


def read_config(path: str | Path) -> VGGTConfig | None:
    """The config stored in one of our safetensors files, or None for files without one."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return VGGTConfig.from_dict(json.loads(meta["config"])) if "config" in meta else None
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    except (ValueError, TypeError, json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(f"{path}: bad config in checkpoint metadata ({exc})") from None


def load_checkpoint(model: torch.nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Load weights into ``model``. Strict: every key present with the right shape, nothing extra.
    Non-strict: loads what fits and reports the rest. Returns {"missing", "unexpected", "mismatched"}."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    report = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    if strict and (missing or unexpected or mismatched):
        parts = [f"{len(v)} {name} ({', '.join(v[:_SHOW])}{', …' if len(v) > _SHOW else ''})"
                 for name, v in report.items() if v]
        raise CheckpointError(f"{path}: does not fit the model: " + "; ".join(parts))
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    return report


def load_model(path: str | Path, config: VGGTConfig | None = None, strict: bool = True):
    """Build a VGGT from the config in the file (or ``config``) and load its weights."""
    from .vggt import VGGT  # late import: vggt.py imports this package's heads

    cfg = read_config(path) or config
    if cfg is None:
        raise CheckpointError(f"{path}: checkpoint has no stored config; give the model preset")
    model = VGGT(cfg)
    load_checkpoint(model, path, strict=strict)
    return model


def save_checkpoint(model: torch.nn.Module, path: str | Path, dtype: torch.dtype | None = None,
                    extra: dict[str, str] | None = None) -> None:
    """Write the model's weights (optionally cast, e.g. to float16 to ship) with its config, atomically."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    meta = dict(extra or {})
    config = getattr(model, "config", None)
    if isinstance(config, VGGTConfig):
        meta["config"] = json.dumps(config.to_dict())
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
