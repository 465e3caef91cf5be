"""EVA (peft, Explained Variance Adaptation): LoRA whose A is initialised from the top right-singular
vectors of each layer's inputs on batches of the task's training split (incremental SVD until the
components settle), with ranks redistributed across layers by explained variance (peft's default
``rho`` = 2: a layer may get up to 2r, the total stays r per layer on average); B starts at zero.
A data-aware subspace init: the strongest test of whether a *mined* basis adds anything beyond the
task's own activation statistics."""
from __future__ import annotations

import torch

from ..methods import Adapted, MethodContext, MethodError, count_trainable
from .lora import lora_config, lora_params, saver, wrap


def _forward(model, batch) -> None:
    model(batch["images"])


def _tokens(layer_input, model_input, layer_name) -> torch.Tensor:
    """A layer's input as rows of features: our blocks see [batch·frames, tokens, C] or [batch, frames·tokens, C]."""
    x = layer_input[0] if isinstance(layer_input, (tuple, list)) else layer_input
    return x.reshape(-1, x.shape[-1])


def prepare(model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    import peft
    from peft.tuners.lora.eva import initialize_lora_eva_weights

    if ctx.calibration is None:
        raise MethodError("eva needs calibration batches of the training split")
    config = lora_config(ctx, init_lora_weights="eva", eva_config=peft.EvaConfig())
    batches = [{"images": b["images"].to(ctx.device)} for b in ctx.calibration()]
    if not batches:
        raise MethodError("eva: the calibration split gave no batches")
    # on the device first: peft's low-memory wrap leaves the LoRA weights on the meta device until the EVA
    # init fills them, and a meta tensor cannot be moved
    model.to(ctx.device)
    peft_model = wrap(model, config, ctx, low_cpu_mem_usage=True)
    with torch.no_grad():
        initialize_lora_eva_weights(peft_model, batches, forward_fn=_forward, prepare_model_inputs_fn=None,
                                    prepare_layer_inputs_fn=_tokens, show_progress_bar=False)
    params = lora_params(peft_model)
    return Adapted(model=peft_model, params=params, trainable=count_trainable(params), save=saver(peft_model),
                   info={"calibration_batches": len(batches)})
