"""The SAM ViT family (ViT-B/L/H and the test-sized ``tiny``): Meta's ``Sam`` with its ``ImageEncoderViT``.

Built with Meta's own ``segment_anything.modeling`` classes (never copied, never edited). The prompt encoder, mask
decoder and ``Sam`` container are shared with the TinyViT family (:mod:`infosam.sam.family.tinyvit`), which
swaps only the image encoder, so building and decoding live here and TinyViT inherits them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.image_encoder import Block
from torch import Tensor, nn

from ..output import SamOutput, TokensCaptured
from ..specs import PIXEL_MEAN, PIXEL_STD, SamSpec
from .base import EncoderBlock, Family, Segment

_POS_EMBED = "image_encoder.pos_embed"
_PATCH_WEIGHT = "image_encoder.patch_embed.proj.weight"
_BLOCK_KEY = re.compile(r"^image_encoder\.blocks\.(\d+)\.")


class VitFamily(Family):
    """SAM ViT: Meta's ``ImageEncoderViT`` (blocks map (B, h, w, C) tokens to the same shape) inside ``Sam``."""

    name = "vit"
    label = "SAM ViT"
    encoder_label = "Meta's ImageEncoderViT"
    meta_device = True

    def owns_encoder(self, encoder: object) -> bool:
        return isinstance(encoder, ImageEncoderViT)

    # ------------------------------------------------------------------------------------------------------------
    # building and running

    def image_encoder(self, s: SamSpec) -> nn.Module:
        """The image encoder of spec ``s``: (B, 3, S, S) -> (B, prompt_embed_dim, g, g)."""
        return ImageEncoderViT(
            depth=s.encoder_depth,
            embed_dim=s.encoder_embed_dim,
            img_size=s.image_size,
            mlp_ratio=s.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=s.encoder_num_heads,
            patch_size=s.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=s.encoder_global_attn_indexes,
            window_size=s.window_size,
            out_chans=s.prompt_embed_dim,
        )

    def build(self, s: SamSpec) -> Sam:
        grid = s.embedding_size
        sam = Sam(
            image_encoder=self.image_encoder(s),
            prompt_encoder=PromptEncoder(
                embed_dim=s.prompt_embed_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(s.image_size, s.image_size),
                mask_in_chans=s.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=s.decoder_depth,
                    embedding_dim=s.prompt_embed_dim,
                    mlp_dim=s.decoder_mlp_dim,
                    num_heads=s.decoder_num_heads,
                ),
                transformer_dim=s.prompt_embed_dim,
                iou_head_depth=s.iou_head_depth,
                iou_head_hidden_dim=s.iou_head_hidden_dim,
            ),
            # Used only by Meta's Sam.preprocess, which the project never calls (infosam.sam.transforms normalises).
            pixel_mean=list(PIXEL_MEAN),
            pixel_std=list(PIXEL_STD),
        )
        sam.spec = s  # plain attribute (not a module/parameter): lets later code read the spec a model was built from
        return sam

    def decode(
        self,
        model: Sam,
        image_embeddings: Tensor,
        boxes: Tensor | None,
        points: Tensor | None,
        point_labels: Tensor | None,
        tokens_only: bool,
    ) -> SamOutput:
        """Meta's prompt encoder and mask decoder, one decoder call per image, the mask token read by a hook."""
        batch = image_embeddings.shape[0]
        sparse, dense = model.prompt_encoder(
            points=None if points is None else (points, point_labels), boxes=boxes, masks=None
        )
        image_pe = model.prompt_encoder.get_dense_pe()

        hs_tokens: list[Tensor] = []

        def capture(_module, _inputs, output) -> None:
            hs_tokens.append(output[0][:, 1:2])  # hs: (1, T, C); token 1 = mask 0
            if tokens_only:
                raise TokensCaptured

        handle = model.mask_decoder.transformer.register_forward_hook(capture)
        try:
            # One decoder call per image: Meta's predict_masks repeats the image embeddings once per prompt (it is
            # written for one image and many prompts), so a call with B images and B prompts would pair every
            # image with every prompt. Looping keeps Meta's decoder untouched and exactly equal to SamPredictor;
            # the decoder is small next to the encoder, so the loop costs little.
            logits, ious = [], []
            for b in range(batch):
                try:
                    low_res, iou = model.mask_decoder(
                        image_embeddings=image_embeddings[b : b + 1],
                        image_pe=image_pe,
                        sparse_prompt_embeddings=sparse[b : b + 1],
                        dense_prompt_embeddings=dense[b : b + 1],
                        multimask_output=False,
                    )
                except TokensCaptured:
                    continue
                logits.append(low_res)
                ious.append(iou)
        finally:
            handle.remove()
        if len(hs_tokens) != batch:
            raise RuntimeError(
                f"expected one two-way-transformer call per image ({batch}), saw {len(hs_tokens)}; "
                "was model.mask_decoder.transformer replaced or called elsewhere?"
            )
        return SamOutput(
            image_embeddings=image_embeddings,
            mask_tokens=torch.cat(hs_tokens),
            low_res_logits=None if tokens_only else torch.cat(logits),
            iou_predictions=None if tokens_only else torch.cat(ious),
        )

    # ------------------------------------------------------------------------------------------------------------
    # blocks, segments, taps

    def blocks(self, encoder: nn.Module) -> list[EncoderBlock]:
        found = [(name, m) for name, m in encoder.named_modules() if isinstance(m, Block)]
        return [
            EncoderBlock(
                index,
                f"image_encoder.{name}",
                block,
                0,
                block.norm1.normalized_shape[0],
                (block.norm1, block.norm2),
            )
            for index, (name, block) in enumerate(found)
        ]

    def segments(self, encoder: ImageEncoderViT) -> list[Segment]:
        """``patch_embed``, ``pos_embed`` (the addition), each of ``blocks``, ``neck``."""
        segments = [Segment("patch_embed", encoder.patch_embed, (encoder.patch_embed,))]
        if encoder.pos_embed is not None:
            segments.append(Segment("pos_embed", lambda x: x + encoder.pos_embed, (), (encoder.pos_embed,)))
        for i, block in enumerate(encoder.blocks):
            segments.append(Segment(f"blocks.{i}", block, (block,)))
        segments.append(Segment("neck", lambda x: encoder.neck(x.permute(0, 3, 1, 2)), (encoder.neck,)))
        return segments

    def feature_taps(self, model: nn.Module) -> tuple[int, ...]:
        """The blocks cut into four equal groups, the last of each (ViT-B: 2, 5, 8, 11, its global blocks)."""
        depth = len(self.blocks(model.image_encoder))
        return tuple(sorted({max(0, depth * k // 4 - 1) for k in range(1, 5)}))

    def early_block(self, model: nn.Module) -> EncoderBlock:
        """The first global-attention block (ViT-B's block 2), else the first feature tap."""
        blocks = self.blocks(model.image_encoder)
        global_blocks = [b for b in blocks if getattr(b.block, "window_size", None) == 0]
        return global_blocks[0] if global_blocks else super().early_block(model)

    # ------------------------------------------------------------------------------------------------------------
    # official checkpoints

    def claims_weights(self, state: Mapping[str, Tensor]) -> bool:
        return _PATCH_WEIGHT in state

    def architecture(self, state: Mapping[str, Tensor]) -> dict:
        """Width, depth, patch, image size, prompt dim and global-attention blocks."""
        patch = state.get(_PATCH_WEIGHT)
        pos = state.get(_POS_EMBED)
        iou_token = state.get("mask_decoder.iou_token.weight")
        blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
        embed = int(patch.shape[0]) if patch is not None and patch.ndim == 4 else None
        patch_size = int(patch.shape[-1]) if patch is not None and patch.ndim == 4 else None
        grid = int(pos.shape[1]) if pos is not None and pos.ndim == 4 else None
        global_blocks = []
        if grid is not None:
            for i in sorted(blocks):
                rel = state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
                if rel is not None and rel.shape[0] == 2 * grid - 1:
                    global_blocks.append(i)
        return {
            "encoder_embed_dim": embed,
            "encoder_depth": len(blocks),
            "patch_size": patch_size,
            "image_size": grid * patch_size if grid is not None and patch_size is not None else None,
            "prompt_embed_dim": int(iou_token.shape[-1]) if iou_token is not None else None,
            "encoder_global_attn_indexes": tuple(global_blocks),
        }

    def shape_words(self, arch: Mapping) -> str:
        return f"embed {arch['encoder_embed_dim']}, {arch['encoder_depth']} blocks"

    def fits(self, spec: SamSpec, arch: Mapping) -> bool:
        spec_arch = (spec.encoder_embed_dim, spec.encoder_depth, spec.patch_size, spec.prompt_embed_dim)
        return spec_arch == (
            arch["encoder_embed_dim"],
            arch["encoder_depth"],
            arch["patch_size"],
            arch["prompt_embed_dim"],
        )
