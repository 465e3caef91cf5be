"""The row-side control: the principal subspace of each layer's input activations.

A gradient step's update of W is Σ δ xᵀ, so its rows lie in the span of the layer's inputs x. A LoRA's
row (input) space can therefore look "shared" just because every member sees inputs with the same
dominant directions. An attribute's row subspace means something only where it differs from the top
principal subspace of the inputs on the same data; this module measures that subspace.

    grams = input_second_moments(model, batches, ["aggregator.frame_blocks.0.attn.qkv", ...])
    basis = top_directions(grams[name], 16)          # [in, 16], orthonormal
"""
from __future__ import annotations

from typing import Iterable

import torch


@torch.no_grad()
def input_second_moments(model: torch.nn.Module, batches: Iterable[dict], layers: list[str],
                         device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Σ x xᵀ (float64, uncentred: the span of the inputs, not their spread) of every listed module's
    input over all tokens of ``batches``; hooks are removed afterwards."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise KeyError(f"no module named {missing[0]} in the model")
    grams: dict[str, torch.Tensor] = {}

    def hook(name):
        def accumulate(_module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            grams[name] = grams.get(name, 0) + x.T @ x
        return accumulate

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(batch["images"].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: grams[name].cpu() for name in layers if name in grams}


def top_directions(gram: torch.Tensor, d: int) -> torch.Tensor:
    """The ``d`` leading eigenvectors of a symmetric PSD matrix, [n, d]."""
    values, vectors = torch.linalg.eigh(gram.to(torch.float64))
    return vectors[:, torch.argsort(values, descending=True)[:d]]
