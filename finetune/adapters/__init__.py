"""Adapters that fine-tune a frozen model through a fixed basis; see :mod:`finetune.adapters.subspace`."""
from .subspace import (MIDDLE_FORMAT, SubspaceLinear, apply_basis, export_peft, load_middle, merge_basis,
                       middle_state, save_middle, wrapped_layers)

__all__ = ["MIDDLE_FORMAT", "SubspaceLinear", "apply_basis", "export_peft", "load_middle", "merge_basis",
           "middle_state", "save_middle", "wrapped_layers"]
