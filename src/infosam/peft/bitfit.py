"""BitFit (Ben Zaken et al., 2022): only bias terms train, here those of the image encoder's ViT blocks."""

from __future__ import annotations

from dataclasses import dataclass

from segment_anything.modeling import Sam
from torch import nn

from .base import MethodConfig, encoder_blocks


@dataclass(frozen=True)
class BitFitConfig(MethodConfig):
    """``bitfit``: train the biases of every image-encoder block (attention, MLP and, optionally, LayerNorms).

    The paper's BitFit student also trains the mask decoder: compose ``"bitfit+decoder"``.
    """

    name = "bitfit"
    include_norms: bool = True
    """Also train the LayerNorm biases (BitFit trains every bias term); False keeps only Linear biases."""

    def apply(self, model: Sam) -> None:
        for _, _, block in encoder_blocks(model):
            for module in block.modules():
                if isinstance(module, nn.LayerNorm) and not self.include_norms:
                    continue
                bias = getattr(module, "bias", None)
                if isinstance(bias, nn.Parameter):
                    bias.requires_grad_(True)
