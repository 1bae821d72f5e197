"""What one SAM forward returns (:class:`SamOutput`), shared by every family's decode."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class SamOutput:
    """What one SAM forward returns for a batch of B images with one prompt each."""

    image_embeddings: Tensor
    """(B, C, h, w) image encoder output; C = spec.prompt_embed_dim (256), h = w = spec.embedding_size (64)."""
    mask_tokens: Tensor
    """(B, 1, C) single-mask output token after the two-way transformer (``hs[:, 1]``)."""
    low_res_logits: Tensor | None
    """(B, 1, 4h, 4w) single-mask logits (256 x 256 for the official 1024 input); None from a tokens-only decode."""
    iou_predictions: Tensor | None
    """(B, 1) predicted IoU of the single mask; None from a tokens-only decode."""
    features: list[Tensor] | None = None
    """Intermediate encoder feature maps (B, C_l, h_l, w_l), only where a distillation objective asked for them
    (:func:`infosam.distill.features.capture_features`); None otherwise."""


class TokensCaptured(Exception):
    """Raised by the transformer hook of a tokens-only decode: the rest of the decoder is not needed."""
