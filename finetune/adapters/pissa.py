"""PiSSA (peft): LoRA whose B A starts as the top-r singular part of W, with W replaced by the residual
W − B A, so training starts from the same function but moves the principal directions. Linear layers
only. Saved as a plain LoRA (rank 2r) relative to the original W, via peft's conversion from the
initial adapter, so it loads onto an unmodified base model."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from ..methods import Adapted, MethodContext, count_trainable
from .lora import lora_config, lora_params, wrap


def prepare(model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    # exact SVD: our layers are small enough, and "pissa_niter_k" would add a randomised approximation
    peft_model = wrap(model, lora_config(ctx, init_lora_weights="pissa"), ctx)
    initial = Path(tempfile.mkdtemp(prefix="pissa-init-", dir=_workdir(ctx)))
    # the initial adapter, kept so that the trained one can be converted to a plain LoRA on W
    peft_model.peft_config["default"].init_lora_weights = True
    peft_model.save_pretrained(str(initial))
    peft_model.peft_config["default"].init_lora_weights = "pissa"

    def save(folder: Path) -> None:
        with warnings.catch_warnings():
            # the conversion loads the initial adapter beside the trained one for a moment, which makes peft warn
            # against combining PiSSA with other adapters; that combination is exactly the conversion it asks for
            warnings.filterwarnings("ignore", message="PiSSA changes the base weights")
            peft_model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(initial))

    params = lora_params(peft_model)
    return Adapted(model=peft_model, params=params, trainable=count_trainable(params), save=save,
                   info={"initial_adapter": str(initial)})


def _workdir(ctx: MethodContext) -> str:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    return str(ctx.workdir)
