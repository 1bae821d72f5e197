"""The TinyViT family (LiteMedSAM, MobileSAM, ``tiny_tinyvit``): Meta's ``Sam`` with a package's TinyViT encoder.

Only the image encoder differs from SAM ViT (:class:`infosam.sam.tinyvit.TinyViTEncoder`: a convolutional stage 0,
then three stages of windowed-attention blocks mapping (B, h * w, C) tokens); the prompt encoder, mask decoder and
decoding are SAM's, inherited from :class:`~infosam.sam.family.vit.VitFamily`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from ..specs import SamSpec
from ..tinyvit import TinyViTEncoder
from .base import EncoderBlock, Family, Segment, unwrapped
from .vit import VitFamily

_PATCH_WEIGHT = "image_encoder.patch_embed.seq.0.c.weight"
_BLOCK_KEY = re.compile(r"^image_encoder\.layers\.(\d+)\.blocks\.(\d+)\.")


class TinyViTFamily(VitFamily):
    """TinyViT: the packages' stages inside Meta's ``Sam``; blocks and feature taps per stage."""

    name = "tinyvit"
    label = "TinyViT"
    encoder_label = "TinyViT"
    meta_device = False  # the packages' constructors call .item() on fresh tensors

    def owns_encoder(self, encoder: object) -> bool:
        return isinstance(encoder, TinyViTEncoder)

    def image_encoder(self, s: SamSpec) -> nn.Module:
        return TinyViTEncoder(s)

    def blocks(self, encoder: TinyViTEncoder) -> list[EncoderBlock]:
        """The windowed-attention blocks of stages 1..3 (the convolutional stage 0 has none)."""
        found = []
        for stage, layer in enumerate(encoder.layers):
            for j, block in enumerate(layer.blocks):
                if hasattr(block, "attn") and hasattr(block, "mlp"):
                    found.append((stage, f"layers.{stage}.blocks.{j}", block))
        return [
            EncoderBlock(
                index,
                f"image_encoder.{name}",
                block,
                stage,
                block.dim,
                (unwrapped(block.attn).norm, unwrapped(block.mlp).norm),
            )
            for index, (stage, name, block) in enumerate(found)
        ]

    def segments(self, encoder: TinyViTEncoder) -> list[Segment]:
        """``patch_embed``, each block of each stage and the stage's ``downsample`` (stage 0's blocks are
        convolutional), then ``neck`` (tokens -> (B, C, g, g) grid first)."""
        segments = [Segment("patch_embed", encoder.patch_embed, (encoder.patch_embed,))]
        for s, layer in enumerate(encoder.layers):
            if getattr(layer, "use_checkpoint", False):
                raise ValueError(
                    f"TinyViT stage {s} uses the package's own checkpointing; the prefix cache needs it off "
                    "(use train.activation_checkpointing instead)"
                )
            for j, block in enumerate(layer.blocks):
                segments.append(Segment(f"layers.{s}.blocks.{j}", block, (block,)))
            if layer.downsample is not None:
                segments.append(Segment(f"layers.{s}.downsample", layer.downsample, (layer.downsample,)))

        def neck(x: Tensor) -> Tensor:
            batch, tokens, channels = x.shape
            if tokens != encoder.grid * encoder.grid:
                raise RuntimeError(
                    f"TinyViT produced {tokens} tokens, expected a {encoder.grid} x {encoder.grid} grid"
                )
            return encoder.neck(x.transpose(1, 2).reshape(batch, channels, encoder.grid, encoder.grid))

        segments.append(Segment("neck", neck, (encoder.neck,)))
        return segments

    # The last attention block of each stage 1..3 is a feature tap, and HQ-SAM fuses the first (stage 1's last).
    feature_taps = Family.feature_taps
    early_block = Family.early_block

    # ------------------------------------------------------------------------------------------------------------
    # official checkpoints

    def claims_weights(self, state: Mapping[str, Tensor]) -> bool:
        return _PATCH_WEIGHT in state

    def architecture(self, state: Mapping[str, Tensor]) -> dict:
        """Variant (from the patch embedding's kernel), stage widths and depths."""
        blocks: dict[int, set[int]] = {}
        for key in state:
            if m := _BLOCK_KEY.match(key):
                blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        widths = []
        for stage in sorted(blocks):
            first = f"image_encoder.layers.{stage}.blocks.0."
            weight = state.get(first + "conv1.c.weight", state.get(first + "attn.norm.weight"))
            widths.append(
                int(weight.shape[-1] if weight.ndim == 1 else weight.shape[1]) if weight is not None else None
            )
        kernel = state[_PATCH_WEIGHT].shape[-1]
        iou_token = state.get("mask_decoder.iou_token.weight")
        return {
            "encoder_embed_dim": widths[-1] if widths else None,
            "encoder_depth": sum(len(b) for b in blocks.values()),
            "patch_size": None,
            "image_size": None,
            "prompt_embed_dim": int(iou_token.shape[-1]) if iou_token is not None else None,
            "encoder_global_attn_indexes": None,
            "tinyvit_variant": "litemedsam" if kernel == 1 else "mobile_sam",
            "tinyvit_embed_dims": tuple(widths),
            "tinyvit_depths": tuple(len(blocks[s]) for s in sorted(blocks)),
        }

    def shape_words(self, arch: Mapping) -> str:
        dims = "/".join(str(d) for d in arch["tinyvit_embed_dims"])
        return f"{arch['tinyvit_variant']} TinyViT, widths {dims}, {arch['encoder_depth']} blocks"

    def fits(self, spec: SamSpec, arch: Mapping) -> bool:
        return (
            spec.tinyvit_variant,
            spec.tinyvit_embed_dims,
            spec.tinyvit_depths,
            spec.prompt_embed_dim,
        ) == (
            arch["tinyvit_variant"],
            arch["tinyvit_embed_dims"],
            arch["tinyvit_depths"],
            arch["prompt_embed_dim"],
        )
