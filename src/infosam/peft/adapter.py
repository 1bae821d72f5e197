"""The paper's series adapters: two bottleneck adapters in each of the encoder blocks
``first_block..depth-1``.

In an adapted block, ``x = x + A_attn(attn(norm1(x)))`` then ``x = x + A_mlp(mlp(norm2(x)))``, where each
adapter is ``A(y) = y + up(GELU(down(y)))`` with ``down: dim -> dim * ratio`` and ``up: dim * ratio -> dim``.
The attention adapter wraps ``block.attn``, so in windowed blocks it sees the window-partitioned tensor (B *
nW, ws, ws, dim): being applied token by token, it gives the same result as on (B, H, W, dim), and the padding
tokens it also sees are cropped by Meta's window_unpartition afterwards. The block's LayerNorms (norm1, norm2)
train as well.

On TinyViT the adapted blocks are the windowed-attention blocks (stages 1..3; ``attn`` and ``mlp`` each begin
with their own LayerNorm, which trains); the default ``first_block=2`` skips stage 1 (its two blocks run at the
highest attention resolution, 128 x 128 tokens for LiteMedSAM) and adapts stages 2 and 3. Everything before the
first adapted block (patch embedding, the convolutional stage 0, stage 1) then stays frozen: a prefix that depends
on the image only. ``first_stage`` restricts the adapted blocks to later stages (e.g. 3: the last stage only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from segment_anything.modeling import Sam
from torch import nn

from ..sam.family import encoder_blocks
from .base import MethodConfig, bottleneck, check_block_range, mark_trainable, replace_child


class SeriesAdapter(nn.Module):
    """``base_layer`` followed by a residual bottleneck: ``y = base_layer(x); return y + adapter(y)``."""

    def __init__(self, base_layer: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., dim), whatever ``base_layer`` maps it to."""
        y = self.base_layer(x)
        return y + self.adapter(y)


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """``adapter``: series bottleneck adapters after attention and after the MLP of blocks
    first_block..depth-1.

    The paper's InfoSAM student is ``"adapter+decoder"`` (ViT-B: 10,006,500 trainable parameters).
    """

    name = "adapter"
    first_block: int = 2
    """Index of the first adapted encoder block; every later block is adapted too (paper: 2, i.e. 2..11 on
    ViT-B)."""
    ratio: float = 0.25
    """Bottleneck width relative to the encoder width (paper: 0.25, 768 -> 192)."""
    init: Literal["zero", "torch"] = "zero"
    """'zero': up-projection zeroed, the student starts as the pretrained SAM; 'torch': PyTorch default
    (release)."""
    train_norms: bool = True
    """Also train the LayerNorms before attention and MLP of the adapted blocks (ViT: norm1, norm2; paper: yes)."""
    first_stage: int = 0
    """Adapt only blocks of encoder stage >= first_stage as well (TinyViT's attention stages are 1..3; ViT has a
    single stage, 0); 0 leaves the choice to first_block."""

    def apply(self, model: Sam) -> None:
        blocks = list(encoder_blocks(model))
        check_block_range(self.name, self.first_block, len(blocks))
        if self.ratio <= 0:
            raise ValueError(f"option adapter.ratio must be > 0, got {self.ratio}")
        chosen = [b for b in blocks if b.index >= self.first_block and b.stage >= self.first_stage]
        if not chosen:
            stages = sorted({b.stage for b in blocks})
            raise ValueError(
                f"options adapter.first_block={self.first_block} and adapter.first_stage={self.first_stage} "
                f"select no block of this model (its attention blocks are in stages {stages})"
            )
        for entry in chosen:
            hidden = max(1, int(entry.dim * self.ratio))
            for child in ("attn", "mlp"):
                adapter = bottleneck(entry.dim, hidden, nn.GELU, self.init)
                wrapper = SeriesAdapter(getattr(entry.block, child), adapter)
                mark_trainable(wrapper.adapter)
                replace_child(entry.block, child, wrapper)
            if self.train_norms:
                for norm in entry.norms:
                    mark_trainable(norm)
