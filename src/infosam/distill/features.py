"""Intermediate encoder features for the objectives that distil them (SemCKD, ReviewKD), through scoped hooks.

A *tap* is one attention block of the image encoder (:func:`infosam.sam.family.encoder_blocks`, so PEFT wrappers
inside a block change nothing); the model family chooses them (:meth:`infosam.sam.family.Family.feature_taps`). A
tap's output is captured by a forward hook that lives only inside :func:`capture_features` and is returned as
(B, C, h, w), whatever the family's layout:

- ViT: the blocks are cut into four equal groups and the last block of each is a tap (ViT-B: blocks 2, 5, 8, 11,
  SAM's global-attention blocks); a block returns (B, h, w, C).
- TinyViT: the last attention block of each stage 1..3 is a tap; a block returns (B, h * w, C), square.

The model is never edited: remove the hooks and it is the model it was.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

from segment_anything.modeling import Sam
from torch import Tensor

from ..sam.family import encoder_blocks, family_of


def feature_taps(model: Sam) -> tuple[int, ...]:
    """Indices (in :func:`encoder_blocks` order) of the blocks whose outputs are the encoder's feature levels."""
    return family_of(model).feature_taps(model)


def tap_dims(model: Sam, taps: Sequence[int]) -> tuple[int, ...]:
    """Channel width of each tap's feature map."""
    dims = {b.index: b.dim for b in encoder_blocks(model)}
    return tuple(dims[i] for i in taps)


def as_map(x: Tensor) -> Tensor:
    """A block output as (B, C, h, w): ViT's (B, h, w, C) or TinyViT's (B, h * w, C) with h = w."""
    if x.dim() == 4:
        return x.permute(0, 3, 1, 2)
    if x.dim() == 3:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"cannot fold {x.shape[1]} tokens into a square feature map")
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
    raise ValueError(f"unexpected block output of shape {tuple(x.shape)}")


@contextlib.contextmanager
def capture_features(model: Sam, taps: Sequence[int] | None) -> Iterator[list[Tensor]]:
    """Within the block, each forward of ``model``'s encoder appends the tap blocks' outputs (B, C, h, w) to the
    yielded list, in forward order; ``taps=None`` captures nothing (and hooks nothing)."""
    captured: list[Tensor] = []
    if not taps:
        yield captured
        return
    chosen = set(taps)
    handles = [
        b.block.register_forward_hook(lambda _m, _i, out: captured.append(as_map(out)))
        for b in encoder_blocks(model)
        if b.index in chosen
    ]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
