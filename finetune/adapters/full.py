"""Full fine-tuning of the target layers: every weight and bias of the same layers the other methods
adapt (the fair comparison; the paper's "full" count of the whole model is in finetune.params)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..methods import Adapted, MethodContext, MethodError, count_trainable


def prepare(model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    modules = dict(model.named_modules())
    missing = [t for t in ctx.targets if t not in modules]
    if missing:
        raise MethodError(f"full: target layer {missing[0]} is not in the model")
    params = [p for t in ctx.targets for p in modules[t].parameters(recurse=False)]
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]

    def save(folder: Path) -> None:
        from safetensors.torch import save_file

        from common.atomic import atomic_path
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "weights.safetensors") as tmp:
            save_file({k: p.detach().cpu().contiguous() for k, p in zip(keys, params)}, str(tmp),
                      metadata={"format": "attrspace-full/1"})

    return Adapted(model=model, params=params, trainable=count_trainable(params), save=save)
