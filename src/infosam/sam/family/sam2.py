"""The SAM 2 family (``sam2_hiera_*``, ``sam2.0_hiera_*``, ``tiny_sam2``): Meta's SAM2Base wrapped as
:class:`infosam.sam.sam2.Sam2Model`, its Hiera trunk's blocks adapted by PEFT.

Its encode step packs the embedding with the decoder's two high-resolution maps (:mod:`infosam.sam.sam2`), which
is why the student-prefix cache, the distillation baselines, HQ-SAM and ONNX export are not offered for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from .. import sam2
from ..output import SamOutput
from ..specs import SamSpec
from .base import EncoderBlock, Family

_PATCH_WEIGHT = "image_encoder.trunk.patch_embed.proj.weight"
_BLOCK_KEY = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.")


class Sam2Family(Family):
    """SAM 2: Hiera + FPN neck, SAM 2's prompt encoder and decoder; blocks (B, H, W, C) -> (B, H', W', C')."""

    name = "sam2"
    label = "SAM 2"
    encoder_label = "SAM 2's Hiera"
    student_prefix = False
    hq_token = False
    distill_baselines = False
    onnx_export = False
    export_format = "sam2"
    export_key = "model"  # official SAM 2 checkpoints keep the weights under "model"
    why_not = {
        "student_prefix": "its decoder's high-resolution projections run inside the encode step, so no encoder "
        "prefix is frozen",
        "distill_baselines": "whose embeddings travel packed with its high-resolution maps",
    }

    def owns(self, model: object) -> bool:
        return isinstance(model, sam2.Sam2Model)

    def owns_encoder(self, encoder: object) -> bool:
        return isinstance(getattr(getattr(encoder, "trunk", None), "blocks", None), nn.ModuleList)

    def build(self, spec: SamSpec) -> sam2.Sam2Model:
        return sam2.build_sam2_model(spec)

    def encode(self, model: sam2.Sam2Model, images: Tensor) -> Tensor:
        """The embedding and the two high-resolution maps packed into one (B, 4C, g, g) tensor."""
        return sam2.encode(model, images)

    def decode(
        self,
        model: sam2.Sam2Model,
        image_embeddings: Tensor,
        boxes: Tensor | None,
        points: Tensor | None,
        point_labels: Tensor | None,
        tokens_only: bool,
    ) -> SamOutput:
        return sam2.decode(model, image_embeddings, boxes, points, point_labels, tokens_only)

    def blocks(self, encoder: nn.Module) -> list[EncoderBlock]:
        """Every Hiera block in forward order, with its stage (0..3)."""
        trunk = encoder.trunk
        ends = list(trunk.stage_ends)
        return [
            EncoderBlock(
                i,
                f"image_encoder.trunk.blocks.{i}",
                block,
                sum(i > end for end in ends),
                block.dim_out,
                (block.norm1, block.norm2),
            )
            for i, block in enumerate(trunk.blocks)
        ]

    # ------------------------------------------------------------------------------------------------------------
    # official checkpoints

    def claims_weights(self, state: Mapping[str, Tensor]) -> bool:
        return _PATCH_WEIGHT in state

    def architecture(self, state: Mapping[str, Tensor]) -> dict:
        """Hiera's first width and depth, C, and 2.0 vs 2.1 (2.1 adds ``no_obj_embed_spatial`` and
        ``obj_ptr_tpos_proj``)."""
        blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
        no_mem = state.get("no_mem_embed")
        return {
            "sam2_version": "2.1" if "no_obj_embed_spatial" in state else "2.0",
            "encoder_embed_dim": int(state[_PATCH_WEIGHT].shape[0]),
            "encoder_depth": len(blocks),
            "prompt_embed_dim": int(no_mem.shape[-1]) if no_mem is not None else None,
        }

    def shape_words(self, arch: Mapping) -> str:
        return (
            f"SAM {arch['sam2_version']} Hiera, embed {arch['encoder_embed_dim']}, {arch['encoder_depth']} blocks, "
            f"C {arch['prompt_embed_dim']}"
        )

    def fits(self, spec: SamSpec, arch: Mapping) -> bool:
        version = "2.0" if spec.sam2_config.startswith("configs/sam2/") else "2.1"
        return (version, spec.encoder_embed_dim, spec.encoder_depth, spec.prompt_embed_dim) == (
            arch["sam2_version"],
            arch["encoder_embed_dim"],
            arch["encoder_depth"],
            arch["prompt_embed_dim"],
        )
