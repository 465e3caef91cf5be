"""Optimizer param groups for training a model from scratch.

Weight decay is for weight matrices. A LayerScale gamma, a norm's scale, a bias or a learned token
decayed towards 0 is pulled towards a different function, not a simpler one: a decayed gamma switches
its block off, a decayed norm scale shrinks everything it feeds. So those are left undecayed, and the
gammas get their own group so that their learning rate can be set apart (a gamma starting at 0.01 needs
many Adam steps of size ~lr to reach the size of the residual stream it writes into).

    groups = pretraining_groups(model, weight_decay=0.05, lr=3e-4, gamma_lr_scale=10)
    train(model, groups, loader, cfg)         # training.trainer clips each group on its own
"""
from __future__ import annotations

import torch.nn as nn

from model.vggt import LayerScale


def pretraining_groups(model: nn.Module, weight_decay: float, lr: float, gamma_lr_scale: float = 1.0,
                       decay_all: bool = False) -> list[dict]:
    """Three groups of ``model``'s parameters: "decay" (matrices and convolution kernels, ``weight_decay``),
    "no_decay" (biases, norm scales, learned tokens and position tables: 0) and "layerscale" (every
    LayerScale gamma: no decay, ``lr * gamma_lr_scale``). ``decay_all`` decays everything but keeps the
    same three groups (the recipe of the first small base model, for comparisons). Empty groups are left
    out; each group carries its ``name``."""
    gammas = {id(m.gamma) for m in model.modules() if isinstance(m, LayerScale)}
    groups = {"decay": [], "no_decay": [], "layerscale": []}
    for name, p in model.named_parameters():
        if id(p) in gammas:
            groups["layerscale"].append(p)
        elif p.ndim >= 2 and not _is_token(name):
            groups["decay"].append(p)
        else:
            groups["no_decay"].append(p)
    settings = {"decay": (lr, weight_decay), "no_decay": (lr, weight_decay if decay_all else 0.0),
                "layerscale": (lr * gamma_lr_scale, weight_decay if decay_all else 0.0)}
    return [{"name": name, "params": params, "lr": settings[name][0], "weight_decay": settings[name][1]}
            for name, params in groups.items() if params]


def _is_token(name: str) -> bool:
    """Learned tokens and position tables (camera/register/cls/mask tokens, pos_embed, the camera head's
    empty pose tokens) are embeddings, not weights."""
    last = name.rsplit(".", 1)[-1]
    return "token" in last or last == "pos_embed"
