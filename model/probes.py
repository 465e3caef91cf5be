"""What a VGGT really uses: its aggregator blocks switched off, and how much each block adds.

A pre-norm block adds ``gamma * branch(x)`` to the residual stream. When the LayerScale gammas stay
near their 0.01 init (our first small base model), the heads read the patch embedding almost alone and
every adapter on the blocks acts through a path damped ~100x. These probes make that visible:

    with aggregator_blocks_off(model):      # every frame/global block becomes the identity
        out_off = model(images)
    ratios = branch_ratios(model, images)   # per block: RMS(gamma * branch) / RMS(block input)

They work on a plain VGGT and on one wrapped by peft or our adapters (modules are found by name).
"""
from __future__ import annotations

import contextlib
import re

import torch
import torch.nn as nn

from .vggt import Block, LayerScale

_AGGREGATOR_BLOCK = re.compile(r"(^|\.)aggregator\.(frame|global)_blocks\.(\d+)$")


def aggregator_blocks(model: nn.Module) -> list[tuple[str, Block]]:
    """(short name like "frame.0", block) of every aggregator frame and global block, frame first."""
    found = []
    for name, module in model.named_modules():
        match = _AGGREGATOR_BLOCK.search(name)
        if match and isinstance(module, Block):
            found.append(((match.group(2), int(match.group(3))), module))
    if not found:
        raise ValueError("the model has no aggregator frame/global blocks")
    found.sort(key=lambda item: (item[0][0] != "frame", item[0][1]))
    return [(f"{kind}.{i}", block) for (kind, i), block in found]


def layerscale_stats(model: nn.Module) -> dict[str, float]:
    """Mean |gamma| of each aggregator block's two LayerScales: {"frame.0.ls1": ..., ...}."""
    return {f"{name}.{ls}": float(getattr(block, ls).gamma.detach().abs().mean())
            for name, block in aggregator_blocks(model) for ls in ("ls1", "ls2")}


@contextlib.contextmanager
def aggregator_blocks_off(model: nn.Module):
    """Within the context every aggregator block is the identity (its LayerScale gammas are 0); the
    gammas are put back on exit, also after an exception. The patch embedding, special tokens and heads
    are untouched, so the outputs are what the heads make of the patch embedding alone."""
    scales = [m for _, block in aggregator_blocks(model) for m in block.modules() if isinstance(m, LayerScale)]
    saved = [ls.gamma.detach().clone() for ls in scales]
    try:
        with torch.no_grad():
            for ls in scales:
                ls.gamma.zero_()
        yield
    finally:
        with torch.no_grad():
            for ls, gamma in zip(scales, saved):
                ls.gamma.copy_(gamma)


class BranchRMS:
    """Forward hooks on every aggregator block that keep, from the latest forward pass, the mean square
    of the block's input and of each LayerScale's output (``gamma * branch``). They hold detached 0-d
    tensors, so a training step pays no device sync; ``ratios()`` turns them into numbers.

        with BranchRMS(model) as rms:
            model(images)
        rms.ratios()            # {"frame.0.ls1": RMS(gamma * branch) / RMS(block input), ...}
    """

    def __init__(self, model: nn.Module):
        self._squares: dict[str, torch.Tensor] = {}
        self._hooks = []
        for name, block in aggregator_blocks(model):
            self._hooks.append(block.register_forward_pre_hook(
                lambda _m, args, key=name: self._keep(key, args[0])))
            for ls in ("ls1", "ls2"):
                self._hooks.append(getattr(block, ls).register_forward_hook(
                    lambda _m, _args, out, key=f"{name}.{ls}": self._keep(key, out)))

    def _keep(self, key: str, x: torch.Tensor) -> None:
        self._squares[key] = x.detach().float().pow(2).mean()

    def ratios(self) -> dict[str, float]:
        """Per block and LayerScale, RMS(gamma * branch) / RMS(block input); {} before any forward."""
        rms = {k: float(v.sqrt()) for k, v in self._squares.items()}
        return {key: rms[key] / max(rms[key.rsplit(".", 1)[0]], 1e-12)
                for key in rms if key.endswith((".ls1", ".ls2"))}

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> "BranchRMS":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@torch.no_grad()
def branch_ratios(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Per aggregator block and branch, RMS(gamma * branch output) / RMS(block input) over all tokens
    of one forward pass (in eval mode): how strongly the block writes into the residual stream it reads."""
    was_training = model.training
    try:
        model.eval()
        with BranchRMS(model) as rms:
            model(images)
        return rms.ratios()
    finally:
        model.train(was_training)
