"""Datasets (Conv-LoRA CSV layout and image/mask folders), prompt sampling and input validation."""
