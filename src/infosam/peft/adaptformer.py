"""AdaptFormer (Chen et al., NeurIPS 2022): a bottleneck MLP in parallel with each encoder block's MLP.

``mlp(x)`` becomes ``mlp(x) + scale * up(ReLU(down(x)))`` with the same input x (the output of norm2; on TinyViT
the MLP holds its own LayerNorm, so the branch sees the block's un-normalised tokens, as TinyViT's MLP does). On
TinyViT every windowed-attention block (stages 1..3) is adapted; the convolutional stage 0 stays frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from segment_anything.modeling import Sam
from torch import nn

from ..sam.family import encoder_blocks
from .base import MethodConfig, bottleneck, check_block_range, mark_trainable, replace_child


class ParallelAdapter(nn.Module):
    """``base_layer(x) + scale * adaptformer(x)``: a branch beside the wrapped module, fed the same input.

    The branch is named ``adaptformer`` (not ``adapter``) so that its state-dict keys never collide with, or
    read like, the series adapter's when both methods wrap the same MLP.
    """

    def __init__(self, base_layer: nn.Module, branch: nn.Module, scale: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adaptformer = branch
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., dim)."""
        return self.base_layer(x) + self.scale * self.adaptformer(x)


@dataclass(frozen=True)
class AdaptFormerConfig(MethodConfig):
    """``adaptformer``: parallel bottleneck adapters beside the MLP of blocks first_block..depth-1.

    The published comparison trains the mask decoder too: compose ``"adaptformer+decoder"``.
    """

    name = "adaptformer"
    bottleneck: int = 64
    """Hidden width of each adapter; 64 is AdaptFormer's ViT-B default (best accuracy/size trade-off
    there)."""
    scale: float = 0.5
    """Factor on the adapter branch before it is added to the MLP output (paper: 0.5)."""
    first_block: int = 0
    """Index of the first adapted encoder block (AdaptFormer adapts every block)."""
    init: Literal["zero", "torch"] = "zero"
    """'zero': up-projection zeroed (AdaptFormer's own init, the student starts as SAM); 'torch': PyTorch
    default."""

    def apply(self, model: Sam) -> None:
        blocks = list(encoder_blocks(model))
        check_block_range(self.name, self.first_block, len(blocks))
        if self.bottleneck < 1:
            raise ValueError(f"option adaptformer.bottleneck must be >= 1, got {self.bottleneck}")
        for entry in blocks:
            if entry.index < self.first_block:
                continue
            branch = bottleneck(entry.dim, self.bottleneck, nn.ReLU, self.init)
            wrapper = ParallelAdapter(entry.block.mlp, branch, self.scale)
            mark_trainable(wrapper.adaptformer)
            replace_child(entry.block, "mlp", wrapper)
