"""The training layer every AttrSpace run shares: rendered partitions as batches, losses, the trainer
and evaluation. Pretraining (apps/), LoRA mining (mining/) and fine-tuning (finetune/) all import it;
it imports only render/ (to read partitions), model/ and common/.

    from training import SynthSequences, find_partitions, make_loader, TrainConfig, train
"""
from .batches import Loader, make_loader
from .config import TrainConfig, lr_factor
from .data import SynthSequences, find_partitions
from .losses import LossWeights, vggt_loss
from .trainer import NONFINITE_EXIT_CODE, TrainResult, train

__all__ = ["Loader", "make_loader", "TrainConfig", "lr_factor", "SynthSequences", "find_partitions", "LossWeights",
           "vggt_loss", "NONFINITE_EXIT_CODE", "TrainResult", "train"]
