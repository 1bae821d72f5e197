"""InfoSAM: parameter-efficient fine-tuning of SAM with a frozen teacher and matrix-Renyi-entropy objectives."""

__version__ = "0.1.0"
