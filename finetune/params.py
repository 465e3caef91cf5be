"""Trainable-parameter counts of every method at any model size, without weights (meta device).

    counts = method_counts(VGGTConfig.preset("vggt-1b"), rank=16, dim=64)    # {method: trainable}
    paper = paper_accounting(VGGTConfig.preset("vggt-1b"))                  # the paper's LoRA r16 and full

LoRA-family counts come from peft itself, attached to a model built on the meta device (peft's
``low_cpu_mem_usage``), so they are what peft would train; the basis methods train one dA×dB middle
matrix per layer (here d×d); full trains every weight and bias of the target layers. EVA redistributes its
ranks from data (its total stays r per layer on average), so its count here is the nominal one.

The paper's accounting (../shared/reference/facts.md) counts LoRA on more than the aggregator: "LoRA r16 =
16.3 M" is r·(in+out) over the 48 frame/global blocks' qkv, proj, fc1, fc2, plus the camera head's linear
layers, plus the depth head's convolutions; "full = 853.6 M" is the whole model minus the DINO patch embed,
the track head and the point head. :func:`paper_accounting` reproduces both with peft on the meta device.
"""
from __future__ import annotations

import re

import torch

from mining.config import DEFAULT_TARGETS


def meta_model(config):
    from model import VGGT

    with torch.device("meta"):
        return VGGT(config)


def _targets(model, pattern: str, kinds=(torch.nn.Linear,)) -> list[str]:
    regex = re.compile(pattern)
    return [n for n, m in model.named_modules() if isinstance(m, kinds) and regex.fullmatch(n)]


def _peft_count(config, targets_fn, peft_config_fn) -> int:
    import peft

    model = meta_model(config)
    names = targets_fn(model)
    wrapped = peft.get_peft_model(model, peft_config_fn(names), low_cpu_mem_usage=True)
    return sum(p.numel() for n, p in wrapped.named_parameters() if "lora_" in n)


def method_counts(config, rank: int = 16, dim: int = 64, targets: str = DEFAULT_TARGETS,
                  methods=("ours", "psv", "random", "lora", "pissa", "adalora", "eva", "corda", "full")) -> dict[str, int]:
    """{method: trainable parameters} over the layers ``targets`` matches (``ours`` as a d×d basis)."""
    import peft

    model = meta_model(config)
    names = _targets(model, targets)
    layers = [model.get_submodule(n) for n in names]
    lora = _peft_count(config, lambda m: _targets(m, targets),
                       lambda ns: peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=ns))
    adalora = _peft_count(config, lambda m: _targets(m, targets),
                          lambda ns: peft.AdaLoraConfig(init_r=rank, target_r=max(1, round(0.75 * rank)),
                                                        target_modules=ns, total_step=100))
    counts = {}
    for m in methods:
        if m in ("ours", "psv", "random"):
            counts[m] = len(layers) * dim * dim
        elif m in ("lora", "pissa", "eva", "corda"):
            counts[m] = lora
        elif m == "adalora":
            counts[m] = adalora
        elif m == "full":
            counts[m] = sum(p.numel() for layer in layers for p in layer.parameters(recurse=False))
    return counts


PAPER_LORA_LINEAR = r"aggregator\.(frame|global)_blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)|camera_head\..*"
PAPER_LORA_CONV = r"depth_head\..*"
PAPER_FROZEN = ("aggregator.patch_embed.", "track_head.", "point_head.")


def paper_accounting(config, rank: int = 16) -> dict[str, int]:
    """The paper's "LoRA r16" (aggregator blocks + camera-head linears + depth-head convolutions, via peft)
    and "full" (everything but the patch embed, track head and point head) counts, and their parts."""
    import peft

    def names(model):
        return (_targets(model, PAPER_LORA_LINEAR) + _targets(model, PAPER_LORA_CONV, (torch.nn.Conv2d,)))

    def part(pattern, kinds=(torch.nn.Linear,)):
        return _peft_count(config, lambda m: _targets(m, pattern, kinds),
                           lambda ns: peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=ns))

    total = _peft_count(config, names, lambda ns: peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=ns))
    model = meta_model(config)
    full = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(PAPER_FROZEN))
    return {"lora": total, "lora_aggregator": part(DEFAULT_TARGETS), "lora_camera_head": part(r"camera_head\..*"),
            "lora_depth_head": part(PAPER_LORA_CONV, (torch.nn.Conv2d,)), "full": full,
            "all": sum(p.numel() for p in model.parameters())}


__all__ = ["method_counts", "paper_accounting", "meta_model"]
