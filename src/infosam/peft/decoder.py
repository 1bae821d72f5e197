"""Decoder-only fine-tuning: the whole mask decoder trains, the image and prompt encoders stay frozen."""

from __future__ import annotations

from dataclasses import dataclass

from segment_anything.modeling import Sam

from .base import MethodConfig, mark_trainable


@dataclass(frozen=True)
class DecoderConfig(MethodConfig):
    """``decoder``: train every parameter of the mask decoder (no options).

    Also the "+ mask decoder" part of the paper's BitFit, LoRA, AdaptFormer and Adapter students, by
    composition (``"bitfit+decoder"``, ``"lora+decoder"``, ``"adapter+decoder"``).
    """

    name = "decoder"

    def apply(self, model: Sam) -> None:
        mark_trainable(model.mask_decoder)
