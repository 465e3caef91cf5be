"""LoRA (peft): ΔW = (α/r)·B A with B [out, r] zero-initialised and A [r, in] random, α = r (scaling 1).
The other LoRA-family methods (PiSSA, EVA, CorDA) are this adapter with another initialisation and
reuse :func:`lora_config` and :func:`wrap`."""
from __future__ import annotations

from pathlib import Path

import torch

from ..methods import Adapted, MethodContext, count_trainable
from training.rng import seeded


def lora_config(ctx: MethodContext, **overrides):
    import peft

    settings = dict(r=ctx.rank, lora_alpha=ctx.rank, lora_dropout=0.0, target_modules=list(ctx.targets), bias="none")
    return peft.LoraConfig(**(settings | overrides))


def wrap(model: torch.nn.Module, config, ctx: MethodContext, **kwargs):
    """``model`` under peft with ``config``; the LoRA init is drawn from the run's seed."""
    import peft

    with seeded(ctx.seed):
        return peft.get_peft_model(model, config, **kwargs)


def lora_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def saver(model) -> callable:
    def save(folder: Path) -> None:
        model.save_pretrained(str(folder))
    return save


def prepare(model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    peft_model = wrap(model, lora_config(ctx), ctx)
    params = lora_params(peft_model)
    return Adapted(model=peft_model, params=params, trainable=count_trainable(params), save=saver(peft_model))
