"""Activation checkpointing of SAM's encoder blocks: trade one extra block forward for the block's activations.

Each chosen block's forward is rebound on the instance (no wrapper module), so parameters and state-dict keys do
not change; whatever forward the block has at that moment (Meta's, or one a PEFT method installed) is the one
checkpointed, so call this after ``apply_peft``. Under ``torch.no_grad`` (the teacher) blocks run as usual.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .family import FAMILIES, family_of_encoder, labels

_INNER = "_infosam_checkpointed_forward"
_MISSING = object()


def _checkpointed(inner: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return inner(x)
        return checkpoint(inner, x, use_reentrant=False)

    return forward


def _blocks(image_encoder: nn.Module) -> list[nn.Module]:
    """The encoder's attention blocks in forward order, as its model family lists them."""
    family = family_of_encoder(image_encoder)
    if family is None:
        raise TypeError(
            f"enable_checkpointing expects SAM's image encoder ({labels(FAMILIES.values(), 'encoder_label')}), "
            f"got {type(image_encoder)}"
        )
    return [entry.block for entry in family.blocks(image_encoder)]


def enable_checkpointing(image_encoder: nn.Module, every: int = 1) -> int:
    """Checkpoint every ``every``-th block (0, every, 2*every, ...) of the encoder; returns the count.

    ``image_encoder`` is ``model.image_encoder``: Meta's ``ImageEncoderViT`` (blocks map (B, H, W, dim) tokens to
    the same shape), SAM 2's ``ImageEncoder`` (its Hiera trunk's blocks: (B, H, W, C) tokens, pooled at a stage's
    first block) or a TinyViT encoder (its windowed-attention blocks map (B, L, dim) tokens; the convolutional
    stage 0 is never checkpointed: PEFT leaves it frozen). Calling it again first undoes the previous call, so
    ``every`` can change.
    """
    blocks = _blocks(image_encoder)
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"checkpointing 'every' must be an integer >= 1 (1 = every block), got {every!r}")
    disable_checkpointing(image_encoder)
    chosen = [block for i, block in enumerate(blocks) if i % every == 0]
    for block in chosen:
        # Remember an instance-level forward someone else bound (or its absence) to restore it exactly.
        setattr(block, _INNER, block.__dict__.get("forward", _MISSING))
        block.forward = _checkpointed(block.forward)
    return len(chosen)


def disable_checkpointing(image_encoder: nn.Module) -> int:
    """Undo :func:`enable_checkpointing` on ``image_encoder``; returns how many blocks were restored."""
    restored = 0
    for block in _blocks(image_encoder):
        if _INNER not in block.__dict__:
            continue
        previous = block.__dict__.pop(_INNER)
        del block.forward
        if previous is not _MISSING:
            block.forward = previous
        restored += 1
    return restored
