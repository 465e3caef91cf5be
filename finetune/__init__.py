"""Fine-tuning through an attribute basis: train only the middle matrix M of ΔW = A M Bᵀ (A, B frozen).

    from finetune import apply_basis, save_middle, merge_basis, psv_basis
    n = apply_basis(model, "mined/basis.safetensors", checkpoint_sha256=file_sha256(ckpt))  # n trainable
    trainable = [p for p in model.parameters() if p.requires_grad]                          # the M's only
    ... train ...
    save_middle(model, "runs/x/middle.safetensors", "mined/basis.safetensors")
    merge_basis(model)                     # W ← W + A M Bᵀ, a plain model again (or export_peft)

Bases that need no mining (the controls) come in the same file format: :func:`psv_basis` (the layers'
principal singular vectors) and :func:`random_basis`.
"""
from .adapters.subspace import (SubspaceLinear, apply_basis, export_peft, load_middle, merge_basis, middle_state,
                                save_middle, wrapped_layers)
from .bases import psv_basis, random_basis

__all__ = ["SubspaceLinear", "apply_basis", "export_peft", "load_middle", "merge_basis", "middle_state",
           "save_middle", "wrapped_layers", "psv_basis", "random_basis"]
