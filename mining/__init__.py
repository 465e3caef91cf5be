"""Attribute subspaces mined from clusters of LoRAs (docs/mining.md)."""
