"""HQ-SAM's high-quality output token (Ke et al., "Segment Anything in High Quality", NeurIPS 2023), SAM frozen.

The mask decoder is wrapped (Meta's decoder kept as ``base_layer``, untouched); the wrapper adds, following the
official ``MaskDecoderHQ``:

- ``hf_token``: one learnable output token (1, C), appended after SAM's IoU and mask tokens (so the decoder's mask
  token 0, which InfoSAM and :func:`infosam.sam.forward.decode` read as ``hs[:, 1]``, keeps its place);
- ``hf_mlp``: MLP(C -> C -> C -> C/8, 3 layers) turning the HQ token into the weights of its mask;
- global-local fusion: ``hq_features = embedding_encoder(image_embeddings) + compress_vit_feat(early)`` where
  ``early`` is the output of an early encoder block (ViT: the first global-attention block, ViT-B's block 2;
  TinyViT: the last block of stage 1; average-pooled to the embeddings' size if finer, *ours*), both branches
  ConvTranspose(2, stride 2) -> LayerNorm2d -> GELU -> ConvTranspose(2, stride 2) to C/8 channels at 4x size;
- ``embedding_maskfeature``: Conv3x3 -> LayerNorm2d -> GELU -> Conv3x3 on SAM's upscaled embedding, plus
  ``hq_features``: the HQ mask is ``hf_mlp(token) . (embedding_maskfeature(upscaled) + hq_features)``.

The single-mask output is the HQ mask (``hq_token_only``, the official training setting) or SAM's mask plus it;
multimask outputs add the HQ mask to (or replace by it) each of SAM's three, so output shapes do not change.
The early block's output is caught by a forward hook the method installs (the model is not edited); the decoder
then reads row i of it for the i-th call after each encoder forward (one call per image, as
:func:`infosam.sam.forward.decode` and SAM's predictor do). A student-prefix cache that skips that block cannot be
used with this method (the decoder raises, naming the option).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import Tensor, nn

from ..sam.family import FAMILIES, family_of, labels
from .base import MethodConfig, mark_trainable, replace_child


def _up(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_mid, 2, 2),
        LayerNorm2d(c_mid),
        nn.GELU(),
        nn.ConvTranspose2d(c_mid, c_out, 2, 2),
    )


class HQHead(nn.Module):
    """The trainable parts of HQ-SAM for a decoder of width C and an early encoder feature of width ``vit_dim``."""

    def __init__(self, dim: int, vit_dim: int) -> None:
        super().__init__()
        self.hf_token = nn.Embedding(1, dim)
        self.hf_mlp = MLP(dim, dim, dim // 8, 3)
        self.compress_vit_feat = _up(vit_dim, dim, dim // 8)
        self.embedding_encoder = _up(dim, dim // 4, dim // 8)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
        )


class HQMaskDecoder(nn.Module):
    """Meta's ``MaskDecoder`` (``base_layer``) with the HQ token; same call signature and output shapes."""

    def __init__(self, base_layer: nn.Module, vit_dim: int, hq_token_only: bool) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.hq = HQHead(base_layer.transformer_dim, vit_dim)
        self.hq_token_only = hq_token_only
        self._early: Tensor | None = None
        self._calls = 0

    @property
    def transformer(self) -> nn.Module:
        """SAM's two-way transformer (hooked by :func:`infosam.sam.forward.decode` to read the mask token)."""
        return self.base_layer.transformer

    def stash(self, _module: nn.Module, _inputs: object, output: Tensor) -> None:
        """Forward hook on the early encoder block: keep its output (B, h, w, C') or (B, h * w, C') for the
        decoder calls that follow."""
        self._early = output
        self._calls = 0

    def _early_feature(self, size: tuple[int, int]) -> Tensor:
        if self._early is None:
            raise RuntimeError(
                "hq_token needs the early encoder block's output of the same forward, and the encoder did not run "
                "it (a student-prefix cache skips it: set cache.student_prefix=false)"
            )
        batch = self._early.shape[0]
        row = self._calls if batch > 1 else 0
        if row >= batch:
            raise RuntimeError(
                f"hq_token: decoder call {row + 1} after an encoder forward of {batch} image(s)"
            )
        self._calls += 1
        x = self._early[row : row + 1]
        if x.dim() == 3:  # TinyViT tokens (1, h * w, C')
            side = int(round(x.shape[1] ** 0.5))
            x = x.reshape(1, side, side, x.shape[2])
        x = x.permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(x, size) if tuple(x.shape[-2:]) != tuple(size) else x

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """As Meta's ``predict_masks`` (one image, P prompts): masks (P, 4, 4h, 4w) with the HQ mask added to (or
        replacing) each, and IoU predictions (P, 4)."""
        d, hq = self.base_layer, self.hq
        early = self._early_feature(tuple(image_embeddings.shape[-2:]))
        tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight, hq.hf_token.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((tokens, sparse_prompt_embeddings), dim=1)
        src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0) + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = d.transformer(src, pos_src, tokens)
        n = d.num_mask_tokens
        upscaled = d.output_upscaling(src.transpose(1, 2).view(b, c, h, w))
        hq_features = hq.embedding_encoder(image_embeddings) + hq.compress_vit_feat(early)
        upscaled_hq = hq.embedding_maskfeature(upscaled) + hq_features
        hyper = torch.stack([d.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(n)], dim=1)
        b, c, h, w = upscaled.shape
        masks_sam = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        hyper_hq = hq.hf_mlp(hs[:, 1 + n]).unsqueeze(1)
        masks_hq = (hyper_hq @ upscaled_hq.view(b, c, h * w)).view(b, 1, h, w)
        masks = masks_hq.expand_as(masks_sam) if self.hq_token_only else masks_sam + masks_hq
        return masks, d.iou_prediction_head(hs[:, 0])

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        """Meta's ``MaskDecoder.forward`` contract: (P, 1 or 3, 4h, 4w) masks and (P, 1 or 3) IoU predictions."""
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou[:, chosen]


def early_block(model: Sam) -> tuple[nn.Module, int]:
    """The early encoder block HQ-SAM fuses and its width (the model family's choice: see the module docstring)."""
    entry = family_of(model).early_block(model)
    return entry.block, entry.dim


@dataclass(frozen=True)
class HQTokenConfig(MethodConfig):
    """``hq_token``: HQ-SAM's output token with global-local feature fusion; SAM stays frozen."""

    name = "hq_token"
    prefix_cache_conflict = "fuses an early encoder block's output"
    hq_token_only: bool = True
    """The single-mask output is the HQ mask alone (official training); false: SAM's mask plus the HQ mask."""

    def apply(self, model: Sam) -> None:
        family = family_of(model)
        if not family.hq_token:
            supported = labels(f for f in FAMILIES.values() if f.hq_token)
            raise ValueError(
                f"PEFT method 'hq_token' wraps segment_anything's MaskDecoder ({supported}); {family.label}'s decoder "
                f"is not supported: on {family.label} use decoder, bitfit, lora, adapter or adaptformer"
            )
        if isinstance(model.mask_decoder, HQMaskDecoder):
            raise ValueError("hq_token is already applied to this model's mask decoder")
        block, vit_dim = early_block(model)
        wrapper = HQMaskDecoder(model.mask_decoder, vit_dim, self.hq_token_only)
        mark_trainable(wrapper.hq)
        replace_child(model, "mask_decoder", wrapper)
        block.register_forward_hook(wrapper.stash)
