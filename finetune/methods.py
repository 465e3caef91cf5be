"""Every fine-tuning method behind one interface, so the harness gives each the same data, steps,
schedule and evaluation.

    adapted = prepare("lora", model, MethodContext(targets=names, rank=16, steps=300, ...))
    train(adapted.model, adapted.params, loader, cfg, loss_fn=..., after_step=adapted.after_step)
    adapted.save(folder)

A method is a module in ``finetune/adapters/`` with ``prepare(model, ctx) -> Adapted`` (one file per
method, like peft's tuners). ``model`` is a fresh base model: methods may wrap or rewrite it.

| method | what trains | from |
|---|---|---|
| ours | M of ΔW = A M Bᵀ, A, B the mined attribute basis (``mine basis``) | adapters/basis.py |
| psv | the same with A, B the top singular vectors of W (the paper's ablation; LoRA-XS) | adapters/basis.py |
| random | the same with random orthonormal A, B (a control the paper lacks) | adapters/basis.py |
| lora | peft LoRA, rank r, alpha r | adapters/lora.py |
| pissa | peft PiSSA (LoRA initialised on W's principal singular directions; W keeps the residual) | adapters/pissa.py |
| adalora | peft AdaLoRA (SVD-form LoRA whose ranks are re-allocated during training) | adapters/adalora.py |
| eva | peft LoRA with EVA init (A from the SVD of the layers' inputs on the training split) | adapters/eva.py |
| corda | peft LoRA with CorDA init (W's decomposition oriented by the inputs' covariance) | adapters/corda.py |
| full | every weight and bias of the target layers | adapters/full.py |
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

METHODS = ("ours", "psv", "random", "lora", "pissa", "adalora", "eva", "corda", "full")
BASIS_METHODS = ("ours", "psv", "random")
_MODULES = {"ours": "basis", "psv": "basis", "random": "basis", "lora": "lora", "pissa": "pissa",
            "adalora": "adalora", "eva": "eva", "corda": "corda", "full": "full"}


class MethodError(ValueError):
    """A method that cannot be set up as asked (one line, for the CLI)."""


@dataclass
class MethodContext:
    """What a method may use besides the model. Every method of a comparison gets the same one."""
    method: str
    targets: list[str]                   # module names (as in model.named_modules()) every method adapts
    rank: int                            # LoRA rank r, or the basis dimension d per layer (psv, random)
    steps: int                           # training steps (AdaLoRA's schedule needs them)
    seed: int = 0
    basis: Path | None = None            # ours: the mined basis file
    calibration: Callable[[], Iterable[dict]] | None = None   # batches of the training split (EVA, CorDA)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_sha256: str | None = None  # of the base model (checked against the basis)
    workdir: Path = Path("runs/finetune/cache")   # where a method may keep files (generated bases, caches)


@dataclass
class Adapted:
    """A model prepared for training: what to hand the trainer, and how to save the result."""
    model: torch.nn.Module               # the model to train and evaluate (maybe a peft wrapper)
    params: list                         # trainable parameters (the trainer freezes everything else)
    trainable: int                       # number of trainable scalars
    save: Callable[[Path], None]         # write the adapter (or weights) to a folder
    after_step: Callable[[int], None] | None = None           # called after each optimizer step
    regulariser: Callable[[], torch.Tensor] | None = None     # added to the loss each step
    info: dict = field(default_factory=dict)                  # method-specific facts for the run record


def prepare(method: str, model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    """Set ``model`` up for ``method`` (see the table in the module doc)."""
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if not ctx.targets:
        raise MethodError("no target layers")
    module = importlib.import_module(f"finetune.adapters.{_MODULES[method]}")
    return module.prepare(model, ctx)


def count_trainable(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


__all__ = ["METHODS", "BASIS_METHODS", "MethodContext", "Adapted", "MethodError", "prepare", "count_trainable"]
