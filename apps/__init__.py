"""Applications on top of the packages: pretraining our small base model (pretrain.py) and running a
VGGT on a user's images (predict.py)."""
