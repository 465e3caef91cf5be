"""AdaLoRA (peft): an SVD-form LoRA, ΔW = P Λ Q, whose per-layer ranks are re-allocated during training
from an importance score of each singular triplet, within a shrinking total budget.

peft's facts this follows (../shared/reference/facts.md): ``total_step`` is required and
``tinit < total_step − tfinal``; ``update_and_allocate(step)`` must run after ``backward()`` and before
the gradients are cleared (the trainer's ``after_step`` hook); and on a model whose output has no
``.loss`` peft does not add the orthogonality regulariser, so it is added here, with peft's definition
and weight: the mean over every P and Q of ‖PPᵀ − I‖_F (resp. ‖QᵀQ − I‖_F), times ``orth_reg_weight``.

Budget: every layer starts at rank r (``init_r`` = r, the same trainable count as LoRA at r) and the
average is brought down to ``target_r`` = ¾ r, with the schedule's warm-up over the first 10 % of the
steps and the final phase over the last 20 %. The rank allocator's running importance scores live
outside the trainable tensors, so a resumed AdaLoRA run does not continue bit-identically."""
from __future__ import annotations

import torch

from ..methods import Adapted, MethodContext, count_trainable
from .lora import saver, wrap

ORTH_REG_WEIGHT = 0.5   # peft's default


def adalora_config(ctx: MethodContext):
    import peft

    steps = ctx.steps
    tinit, tfinal = int(0.1 * steps), int(0.2 * steps)
    if tinit >= steps - tfinal:             # tiny runs: keep peft's constraint satisfiable
        tinit, tfinal = 0, 0
    return peft.AdaLoraConfig(init_r=ctx.rank, target_r=max(1, round(0.75 * ctx.rank)), lora_alpha=ctx.rank,
                              lora_dropout=0.0, target_modules=list(ctx.targets), total_step=steps, tinit=tinit,
                              tfinal=tfinal, deltaT=max(1, steps // 50), orth_reg_weight=ORTH_REG_WEIGHT)


def orthogonality(model: torch.nn.Module) -> torch.Tensor:
    """peft's AdaLoRA regulariser (see the module doc), computed from the live parameters."""
    total, count = 0.0, 0
    for name, p in model.named_parameters():
        if not p.requires_grad or not ("lora_A" in name or "lora_B" in name):
            continue
        gram = p @ p.T if "lora_A" in name else p.T @ p
        total = total + torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))
        count += 1
    return ORTH_REG_WEIGHT * total / max(count, 1)


def prepare(model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    peft_model = wrap(model, adalora_config(ctx), ctx)
    params = [p for n, p in peft_model.named_parameters() if "lora_" in n]

    def after_step(step: int) -> None:
        peft_model.base_model.update_and_allocate(step)

    return Adapted(model=peft_model, params=params, trainable=count_trainable(params), save=saver(peft_model),
                   after_step=after_step, regulariser=lambda: orthogonality(peft_model),
                   info={"init_r": ctx.rank, "target_r": max(1, round(0.75 * ctx.rank))})
