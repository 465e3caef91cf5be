"""CorDA (peft, context-oriented decomposition): W is decomposed by an SVD of W·C, C the covariance of the
layer's inputs on batches of the task's training split; the top-r components (instruction-previewed
mode, "ipm") initialise the LoRA and W keeps the rest. Like PiSSA, the base weights are rewritten, so
the trained adapter is saved together with the residual weights of the adapted layers."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..methods import Adapted, MethodContext, MethodError, count_trainable
from .lora import lora_config, lora_params, wrap


def prepare(model: torch.nn.Module, ctx: MethodContext) -> Adapted:
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    if ctx.calibration is None:
        raise MethodError("corda needs calibration batches of the training split")
    config = lora_config(ctx, init_lora_weights="corda", corda_config=CordaConfig(corda_method="ipm"))
    model.to(ctx.device)
    batches = list(ctx.calibration())
    if not batches:
        raise MethodError("corda: the calibration split gave no batches")

    # peft's own covariance hook assumes one [tokens, C] input per call (it squeezes a batch of 1); our
    # blocks see [frames, tokens, C]. So the covariance is gathered here, with peft's normalisation (each
    # call's input divided by its largest magnitude, the sum averaged over calls), and handed to peft as
    # its covariance file.
    covariance_file = Path(tempfile.mkdtemp(prefix="corda-", dir=_workdir(ctx))) / "covariance.pt"
    torch.save(input_covariances(model, config.target_modules, batches, ctx.device), covariance_file)
    config.corda_config.covariance_file = str(covariance_file)
    preprocess_corda(model, config)
    peft_model = wrap(model, config, ctx)
    params = lora_params(peft_model)

    def save(folder: Path) -> None:
        from safetensors.torch import save_file

        from common.atomic import atomic_path
        peft_model.save_pretrained(str(folder))
        # the residual weights W − BA the adapter is relative to (CorDA rewrote them)
        base = {n.removeprefix("base_model.model."): p.detach().cpu().contiguous()
                for n, p in peft_model.named_parameters() if ".base_layer." in n}
        with atomic_path(folder / "residual_weights.safetensors") as tmp:
            save_file(base, str(tmp), metadata={"format": "attrspace-corda-residual/1"})

    return Adapted(model=peft_model, params=params, trainable=count_trainable(params), save=save,
                   info={"calibration_batches": len(batches), "corda_method": "ipm"})


@torch.no_grad()
def input_covariances(model: torch.nn.Module, names, batches, device) -> dict[str, torch.Tensor]:
    """{module: mean over forward calls of XᵀX / max|X|²}, X the call's inputs as rows of features."""
    wanted = set(names)
    sums, counts, handles = {}, {}, []

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            x = x / x.abs().max().clamp_min(1e-30)
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + 1
        return fn

    for name, module in model.named_modules():
        if name in wanted:
            handles.append(module.register_forward_hook(hook(name)))
    model.eval()
    try:
        for b in batches:
            model(b["images"].to(device))
    finally:
        for h in handles:
            h.remove()
    missing = sorted(wanted - set(sums))
    if missing:
        raise MethodError(f"corda: layer {missing[0]} saw no input during calibration")
    return {n: sums[n] / counts[n] for n in sums}


def _workdir(ctx: MethodContext) -> str:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    return str(ctx.workdir)
