"""Our own VGGT: the model, its configs and checkpoint I/O.

    from model import VGGT, VGGTConfig, load_checkpoint
    model = VGGT(VGGTConfig.preset("vggt-1b"))
    load_checkpoint(model, "model.pt")        # the official weights load unchanged
    out = model(images)                       # images [S,3,H,W] or [B,S,3,H,W] in [0,1]
"""
from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .config import VGGTConfig
from .vggt import VGGT

__all__ = ["VGGT", "VGGTConfig", "load_checkpoint", "load_model", "save_checkpoint", "CheckpointError"]
