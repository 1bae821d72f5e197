"""BitFit (Ben Zaken et al., 2022): only bias terms train, here those of the image encoder's attention blocks.

On TinyViT these are the windowed-attention blocks of stages 1..3 (attention, MLP, their LayerNorms and the
BatchNorm of the depthwise ``local_conv``); the convolutional stage 0, the patch embedding and the downsampling
layers stay frozen, a frozen prefix that can be computed once per image.
"""

from __future__ import annotations

from dataclasses import dataclass

from segment_anything.modeling import Sam
from torch import nn

from ..sam.family import encoder_blocks
from .base import MethodConfig


@dataclass(frozen=True)
class BitFitConfig(MethodConfig):
    """``bitfit``: train the biases of every image-encoder block (attention, MLP and, optionally, LayerNorms).

    The paper's BitFit student also trains the mask decoder: compose ``"bitfit+decoder"``.
    """

    name = "bitfit"
    include_norms: bool = True
    """Also train the LayerNorm (and TinyViT's BatchNorm) biases (BitFit trains every bias term); False keeps only
    Linear biases."""

    def apply(self, model: Sam) -> None:
        for entry in encoder_blocks(model):
            for module in entry.block.modules():
                is_norm = isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
                if is_norm and not self.include_norms:
                    continue
                bias = getattr(module, "bias", None)
                if isinstance(bias, nn.Parameter):
                    bias.requires_grad_(True)
